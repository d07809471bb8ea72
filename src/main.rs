#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ecluse::cli::main()
}

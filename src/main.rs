#![forbid(unsafe_code)]

/// The policy interpreter and the HTTP stack allocate many small objects
/// per call; mimalloc serves them markedly faster than the system allocator
/// (see the load bench in the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ecluse::cli::main()
}

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

/// The policy interpreter and the HTTP stack allocate many small objects
/// per call; mimalloc serves them faster than the system allocator, at a
/// cost in resident memory (see Performance in the README).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ecluse::cli::main()
}

//! The `activegen` command line (see `activegen::cli`).

fn main() -> std::process::ExitCode {
    activegen::cli::main()
}

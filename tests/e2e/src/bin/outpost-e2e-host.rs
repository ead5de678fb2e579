//! The `outpost` command line, built inside this package so its tests can
//! run it as a child process (`CARGO_BIN_EXE_outpost-e2e-host`).

fn main() -> std::process::ExitCode {
    outpost_host::cli::main()
}

//! `outpost`: serve Outpost's Spin application on the test host, fire a cron
//! component, or apply migrations. See `outpost --help`.

fn main() -> std::process::ExitCode {
    outpost_host::cli::main()
}

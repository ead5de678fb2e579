//! The `outpost` command line: `up`, `cron`, `migrate`, `wasm-test`. Kept in
//! the library so other packages (the end-to-end tests) can build the same
//! binary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::app::{App, HostConfig};
use crate::pg_cluster::PgCluster;
use crate::variables::{VariableSources, env_key};

pub mod wasm_test;

const USAGE: &str = "\
outpost: run Outpost's Spin application without Spin (a wasmtime host)

USAGE:
  outpost up [--manifest spin.toml] [--listen 127.0.0.1:3000] [--database-url URL]
             [--variable name=value]... [--migrations DIR] [--no-migrate]
             [--no-strict-jsonb] [--no-cron] [--state-dir DIR] [--component-id ID]...
             [--pg-root-cert ca.pem]
      Serve every component of the manifest and run its cron schedules.
      Without a database URL (--database-url, --variable database_url=...,
      or SPIN_VARIABLE_DATABASE_URL), a throwaway PostgreSQL cluster is
      created from the machine's Postgres binaries and migrated; it is
      deleted on exit. database_address and job_secret are filled in when
      not given. Postgres speaks TLS unless the URL says sslmode=disable
      (sslmode=require insists on it); certificates are verified against
      the system roots plus --pg-root-cert.
  outpost cron <component> [--manifest spin.toml] [--database-url URL] [--variable name=value]...
             [--pg-root-cert ca.pem]
      Fire one cron component once and print its result.
  outpost migrate --database-url URL [--dir migrations] [--pg-root-cert ca.pem]
      Apply pending migrations (TLS as above; libpq's sslrootcert=<file>
      and sslmode=verify-ca|verify-full are accepted in the URL).
  outpost wasm-test <file.wasm> [args]...
      Run a wasi:cli/run component (a `cargo test --target wasm32-wasip2`
      binary: this is the target's runner) and exit with its code. Spin
      imports trap when called.
";

struct Args {
    positional: Vec<String>,
    options: BTreeMap<String, Vec<String>>,
    flags: Vec<String>,
}

const FLAGS: &[&str] = &[
    "--no-migrate",
    "--no-strict-jsonb",
    "--no-cron",
    "--help",
    "-h",
];

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        positional: Vec::new(),
        options: BTreeMap::new(),
        flags: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if FLAGS.contains(&a.as_str()) {
            out.flags.push(a.clone());
        } else if let Some(name) = a.strip_prefix("--") {
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (
                    name.to_string(),
                    it.next()
                        .with_context(|| format!("--{name} needs a value"))?
                        .clone(),
                ),
            };
            out.options
                .entry(format!("--{name}"))
                .or_default()
                .push(value);
        } else {
            out.positional.push(a.clone());
        }
    }
    Ok(out)
}

impl Args {
    fn one(&self, name: &str) -> Option<&str> {
        self.options
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }
    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
    fn check_known(&self, known: &[&str]) -> anyhow::Result<()> {
        for k in self.options.keys() {
            if !known.contains(&k.as_str()) {
                bail!("unknown option {k}\n\n{USAGE}");
            }
        }
        Ok(())
    }
    fn variables(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut vars = BTreeMap::new();
        for v in self.options.get("--variable").into_iter().flatten() {
            let (k, val) = v
                .split_once('=')
                .with_context(|| format!("--variable {v:?}: expected name=value"))?;
            let val = match val.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("--variable {k}: reading {file}"))?,
                None => val.to_string(),
            };
            vars.insert(k.to_string(), val);
        }
        Ok(vars)
    }
}

/// Runs the command line (arguments without the program name).
pub async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    // The guest's arguments are libtest's (`--test-threads 1`, filters):
    // passed on untouched, not parsed as ours.
    if command == "wasm-test" {
        return wasm_test::main(rest).await;
    }
    let args = parse_args(rest)?;
    if args.flag("--help") || args.flag("-h") {
        print!("{USAGE}");
        return Ok(());
    }
    match command.as_str() {
        "up" | "serve" => up(args).await,
        "cron" => cron(args).await,
        "migrate" => migrate(args).await,
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// `postgres://host:port` of a connection URL, for `allowed_outbound_hosts`.
pub fn database_address(url: &str) -> anyhow::Result<String> {
    let config: tokio_postgres::Config = url.parse().context(
        "parsing the database URL (the components' Postgres client, like Spin's, takes tokio-postgres options only: sslmode=disable|prefer|require; give a root certificate with --pg-root-cert, not sslrootcert=)",
    )?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => bail!("the database URL needs a TCP host (Spin does not support Unix sockets)"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    Ok(format!("postgres://{host}:{port}"))
}

fn given_database_url(args: &Args, vars: &BTreeMap<String, String>) -> Option<String> {
    args.one("--database-url")
        .map(str::to_string)
        .or_else(|| vars.get("database_url").cloned())
        .or_else(|| std::env::var(env_key("database_url")).ok())
}

async fn up(args: Args) -> anyhow::Result<()> {
    args.check_known(&[
        "--manifest",
        "--listen",
        "--database-url",
        "--variable",
        "--migrations",
        "--state-dir",
        "--component-id",
        "--pg-root-cert",
    ])?;
    let manifest = PathBuf::from(args.one("--manifest").unwrap_or("spin.toml"));
    let listen: SocketAddr = args
        .one("--listen")
        .map(str::to_string)
        .or_else(|| std::env::var("SPIN_HTTP_LISTEN_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:3000".to_string())
        .parse()
        .context("--listen must be ip:port")?;
    let migrations = args
        .one("--migrations")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir(&manifest).join("migrations"));
    let mut vars = args.variables()?;

    let mut cluster = None;
    let database_url = match given_database_url(&args, &vars) {
        Some(url) => url,
        None => {
            eprintln!("No database URL given: creating a throwaway PostgreSQL cluster...");
            let state = args.one("--state-dir").map(PathBuf::from);
            let c = tokio::task::spawn_blocking(move || PgCluster::start_new(state.as_deref()))
                .await??;
            let admin = c.url("postgres");
            let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
            let conn_task = tokio::spawn(conn);
            client.batch_execute("create database outpost").await?;
            drop(client);
            conn_task.await.ok();
            let url = c.url("outpost");
            eprintln!("PostgreSQL is running at {url} (deleted on exit)");
            cluster = Some(c);
            url
        }
    };
    vars.insert("database_url".into(), database_url.clone());
    let has = |vars: &BTreeMap<String, String>, k: &str| {
        vars.contains_key(k) || std::env::var(env_key(k)).is_ok()
    };
    if !has(&vars, "database_address") {
        vars.insert("database_address".into(), database_address(&database_url)?);
    }
    if !has(&vars, "job_secret") {
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        eprintln!("job_secret was not given: generated one for this run: {secret}");
        vars.insert("job_secret".into(), secret);
    }
    if !args.flag("--no-migrate") && migrations.is_dir() {
        let report =
            crate::migrate::run_with_root_cert(&database_url, &migrations, pg_root_cert(&args))
                .await?;
        eprintln!("Migrations: {}", report.summary());
    }

    let mut config = HostConfig::new(&manifest);
    config.variables = VariableSources {
        overrides: vars,
        env: None,
    };
    config.strict_single_jsonb = !args.flag("--no-strict-jsonb");
    config.cron_scheduler = !args.flag("--no-cron");
    config.components = args.options.get("--component-id").cloned();
    config.pg_root_cert = pg_root_cert(&args).map(Path::to_path_buf);
    let app = match App::load(config).await {
        Ok(app) => app,
        // Spin's cron trigger prints its refusal, then `spin up` this line.
        Err(e @ crate::HostError::UnsupportedHostRequirements { .. }) => {
            bail!("{e}\n{}", crate::requirements::TRIGGER_EXITED)
        }
        Err(e) => return Err(e.into()),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let server = app.serve(listener).await?;
    println!("Outpost is serving on {}", server.url());
    for id in app.component_ids() {
        println!("  component {id}");
    }
    tokio::signal::ctrl_c().await?;
    eprintln!("Stopping...");
    server.stop().await;
    app.close();
    drop(app);
    if let Some(c) = cluster {
        tokio::task::spawn_blocking(move || drop(c)).await?;
    }
    Ok(())
}

fn pg_root_cert(args: &Args) -> Option<&Path> {
    args.one("--pg-root-cert").map(Path::new)
}

fn manifest_dir(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

async fn cron(args: Args) -> anyhow::Result<()> {
    args.check_known(&[
        "--manifest",
        "--database-url",
        "--variable",
        "--pg-root-cert",
    ])?;
    let Some(component) = args.positional.first() else {
        bail!("cron needs a component ID\n\n{USAGE}");
    };
    let manifest = PathBuf::from(args.one("--manifest").unwrap_or("spin.toml"));
    let mut vars = args.variables()?;
    if let Some(url) = args.one("--database-url") {
        vars.insert("database_url".into(), url.to_string());
        if !vars.contains_key("database_address") {
            vars.insert("database_address".into(), database_address(url)?);
        }
    }
    let mut config = HostConfig::new(&manifest);
    config.variables = VariableSources {
        overrides: vars,
        env: None,
    };
    config.pg_root_cert = pg_root_cert(&args).map(Path::to_path_buf);
    let app = App::load(config).await?;
    let result = app.fire_cron(component).await;
    app.close();
    match result {
        Ok(()) => {
            println!("{component}: ok");
            Ok(())
        }
        Err(e) => bail!("{component}: {e}"),
    }
}

async fn migrate(args: Args) -> anyhow::Result<()> {
    args.check_known(&["--database-url", "--dir", "--pg-root-cert"])?;
    let url = args
        .one("--database-url")
        .map(str::to_string)
        .or_else(|| std::env::var(env_key("database_url")).ok())
        .context("migrate needs --database-url")?;
    let dir = PathBuf::from(args.one("--dir").unwrap_or("migrations"));
    let report = crate::migrate::run_with_root_cert(&url, &dir, pg_root_cert(&args)).await?;
    println!("{}", report.summary());
    Ok(())
}

/// The binary's `main`: runs [`run`] on a multi-threaded runtime and turns an
/// error into a message and exit code 1.
pub fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

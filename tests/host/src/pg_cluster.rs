//! A throwaway PostgreSQL cluster built from the machine's own binaries
//! (`initdb` and `postgres` found on `PATH` or under
//! `/usr/lib/postgresql/*/bin`): TCP on 127.0.0.1 with a free port, trust
//! authentication, its socket folder inside its own temp folder. When this
//! process runs as root the server runs as the `postgres` system user (or
//! `nobody`), since PostgreSQL refuses to run as root.
//!
//! The server is started under a small `sh` watchdog that stops it (and
//! removes the folder) when this process goes away, even without `Drop`
//! running (a process-wide static, a killed test binary): no server is
//! left behind.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::HostError;

/// A private PostgreSQL cluster. Dropping it stops the server and deletes
/// its files.
pub struct PgCluster {
    root: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    watchdog: Option<Child>,
}

fn err(message: impl Into<String>) -> HostError {
    HostError::Cluster(message.into())
}

impl PgCluster {
    /// Creates (initdb) and starts a new cluster in a fresh folder under
    /// `parent` (the system temp folder if `None`).
    pub fn start_new(parent: Option<&Path>) -> Result<Self, HostError> {
        let bin = find_bin_dir()?;
        let parent = parent
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        fs::create_dir_all(&parent)?;
        let root = parent.join(format!("outpost-pg-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&root)?;
        let data = root.join("data");
        let run_as = if effective_uid()? == 0 {
            Some(unprivileged_user()?)
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
        }
        let mut cluster = Self {
            root,
            data,
            bin,
            port: free_port()?,
            run_as,
            watchdog: None,
        };
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&cluster.data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("running initdb: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        cluster.start()?;
        Ok(cluster)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A superuser URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// `postgres://127.0.0.1:<port>`: what `allowed_outbound_hosts` needs.
    pub fn address(&self) -> String {
        format!("postgres://127.0.0.1:{}", self.port)
    }

    /// Turns TLS on: writes the server's certificate chain and key (PEM)
    /// into the data folder, owned by the server's user with the modes
    /// PostgreSQL insists on, sets `ssl = on` and restarts the server.
    pub fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) -> Result<(), HostError> {
        use std::os::unix::fs::PermissionsExt;
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = self.data.join(name);
            fs::write(&path, text)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            }
        }
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
        )?;
        self.restart()
    }

    /// The data folder (`pg_hba.conf`, `postgresql.conf`, ...).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.data.join("postmaster.pid").exists()
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c.env_remove("PGDATA").env("LC_ALL", "C");
        c
    }

    /// Starts the server (same port as before) and waits until it accepts
    /// connections.
    pub fn start(&mut self) -> Result<(), HostError> {
        if self.is_running() {
            return Ok(());
        }
        self.reap_watchdog();
        let log = self.root.join("postgres.log");
        let script = format!(
            r#"
"$1/postgres" -D "$2" -p {port} -k "$3" -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500 -c shared_buffers=64MB >>"$4" 2>&1 &
pg=$!
trap 'kill -INT $pg 2>/dev/null' TERM INT
while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 0.2; done
if kill -0 $pg 2>/dev/null; then
  kill -INT $pg 2>/dev/null
  wait $pg
  [ -d /proc/{parent} ] || rm -rf "$5"
fi
"#,
            port = self.port,
            parent = std::process::id(),
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&self.bin)
            .arg(&self.data)
            .arg(&self.root)
            .arg(&log)
            .arg(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        // Its own process group, so a terminal's Ctrl-C reaches us first and
        // we stop the server in order.
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| err(format!("starting postgres: {e}")))?;
        self.watchdog = Some(child);
        self.wait_ready(&log)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), HostError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid_file = self.data.join("postmaster.pid");
        loop {
            if let Ok(text) = fs::read_to_string(&pid_file)
                && text.lines().any(|l| l.trim() == "ready")
            {
                return Ok(());
            }
            if let Some(child) = &mut self.watchdog
                && let Ok(Some(_)) = child.try_wait()
            {
                return Err(err(format!(
                    "postgres exited during start-up: {}",
                    fs::read_to_string(log).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "postgres did not become ready in 30 s: {}",
                    fs::read_to_string(log).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub fn stop(&mut self) -> Result<(), HostError> {
        if self.is_running() {
            let out = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", "30", "stop"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| err(format!("running pg_ctl stop: {e}")))?;
            if !out.status.success() && self.is_running() {
                return Err(err(format!(
                    "pg_ctl stop failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        self.reap_watchdog();
        Ok(())
    }

    /// Stops and starts the server again on the same port.
    pub fn restart(&mut self) -> Result<(), HostError> {
        self.stop()?;
        self.start()
    }

    fn reap_watchdog(&mut self) {
        if let Some(mut child) = self.watchdog.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        // Ask the watchdog to stop the server, then give up waiting.
                        Command::new("kill")
                            .arg("-TERM")
                            .arg(child.id().to_string())
                            .status()
                            .ok();
                        child.wait().ok();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("outpost-host: {e}");
        }
        fs::remove_dir_all(&self.root).ok();
    }
}

/// The effective user ID of this process (the owner of `/proc/self`).
fn effective_uid() -> Result<u32, HostError> {
    match fs::metadata("/proc/self") {
        Ok(m) => Ok(m.uid()),
        Err(_) => {
            let out = Command::new("id")
                .arg("-u")
                .output()
                .map_err(|e| err(format!("running id -u: {e}")))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|e| err(format!("parsing id -u: {e}")))
        }
    }
}

/// `postgres` from `/etc/passwd`, else `nobody`.
fn unprivileged_user() -> Result<(u32, u32), HostError> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[0] == name {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    find("postgres").or_else(|| find("nobody")).ok_or_else(|| {
        err("running as root needs a `postgres` (or `nobody`) system user to run the server as")
    })
}

/// The folder holding `initdb`, `postgres` and `pg_ctl`.
fn find_bin_dir() -> Result<PathBuf, HostError> {
    let has_all = |dir: &Path| {
        ["initdb", "postgres", "pg_ctl"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Ok(dir) = std::env::var("OUTPOST_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_all(&dir) {
            return Ok(dir);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if initdb.is_file() {
                // Follow symlinks (Debian's /usr/bin wrappers are not the real thing).
                let real = fs::canonicalize(&initdb).unwrap_or(initdb);
                if let Some(real_dir) = real.parent()
                    && has_all(real_dir)
                {
                    return Ok(real_dir.to_path_buf());
                }
            }
        }
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .into_iter()
        .rev()
        .find(|d| has_all(d))
        .ok_or_else(|| {
            err("no PostgreSQL server binaries found (initdb, postgres, pg_ctl on PATH or under /usr/lib/postgresql/*/bin; set OUTPOST_PG_BIN); install them, e.g. `apt-get install postgresql`")
        })
}

fn free_port() -> Result<u16, HostError> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Writes a line to stderr, ignoring failures (used for progress messages).
pub fn note(message: &str) {
    let mut e = std::io::stderr();
    writeln!(e, "{message}").ok();
}

//! A real S3-compatible server for tests: `s3s-fs` (installed by
//! `scripts/setup`), serving a temporary directory on a free loopback port
//! with SigV4 authentication on and the seeds' buckets created.
//!
//! It is a real server on purpose: signatures, presigned URLs, multipart
//! uploads and HEAD are checked by an S3 implementation, not by a fake
//! written alongside the client it would be testing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::KitError;

/// The buckets the seeds name (Trove's `media`, the studio's three) and
/// the pipeline's `artifacts` (its `pipeline_artifact_bucket` default).
pub const BUCKETS: [&str; 5] = [
    "media",
    "generations",
    "lora-training-images",
    "lora-models",
    "artifacts",
];

/// The region the server is addressed with (s3s-fs accepts any).
pub const REGION: &str = "us-east-1";

/// Where `scripts/setup` installs `s3s-fs`, unless `OUTPOST_S3S_FS` names
/// the binary: `$OUTPOST_TOOLS_DIR/bin/s3s-fs`, by default
/// `$HOME/.cache/outpost/tools/bin/s3s-fs`.
pub fn s3s_fs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OUTPOST_S3S_FS") {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("OUTPOST_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/outpost/tools")
        });
    tools.join("bin/s3s-fs")
}

/// A running `s3s-fs`; killed and its directory removed when dropped.
pub struct S3Server {
    // Behind a lock so a test can stop the store while a run borrows it.
    child: Mutex<Option<Child>>,
    addr: SocketAddr,
    root: PathBuf,
    access_key: String,
    secret_key: String,
}

impl S3Server {
    /// Starts a server on a free port over a fresh temporary directory
    /// holding the [`BUCKETS`], with a random access key and secret.
    pub async fn start() -> Result<Self, KitError> {
        let root = std::env::temp_dir().join(format!("outpost-s3-{}", uuid::Uuid::new_v4()));
        for bucket in BUCKETS {
            // s3s-fs serves each directory of its root as a bucket.
            std::fs::create_dir_all(root.join(bucket))?;
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let server = S3Server {
            child: Mutex::new(None),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            root,
            access_key: format!("AK{}", uuid::Uuid::new_v4().simple()),
            secret_key: format!("SK{}", uuid::Uuid::new_v4().simple()),
        };
        server.restart().await?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`, the endpoint (path-style).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The access key the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The file holding `key` of `bucket` (s3s-fs stores objects as files).
    pub fn object_file(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// Every object key of `bucket` (files under its directory, s3s-fs's
    /// own bookkeeping files left out), sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    let rel = rel.to_string_lossy().into_owned();
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    if !name.is_some_and(|n| n.starts_with('.')) {
                        out.push(rel);
                    }
                }
            }
        }
        let base = self.root.join(bucket);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    }

    /// Stops the server (its data stays), as an outage would.
    pub fn stop(&self) {
        let taken = self.child.lock().ok().and_then(|mut child| child.take());
        if let Some(mut child) = taken {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts the server again on the same port over the same data.
    pub async fn restart(&self) -> Result<(), KitError> {
        self.stop();
        let binary = s3s_fs_binary();
        if !binary.exists() {
            return Err(KitError::NotBuilt(format!(
                "{} is missing: run scripts/setup (it installs s3s-fs)",
                binary.display()
            )));
        }
        let child = Command::new(&binary)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.addr.port().to_string())
            .arg("--access-key")
            .arg(&self.access_key)
            .arg("--secret-key")
            .arg(&self.secret_key)
            .arg(&self.root)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        if let Ok(mut slot) = self.child.lock() {
            *slot = Some(child);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .lock()
                .ok()
                .and_then(|mut slot| slot.as_mut().and_then(|c| c.try_wait().ok().flatten()));
            if let Some(status) = exited {
                return Err(KitError::NotBuilt(format!(
                    "s3s-fs exited at start: {status}"
                )));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(KitError::NotBuilt(format!(
                    "s3s-fs did not listen on {} within 20 s",
                    self.addr
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        std::fs::remove_dir_all(&self.root).ok();
    }
}

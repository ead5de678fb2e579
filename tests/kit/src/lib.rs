//! The end-to-end test kit: a process-wide test PostgreSQL (the cluster in
//! `OUTPOST_TEST_DATABASE_URL`, or a private throwaway cluster), a migrated
//! template database built once per set of migrations, a fresh database per
//! test cloned from it, a host per test serving on a random loopback port,
//! and loopback fake servers for the outside platforms.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use outpost_test_kit::{TestApp, TestDb, product_manifest};
//! let db = TestDb::new().await?;
//! let app = TestApp::builder(product_manifest()).database(&db).start().await?;
//! let body = reqwest::get(format!("{}/status", app.url())).await?.text().await?;
//! app.fire_cron("maintenance").await?;
//! app.stop().await;
//! # Ok(()) }
//! ```

mod db;
mod fake;
pub mod fakes;
mod s3;
mod supabase;

use std::collections::BTreeMap;
use std::path::PathBuf;

use outpost_host::app::{App, HostConfig};
use outpost_host::cron::CronFailure;
use outpost_host::server::RunningServer;
use outpost_host::variables::VariableSources;

pub use db::{TestDb, TestPostgres, test_postgres};
pub use fake::{FakeServer, RecordedRequest, ResponseFuture};
pub use s3::{BUCKETS, REGION, S3Server, s3s_fs_binary};
pub use supabase::{create_user, supabase_access_token};

/// Errors of the kit.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The host refused to start (the message is the host's start-up error).
    #[error(transparent)]
    Host(#[from] outpost_host::HostError),
    /// Postgres trouble while preparing databases.
    #[error("test database: {0}")]
    Database(String),
    /// A `.wasm` the test needs has not been built.
    #[error("{0}")]
    NotBuilt(String),
    /// Socket trouble.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A job run over HTTP was not answered 200 (status and body).
    #[error("job run answered {0}")]
    Job(String),
}

/// [`TestApp::run_job`] against the app at `base_url`, for tasks that hold
/// only its address.
pub async fn run_job(
    base_url: &str,
    job: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value, KitError> {
    let job_error = |e: reqwest::Error| KitError::Job(e.to_string());
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(job_error)?
        .post(format!("{base_url}/jobs/{job}"))
        .bearer_auth(TestApp::JOB_SECRET);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(job_error)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(job_error)?;
    if status != 200 {
        return Err(KitError::Job(format!("{status}: {text}")));
    }
    serde_json::from_str(&text)
        .map_err(|e| KitError::Job(format!("200 but not JSON ({e}): {text}")))
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The product's `spin.toml`.
pub fn product_manifest() -> PathBuf {
    workspace_root().join("spin.toml")
}

/// The probe component's test manifest.
pub fn probe_manifest() -> PathBuf {
    workspace_root().join("tests/host/fixtures/probe-spin.toml")
}

/// The migrations folder.
pub fn migrations_dir() -> PathBuf {
    workspace_root().join("migrations")
}

/// `target/wasm32-wasip2/release/<name>.wasm`.
pub fn wasm_path(crate_name: &str) -> PathBuf {
    workspace_root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Fails with the build command when a component has not been built.
pub fn require_wasm(crate_name: &str) -> Result<PathBuf, KitError> {
    let path = wasm_path(crate_name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(KitError::NotBuilt(format!(
            "{} is missing: build it first with `cargo build --target wasm32-wasip2 --release -p {crate_name}`",
            path.display()
        )))
    }
}

/// Builds a [`TestApp`].
pub struct TestAppBuilder {
    manifest: PathBuf,
    variables: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    strict_single_jsonb: bool,
    database: Option<(String, String)>,
    components: Option<Vec<String>>,
    cron_scheduler: bool,
}

impl TestAppBuilder {
    /// Points `database_url` and `database_address` at `db`.
    pub fn database(mut self, db: &TestDb) -> Self {
        self.database = Some((db.url(), db.address()));
        self
    }

    /// Sets an application variable (like `spin up --variable`).
    pub fn variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// Sets several application variables.
    pub fn variables<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self.variables.insert(k.into(), v.into());
        }
        self
    }

    /// Adds an environment variable the host's env provider sees (e.g.
    /// `SPIN_VARIABLE_GREETING`). The process environment is not used, so
    /// parallel tests do not interfere.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Turns the one-row-one-jsonb rule on or off (on by default).
    pub fn strict_single_jsonb(mut self, on: bool) -> Self {
        self.strict_single_jsonb = on;
        self
    }

    /// Runs the manifest's cron schedules while serving (off by default:
    /// tests fire cron components with [`TestApp::fire_cron`]).
    pub fn cron_scheduler(mut self, on: bool) -> Self {
        self.cron_scheduler = on;
        self
    }

    /// Loads only these components (like `spin up -c`), so a test needs only
    /// their `.wasm` files built.
    pub fn components(mut self, ids: &[&str]) -> Self {
        self.components = Some(ids.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Loads the application and serves it on `127.0.0.1:0`.
    pub async fn start(self) -> Result<TestApp, KitError> {
        let mut overrides = self.variables;
        if let Some((url, address)) = self.database {
            overrides.entry("database_url".into()).or_insert(url);
            overrides
                .entry("database_address".into())
                .or_insert(address);
        }
        overrides
            .entry("job_secret".into())
            .or_insert_with(|| TestApp::JOB_SECRET.into());
        let mut config = HostConfig::new(&self.manifest);
        config.variables = VariableSources {
            overrides,
            env: Some(self.env),
        };
        config.strict_single_jsonb = self.strict_single_jsonb;
        config.cron_scheduler = self.cron_scheduler;
        config.components = self.components;
        let app = App::load(config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = app.serve(listener).await?;
        let url = server.url();
        Ok(TestApp {
            app,
            server: Some(server),
            url,
        })
    }
}

/// A host serving one application for one test.
pub struct TestApp {
    app: App,
    server: Option<RunningServer>,
    url: String,
}

impl TestApp {
    /// The `job_secret` test apps get unless a test sets one.
    pub const JOB_SECRET: &'static str = "test-job-secret";

    /// A builder for `manifest`.
    pub fn builder(manifest: impl Into<PathBuf>) -> TestAppBuilder {
        TestAppBuilder {
            manifest: manifest.into(),
            variables: BTreeMap::new(),
            env: BTreeMap::new(),
            strict_single_jsonb: true,
            database: None,
            components: None,
            cron_scheduler: false,
        }
    }

    /// Starts `manifest` over `db` with extra variables.
    pub async fn start<K: Into<String>, V: Into<String>>(
        manifest: impl Into<PathBuf>,
        db: &TestDb,
        variables: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, KitError> {
        Self::builder(manifest)
            .database(db)
            .variables(variables)
            .start()
            .await
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The loaded application (variables, instantiation timing, ...).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Runs a job as its scheduler does: `POST /jobs/{job}` with the job
    /// secret and `body` (JSON); the answer (`{"report": ...}`).
    pub async fn run_job(
        &self,
        job: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, KitError> {
        run_job(&self.url, job, body).await
    }

    /// Fires a cron component now.
    pub async fn fire_cron(&self, component: &str) -> Result<(), CronFailure> {
        self.app.fire_cron(component).await
    }

    /// Stops serving, waits for open connections, closes the Postgres pools.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.app.close();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.app.close();
    }
}

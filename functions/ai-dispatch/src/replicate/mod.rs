//! Replicate's work in one ai-dispatch run, in the order that loses the
//! least: stored webhooks first (their output files are deleted after an
//! hour), then polls of predictions and trainings whose webhook never came, then new
//! generations, then the refund sweep.
//!
//! - [`apply`]: webhooks and polls -> outputs copied into the
//!   `generations` bucket -> `apply_replicate_prediction` (monotonic:
//!   repeats and late events change nothing).
//! - [`dispatch`]: pending generations -> a pool token and a slot of the
//!   shared 600-per-minute budget -> `POST /v1/.../predictions` with our
//!   webhook -> the prediction id stored, status `processing`.
//! - [`train`]: LoRA trainings started from the owner's zipped images.
//! - [`api`]: the requests and the meaning of Replicate's answers.

pub mod api;
pub mod apply;
pub mod copy;
pub mod dispatch;
pub mod sql;
pub mod train;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use shared::db::Database;
use shared::object_store::{ObjectStore, StoreConfig};
use shared::outbound::{OutboundRequest, Reply, SendFailure};
use shared::{Error, config};
use spin_sdk::pg4::ParameterValue;

/// Replicate's part of a run (`{"replicate": {...}}` in the job body).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Generations claimed at once (1..=50).
    pub batch_size: u32,
    /// The lease of a claimed generation or webhook, seconds (10..=3600).
    pub lease_seconds: u32,
    /// Timeout of a call to Replicate, milliseconds (100..=120000).
    pub call_timeout_ms: u64,
    /// The longest copy of one output file, seconds (1..=900).
    pub transfer_seconds: u64,
    /// Stop starting work after this many seconds (1..=600).
    pub run_seconds: u64,
    /// Stop after dispatching this many generations.
    pub max_generations: Option<u32>,
    /// Poll a prediction with no news for this long, seconds (0..=86400).
    pub poll_after_seconds: u32,
    /// Which parts run: any of `webhooks`, `polls`, `dispatch`,
    /// `trainings`, `refunds` (all when absent).
    pub only: Option<Vec<String>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 8,
            lease_seconds: 120,
            call_timeout_ms: 30_000,
            transfer_seconds: 300,
            // A cron run every minute: stop starting work before the next.
            run_seconds: 40,
            max_generations: None,
            poll_after_seconds: 300,
            only: None,
        }
    }
}

impl Settings {
    /// The settings with every number in its range.
    pub fn clamped(mut self) -> Self {
        self.batch_size = self.batch_size.clamp(1, 50);
        self.lease_seconds = self.lease_seconds.clamp(10, 3600);
        self.call_timeout_ms = self.call_timeout_ms.clamp(100, 120_000);
        self.transfer_seconds = self.transfer_seconds.clamp(1, 900);
        self.run_seconds = self.run_seconds.clamp(1, 600);
        self.poll_after_seconds = self.poll_after_seconds.min(86_400);
        self
    }

    fn runs(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|parts| parts.iter().any(|p| p == part))
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

/// What a run needs from its configuration.
pub struct Context<'a> {
    /// The database.
    pub db: &'a Database,
    /// The settings.
    pub settings: &'a Settings,
    /// Replicate's API base URL, no trailing slash.
    pub api_url: String,
    /// Our `/webhooks/replicate` URL, when Replicate can reach us.
    pub webhook_url: Option<String>,
    /// The object store (None until a webhook needs it).
    pub store: Option<ObjectStore>,
    /// Store settings, for the public URLs of copies.
    pub store_config: Option<StoreConfig>,
    /// This run's worker id.
    pub worker_id: String,
    /// When the run started.
    pub started: Instant,
}

impl Context<'_> {
    /// Whether the run may start more work.
    pub fn time_left(&self) -> bool {
        self.started.elapsed() < Duration::from_secs(self.settings.run_seconds)
    }

    /// Writes one `api_logs` row.
    pub fn log_call(&self, call: &Value) -> Result<(), Error> {
        self.db
            .call_json(&sql::RECORD_PROVIDER_CALL, &[jsonb(call)])?;
        Ok(())
    }

    /// Sends one request to Replicate with `token`; answers the reply (or
    /// why there is none) and the `api_logs` row describing the call.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
        user_id: Option<&str>,
        model: Option<&str>,
    ) -> (Result<Reply, SendFailure>, Value) {
        let url = format!("{}{path}", self.api_url);
        let mut request = OutboundRequest::new(method, &url)
            .bearer(token)
            .timeout(self.settings.timeout());
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let reply = request.send();
        let call = json!({
            "provider": "replicate",
            "method": method,
            "path": path,
            "status_code": reply.as_ref().ok().map(|r| r.status),
            "duration_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "user_id": user_id,
            "model": model,
            "error": match &reply {
                Ok(r) if !r.is_success() => Some(format!("HTTP {}", r.status)),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            },
        });
        (reply, call)
    }
}

/// A jsonb parameter.
pub fn jsonb(value: &Value) -> ParameterValue {
    ParameterValue::Jsonb(value.to_string().into_bytes())
}

/// Runs Replicate's work once; answers what happened, by part.
pub fn run(db: &Database, settings: &Settings) -> Result<Value, Error> {
    let worker_id = format!(
        "ai-dispatch/replicate/{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let store_config = StoreConfig::from_variables().ok();
    let store = store_config
        .clone()
        .map(|c| ObjectStore::new(c, settings.timeout()));
    let ctx = Context {
        db,
        settings,
        api_url: config::base_url("replicate_api_url")?,
        webhook_url: config::optional("replicate_webhook_url"),
        store,
        store_config,
        worker_id,
        started: Instant::now(),
    };
    let mut report = json!({ "worker_id": ctx.worker_id });
    if settings.runs("webhooks") {
        report["webhooks"] = counts(apply::run_webhooks(&ctx)?);
    }
    if settings.runs("polls") {
        report["polls"] = counts(apply::run_polls(&ctx)?);
        report["training_polls"] = counts(apply::run_training_polls(&ctx)?);
    }
    if settings.runs("dispatch") {
        report["dispatch"] = counts(dispatch::run(&ctx)?);
    }
    if settings.runs("trainings") {
        report["trainings"] = counts(train::run(&ctx)?);
    }
    if settings.runs("refunds") {
        report["refunds"] = db.call_json(&sql::REFUND_FAILED_CHARGES, &[])?;
    }
    report["seconds"] = json!(ctx.started.elapsed().as_secs_f64());
    Ok(report)
}

fn counts(counts: BTreeMap<&'static str, u32>) -> Value {
    json!(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_clamp_and_refuse_unknown_fields() {
        let s: Settings =
            serde_json::from_str(r#"{"batch_size": 500, "call_timeout_ms": 1}"#).unwrap();
        let s = s.clamped();
        assert_eq!((s.batch_size, s.call_timeout_ms), (50, 100));
        assert!(serde_json::from_str::<Settings>(r#"{"batch": 1}"#).is_err());
        let only: Settings = serde_json::from_str(r#"{"only": ["polls"]}"#).unwrap();
        assert!(only.runs("polls") && !only.runs("dispatch"));
        assert!(Settings::default().runs("dispatch"));
    }
}

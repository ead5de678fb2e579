//! `ai-dispatch`: sends users' AI work to the providers and applies what
//! comes back.
//!
//! - [`replicate`]: generations (seed 004) become Replicate predictions
//!   through the token pool and the shared 600-per-minute budget; the
//!   webhooks the receiver stored are applied (outputs copied into the
//!   `generations` bucket, cost, credits, notifications); predictions
//!   whose webhook never came are polled.
//! - Venice images (seed 000 `ai_jobs`) run after Replicate's work in the
//!   same run.
//!
//! Triggers: cron, and `POST /jobs/ai-dispatch` with `Authorization: Bearer
//! <job_secret>` and an optional JSON body of settings (`{"replicate":
//! {...}}`, see [`replicate::Settings`]). Every run writes its
//! `worker_heartbeats` row. Variables: `database_url`, `job_secret`,
//! `replicate_api_url`, `replicate_webhook_url`, the store's
//! `media_store_*`, and Venice's.

pub mod replicate;
pub mod venice;

use serde::Deserialize;
use serde_json::{Value, json};
use shared::db::Database;
use shared::jobs::{self, Trigger};
use shared::{Error, config, response};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

/// The worker id of this job in `worker_heartbeats`.
const WORKER: &str = "ai-dispatch";

/// The settings of one run, per provider (`POST /jobs/ai-dispatch` body).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// Replicate's part.
    pub replicate: replicate::Settings,
    /// Venice's part.
    pub venice: venice::Settings,
}

impl RunSettings {
    /// Settings from a job request body (empty: defaults).
    pub fn from_body(body: &[u8]) -> Result<Self, Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(RunSettings::default());
        }
        let mut settings: RunSettings = serde_json::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("job settings: {e}")))?;
        settings.replicate = settings.replicate.clamped();
        settings.venice = settings.venice.clamped();
        Ok(settings)
    }
}

#[http_component]
fn handle(request: Request) -> Response {
    response::from_result(on_http(&request))
}

fn on_http(request: &Request) -> Result<Response, Error> {
    if *request.method() != Method::Post {
        return Err(Error::MethodNotAllowed(request.method().to_string()));
    }
    jobs::authorize(request, &config::required("job_secret")?)?;
    let settings = RunSettings::from_body(request.body())?;
    let report = jobs::run(WORKER, Trigger::Http, |db| work(db, &settings))?;
    Ok(response::json(
        200,
        &json!({ "job": WORKER, "report": report }),
    ))
}

/// One run: Replicate's work first (its output files expire within the
/// hour), then the other providers'.
fn work(db: &Database, settings: &RunSettings) -> Result<Value, Error> {
    let mut report = json!({});
    report["replicate"] = replicate::run(db, &settings.replicate)?;
    report["venice"] = venice::run(db, &settings.venice)?;
    Ok(report)
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), |db| {
        work(db, &RunSettings::default())
    })
    .map(|_| ())
    .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

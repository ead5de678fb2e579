//! `schedule-claim`: claims due scheduled posts with a short lease and
//! publishes each with its fencing token in this instance (the
//! `publishing` library), renewing the leases it holds while it works;
//! expired leases are taken again by the claim itself. Every run writes its
//! `worker_heartbeats` row. No service chaining: this component is served
//! by the cron trigger, which refuses it (`../shared/SPIN.md` §0).
//!
//! Triggers: cron every minute, and `POST /jobs/schedule-claim` with
//! `Authorization: Bearer <job_secret>` and an optional JSON body of
//! settings (`batch_size`, `lease_seconds`, `call_timeout_ms`,
//! `run_seconds`, `max_posts`, `metrics`; see `claim::Settings`).
//! Variables: `database_url`, `job_secret`, and publishing's:
//! `bluesky_pds_url`, `bluesky_appview_url`, `x_api_url`,
//! `linkedin_api_url`, `media_store_*` (`shared::object_store`), `token_encryption_key`.

pub mod claim;
pub mod sql;

use serde_json::json;
use shared::jobs::{self, Trigger};
use shared::{Error, config, response};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

use crate::claim::Settings;

/// The worker id of this job in `worker_heartbeats`.
const WORKER: &str = "schedule-claim";

#[http_component]
fn handle(request: Request) -> Response {
    response::from_result(on_http(&request))
}

fn on_http(request: &Request) -> Result<Response, Error> {
    if *request.method() != Method::Post {
        return Err(Error::MethodNotAllowed(request.method().to_string()));
    }
    jobs::authorize(request, &config::required("job_secret")?)?;
    let settings = Settings::from_body(request.body())?;
    let report = jobs::run(WORKER, Trigger::Http, |db| claim::run(db, &settings))?;
    Ok(response::json(
        200,
        &json!({ "job": WORKER, "report": report }),
    ))
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), |db| {
        claim::run(db, &Settings::default())
    })
    .map(|_| ())
    .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

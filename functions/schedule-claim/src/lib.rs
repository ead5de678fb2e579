//! `schedule-claim`: claims due scheduled posts with a lease and hands each
//! to `publish` (service chaining, `http://publish.spin.internal`) with its
//! fencing token; expired leases are taken again by the claim itself.
//! Every run writes its `worker_heartbeats` row.
//!
//! Triggers: cron every minute, and `POST /jobs/schedule-claim` with
//! `Authorization: Bearer <job_secret>` and an optional JSON body of
//! settings (`batch_size`, `lease_seconds`, `call_timeout_ms`,
//! `run_seconds`, `max_posts`, `metrics`; see `claim::Settings`).
//! Variables: `database_url`, `job_secret`.

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

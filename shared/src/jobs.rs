//! Job components: each answers the cron trigger and `POST /jobs/{name}`
//! (bearer secret), so hosts without the cron plugin can drive them; every
//! run writes the component's `worker_heartbeats` row, whatever its outcome.

use serde_json::{Value, json};
use spin_sdk::http::{Method, Request, Response};
use subtle::ConstantTimeEq;

use crate::config;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::response;
use crate::sql;

/// What started a job run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The cron trigger fired (Unix seconds of the tick).
    Cron(u64),
    /// `POST /jobs/{name}` with the job secret.
    Http,
}

impl Trigger {
    fn describe(self) -> Value {
        match self {
            Trigger::Cron(timestamp) => json!({ "trigger": "cron", "fired_at": timestamp }),
            Trigger::Http => json!({ "trigger": "http" }),
        }
    }
}

/// Checks `Authorization: Bearer <secret>` in constant time.
pub fn authorize(request: &Request, secret: &str) -> Result<()> {
    let header = request
        .header("authorization")
        .and_then(|value| value.as_str())
        .ok_or_else(|| Error::Unauthorized("missing Authorization header".into()))?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or_else(|| Error::Unauthorized("Authorization must be `Bearer <job secret>`".into()))?;
    if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        Err(Error::Unauthorized("job secret does not match".into()))
    }
}

/// Runs job `worker_id` once with `work`, then records the heartbeat with the
/// outcome. The heartbeat is written even when the work fails, so `/status`
/// shows a worker that runs but errors.
pub fn run<F>(worker_id: &str, trigger: Trigger, work: F) -> Result<Value>
where
    F: FnOnce(&Database) -> Result<Value>,
{
    let db = Database::open(&config::database_url()?)?;
    let outcome = work(&db);
    let mut detail = trigger.describe();
    match &outcome {
        Ok(report) => {
            detail["outcome"] = json!("ok");
            detail["report"] = report.clone();
        }
        Err(error) => {
            detail["outcome"] = json!(error.code());
            detail["error"] = json!(error.to_string());
        }
    }
    let heartbeat: Result<Value> = db.call(
        &sql::RECORD_WORKER_HEARTBEAT,
        &[
            worker_id.to_string().into(),
            spin_sdk::pg4::ParameterValue::Jsonb(detail.to_string().into_bytes()),
        ],
    );
    // The work's own error matters more than a failed heartbeat after it.
    let report = outcome?;
    heartbeat?;
    Ok(report)
}

/// Answers `POST /jobs/{name}`: checks the bearer secret, runs the job, and
/// reports its result as JSON.
pub fn handle_http<F>(request: &Request, worker_id: &str, work: F) -> Response
where
    F: FnOnce(&Database) -> Result<Value>,
{
    response::from_result((|| {
        if *request.method() != Method::Post {
            return Err(Error::MethodNotAllowed(request.method().to_string()));
        }
        authorize(request, &config::required("job_secret")?)?;
        let report = run(worker_id, Trigger::Http, work)?;
        Ok(response::json(
            200,
            &json!({ "job": worker_id, "report": report }),
        ))
    })())
}

/// Declares the component's export of the Spin cron trigger's world
/// (`fermyon:spin-cron@2.0.0`), calling `$handler(timestamp: u64) ->
/// Result<(), String>`. Real Spin runs a crate that exports both this and
/// spin-sdk's HTTP handler on both triggers.
#[macro_export]
macro_rules! cron_component {
    ($handler:ident) => {
        #[doc(hidden)]
        #[allow(missing_docs, clippy::all)]
        mod spin_cron_export {
            $crate::wit_bindgen::generate!({
                world: "spin-cron",
                path: "../../wit/spin-cron.wit",
                runtime_path: "::shared::wit_bindgen::rt",
            });

            struct CronJob;

            impl Guest for CronJob {
                fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
                    super::$handler(metadata.timestamp).map_err(Error::Other)
                }
            }

            export!(CronJob);
        }
    };
}

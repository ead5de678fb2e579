//! `token-rotation`: refreshing oauth tokens and the replicate token pool. Not built yet (no issue filed yet). Both
//! triggers answer honestly: `POST /jobs/token-rotation` gives 501 with a JSON error
//! naming the capability, and a cron tick fails with the same message. Each
//! run still writes the `worker_heartbeats` row (outcome `not_implemented`).

use serde_json::Value;
use shared::Error;
use shared::db::Database;
use shared::jobs::{self, Trigger};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

/// The worker id of this job in `worker_heartbeats`.
const WORKER: &str = "token-rotation";

/// What this component will do, named in its errors.
const CAPABILITY: &str = "Refreshing OAuth tokens and the Replicate token pool";

#[http_component]
fn handle(request: Request) -> Response {
    jobs::handle_http(&request, WORKER, work)
}

fn work(_db: &Database) -> Result<Value, Error> {
    Err(Error::NotImplemented(format!(
        "{CAPABILITY} is not built yet (no issue filed yet)"
    )))
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), work)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

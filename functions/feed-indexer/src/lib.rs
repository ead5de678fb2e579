//! `feed-indexer`: indexing posts into bluesky custom feeds. Not built yet (issue #6). Both
//! triggers answer honestly: `POST /jobs/feed-indexer` gives 501 with a JSON error
//! naming the capability, and a cron tick fails with the same message. Each
//! run still writes the `worker_heartbeats` row (outcome `not_implemented`).

use serde_json::Value;
use shared::Error;
use shared::db::Database;
use shared::jobs::{self, Trigger};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

/// The worker id of this job in `worker_heartbeats`.
const WORKER: &str = "feed-indexer";

/// What this component will do, named in its errors.
const CAPABILITY: &str = "Indexing posts into Bluesky custom feeds";

#[http_component]
fn handle(request: Request) -> Response {
    jobs::handle_http(&request, WORKER, work)
}

fn work(_db: &Database) -> Result<Value, Error> {
    Err(Error::NotImplemented(format!(
        "{CAPABILITY} is not built yet (issue #6)"
    )))
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), work)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

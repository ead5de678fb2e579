//! `maintenance`: what pg_cron does on Supabase, for Postgres without it.
//! Each run (cron, or `POST /jobs/maintenance` with the job secret) calls
//! `run_maintenance()`: refresh the admin stats and public posts views, clean
//! old failed generations, retire old sync logs; then writes its heartbeat.

use serde_json::Value;
use shared::db::Database;
use shared::jobs::{self, Trigger};
use shared::{Error, sql};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

/// The worker id of this job in `worker_heartbeats`.
const WORKER: &str = "maintenance";

#[http_component]
fn handle(request: Request) -> Response {
    jobs::handle_http(&request, WORKER, maintain)
}

fn maintain(db: &Database) -> Result<Value, Error> {
    db.call_json(&sql::RUN_MAINTENANCE, &[WORKER.to_string().into()])
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), maintain)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

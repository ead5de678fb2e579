//! `feed-indexer`: fills `indexed_posts` for every enabled Bluesky custom
//! feed. Each run (cron every 5 minutes, or `POST /jobs/feed-indexer` with
//! the job secret) reads each source author's new posts from the AppView,
//! keeps those matching the feed's rules (`matching.rs`), stores them once
//! per (feed, uri), prunes posts past `feed_retention_days`, logs counts per
//! feed in `feed_index_runs`, and writes its heartbeat (`indexer.rs`).

mod config;
mod indexer;
mod matching;
mod sql;

use serde_json::Value;
use shared::Error;
use shared::db::Database;
use shared::jobs::{self, Trigger};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

/// The worker id of this job in `worker_heartbeats`.
const WORKER: &str = "feed-indexer";

#[http_component]
fn handle(request: Request) -> Response {
    jobs::handle_http(&request, WORKER, work)
}

fn work(db: &Database) -> Result<Value, Error> {
    indexer::run(db, &config::load()?)
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), work)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

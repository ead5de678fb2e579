//! `ingest`: the archive's worker (seed 001, Trove). Every run (the cron
//! trigger each minute, or `POST /jobs/ingest` with the job secret) first
//! turns pending webhooks (`ingested_items`) into archived posts, then
//! polls the connected accounts whose `next_sync_at` is due (Bluesky
//! `getAuthorFeed`, Strava athlete activities, Instagram media; a backfill
//! the first time). Each post lands once in `ingested_posts` (raw platform
//! data) and `posts` (normalized, full-text searchable), each media URL in
//! `media_downloads`, each account sync in `sync_logs`. Rate limits pause a
//! platform instead of failing the work. A run is bounded (items for 15 s,
//! accounts for 30 s, 100 items, 5 accounts) so a tick ends inside its
//! minute; the rest waits for the next one. Every run writes the
//! `worker_heartbeats` row with its report.

mod config;
mod instagram;
mod items;
pub mod parse;
mod run;
mod sql;
mod strava;
mod sync;
mod tokens;

use serde_json::{Value, json};
use shared::Error;
use shared::db::Database;
use shared::jobs::{self, Trigger};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

use crate::config::Config;
use crate::run::{Run, WORKER};

#[http_component]
fn handle(request: Request) -> Response {
    jobs::handle_http(&request, WORKER, work)
}

fn work(db: &Database) -> Result<Value, Error> {
    let config = Config::load()?;
    let run = Run::new(db, &config);
    let items = items::process(&run)?;
    let accounts = sync::process(&run)?;
    Ok(json!({
        "items": items,
        "accounts": accounts,
        "elapsed_ms": u64::try_from(run.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), work)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

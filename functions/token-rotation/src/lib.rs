//! `token-rotation`: keeps OAuth accounts connected. Each run (cron, or
//! `POST /jobs/token-rotation` with the job secret) claims, in batches, the
//! accounts migration 0022 finds due (`claim_token_rotations`: Strava an
//! hour before its 6-hour token ends, X 30 minutes before its 2-hour token,
//! Instagram's 60-day token once a week old, LinkedIn a week before the end
//! through its refresh token or else with a notice to reconnect, and tokens
//! sealed under an older key), handles each through
//! `shared::token_refresh` (one lease per account; new tokens saved, sealed
//! under the current key, in the same call that releases the lease), and
//! reports per platform how many were refreshed, failed transiently or
//! expired. The report is the run's `worker_heartbeats` detail.

mod report;

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use shared::db::Database;
use shared::jobs::{self, Trigger};
use shared::token_cipher::Keyring;
use shared::token_refresh::{self, Apps};
use shared::{Error, config};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

use crate::report::Report;

/// The worker id of this job in `worker_heartbeats` and in leases.
const WORKER: &str = "token-rotation";

/// Accounts claimed per call: small enough that a batch is done long
/// before its lease (`token_refresh::LEASE_SECONDS`) even if every token
/// endpoint took its whole timeout, large enough to keep claims cheap.
const BATCH: i32 = 10;

/// No new batch is claimed after this much of a run (the cron fires every
/// ten minutes; leases of unfinished work run out well before the next).
const RUN_BUDGET: Duration = Duration::from_secs(120);

#[http_component]
fn handle(request: Request) -> Response {
    jobs::handle_http(&request, WORKER, rotate)
}

fn rotate(db: &Database) -> Result<Value, Error> {
    let keys = Keyring::parse(&config::required("token_encryption_key")?)?;
    let apps = Apps::from_variables();
    let started = Instant::now();
    let mut report = Report::default();
    while started.elapsed() < RUN_BUDGET {
        let claims = token_refresh::claim_due(db, WORKER, BATCH, &keys, Utc::now())?;
        if claims.is_empty() {
            break;
        }
        for claim in &claims {
            let rotated = token_refresh::rotate(db, &apps, &keys, claim, Utc::now())?;
            report.add(&claim.platform, &rotated);
        }
    }
    report.current_key_id = keys.current_id().to_string();
    Ok(report.to_json())
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), rotate)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

//! The link checker: fetches artifacts that bots registered by URL, hashes
//! them while streaming (never held whole in memory), and marks each
//! verified (with its size and type) or failed (wrong checksum, too big,
//! gone), retrying transient failures with backoff under a lease.
//!
//! Runs on `POST /jobs/pipeline` (job secret, for a scheduler), on the
//! cron trigger where a deployment adds one, and when the owner reads a run
//! with links still to check (that run's links, for at most 10 s).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::db::Database;
use shared::outbound::{OutboundRequest, SendFailure};
use spin_sdk::pg4::ParameterValue;

use crate::artifacts::Limits;
use crate::sql;

/// The worker id in `worker_heartbeats`.
pub const WORKER: &str = "pipeline";
/// Links claimed per run.
const BATCH: i32 = 8;
/// The lease of a claimed link: longer than one fetch can take.
const LEASE_SECONDS: i32 = 600;
/// Connect, first-byte and between-bytes timeout of a fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest one fetch may take.
const FETCH_DEADLINE: Duration = Duration::from_secs(300);
/// How long a user's read of a run spends checking its links.
pub const ON_READ_BUDGET: Duration = Duration::from_secs(10);
/// Stop claiming after this long (a cron run every minute).
const RUN_FOR: Duration = Duration::from_secs(45);

#[derive(Deserialize)]
struct Claimed {
    id: String,
    url: String,
    checksum: String,
    lease_token: i64,
}

/// How one check ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Verified {
        size: u64,
        content_type: Option<String>,
    },
    Failed(String),
    Retry(String),
}

/// One job run: claims due links of every run and settles each.
pub fn run(db: &Database) -> shared::error::Result<Value> {
    check_links(db, None, RUN_FOR)
}

/// Checks the due links of `run_id` (all runs when `None`), claiming no
/// more after `budget`.
pub fn check_links(
    db: &Database,
    run_id: Option<&str>,
    budget: Duration,
) -> shared::error::Result<Value> {
    let limits = Limits::from_variables().map_err(|e| shared::Error::Config(e.to_string()))?;
    let started = Instant::now();
    let (mut verified, mut failed, mut retried) = (0u32, 0u32, 0u32);
    while started.elapsed() < budget {
        let claimed: Vec<Claimed> = db.call(
            &sql::CLAIM_LINK_CHECKS,
            &[
                WORKER.to_string().into(),
                ParameterValue::Int32(LEASE_SECONDS),
                ParameterValue::Int32(BATCH),
                run_id.map_or(ParameterValue::DbNull, |id| id.to_string().into()),
            ],
        )?;
        if claimed.is_empty() {
            break;
        }
        for item in claimed {
            let outcome = check(&item, limits.max_bytes);
            let (name, detail) = match &outcome {
                Outcome::Verified { size, content_type } => {
                    verified += 1;
                    (
                        "verified",
                        json!({ "file_size": size, "content_type": content_type }),
                    )
                }
                Outcome::Failed(error) => {
                    failed += 1;
                    ("failed", json!({ "error": error }))
                }
                Outcome::Retry(error) => {
                    retried += 1;
                    ("retry", json!({ "error": error }))
                }
            };
            db.call_json(
                &sql::FINISH_LINK_CHECK,
                &[
                    ParameterValue::Uuid(item.id.clone()),
                    ParameterValue::Int64(item.lease_token),
                    name.to_string().into(),
                    ParameterValue::Jsonb(detail.to_string().into_bytes()),
                ],
            )?;
        }
    }
    Ok(json!({ "verified": verified, "failed": failed, "retried": retried }))
}

fn check(item: &Claimed, max_bytes: u64) -> Outcome {
    let mut incoming = match OutboundRequest::get(&item.url)
        .timeout(FETCH_TIMEOUT)
        .open()
    {
        Ok(incoming) => incoming,
        Err(e) => return failure(e),
    };
    match incoming.status {
        200 => {}
        404 | 410 => {
            return Outcome::Failed(format!("HTTP {} from {}", incoming.status, incoming.target));
        }
        status if status >= 500 || status == 429 || status == 408 => {
            return Outcome::Retry(format!("HTTP {status} from {}", incoming.target));
        }
        status => return Outcome::Failed(format!("HTTP {status} from {}", incoming.target)),
    }
    if incoming
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max_bytes)
    {
        return Outcome::Failed(format!("larger than the limit of {max_bytes} bytes"));
    }
    let content_type = incoming.header("content-type").map(str::to_string);
    let deadline = Instant::now() + FETCH_DEADLINE;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    loop {
        match incoming.read_chunk(256 * 1024) {
            Ok(Some(chunk)) => {
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Outcome::Failed(format!("larger than the limit of {max_bytes} bytes"));
                }
                hasher.update(&chunk);
            }
            Ok(None) => break,
            Err(e) => return failure(e),
        }
        if Instant::now() > deadline {
            return Outcome::Retry(format!(
                "{} took longer than {FETCH_DEADLINE:?}",
                incoming.target
            ));
        }
    }
    let computed = hex::encode(hasher.finalize());
    if computed == item.checksum {
        Outcome::Verified { size, content_type }
    } else {
        Outcome::Failed(format!(
            "the file's SHA-256 is {computed}, not the announced {}",
            item.checksum
        ))
    }
}

fn failure(e: SendFailure) -> Outcome {
    if e.is_transient() {
        Outcome::Retry(e.to_string())
    } else {
        Outcome::Failed(e.to_string())
    }
}

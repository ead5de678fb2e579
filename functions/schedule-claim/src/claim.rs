//! One run: claim due posts in small batches (one per account in flight,
//! oldest first) and publish each in this instance with its fencing token
//! (the `publishing` library), until nothing is due or the run's time is
//! up; then one metrics refresh.
//!
//! Why in this instance: a cron-served component may not call another by
//! service chaining (real Spin refuses to start the whole app,
//! `../shared/SPIN.md` §0), and publishing the batch one post after the
//! other is what the hand-over did anyway.
//!
//! Leases: a batch is claimed for one short lease (`lease_seconds`, 20 s
//! by default), and this worker renews every lease it still holds, the
//! post it publishes and those of its batch that wait, at least every
//! third of a lease: between posts and before each outside call. Every
//! platform call is bounded by what is left of the lease (at most
//! `call_timeout`, 10 s by default). So a hung platform ends the attempt
//! before the lease does; a worker that dies stops renewing, and its posts
//! (with their accounts) are claimable again within one lease
//! (`lease_expired` event); its late results are refused by their stale
//! token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use publishing::attempt::{self, PublishRequest};
use publishing::config::Config;
use publishing::lease::{HeldLease, HeldLeases};
use publishing::metrics;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::Error;
use shared::db::Database;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::sql;

/// How a run behaves. The cron trigger uses the defaults; `POST
/// /jobs/schedule-claim` may send any of these as a JSON body.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Posts claimed at once (1..=50).
    pub batch_size: u32,
    /// The lease of a claim and of each renewal, in seconds (5..=900):
    /// how long a dead worker's posts wait before another worker takes them.
    pub lease_seconds: u32,
    /// The longest single platform call, in milliseconds (100..=60000);
    /// 10 s when absent.
    pub call_timeout_ms: Option<u64>,
    /// Stop claiming after this many seconds (1..=300).
    pub run_seconds: u64,
    /// Stop after this many posts.
    pub max_posts: Option<u32>,
    /// Refresh Bluesky metrics at the end.
    pub metrics: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 5,
            lease_seconds: attempt::DEFAULT_LEASE_SECONDS,
            call_timeout_ms: None,
            // A cron run every minute: stop claiming well before the next.
            run_seconds: 45,
            max_posts: None,
            metrics: true,
        }
    }
}

impl Settings {
    /// Settings from a job request body (empty = defaults), clamped.
    pub fn from_body(body: &[u8]) -> Result<Self, Error> {
        let mut settings: Settings = if body.iter().all(u8::is_ascii_whitespace) {
            Settings::default()
        } else {
            serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("job settings: {e}")))?
        };
        settings.batch_size = settings.batch_size.clamp(1, 50);
        settings.lease_seconds = settings.lease_seconds.clamp(5, 900);
        settings.run_seconds = settings.run_seconds.clamp(1, 300);
        settings.call_timeout_ms = settings.call_timeout_ms.map(|ms| ms.clamp(100, 60_000));
        Ok(settings)
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_seconds))
    }
}

#[derive(Debug, Deserialize)]
struct Claimed {
    id: Uuid,
    lease_token: i64,
}

/// Claims and publishes until nothing is due or time is up; answers
/// `{"worker_id", "claimed", "outcomes": {"published": n, ...}, "errors",
/// "stopped", "seconds", "metrics"}`.
pub fn run(db: &Database, settings: &Settings) -> Result<Value, Error> {
    let config = Config::load()?;
    let worker_id = format!(
        "schedule-claim/{}",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let started = Instant::now();
    let budget = Duration::from_secs(settings.run_seconds);
    let mut claimed = 0u32;
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    let mut stopped = "nothing due";
    loop {
        if started.elapsed() >= budget {
            stopped = "run time used up";
            break;
        }
        let room = settings.max_posts.map(|max| max.saturating_sub(claimed));
        if room == Some(0) {
            stopped = "max_posts reached";
            break;
        }
        let batch_size = room.map_or(settings.batch_size, |r| r.min(settings.batch_size));
        let batch: Vec<Claimed> = db.call(
            &sql::CLAIM_DUE_POSTS,
            &[
                worker_id.clone().into(),
                ParameterValue::Int32(i32::try_from(settings.lease_seconds).unwrap_or(60)),
                ParameterValue::Int32(i32::try_from(batch_size).unwrap_or(1)),
            ],
        )?;
        if batch.is_empty() {
            break;
        }
        claimed += u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let leases = HeldLeases::new(
            db,
            settings.lease(),
            batch
                .iter()
                .map(|p| HeldLease {
                    id: p.id,
                    lease_token: p.lease_token,
                })
                .collect(),
        );
        for post in &batch {
            leases.renew_if_due();
            if !leases.holds(post.id, post.lease_token) {
                // Taken over while it waited (this worker stalled past its
                // lease): the other worker publishes it.
                *outcomes.entry("lost".into()).or_default() += 1;
                continue;
            }
            let request = PublishRequest {
                scheduled_post_id: post.id,
                lease_token: post.lease_token,
                lease_seconds: Some(settings.lease_seconds),
                call_timeout_ms: settings.call_timeout_ms,
            };
            match attempt::run(db, &config, &request, &leases) {
                Ok(report) => *outcomes.entry(report.outcome.to_string()).or_default() += 1,
                Err(error) => {
                    // The post stays leased until its lease runs out (it is
                    // no longer renewed); the next claim takes it again.
                    leases.release(post.id);
                    *outcomes.entry("error".into()).or_default() += 1;
                    if errors.len() < 5 {
                        errors.push(format!("{}: {error}", post.id));
                    }
                }
            }
        }
    }
    let metrics = if settings.metrics {
        metrics::refresh(db, &config).unwrap_or_else(|e| json!({ "error": e.to_string() }))
    } else {
        Value::Null
    };
    Ok(json!({
        "worker_id": worker_id,
        "claimed": claimed,
        "outcomes": outcomes,
        "errors": errors,
        "stopped": stopped,
        "seconds": started.elapsed().as_secs_f64(),
        "metrics": metrics,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_clamp() {
        let d = Settings::from_body(b"").unwrap();
        assert_eq!((d.batch_size, d.lease_seconds, d.run_seconds), (5, 20, 45));
        assert_eq!(d.lease(), Duration::from_secs(20));
        let s = Settings::from_body(
            br#"{"batch_size": 500, "lease_seconds": 1, "call_timeout_ms": 5}"#,
        )
        .unwrap();
        assert_eq!(
            (s.batch_size, s.lease_seconds, s.call_timeout_ms),
            (50, 5, Some(100))
        );
        assert!(
            Settings::from_body(br#"{"lease": 3}"#).is_err(),
            "unknown settings are refused"
        );
    }
}

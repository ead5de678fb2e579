//! One run: claim due posts in small batches (one per account in flight,
//! oldest first), hand each to `publish` through service chaining with its
//! fencing token, until nothing is due or the run's time is up; then one
//! metrics refresh.
//!
//! Leases: a batch is claimed for `lease_seconds` x `batch_size`, since its
//! last post waits for the ones before it; `publish` extends the lease of
//! the post it takes to at least `lease_seconds` from then, and bounds every
//! platform call by what is left of it (at most `call_timeout`, 10 s by
//! default). So a hung platform ends the attempt before the lease does; if
//! a worker dies instead, the lease runs out and the next claim takes the
//! post again (`lease_expired` event), and the dead worker's late results
//! are refused by their stale token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use shared::Error;
use shared::db::Database;
use shared::outbound::OutboundRequest;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::sql;

/// Where `publish` answers (Spin service chaining).
const PUBLISH_URL: &str = "http://publish.spin.internal/publish";
/// Where `publish` refreshes metrics.
const METRICS_URL: &str = "http://publish.spin.internal/metrics";

/// How a run behaves. The cron trigger uses the defaults; `POST
/// /jobs/schedule-claim` may send any of these as a JSON body.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Posts claimed at once (1..=50).
    pub batch_size: u32,
    /// The lease one publish needs, in seconds (5..=900).
    pub lease_seconds: u32,
    /// The longest single platform call, in milliseconds (100..=60000);
    /// `publish` uses 10 s when absent.
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
            lease_seconds: 60,
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

    fn claim_lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_seconds.saturating_mul(self.batch_size)).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, Deserialize)]
struct Claimed {
    id: Uuid,
    lease_token: i64,
}

/// Claims and publishes until nothing is due or time is up; answers
/// `{"worker_id", "claimed", "outcomes": {"published": n, ...}, "errors",
/// "metrics"}`.
pub fn run(db: &Database, settings: &Settings) -> Result<Value, Error> {
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
                ParameterValue::Int32(settings.claim_lease_seconds()),
                ParameterValue::Int32(i32::try_from(batch_size).unwrap_or(1)),
            ],
        )?;
        if batch.is_empty() {
            break;
        }
        claimed += u32::try_from(batch.len()).unwrap_or(u32::MAX);
        for post in batch {
            match hand_over(&post, settings) {
                Ok(outcome) => *outcomes.entry(outcome).or_default() += 1,
                Err(error) => {
                    // The post stays leased; its lease runs out and the next
                    // claim takes it again.
                    *outcomes.entry("error".into()).or_default() += 1;
                    if errors.len() < 5 {
                        errors.push(format!("{}: {error}", post.id));
                    }
                }
            }
        }
    }
    let metrics = if settings.metrics {
        call_metrics()
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

/// Asks `publish` to publish one claimed post; answers its outcome.
fn hand_over(post: &Claimed, settings: &Settings) -> Result<String, String> {
    let mut body = json!({
        "scheduled_post_id": post.id,
        "lease_token": post.lease_token,
        "lease_seconds": settings.lease_seconds,
    });
    if let Some(ms) = settings.call_timeout_ms {
        body["call_timeout_ms"] = json!(ms);
    }
    let reply = OutboundRequest::post(PUBLISH_URL)
        .json(&body)
        .timeout(Duration::from_secs(u64::from(settings.lease_seconds) + 30))
        .send()
        .map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!(
            "publish answered {}: {}",
            reply.status,
            reply.text().chars().take(300).collect::<String>()
        ));
    }
    let answer: Value = reply.json().map_err(|e| e.to_string())?;
    Ok(answer
        .get("outcome")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string())
}

/// One metrics refresh through `publish`; its report, or the error.
fn call_metrics() -> Value {
    match OutboundRequest::post(METRICS_URL)
        .json(&json!({}))
        .timeout(Duration::from_secs(30))
        .send()
    {
        Ok(reply) if reply.status == 200 => reply.json().unwrap_or(Value::Null),
        Ok(reply) => json!({ "error": format!("metrics answered {}", reply.status) }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_clamp() {
        let d = Settings::from_body(b"").unwrap();
        assert_eq!((d.batch_size, d.lease_seconds, d.run_seconds), (5, 60, 45));
        assert_eq!(d.claim_lease_seconds(), 300);
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

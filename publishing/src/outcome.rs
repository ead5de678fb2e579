//! How an attempt ends, and how each ending is recorded (every call fenced
//! by the lease token; a stale token changes nothing and leaves a
//! `stale_result` event, written by the SQL functions themselves).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use shared::Error;
use shared::db::Database;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::sql;

/// A post that is on the platform.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// `bluesky`, `x` or `linkedin`.
    pub platform: String,
    /// The at-uri, tweet id or post URN (of the first post of a thread).
    pub platform_post_id: String,
    /// Where people see it.
    pub url: String,
    /// The text as published (a thread's parts joined by blank lines).
    pub content: String,
    /// Platform details for `published_posts.metadata` (cid, rkey, thread ids).
    pub metadata: Value,
    /// `posts` archive rows: `[{"platform_post_id", "text", "content_type", "created_at"}]`.
    pub archive: Vec<Value>,
    /// How the outcome was learnt when the write's answer was lost
    /// (`getRecord`, `duplicate`, `recorded`), if it was.
    pub settled_by: Option<String>,
    /// When it went out.
    pub published_at: Option<DateTime<Utc>>,
}

/// How one attempt ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// On the platform: the post is `posted`.
    Published(Published),
    /// Worth trying again (5xx, timeouts, lost answers): backoff, then dead
    /// letter after the last attempt.
    Retry {
        /// What happened (the platform's words where there are some).
        error: String,
        /// The platform's requested wait.
        retry_after: Option<u64>,
        /// Extra event detail.
        detail: Value,
    },
    /// Will never work as it is (validation, 400, revoked credentials):
    /// failed at once with the message.
    Fail {
        /// The message, with the platform's words.
        error: String,
        /// Marks the account (`token_expired` for revoked credentials).
        account_status: Option<&'static str>,
        /// Extra event detail.
        detail: Value,
    },
    /// The account must wait (429, write budget, session budget): back to
    /// queued without losing the attempt or its place.
    Hold {
        /// Not before this moment.
        until: DateTime<Utc>,
        /// Why.
        reason: String,
    },
    /// The lease was lost mid-way: another worker owns the post now.
    Stale,
}

impl Outcome {
    /// A transient failure.
    pub fn retry(error: impl Into<String>) -> Self {
        Outcome::Retry {
            error: error.into(),
            retry_after: None,
            detail: json!({}),
        }
    }

    /// A permanent failure.
    pub fn fail(error: impl Into<String>) -> Self {
        Outcome::Fail {
            error: error.into(),
            account_status: None,
            detail: json!({}),
        }
    }

    /// A hold for `seconds` from now.
    pub fn hold_for(seconds: u64, reason: impl Into<String>) -> Self {
        let seconds = i64::try_from(seconds.max(1)).unwrap_or(i64::MAX / 2_000_000);
        Outcome::Hold {
            until: Utc::now() + chrono::TimeDelta::seconds(seconds.min(7 * 86_400)),
            reason: reason.into(),
        }
    }
}

/// How one publishing attempt ended, as `schedule-claim` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scheduled post.
    pub scheduled_post_id: Uuid,
    /// `published`, `retry`, `failed`, `dead`, `deferred`, `stale` or
    /// `refused`.
    pub outcome: &'static str,
    /// The platform id, when published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_post_id: Option<String>,
    /// The post's URL, when published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The error, when not published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// The answer for a post whose lease is gone.
    pub fn stale(id: Uuid) -> Self {
        Report {
            scheduled_post_id: id,
            outcome: "stale",
            platform_post_id: None,
            url: None,
            error: None,
        }
    }

    /// The answer for a post the database refused to begin (it names
    /// another user's rows); the post is already failed with `reason`.
    pub fn refused(id: Uuid, reason: String) -> Self {
        Report {
            scheduled_post_id: id,
            outcome: "refused",
            platform_post_id: None,
            url: None,
            error: Some(reason),
        }
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn jsonb(value: &Value) -> ParameterValue {
    ParameterValue::Jsonb(value.to_string().into_bytes())
}

fn accepted(answer: &Value) -> bool {
    answer.get("accepted").and_then(Value::as_bool) == Some(true)
}

/// Records `outcome` for post `id` under lease `token`.
pub fn record(db: &Database, id: Uuid, token: i64, outcome: Outcome) -> Result<Report, Error> {
    let mut report = Report::stale(id);
    match outcome {
        Outcome::Published(p) => {
            let result = json!({
                "platform": p.platform,
                "platform_post_id": p.platform_post_id,
                "url": p.url,
                "content": p.content,
                "metadata": p.metadata,
                "archive": p.archive,
                "settled_by": p.settled_by,
                "published_at": p.published_at.map(rfc3339),
            });
            let answer = db.call_json(
                &sql::COMPLETE,
                &[
                    ParameterValue::Uuid(id.to_string()),
                    ParameterValue::Int64(token),
                    jsonb(&result),
                ],
            )?;
            if accepted(&answer) {
                report.outcome = "published";
                report.platform_post_id = Some(p.platform_post_id);
                report.url = Some(p.url);
            }
        }
        Outcome::Retry {
            error,
            retry_after,
            detail,
        } => {
            report = fail(db, id, token, &error, false, retry_after, detail, None)?;
        }
        Outcome::Fail {
            error,
            account_status,
            detail,
        } => {
            report = fail(db, id, token, &error, true, None, detail, account_status)?;
        }
        Outcome::Hold { until, reason } => {
            let answer = db.call_json(
                &sql::HOLD,
                &[
                    ParameterValue::Uuid(id.to_string()),
                    ParameterValue::Int64(token),
                    rfc3339(until).into(),
                    reason.clone().into(),
                ],
            )?;
            if accepted(&answer) {
                report.outcome = "deferred";
                report.error = Some(reason);
            }
        }
        Outcome::Stale => {}
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn fail(
    db: &Database,
    id: Uuid,
    token: i64,
    error: &str,
    permanent: bool,
    retry_after: Option<u64>,
    mut detail: Value,
    account_status: Option<&'static str>,
) -> Result<Report, Error> {
    if let (Some(status), Some(map)) = (account_status, detail.as_object_mut()) {
        map.insert("account_status".into(), json!(status));
    }
    let answer = db.call_json(
        &sql::FAIL,
        &[
            ParameterValue::Uuid(id.to_string()),
            ParameterValue::Int64(token),
            error.to_string().into(),
            permanent.into(),
            retry_after
                .and_then(|s| i32::try_from(s).ok())
                .map_or(ParameterValue::DbNull, ParameterValue::Int32),
            jsonb(&detail),
        ],
    )?;
    let mut report = Report::stale(id);
    if accepted(&answer) {
        report.outcome = match answer.get("status").and_then(Value::as_str) {
            Some("dead") if !permanent => "dead",
            Some("dead") => "failed",
            _ => "retry",
        };
        report.error = Some(error.to_string());
    }
    Ok(report)
}

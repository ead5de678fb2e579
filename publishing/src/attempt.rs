//! One publishing attempt of one claimed post: take the post with its lease
//! token (`begin`, which also extends the lease for this attempt), check it,
//! send it to its platform, record the outcome.

use std::cell::Cell;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::Error;
use shared::db::Database;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::config::Config;
use crate::deadline::Deadline;
use crate::lease::HeldLeases;
use crate::outcome::{self, Outcome, Report};
use crate::{bluesky_post, linkedin_post, sql, x_post};

/// The lease an attempt asks for when the caller names none: short, since
/// the worker renews it while it works ([`HeldLeases`]) and a dead worker's
/// posts wait for it to run out.
pub const DEFAULT_LEASE_SECONDS: u32 = 20;
/// The longest one outside call may take when the caller names none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One claimed post to publish, with its fencing token.
#[derive(Debug, Deserialize)]
pub struct PublishRequest {
    /// The scheduled post.
    pub scheduled_post_id: Uuid,
    /// Its current lease token.
    pub lease_token: i64,
    /// The lease this attempt needs (extended at the start), 5..=900.
    #[serde(default)]
    pub lease_seconds: Option<u32>,
    /// The longest single outside call in milliseconds, 100..=60000.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
}

/// The scheduled post as `begin` gives it.
#[derive(Debug, Clone, Deserialize)]
pub struct Post {
    /// Its id.
    pub id: Uuid,
    /// `bluesky`, `x`, `linkedin`, ...
    pub platform: String,
    /// The text (the draft's for seed 000, the snapshot for seed 002).
    #[serde(default)]
    pub text: Option<String>,
    /// `langs` (at most 3).
    #[serde(default)]
    pub langs: Option<Vec<String>>,
    /// Images: `[{"bucket", "path", "alt", "mime"?, "width"?, "height"?}]`.
    #[serde(default)]
    pub media: Vec<Value>,
    /// A ready-made Bluesky embed (`app.bsky.embed.external`, ...).
    #[serde(default)]
    pub embed: Option<Value>,
    /// Creation time in microseconds (the record key derives from it).
    pub created_at_us: i64,
    /// This attempt's number.
    #[serde(default)]
    pub attempt: i32,
    /// The worker that holds the lease.
    #[serde(default)]
    pub worker_id: Option<String>,
}

/// The account the post goes out with.
#[derive(Clone, Deserialize)]
pub struct Account {
    /// `connected_accounts.id`.
    pub id: Uuid,
    /// Its platform.
    pub platform: String,
    /// The platform's user id (a DID on Bluesky).
    pub platform_user_id: String,
    /// User name (X screen name, Bluesky handle).
    #[serde(default)]
    pub username: String,
    /// Bluesky handle.
    #[serde(default)]
    pub handle: Option<String>,
    /// Bluesky DID.
    #[serde(default)]
    pub account_did: Option<String>,
    /// Whether the user left it on.
    #[serde(default)]
    pub is_active: bool,
    /// `active`, `token_expired`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// The sealed OAuth access token (X, LinkedIn).
    #[serde(default)]
    pub access_token: Option<String>,
    /// Whether the access token's expiry has passed.
    #[serde(default)]
    pub token_expired: bool,
}

// Even sealed, the token stays out of logs.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("platform", &self.platform)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What was sent for one part in earlier attempts.
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    /// 0 for the post, 0.. for a thread's posts.
    pub part_index: i32,
    /// `sending` (intent, outcome unknown) or `posted`.
    pub status: String,
    /// SHA-256 of the text sent.
    pub text_sha256: String,
    /// The platform's id, once posted.
    #[serde(default)]
    pub platform_post_id: Option<String>,
    /// Its URL, once posted.
    #[serde(default)]
    pub url: Option<String>,
    /// When the first intent was recorded.
    #[serde(default)]
    pub first_sent_at: Option<String>,
    /// Platform details (cid, rkey).
    #[serde(default)]
    pub detail: Value,
}

impl Part {
    /// Whether the part is known to be on the platform.
    pub fn is_posted(&self) -> bool {
        self.status == "posted" && self.platform_post_id.is_some()
    }
}

#[derive(Debug, Deserialize)]
struct Hold {
    not_before: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Begun {
    accepted: bool,
    #[serde(default)]
    post: Option<Post>,
    #[serde(default)]
    account: Option<Account>,
    #[serde(default)]
    parts: Vec<Part>,
    #[serde(default)]
    account_hold: Option<Hold>,
    #[serde(default)]
    lease_remaining_ms: i64,
    /// `refused` when the post names another user's rows (it is failed).
    #[serde(default)]
    reason: Option<String>,
    /// Why it was refused.
    #[serde(default)]
    refusal: Option<String>,
}

/// Everything a platform module needs for one attempt.
pub struct Attempt<'a> {
    /// The database.
    pub db: &'a Database,
    /// Settings.
    pub config: &'a Config,
    /// The post.
    pub post: Post,
    /// Its account.
    pub account: Account,
    /// Parts sent in earlier attempts.
    pub parts: Vec<Part>,
    /// The lease token.
    pub token: i64,
    /// Time left for calls, moved on when the lease is renewed.
    pub deadline: Cell<Deadline>,
    /// The longest single call.
    pub call_timeout: Duration,
    /// The worker's leases, renewed between calls.
    pub leases: &'a HeldLeases<'a>,
    /// Who holds the lease (for the session's creating lease).
    pub worker_id: String,
}

/// SHA-256 hex of a text.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Attempt<'_> {
    /// The timeout for the next outside call, after renewing the worker's
    /// leases when due; `None` when too little of the lease is left to
    /// start one (the lease was lost, or the database could not renew it).
    pub fn next_call(&self) -> Option<Duration> {
        self.leases.renew_if_due();
        if let Some(ms) = self.leases.remaining_ms(self.post.id) {
            let renewed = Deadline::from_lease(ms, self.call_timeout);
            if renewed.left() > self.deadline.get().left() {
                self.deadline.set(renewed);
            }
        }
        self.deadline.get().next_call()
    }

    /// The earlier state of part `index`, if any.
    pub fn part(&self, index: usize) -> Option<&Part> {
        self.parts
            .iter()
            .find(|p| usize::try_from(p.part_index).ok() == Some(index))
    }

    /// Records the intent to send part `index` (before the call). `false`
    /// means the lease is gone: do not send.
    pub fn record_sending(
        &self,
        index: usize,
        text: &str,
        record_key: Option<&str>,
    ) -> Result<bool, Error> {
        let answer =
            self.record_part(index, "sending", text, record_key, None, None, &json!({}))?;
        Ok(answer.get("accepted").and_then(Value::as_bool) == Some(true))
    }

    /// Records that part `index` is on the platform (kept even when the
    /// lease is gone, so nobody sends it again).
    pub fn record_posted(
        &self,
        index: usize,
        text: &str,
        record_key: Option<&str>,
        platform_post_id: &str,
        url: &str,
        detail: &Value,
    ) -> Result<bool, Error> {
        let answer = self.record_part(
            index,
            "posted",
            text,
            record_key,
            Some(platform_post_id),
            Some(url),
            detail,
        )?;
        Ok(answer.get("accepted").and_then(Value::as_bool) == Some(true))
    }

    #[allow(clippy::too_many_arguments)]
    fn record_part(
        &self,
        index: usize,
        status: &str,
        text: &str,
        record_key: Option<&str>,
        platform_post_id: Option<&str>,
        url: Option<&str>,
        detail: &Value,
    ) -> Result<Value, Error> {
        let text_param = |v: Option<&str>| {
            v.map_or(ParameterValue::DbNull, |s| {
                ParameterValue::Str(s.to_string())
            })
        };
        self.db.call_json(
            &sql::RECORD_PART,
            &[
                ParameterValue::Uuid(self.post.id.to_string()),
                ParameterValue::Int64(self.token),
                ParameterValue::Int32(i32::try_from(index).unwrap_or(i32::MAX)),
                self.post.platform.clone().into(),
                status.to_string().into(),
                sha256_hex(text).into(),
                text_param(record_key),
                text_param(platform_post_id),
                text_param(url),
                ParameterValue::Jsonb(detail.to_string().into_bytes()),
            ],
        )
    }
}

/// Publishes the post named in `request` once, and records how it went;
/// `leases` holds the worker's leases (this post's among them) and is
/// renewed between the attempt's outside calls.
pub fn run(
    db: &Database,
    config: &Config,
    request: &PublishRequest,
    leases: &HeldLeases<'_>,
) -> Result<Report, Error> {
    let lease_seconds = request
        .lease_seconds
        .unwrap_or(DEFAULT_LEASE_SECONDS)
        .clamp(5, 900);
    let call_timeout = request
        .call_timeout_ms
        .map(|ms| Duration::from_millis(ms.clamp(100, 60_000)))
        .unwrap_or(DEFAULT_CALL_TIMEOUT);
    let begun: Begun = db.call(
        &sql::BEGIN,
        &[
            ParameterValue::Uuid(request.scheduled_post_id.to_string()),
            ParameterValue::Int64(request.lease_token),
            ParameterValue::Int32(i32::try_from(lease_seconds).unwrap_or(60)),
        ],
    )?;
    let (true, Some(post)) = (begun.accepted, begun.post) else {
        leases.release(request.scheduled_post_id);
        if begun.reason.as_deref() == Some("refused") {
            let why = begun
                .refusal
                .unwrap_or_else(|| "the post names another user's rows".to_string());
            return Ok(Report::refused(request.scheduled_post_id, why));
        }
        return Ok(Report::stale(request.scheduled_post_id));
    };
    let id = post.id;
    let token = request.lease_token;
    let outcome = match (begun.account, begun.account_hold) {
        (_, Some(hold)) => Outcome::Hold {
            until: chrono::DateTime::parse_from_rfc3339(&hold.not_before)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_else(|_| chrono::Utc::now()),
            reason: hold.reason,
        },
        (None, None) => Outcome::fail("the post has no connected account to publish with"),
        (Some(account), None) => {
            let attempt = Attempt {
                db,
                config,
                worker_id: post
                    .worker_id
                    .clone()
                    .unwrap_or_else(|| "publish".to_string()),
                post,
                account,
                parts: begun.parts,
                token,
                deadline: Cell::new(Deadline::from_lease(begun.lease_remaining_ms, call_timeout)),
                call_timeout,
                leases,
            };
            dispatch(&attempt)?
        }
    };
    let report = outcome::record(db, id, token, outcome);
    // Recorded (or not: then the lease runs out and the post is taken
    // again); either way this worker is done with it.
    leases.release(id);
    report
}

/// Checks what every platform needs, then hands over to the platform.
fn dispatch(attempt: &Attempt<'_>) -> Result<Outcome, Error> {
    let account = &attempt.account;
    if attempt.post.platform != account.platform {
        return Ok(Outcome::fail(format!(
            "the post is for {} but its account ({}) is on {}",
            attempt.post.platform, account.username, account.platform
        )));
    }
    if !account.is_active {
        return Ok(Outcome::fail(format!(
            "the account {} is switched off",
            account.username
        )));
    }
    match account.status.as_deref() {
        Some("disconnected") => {
            return Ok(Outcome::fail(format!(
                "the account {} is disconnected",
                account.username
            )));
        }
        Some("token_expired") => {
            return Ok(Outcome::fail(format!(
                "the account {} must be reconnected: its credentials were refused",
                account.username
            )));
        }
        _ => {}
    }
    match account.platform.as_str() {
        "bluesky" => bluesky_post::publish(attempt),
        "x" => x_post::publish(attempt),
        "linkedin" => linkedin_post::publish(attempt),
        other => Ok(Outcome::fail(format!(
            "publishing to {other} is not supported"
        ))),
    }
}

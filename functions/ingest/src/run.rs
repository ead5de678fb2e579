//! One run of the job: its database, settings and time budget, the platform
//! pauses it has learned of, how a piece of work can fail, and the rows it
//! reads (accounts, items) and writes (archived posts).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::Error;
use shared::db::Database;
use spin_sdk::pg4::ParameterValue;

use crate::config::Config;
use crate::parse::{self, ArchivePost};
use crate::sql;

/// The worker id in leases, events and the heartbeat.
pub const WORKER: &str = "ingest";

/// Items are claimed until this much of the run has passed.
pub const ITEMS_UNTIL: Duration = Duration::from_secs(15);
/// Accounts are claimed, and pages fetched, until this much has passed; with
/// requests' own timeout the run ends well inside the cron minute.
pub const ACCOUNTS_UNTIL: Duration = Duration::from_secs(30);
/// Outbound requests wait at most this long for each byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// How a piece of work (an item, an account sync) did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// May work later (5xx, timeouts): retried with backoff.
    Transient {
        /// What happened (platform text, no secrets).
        message: String,
        /// Seconds the platform asked us to wait.
        retry_after: Option<u64>,
    },
    /// Will never work as it is (malformed payload, unknown event, 4xx).
    Permanent(String),
    /// The platform's rate limit is used up until `until`: the work waits.
    RateLimited {
        /// `platform_enum` value.
        platform: &'static str,
        /// When work may resume.
        until: DateTime<Utc>,
        /// Why (which window or header).
        reason: String,
    },
    /// The platform rejected the account's token: the account becomes
    /// `token_expired`.
    TokenRejected {
        /// The account, when known.
        account_id: Option<String>,
        /// The platform's words (never the token).
        message: String,
    },
    /// The run cannot go on (database unreachable, configuration missing).
    Stop(Error),
}

impl Failure {
    /// A permanent failure with `message`.
    pub fn permanent(message: impl Into<String>) -> Self {
        Failure::Permanent(message.into())
    }

    /// A transient failure with `message`.
    pub fn transient(message: impl Into<String>) -> Self {
        Failure::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    /// The text stored in error columns.
    pub fn message(&self) -> String {
        match self {
            Failure::Transient { message, .. } | Failure::Permanent(message) => message.clone(),
            Failure::RateLimited {
                platform,
                until,
                reason,
            } => format!(
                "{platform} rate limit: waiting until {}: {reason}",
                parse::rfc3339(*until)
            ),
            Failure::TokenRejected { message, .. } => format!("token rejected: {message}"),
            Failure::Stop(error) => error.to_string(),
        }
    }

    /// Names the account a token rejection is about.
    pub fn for_account(self, id: &str) -> Self {
        match self {
            Failure::TokenRejected {
                account_id: None,
                message,
            } => Failure::TokenRejected {
                account_id: Some(id.to_string()),
                message,
            },
            other => other,
        }
    }
}

impl From<Error> for Failure {
    /// An unreachable database or missing configuration stops the run; any
    /// other database error is this piece of work's (retried), so one bad
    /// row cannot hold up the rest.
    fn from(error: Error) -> Self {
        match error {
            Error::DatabaseUnavailable(_) | Error::Config(_) => Failure::Stop(error),
            other => Failure::transient(other.to_string()),
        }
    }
}

/// A connected account as the SQL functions answer it (tokens sealed), with
/// the claim's extra fields when it comes from `claim_next_sync_account`.
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    /// `connected_accounts.id`.
    pub id: String,
    /// `platform_enum` value.
    pub platform: String,
    /// Strava athlete id, Instagram user id, Bluesky DID.
    pub platform_user_id: String,
    /// Sealed access token.
    #[serde(default)]
    pub access_token: Option<String>,
    /// Sealed refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// When the access token expires.
    #[serde(default)]
    pub token_expires_at: Option<String>,
    /// `account_status_enum` value.
    #[serde(default)]
    pub status: Option<String>,
    /// Fencing token of the sync lease.
    #[serde(default)]
    pub lease_token: Option<i64>,
    /// The running `sync_logs` row.
    #[serde(default)]
    pub sync_log_id: Option<String>,
    /// `backfill` or `scheduled`.
    #[serde(default)]
    pub sync_type: Option<String>,
    /// Where an unfinished sync goes on.
    #[serde(default)]
    pub resume_cursor: Option<String>,
    /// The newest archived post's platform time.
    #[serde(default)]
    pub last_post_at: Option<String>,
    /// The last finished sync.
    #[serde(default)]
    pub last_sync_at: Option<String>,
}

impl Account {
    /// Whether the account can be worked for (not disconnected, token not
    /// known to be rejected).
    pub fn usable(&self) -> Result<(), Failure> {
        match self.status.as_deref() {
            Some("disconnected") => Err(Failure::permanent(format!(
                "the {} account is disconnected",
                self.platform
            ))),
            Some("token_expired") => Err(Failure::permanent(format!(
                "the {} account's token was rejected; the user must reconnect it",
                self.platform
            ))),
            _ => Ok(()),
        }
    }
}

/// A claimed `ingested_items` row.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    /// Its id.
    pub id: String,
    /// `platform_enum` value.
    pub platform: String,
    /// `strava.activity.create`, `instagram.changes`, ...
    pub event_type: String,
    /// The raw payload as received.
    pub payload: Value,
    /// The lease's fencing token.
    pub lease_token: i64,
}

/// What `archive_platform_posts` answers.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Archived {
    /// New posts.
    #[serde(default)]
    pub created: i64,
    /// Changed posts.
    #[serde(default)]
    pub updated: i64,
    /// Posts already archived as they are.
    #[serde(default)]
    pub unchanged: i64,
    /// Posts archived under another account.
    #[serde(default)]
    pub skipped: i64,
    /// New `media_downloads` rows.
    #[serde(default)]
    pub media_queued: i64,
    /// Stopped at the first post that was already archived.
    #[serde(default)]
    pub stopped_at_known: bool,
    /// One entry per post: `{platform_post_id, result, post_id, ...}`.
    #[serde(default)]
    pub results: Vec<Value>,
}

/// One job run.
pub struct Run<'a> {
    /// The database.
    pub db: &'a Database,
    /// The settings.
    pub config: &'a Config,
    started: Instant,
    pauses: RefCell<BTreeMap<&'static str, DateTime<Utc>>>,
}

impl<'a> Run<'a> {
    /// A run starting now.
    pub fn new(db: &'a Database, config: &'a Config) -> Self {
        Run {
            db,
            config,
            started: Instant::now(),
            pauses: RefCell::new(BTreeMap::new()),
        }
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether `budget` of the run is used up.
    pub fn past(&self, budget: Duration) -> bool {
        self.elapsed() >= budget
    }

    /// Wall-clock now.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// When `platform` may be called again, if this run saw its limit used up.
    pub fn paused_until(&self, platform: &str) -> Option<DateTime<Utc>> {
        let now = self.now();
        self.pauses
            .borrow()
            .get(platform)
            .copied()
            .filter(|until| *until > now)
    }

    /// Fails with `RateLimited` when `platform` is paused.
    pub fn check_pause(&self, platform: &'static str) -> Result<(), Failure> {
        match self.paused_until(platform) {
            Some(until) => Err(Failure::RateLimited {
                platform,
                until,
                reason: "the platform's rate limit is used up".into(),
            }),
            None => Ok(()),
        }
    }

    /// Pauses `platform` until `until` for this run and in the database, so
    /// later runs' claims skip it too.
    pub fn pause(
        &self,
        platform: &'static str,
        until: DateTime<Utc>,
        reason: &str,
    ) -> Result<(), Failure> {
        {
            let mut pauses = self.pauses.borrow_mut();
            let entry = pauses.entry(platform).or_insert(until);
            if *entry < until {
                *entry = until;
            }
        }
        self.db.call_json(
            &sql::PAUSE_PLATFORM,
            &[
                platform.to_string().into(),
                parse::rfc3339(until).into(),
                parse::truncate(reason, 300).into(),
            ],
        )?;
        Ok(())
    }

    /// Archives `posts` for `account` (see `archive_platform_posts`).
    pub fn archive(
        &self,
        account_id: &str,
        item_id: Option<&str>,
        posts: &[ArchivePost],
        keep_existing: bool,
        stop_at_known: bool,
    ) -> Result<Archived, Failure> {
        let posts = serde_json::to_vec(posts)
            .map_err(|e| Failure::permanent(format!("posts do not serialize: {e}")))?;
        let archived = self.db.call(
            &sql::ARCHIVE_PLATFORM_POSTS,
            &[
                uuid(account_id),
                item_id.map(uuid).unwrap_or(ParameterValue::DbNull),
                ParameterValue::Jsonb(posts),
                if keep_existing {
                    "keep_existing"
                } else {
                    "replace"
                }
                .to_string()
                .into(),
                ParameterValue::Boolean(stop_at_known),
            ],
        )?;
        Ok(archived)
    }

    /// Marks the account's token rejected (`token_expired`, with the
    /// platform's words).
    pub fn token_rejected(&self, account_id: &str, message: &str) -> Result<(), Error> {
        self.db
            .call_json(
                &sql::MARK_ACCOUNT_TOKEN_EXPIRED,
                &[uuid(account_id), parse::truncate(message, 300).into()],
            )
            .map(|_| ())
    }
}

/// A uuid parameter.
pub fn uuid(id: &str) -> ParameterValue {
    ParameterValue::Uuid(id.to_string())
}

/// A jsonb parameter.
pub fn jsonb(value: &Value) -> ParameterValue {
    ParameterValue::Jsonb(value.to_string().into_bytes())
}

/// `{"outcome": ...}` plus the archive's answer for one post.
pub fn archived_result(archived: &Archived) -> Value {
    let first = archived.results.first().cloned().unwrap_or(Value::Null);
    json!({
        "outcome": first.get("result").cloned().unwrap_or(json!("archived")),
        "post_id": first.get("post_id").cloned().unwrap_or(Value::Null),
        "created": archived.created,
        "updated": archived.updated,
        "media_queued": archived.media_queued,
    })
}

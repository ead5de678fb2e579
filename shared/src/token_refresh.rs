//! Keeping an account's OAuth tokens alive: the one path by which every
//! component refreshes them (token-rotation on its schedule; ingest and
//! publish on demand when they meet an expired token).
//!
//! A refresh is always: a lease on the account from migration 0022
//! (`claim_token_rotations` for due accounts, `claim_token_refresh` for one
//! account now), the platform's token endpoint ([`crate::oauth`]), and ONE
//! `finish_token_rotation` call that saves the new tokens, sealed under the
//! current key ([`crate::token_cipher::Keyring`]), and releases the lease in
//! the same transaction, fenced by the lease token. So two workers never
//! spend the same rotating refresh token, and a rotated token is stored
//! before anything uses it. A worker that stalled past its lease offers its
//! rotated tokens once more (`keep_tokens_of_lost_lease`, 0022): they are
//! kept when nobody saved others since its claim.
//!
//! Outcomes are never confused: a platform outage (timeout, 5xx, 429) keeps
//! the tokens and retries with backoff; only the platform refusing the grant
//! moves the account to `token_expired` (with a notification to reconnect).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::pg4::ParameterValue;

use crate::config;
use crate::db::Database;
use crate::error::{Error, Result};
use crate::oauth::{App, Exchange, Grant, Platform, TokenFailure};
use crate::sql::SqlCall;
use crate::token_cipher::{self, Keyring};

/// Leases up to `$2` due accounts for worker `$1` for `$3` seconds
/// (`$4` the current key id, `$5` now).
pub const CLAIM_TOKEN_ROTATIONS: SqlCall = SqlCall {
    name: "claim_token_rotations",
    sql: "select public.claim_token_rotations($1::text, $2::int, $3::int, $4::text, $5::text::timestamptz) as claims",
};

/// Leases account `$1` now for worker `$2` for `$3` seconds (`$4` now).
pub const CLAIM_TOKEN_REFRESH: SqlCall = SqlCall {
    name: "claim_token_refresh",
    sql: "select public.claim_token_refresh($1::uuid, $2::text, $3::int, $4::text::timestamptz) as claim",
};

/// Settles the claim of account `$1` with lease `$2`: `$3` the result
/// jsonb, `$4` now.
pub const FINISH_TOKEN_ROTATION: SqlCall = SqlCall {
    name: "finish_token_rotation",
    sql: "select public.finish_token_rotation($1::uuid, $2::bigint, $3::jsonb, $4::text::timestamptz) as finished",
};

/// Offers the rotated tokens of a worker whose lease ran out (`$1`
/// account, `$2` the result it tried to finish with, `$3` now): kept when
/// nobody saved others since its claim (migration 0022).
pub const KEEP_TOKENS_OF_LOST_LEASE: SqlCall = SqlCall {
    name: "keep_tokens_of_lost_lease",
    sql: "select public.keep_tokens_of_lost_lease($1::uuid, $2::jsonb, $3::text::timestamptz) as kept",
};

/// How long a lease on one account lasts: far beyond one token request
/// (`oauth::TOKEN_TIMEOUT`), so a live worker never loses it mid-refresh.
pub const LEASE_SECONDS: i32 = 300;

/// The four platform applications, from the component's variables.
#[derive(Debug, Clone)]
pub struct Apps {
    apps: Vec<App>,
}

impl Apps {
    /// Reads `strava_api_url`, `strava_client_id`, `strava_client_secret`,
    /// `instagram_graph_url`, `x_api_url`, `x_client_id`, `x_client_secret`,
    /// `linkedin_oauth_url`, `linkedin_client_id`, `linkedin_client_secret`.
    /// A platform whose base URL is not mapped is left out (its accounts'
    /// refreshes fail as a configuration fault, keeping their tokens).
    pub fn from_variables() -> Apps {
        let var = |name: &str| config::optional(name).unwrap_or_default();
        let mut apps = Vec::new();
        let mut add = |platform, base: &str, id: &str, secret: &str, graph: &str| {
            let base = var(base);
            if !base.is_empty() {
                apps.push(App {
                    platform,
                    client_id: var(id),
                    client_secret: var(secret),
                    oauth_base_url: base.trim_end_matches('/').to_string(),
                    graph_base_url: var(graph).trim_end_matches('/').to_string(),
                });
            }
        };
        add(
            Platform::Strava,
            "strava_api_url",
            "strava_client_id",
            "strava_client_secret",
            "",
        );
        // Instagram's refresh needs only the Graph host.
        add(
            Platform::Instagram,
            "instagram_graph_url",
            "",
            "",
            "instagram_graph_url",
        );
        add(
            Platform::X,
            "x_api_url",
            "x_client_id",
            "x_client_secret",
            "",
        );
        add(
            Platform::LinkedIn,
            "linkedin_oauth_url",
            "linkedin_client_id",
            "linkedin_client_secret",
            "",
        );
        Apps { apps }
    }

    /// The given applications (tests, or a component with its own config).
    pub fn new(apps: Vec<App>) -> Apps {
        Apps { apps }
    }

    /// The application of `platform`, if configured.
    pub fn get(&self, platform: Platform) -> Option<&App> {
        self.apps.iter().find(|a| a.platform == platform)
    }
}

/// One leased account, as the claim functions answer it (tokens sealed).
#[derive(Clone, Deserialize)]
pub struct Claim {
    /// `connected_accounts.id`.
    pub account_id: String,
    /// The account's owner.
    pub user_id: String,
    /// `platform_enum` value.
    pub platform: String,
    /// Sealed access token.
    pub access_token: Option<String>,
    /// Sealed refresh token.
    pub refresh_token: Option<String>,
    /// `connected_accounts.token_key_id`.
    pub token_key_id: Option<String>,
    /// When the access token expires.
    pub token_expires_at: Option<String>,
    /// The fencing token of the lease.
    pub lease_token: i64,
    /// `refresh`, `notify`, `expire` or `reseal`.
    pub action: String,
}

// Sealed tokens are not secret without the key, but stay out of logs anyway.
impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("account_id", &self.account_id)
            .field("platform", &self.platform)
            .field("token_key_id", &self.token_key_id)
            .field("token_expires_at", &self.token_expires_at)
            .field("lease_token", &self.lease_token)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

/// What became of one claimed account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New tokens saved.
    Refreshed,
    /// The tokens were sealed again under the current key.
    Resealed,
    /// The platform could not answer now: tokens kept, retried later.
    Transient,
    /// Our configuration was refused: tokens kept, retried later.
    Application,
    /// The platform refused the grant (or the token expired beyond
    /// renewal): the account is `token_expired` and its user notified.
    Expired,
    /// The user was told to reconnect before the token ends.
    Notified,
    /// The lease was taken over or the user reconnected meanwhile: nothing
    /// saved by this worker.
    Lost,
}

impl Outcome {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Refreshed => "refreshed",
            Outcome::Resealed => "resealed",
            Outcome::Transient => "failed_transiently",
            Outcome::Application => "failed_configuration",
            Outcome::Expired => "expired",
            Outcome::Notified => "notified",
            Outcome::Lost => "lost_lease",
        }
    }
}

/// The result of handling one claim.
pub struct Rotated {
    /// What happened.
    pub outcome: Outcome,
    /// The new access token in plain text, for a caller that refreshed on
    /// demand and now makes its call (never logged).
    pub access_token: Option<String>,
    /// Why it failed, in words without secrets.
    pub error: Option<String>,
    /// The token endpoint call, if one was made (for provider logs).
    pub call: Option<CallRecord>,
    /// Seconds the platform asked to wait, on a transient failure.
    pub retry_after: Option<u64>,
    /// What was stored when refreshed: the sealed tokens and the expiry,
    /// so a caller can carry on with the account it holds.
    pub stored: Option<Stored>,
}

/// Tokens as `finish_token_rotation` stored them.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Sealed access token.
    pub access_token: String,
    /// Sealed refresh token (the new one, or `None` if the platform kept
    /// the old).
    pub refresh_token: Option<String>,
    /// The key both are sealed under.
    pub token_key_id: String,
    /// When the new access token expires (RFC 3339), if the platform said.
    pub token_expires_at: Option<String>,
}

impl std::fmt::Debug for Rotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotated")
            .field("outcome", &self.outcome)
            .field("error", &self.error)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

/// One call to a token endpoint, as a provider log keeps it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// `platform_enum` value.
    pub provider: &'static str,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path without query.
    pub path: String,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Wall time.
    pub duration_ms: u64,
}

/// Timestamps as SQL takes them.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn uuid_param(id: &str) -> Result<ParameterValue> {
    uuid::Uuid::parse_str(id)
        .map(|u| ParameterValue::Uuid(u.to_string()))
        .map_err(|_| Error::Database(format!("`{id}` is not a uuid")))
}

/// Leases up to `max` due accounts for `worker`.
pub fn claim_due(
    db: &Database,
    worker: &str,
    max: i32,
    keys: &Keyring,
    now: DateTime<Utc>,
) -> Result<Vec<Claim>> {
    db.call(
        &CLAIM_TOKEN_ROTATIONS,
        &[
            worker.to_string().into(),
            max.into(),
            LEASE_SECONDS.into(),
            keys.current_id().to_string().into(),
            rfc3339(now).into(),
        ],
    )
}

/// Why an on-demand claim got no lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotClaimed {
    /// Another worker is refreshing it right now: its tokens will be saved
    /// within the lease; try again shortly.
    Leased,
    /// Not an active, verified account holding tokens.
    NotActive,
    /// No refresh token (and not Instagram).
    NotRefreshable,
    /// No such account.
    NotFound,
}

/// Refreshes account `account_id` now, whatever its margin: for a worker
/// that met an expired or rejected token. Answers the outcome (with the new
/// plain access token when refreshed), or why no lease was had.
pub fn refresh_now(
    db: &Database,
    apps: &Apps,
    keys: &Keyring,
    account_id: &str,
    worker: &str,
    now: DateTime<Utc>,
) -> Result<std::result::Result<Rotated, NotClaimed>> {
    let answer: Value = db.call(
        &CLAIM_TOKEN_REFRESH,
        &[
            uuid_param(account_id)?,
            worker.to_string().into(),
            LEASE_SECONDS.into(),
            rfc3339(now).into(),
        ],
    )?;
    if answer.get("claimed").and_then(Value::as_bool) != Some(true) {
        return Ok(Err(match answer.get("reason").and_then(Value::as_str) {
            Some("leased") => NotClaimed::Leased,
            Some("not_refreshable") => NotClaimed::NotRefreshable,
            Some("not_found") => NotClaimed::NotFound,
            _ => NotClaimed::NotActive,
        }));
    }
    let claim: Claim = serde_json::from_value(answer)
        .map_err(|e| Error::Database(format!("claim_token_refresh: unexpected answer: {e}")))?;
    rotate(db, apps, keys, &claim, now).map(Ok)
}

/// Handles one claim: refreshes, reseals, notifies or expires, and settles
/// it with one `finish_token_rotation` call.
pub fn rotate(
    db: &Database,
    apps: &Apps,
    keys: &Keyring,
    claim: &Claim,
    now: DateTime<Utc>,
) -> Result<Rotated> {
    let (result, mut rotated) = decide(apps, keys, claim, now);
    if let Some(call) = &rotated.call {
        // One api_logs row per token call: path without query (Instagram's
        // carries the token), the error in the platform's scrubbed words.
        crate::provider_log::record(
            db,
            &crate::provider_log::ProviderCall {
                provider: call.provider.to_string(),
                method: call.method.to_string(),
                path: call.path.clone(),
                status_code: call.status,
                duration_ms: call.duration_ms,
                user_id: uuid::Uuid::parse_str(&claim.user_id).ok(),
                model: None,
                error: rotated.error.clone(),
            },
        )?;
    }
    let mut finished: Value = db.call(
        &FINISH_TOKEN_ROTATION,
        &[
            uuid_param(&claim.account_id)?,
            ParameterValue::Int64(claim.lease_token),
            ParameterValue::Jsonb(result.to_string().into_bytes()),
            rfc3339(now).into(),
        ],
    )?;
    // The platform has already spent the old refresh token: tokens refused
    // for a lost lease would leave the account unrenewable.
    if finished.get("reason").and_then(Value::as_str) == Some("lease_lost")
        && result.get("outcome").and_then(Value::as_str) == Some("refreshed")
    {
        finished = db.call(
            &KEEP_TOKENS_OF_LOST_LEASE,
            &[
                uuid_param(&claim.account_id)?,
                ParameterValue::Jsonb(result.to_string().into_bytes()),
                rfc3339(now).into(),
            ],
        )?;
    }
    if finished.get("saved").and_then(Value::as_bool) != Some(true) {
        rotated.outcome = Outcome::Lost;
        rotated.access_token = None;
        rotated.stored = None;
        rotated.error = Some(format!(
            "not saved: {}",
            finished
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
        ));
    }
    Ok(rotated)
}

fn rotated(outcome: Outcome) -> Rotated {
    Rotated {
        outcome,
        access_token: None,
        error: None,
        call: None,
        retry_after: None,
        stored: None,
    }
}

/// What to do with a claim, and the `finish_token_rotation` result for it.
/// Everything but the platform call is pure.
fn decide(apps: &Apps, keys: &Keyring, claim: &Claim, now: DateTime<Utc>) -> (Value, Rotated) {
    let previous = claim.access_token.clone();
    let platform = Platform::from_name(&claim.platform);
    let label: &str = platform.map_or(claim.platform.as_str(), |p| p.label());
    let configuration = |message: String| {
        (
            json!({ "outcome": "application", "error": message }),
            Rotated {
                error: Some(message),
                ..rotated(Outcome::Application)
            },
        )
    };
    match claim.action.as_str() {
        "notify" => (json!({ "outcome": "notified" }), rotated(Outcome::Notified)),
        "expire" => {
            let message = format!(
                "the {label} token expired{} and {label} cannot renew it",
                claim
                    .token_expires_at
                    .as_deref()
                    .map(|at| format!(" at {at}"))
                    .unwrap_or_default()
            );
            (
                json!({ "outcome": "refused", "error": message, "previous_access_token": previous }),
                Rotated {
                    error: Some(message),
                    ..rotated(Outcome::Expired)
                },
            )
        }
        "reseal" => {
            let reseal = |sealed: &Option<String>| -> Result<Option<String>> {
                match sealed {
                    Some(sealed) => {
                        Ok(Some(keys.reseal(sealed)?.unwrap_or_else(|| sealed.clone())))
                    }
                    None => Ok(None),
                }
            };
            match (reseal(&claim.access_token), reseal(&claim.refresh_token)) {
                (Ok(access), Ok(refresh)) => (
                    json!({
                        "outcome": "resealed",
                        "access_token": access,
                        "refresh_token": refresh,
                        "token_key_id": keys.current_id(),
                        "previous_access_token": previous,
                    }),
                    rotated(Outcome::Resealed),
                ),
                (Err(e), _) | (_, Err(e)) => configuration(e.to_string()),
            }
        }
        "refresh" => {
            let Some(platform) = platform else {
                return configuration(format!("{} accounts are not refreshed", claim.platform));
            };
            let Some(app) = apps.get(platform) else {
                return configuration(format!("no {label} application is configured"));
            };
            refresh(app, keys, claim, now)
        }
        other => configuration(format!("unknown rotation action `{other}`")),
    }
}

fn refresh(app: &App, keys: &Keyring, claim: &Claim, now: DateTime<Utc>) -> (Value, Rotated) {
    let label = app.platform.label();
    let previous = claim.access_token.clone();
    let sealed = if app.platform == Platform::Instagram {
        claim.access_token.as_deref()
    } else {
        claim.refresh_token.as_deref()
    };
    let opened = sealed
        .ok_or_else(|| Error::Config(format!("the {label} account holds no token to refresh")))
        .and_then(|s| keys.open(s));
    let secret = match opened {
        Ok(secret) => secret,
        Err(e) => {
            let message = e.to_string();
            return (
                json!({ "outcome": "application", "error": message }),
                Rotated {
                    error: Some(message),
                    ..rotated(Outcome::Application)
                },
            );
        }
    };
    let grant = if app.platform == Platform::Instagram {
        Grant::InstagramRefresh(&secret)
    } else {
        Grant::RefreshToken(&secret)
    };
    let Exchange {
        outcome,
        status,
        duration_ms,
        method,
        path,
    } = app.send(&grant, now);
    let call = Some(CallRecord {
        provider: app.platform.name(),
        method,
        path,
        status,
        duration_ms,
    });
    let sealed_pair = outcome.as_ref().ok().map(|grant| {
        let access = keys.seal(&grant.access_token);
        let refresh = grant
            .refresh_token
            .as_deref()
            .map(|t| keys.seal(t))
            .transpose();
        (access, refresh)
    });
    match (outcome, sealed_pair) {
        (Ok(grant), Some((Ok(access), Ok(refresh)))) => (
            json!({
                "outcome": "refreshed",
                "access_token": access,
                "refresh_token": refresh,
                "token_key_id": keys.current_id(),
                "token_expires_at": grant.expires_at.map(rfc3339),
                "scope": grant.scope,
                "previous_access_token": previous,
            }),
            Rotated {
                outcome: Outcome::Refreshed,
                stored: Some(Stored {
                    access_token: access.clone(),
                    refresh_token: refresh.clone(),
                    token_key_id: keys.current_id().to_string(),
                    token_expires_at: grant.expires_at.map(rfc3339),
                }),
                access_token: Some(grant.access_token),
                error: None,
                call,
                retry_after: None,
            },
        ),
        (Ok(_), Some((Err(e), _) | (_, Err(e)))) => {
            // Only reachable with a broken key ring; the platform has
            // already rotated, so this is loud.
            let message = format!("{label} tokens refreshed but could not be sealed: {e}");
            (
                json!({ "outcome": "application", "error": message }),
                Rotated {
                    error: Some(message),
                    call,
                    ..rotated(Outcome::Application)
                },
            )
        }
        (Ok(_), None) => unreachable_outcome(call),
        (Err(failure), _) => {
            let message = failure.to_string();
            let (kind, outcome, retry_after) = match &failure {
                TokenFailure::Refused(_) => ("refused", Outcome::Expired, None),
                TokenFailure::Transient { retry_after, .. } => {
                    ("transient", Outcome::Transient, *retry_after)
                }
                TokenFailure::Application(_) => ("application", Outcome::Application, None),
            };
            (
                json!({
                    "outcome": kind,
                    "error": message,
                    "retry_after_seconds": retry_after,
                    "previous_access_token": previous,
                }),
                Rotated {
                    error: Some(message),
                    call,
                    retry_after,
                    ..rotated(outcome)
                },
            )
        }
    }
}

fn unreachable_outcome(call: Option<CallRecord>) -> (Value, Rotated) {
    let message = "token grant lost between answer and sealing".to_string();
    (
        json!({ "outcome": "transient", "error": message }),
        Rotated {
            error: Some(message),
            call,
            ..rotated(Outcome::Transient)
        },
    )
}

/// Seals `plain` under the current key of the variable `keys` (a key ring
/// or one key): for callers outside this module that store tokens.
pub fn seal_current(plain: &str, keys: &str) -> Result<(String, String)> {
    let ring = Keyring::parse(keys)?;
    Ok((ring.seal(plain)?, ring.current_id().to_string()))
}

/// Opens a sealed token with the variable `keys`.
pub fn open(sealed: &str, keys: &str) -> Result<String> {
    token_cipher::open(sealed, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const OLD: &str = "HxscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQAfHh0=";

    fn claim(
        action: &str,
        platform: &str,
        access: Option<String>,
        refresh: Option<String>,
    ) -> Claim {
        Claim {
            account_id: "00000000-0000-4000-8000-000000000001".into(),
            user_id: "00000000-0000-4000-8000-000000000002".into(),
            platform: platform.into(),
            access_token: access,
            refresh_token: refresh,
            token_key_id: Some("k1".into()),
            token_expires_at: Some("2032-01-01T00:00:00+00:00".into()),
            lease_token: 7,
            action: action.into(),
        }
    }

    #[test]
    fn reseal_moves_both_tokens_to_the_current_key_and_fences_on_the_old_access_token() {
        let ring = Keyring::parse(&format!("k2:{KEY},k1:{OLD}")).unwrap();
        let access = token_cipher::seal("access-plain", OLD, "k1").unwrap();
        let refresh = token_cipher::seal("refresh-plain", OLD, "k1").unwrap();
        let c = claim("reseal", "strava", Some(access.clone()), Some(refresh));
        let (result, rotated) = decide(&Apps::new(vec![]), &ring, &c, Utc::now());
        assert_eq!(rotated.outcome, Outcome::Resealed);
        assert_eq!(result["outcome"], "resealed");
        assert_eq!(result["token_key_id"], "k2");
        assert_eq!(result["previous_access_token"], access.as_str());
        let new_access = result["access_token"].as_str().unwrap();
        let new_refresh = result["refresh_token"].as_str().unwrap();
        assert_eq!(token_cipher::key_id(new_access), Some("k2"));
        assert_eq!(ring.open(new_access).unwrap(), "access-plain");
        assert_eq!(ring.open(new_refresh).unwrap(), "refresh-plain");
        assert!(!result.to_string().contains("plain"));
    }

    #[test]
    fn a_token_under_a_retired_key_is_a_configuration_fault_not_an_expiry() {
        let ring = Keyring::parse(&format!("k2:{KEY}")).unwrap();
        let access = token_cipher::seal("access-plain", OLD, "k1").unwrap();
        let c = claim("refresh", "instagram", Some(access), None);
        let apps = Apps::new(vec![App {
            platform: Platform::Instagram,
            client_id: String::new(),
            client_secret: String::new(),
            oauth_base_url: "http://127.0.0.1:9".into(),
            graph_base_url: "http://127.0.0.1:9".into(),
        }]);
        let (result, rotated) = decide(&apps, &ring, &c, Utc::now());
        assert_eq!(rotated.outcome, Outcome::Application);
        assert_eq!(result["outcome"], "application");
        assert!(rotated.error.unwrap().contains("`k1`"));
    }

    #[test]
    fn expire_and_notify_need_no_call() {
        let ring = Keyring::parse(KEY).unwrap();
        let (result, rotated) = decide(
            &Apps::new(vec![]),
            &ring,
            &claim("expire", "instagram", Some("v1.k1.x".into()), None),
            Utc::now(),
        );
        assert_eq!(rotated.outcome, Outcome::Expired);
        assert_eq!(result["outcome"], "refused");
        assert!(
            result["error"]
                .as_str()
                .unwrap()
                .contains("Instagram token expired")
        );
        let (result, rotated) = decide(
            &Apps::new(vec![]),
            &ring,
            &claim("notify", "linkedin", Some("v1.k1.x".into()), None),
            Utc::now(),
        );
        assert_eq!(
            (rotated.outcome, result["outcome"].as_str()),
            (Outcome::Notified, Some("notified"))
        );
        // A platform without a configured application keeps its tokens.
        let (result, _) = decide(
            &Apps::new(vec![]),
            &ring,
            &claim(
                "refresh",
                "x",
                Some("v1.k1.x".into()),
                Some("v1.k1.y".into()),
            ),
            Utc::now(),
        );
        assert_eq!(result["outcome"], "application");
    }
}

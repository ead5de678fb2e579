//! The account's platform token, opened from its sealed form
//! (`shared::token_cipher`, key `token_encryption_key`, a key ring when keys
//! rotate). A Strava token that has expired (or expires within two minutes)
//! is refreshed first, and one that Strava rejects with 401 is refreshed
//! once and the call retried. The refresh is token-rotation's shared path
//! (`shared::token_refresh::refresh_now`): a lease on the account, so no
//! other worker spends the same rotating refresh token, and the rotated pair
//! saved, sealed, in the call that releases it, before the new access token
//! is used. An expired Instagram token cannot be refreshed here: it is a
//! rejected token (token-rotation renews Instagram tokens weeks ahead).

use chrono::{DateTime, Duration, Utc};
use shared::oauth::{App, Platform};
use shared::token_cipher;
use shared::token_refresh::{self, Apps, NotClaimed, Outcome};

use crate::parse;
use crate::run::{Account, Failure, Run};

/// A token is refreshed when it expires within this margin.
const REFRESH_MARGIN_SECONDS: i64 = 120;

fn expires_at(account: &Account) -> Option<DateTime<Utc>> {
    account
        .token_expires_at
        .as_deref()
        .and_then(parse::parse_time)
}

fn open(run: &Run, account: &Account, sealed: Option<&str>, what: &str) -> Result<String, Failure> {
    let sealed = sealed.ok_or_else(|| Failure::TokenRejected {
        account_id: Some(account.id.clone()),
        message: format!("no {what} is stored for the account"),
    })?;
    let key = run.config.token_key()?;
    token_cipher::open(sealed, key).map_err(|e| Failure::permanent(e.to_string()))
}

/// Calls `call` with the account's Strava access token, refreshing it when
/// it has expired, and once more after a refresh when Strava answers 401.
pub fn with_strava_token<T>(
    run: &Run,
    account: &mut Account,
    call: impl Fn(&str) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let expiring = expires_at(account)
        .is_some_and(|at| at <= run.now() + Duration::seconds(REFRESH_MARGIN_SECONDS));
    let (token, refreshed) = if expiring && account.refresh_token.is_some() {
        (refresh_strava(run, account)?, true)
    } else {
        (
            open(
                run,
                account,
                account.access_token.as_deref(),
                "access token",
            )?,
            false,
        )
    };
    match call(&token) {
        Err(Failure::TokenRejected { .. }) if !refreshed && account.refresh_token.is_some() => {
            let token = refresh_strava(run, account)?;
            call(&token).map_err(|f| f.for_account(&account.id))
        }
        other => other.map_err(|f| f.for_account(&account.id)),
    }
}

/// The lease holder named in `account_token_rotation.locked_by`.
const WORKER: &str = "ingest";

/// Refreshes the Strava token pair through the shared path, carries the
/// stored (sealed) pair into `account`, and answers the new access token.
fn refresh_strava(run: &Run, account: &mut Account) -> Result<String, Failure> {
    let keys = token_cipher::Keyring::parse(run.config.token_key()?)?;
    let apps = Apps::new(vec![App {
        platform: Platform::Strava,
        client_id: run.config.strava_client_id.clone().unwrap_or_default(),
        client_secret: run.config.strava_client_secret.clone().unwrap_or_default(),
        oauth_base_url: run.config.strava_api_url.clone(),
        graph_base_url: String::new(),
    }]);
    let rejected = |message: String| Failure::TokenRejected {
        account_id: Some(account.id.clone()),
        message,
    };
    let rotated =
        match token_refresh::refresh_now(run.db, &apps, &keys, &account.id, WORKER, run.now())? {
            Ok(rotated) => rotated,
            Err(NotClaimed::Leased) => {
                return Err(Failure::transient(
                    "another worker is refreshing the Strava token right now",
                ));
            }
            Err(NotClaimed::NotRefreshable) => {
                return Err(rejected(
                    "no refresh token is stored for the account".into(),
                ));
            }
            Err(NotClaimed::NotActive | NotClaimed::NotFound) => {
                return Err(Failure::permanent(
                    "the account is not an active, verified Strava account",
                ));
            }
        };
    let error = rotated.error.clone().unwrap_or_default();
    match (rotated.outcome, rotated.access_token, rotated.stored) {
        (Outcome::Refreshed, Some(token), Some(stored)) => {
            account.access_token = Some(stored.access_token);
            if stored.refresh_token.is_some() {
                account.refresh_token = stored.refresh_token;
            }
            account.token_expires_at = stored.token_expires_at;
            Ok(token)
        }
        (Outcome::Expired, ..) => Err(rejected(format!(
            "Strava refused the token refresh: {error}"
        ))),
        (Outcome::Application, ..) => Err(Failure::permanent(format!(
            "{error}; check strava_client_id and strava_client_secret"
        ))),
        (Outcome::Transient, ..) => Err(Failure::Transient {
            message: error,
            retry_after: rotated.retry_after,
        }),
        _ => Err(Failure::transient(format!(
            "the Strava token refresh was not saved ({error}); retrying"
        ))),
    }
}

/// The account's Instagram access token; an expired one is rejected without
/// a call.
pub fn instagram_token(run: &Run, account: &Account) -> Result<String, Failure> {
    if let Some(at) = expires_at(account)
        && at <= run.now()
    {
        return Err(Failure::TokenRejected {
            account_id: Some(account.id.clone()),
            message: format!("the Instagram token expired at {}", parse::rfc3339(at)),
        });
    }
    open(
        run,
        account,
        account.access_token.as_deref(),
        "access token",
    )
}

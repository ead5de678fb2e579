//! The account's platform token, opened from its sealed form
//! (`shared::token_cipher`, key `token_encryption_key`). A Strava token that
//! has expired (or expires within two minutes) is refreshed first, and one
//! that Strava rejects with 401 is refreshed once and the call retried; the
//! rotated refresh token and `expires_at` are saved before the new access
//! token is used (a compare-and-set, so of two runs refreshing at once one
//! saves and the other takes its tokens). An expired Instagram token cannot
//! be refreshed here: it is a rejected token.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use shared::token_cipher;

use crate::parse;
use crate::run::{Account, Failure, Run, uuid};
use crate::sql;
use crate::strava;

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

#[derive(Deserialize)]
struct Saved {
    saved: bool,
    account: Account,
}

/// Refreshes the Strava token pair, saves it sealed, and answers the new
/// access token.
fn refresh_strava(run: &Run, account: &mut Account) -> Result<String, Failure> {
    let previous = account.refresh_token.clone();
    let refresh_token = open(run, account, previous.as_deref(), "refresh token")?;
    let grant = strava::refresh(run, &refresh_token).map_err(|f| f.for_account(&account.id))?;
    let key = run.config.token_key()?;
    let key_id = account
        .access_token
        .as_deref()
        .and_then(token_cipher::key_id)
        .unwrap_or("k1")
        .to_string();
    let sealed_access = token_cipher::seal(&grant.access_token, key, &key_id)?;
    let sealed_refresh = match grant.refresh_token.as_deref() {
        Some(token) => token_cipher::seal(token, key, &key_id)?,
        None => previous.clone().unwrap_or_default(),
    };
    let expires = DateTime::from_timestamp(grant.expires_at, 0)
        .unwrap_or_else(|| run.now() + Duration::hours(6));
    let saved: Saved = run.db.call(
        &sql::SAVE_REFRESHED_ACCOUNT_TOKENS,
        &[
            uuid(&account.id),
            previous.into(),
            sealed_access.into(),
            sealed_refresh.into(),
            key_id.into(),
            parse::rfc3339(expires).into(),
        ],
    )?;
    account.access_token = saved.account.access_token.clone();
    account.refresh_token = saved.account.refresh_token.clone();
    account.token_expires_at = saved.account.token_expires_at.clone();
    if saved.saved {
        Ok(grant.access_token)
    } else {
        // Another run refreshed first: its tokens are the current ones.
        open(
            run,
            account,
            account.access_token.as_deref(),
            "access token",
        )
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

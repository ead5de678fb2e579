//! The OAuth access token of an X or LinkedIn account: stored sealed
//! (AES-256-GCM, `shared::token_cipher`), opened here for one call and
//! never logged.

use crate::attempt::Attempt;
use crate::outcome::Outcome;

/// The account's access token in clear, or the outcome that explains why
/// there is none.
pub fn access_token(a: &Attempt<'_>, platform: &str) -> Result<String, Box<Outcome>> {
    if a.account.token_expired {
        // token-rotation refreshes OAuth tokens before they expire; one met
        // expired is refreshed now through the same path (its lease keeps
        // the two from spending one rotating refresh token).
        return refresh_now(a, platform);
    }
    let Some(sealed) = a.account.access_token.as_deref().filter(|t| !t.is_empty()) else {
        return Err(Box::new(Outcome::fail(format!(
            "the {platform} account {} has no access token; reconnect it",
            a.account.username
        ))));
    };
    if a.config.token_encryption_key.trim().is_empty() {
        return Err(Box::new(Outcome::retry(
            "token_encryption_key is not set, so OAuth tokens cannot be opened",
        )));
    }
    shared::token_cipher::open(sealed, &a.config.token_encryption_key).map_err(|_| {
        Box::new(Outcome::fail(format!(
            "the {platform} access token of {} cannot be decrypted with the current key; reconnect the account",
            a.account.username
        )))
    })
}

/// Refreshes the expired token now (`shared::token_refresh`): the new token,
/// or a retry when the platform or another refresher is busy, or a failure
/// when the platform refused the grant (the account is then token_expired
/// and its user notified by the refresh itself).
fn refresh_now(a: &Attempt<'_>, platform: &str) -> Result<String, Box<Outcome>> {
    use shared::token_refresh::{self, Apps, NotClaimed, Outcome as Refresh};
    let later = |why: String| {
        Box::new(Outcome::Retry {
            error: format!(
                "the {platform} access token of {} has expired and was not refreshed yet: {why}",
                a.account.username
            ),
            retry_after: Some(300),
            detail: serde_json::json!({}),
        })
    };
    let keys = shared::token_cipher::Keyring::parse(&a.config.token_encryption_key)
        .map_err(|e| later(e.to_string()))?;
    let refreshed = token_refresh::refresh_now(
        a.db,
        &Apps::from_variables(),
        &keys,
        &a.account.id.to_string(),
        "publish",
        chrono::Utc::now(),
    )
    .map_err(|e| later(e.to_string()))?;
    match refreshed {
        Ok(rotated) => match (rotated.outcome, rotated.access_token) {
            (Refresh::Refreshed, Some(token)) => Ok(token),
            (Refresh::Expired, _) => Err(Box::new(Outcome::fail(format!(
                "the account {} must be reconnected: {}",
                a.account.username,
                rotated.error.unwrap_or_default()
            )))),
            (_, _) => Err(later(rotated.error.unwrap_or_default())),
        },
        Err(NotClaimed::NotRefreshable) => Err(Box::new(Outcome::fail(format!(
            "the {platform} access token of {} has expired and {platform} gave no refresh token; reconnect the account",
            a.account.username
        )))),
        Err(other) => Err(later(format!("{other:?}"))),
    }
}

//! The OAuth access token of an X or LinkedIn account: stored sealed
//! (AES-256-GCM, `shared::token_cipher`), opened here for one call and
//! never logged.

use crate::attempt::Attempt;
use crate::outcome::Outcome;

/// The account's access token in clear, or the outcome that explains why
/// there is none.
pub fn access_token(a: &Attempt<'_>, platform: &str) -> Result<String, Box<Outcome>> {
    if a.account.token_expired {
        // token-rotation refreshes OAuth tokens before they expire; an
        // expired one is waiting for it, so try again later.
        return Err(Box::new(Outcome::Retry {
            error: format!(
                "the {platform} access token of {} has expired and was not refreshed yet",
                a.account.username
            ),
            retry_after: Some(300),
            detail: serde_json::json!({}),
        }));
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

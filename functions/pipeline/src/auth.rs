//! Who is asking: a signed-in user (Supabase access token) or a bot (a
//! bot token the user minted). Bot tokens are 32 random bytes, shown once;
//! only their SHA-256 is stored and compared (in SQL, by equality of
//! hashes, so the token itself never reaches the database or a log).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use shared::{Error, config, user_token};
use uuid::Uuid;

use crate::error::Result;
use crate::request::Call;

/// What every bot token starts with, so leaked ones are easy to spot.
pub const TOKEN_PREFIX: &str = "opb_";

/// The signed-in user of the request.
pub fn user(call: &Call) -> Result<Uuid> {
    let secret = config::maybe_empty("supabase_jwt_secret")?;
    if secret.is_empty() {
        return Err(Error::Config(
            "variable `supabase_jwt_secret` is empty: pipeline user routes need it".into(),
        )
        .into());
    }
    Ok(user_token::user_id(
        call.header("authorization"),
        &secret,
        now_seconds(),
    )?)
}

/// The SHA-256 (hex) of the request's bot token.
pub fn bot_token_hash(call: &Call) -> Result<String> {
    let token = call
        .header("authorization")
        .ok_or_else(|| Error::Unauthorized("missing Authorization header".into()))?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| t.starts_with(TOKEN_PREFIX))
        .ok_or_else(|| Error::Unauthorized("Authorization must be `Bearer <bot token>`".into()))?;
    Ok(hash(token))
}

/// A new bot token: the prefix and 32 random bytes, base64url.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Config(format!("no randomness for a token: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

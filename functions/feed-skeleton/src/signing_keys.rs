//! Issuers' signing keys: resolved from the PLC directory
//! (`{plc_directory_url}/{did}` answers the DID document) and cached in
//! `did_signing_keys` for an hour, since every request is a fresh wasm
//! instance. A cached key that fails to verify is re-resolved once when it
//! is older than a minute (the issuer may have rotated it), so a stream of
//! bad signatures cannot hammer the directory.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use shared::db::Database;
use shared::outbound::OutboundRequest;
use spin_sdk::pg4::ParameterValue;

use crate::config::Config;
use crate::error::{AuthFailure, FeedError};
use crate::service_jwt::{self, ServiceJwt, SigningKey};
use crate::sql;

/// How long a resolved key is trusted without asking again.
pub const KEY_TTL_SECONDS: i32 = 3600;
/// A cached key at least this old is re-resolved when a signature fails.
pub const REFRESH_AFTER_SECONDS: i64 = 60;
/// The AppView waits 10 s for the whole answer; the directory gets 3.
const PLC_TIMEOUT: Duration = Duration::from_secs(3);

/// A key from the cache, as `feed_skeleton` returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct CachedKey {
    /// The key, Multikey form.
    pub key_multibase: String,
    /// Seconds since it was resolved.
    pub age_seconds: i64,
}

/// Verifies `jwt`'s signature with the issuer's key: the cached one when
/// there is one, else (or when it fails and is old enough) a freshly
/// resolved one, which is then cached.
pub fn verify_issuer(
    db: &Database,
    config: &Config,
    jwt: &ServiceJwt,
    cached: Option<CachedKey>,
) -> Result<(), FeedError> {
    if let Some(cached) = cached
        && let Ok(key) = SigningKey::from_multikey(&cached.key_multibase)
    {
        match service_jwt::verify(jwt, &key) {
            Ok(()) => return Ok(()),
            Err(refused) if cached.age_seconds < REFRESH_AFTER_SECONDS => return Err(refused),
            Err(_) => {}
        }
    }
    let key = resolve(config, &jwt.issuer_did)?;
    let _: Value = db.call(
        &sql::STORE_DID_SIGNING_KEY,
        &[
            jwt.issuer_did.clone().into(),
            key.to_multikey().into(),
            ParameterValue::Int32(KEY_TTL_SECONDS),
        ],
    )?;
    service_jwt::verify(jwt, &key)
}

/// The `#atproto` key of `did` from the PLC directory.
fn resolve(config: &Config, did: &str) -> Result<SigningKey, FeedError> {
    let refused = |why: String| {
        FeedError::auth(
            AuthFailure::BadJwtSignature,
            format!("could not resolve the jwt issuer's signing key: {why}"),
        )
    };
    if !did.starts_with("did:plc:") {
        return Err(refused(format!(
            "only did:plc issuers are resolved here, not {}",
            did.split(':').take(2).collect::<Vec<_>>().join(":")
        )));
    }
    if config.plc_directory_url.is_empty() {
        return Err(FeedError::Shared(shared::Error::Config(
            "variable `plc_directory_url` is empty".into(),
        )));
    }
    let reply = OutboundRequest::get(&format!("{}/{did}", config.plc_directory_url))
        .header("accept", "application/did+ld+json, application/json")
        .timeout(PLC_TIMEOUT)
        .send()
        .map_err(|failure| {
            if failure.is_transient() {
                FeedError::UpstreamBusy {
                    message: format!("PLC directory: {failure}"),
                    retry_after: 1,
                }
            } else {
                FeedError::Upstream(format!("PLC directory: {failure}"))
            }
        })?;
    match reply.status {
        200..=299 => {}
        404 | 410 => return Err(refused(format!("{did} is not in the PLC directory"))),
        429 | 500..=599 => {
            return Err(FeedError::UpstreamBusy {
                message: format!("PLC directory answered {}", reply.status),
                retry_after: reply.retry_after_seconds().unwrap_or(1),
            });
        }
        status => {
            return Err(FeedError::Upstream(format!(
                "PLC directory answered {status}"
            )));
        }
    }
    let document: Value = reply
        .json()
        .map_err(|e| FeedError::Upstream(format!("PLC directory: {e}")))?;
    service_jwt::key_from_did_document(&document, did, "#atproto").map_err(refused)
}

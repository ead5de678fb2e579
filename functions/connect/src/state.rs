//! The OAuth `state` parameter and PKCE (RFC 7636, S256).
//!
//! `state` = `base64url(payload) "." base64url(HMAC-SHA256(key, "connect-state-v1." base64url(payload)))`
//! where the payload is `{"s": state row id, "u": user id, "p": platform,
//! "e": expiry (Unix seconds), "r": return URL}`. The row (migration 0021)
//! holds the sealed PKCE verifier and is spent once by
//! `consume_connect_state`, so the signature proves the state is ours and
//! unchanged, the row makes it single-use, and the verifier never leaves the
//! server.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Domain separation for the state MAC.
const CONTEXT: &[u8] = b"connect-state-v1.";

/// What a state binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    /// The `connect_states` row (the reference to the PKCE verifier).
    #[serde(rename = "s")]
    pub state_id: Uuid,
    /// The user who started the connect.
    #[serde(rename = "u")]
    pub user_id: Uuid,
    /// The platform (`platform_enum` value).
    #[serde(rename = "p")]
    pub platform: String,
    /// Unix seconds after which the state is refused.
    #[serde(rename = "e")]
    pub expires_at: i64,
    /// Where the browser goes back to (on the allow-list when signed).
    #[serde(rename = "r")]
    pub return_url: String,
}

/// Why a state was refused (before the database is asked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateRefusal {
    /// Not two base64url parts with a JSON payload.
    #[error("the state parameter is malformed")]
    Malformed,
    /// The MAC does not match: changed or not ours.
    #[error("the state parameter was tampered with or is not ours")]
    Tampered,
}

fn mac(key: &[u8]) -> Option<Hmac<Sha256>> {
    // HMAC takes keys of any length; None only for an empty key.
    (!key.is_empty())
        .then(|| <Hmac<Sha256> as Mac>::new_from_slice(key).ok())
        .flatten()
}

/// Signs `claims` with `key`.
pub fn sign(claims: &StateClaims, key: &[u8]) -> Result<String, shared::Error> {
    let unusable = || shared::Error::Config("connect_state_key is empty".into());
    let payload = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(claims)
            .map_err(|_| shared::Error::Config("state not encodable".into()))?,
    );
    let mut mac = mac(key).ok_or_else(unusable)?;
    mac.update(CONTEXT);
    mac.update(payload.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{payload}.{tag}"))
}

/// Checks `state`'s MAC (in constant time) and reads its claims. Expiry is
/// the caller's (and the row's) business.
pub fn verify(state: &str, key: &[u8]) -> Result<StateClaims, StateRefusal> {
    let (payload, tag) = state.split_once('.').ok_or(StateRefusal::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| StateRefusal::Malformed)?;
    let mut mac = mac(key).ok_or(StateRefusal::Tampered)?;
    mac.update(CONTEXT);
    mac.update(payload.as_bytes());
    mac.verify_slice(&tag).map_err(|_| StateRefusal::Tampered)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| StateRefusal::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| StateRefusal::Malformed)
}

/// A new PKCE `code_verifier`: 32 random bytes, base64url (43 characters,
/// within RFC 7636's 43..128 of unreserved characters).
pub fn new_verifier() -> Result<String, shared::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|_| shared::Error::Config("no randomness for the PKCE verifier".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The S256 `code_challenge` of a verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn claims() -> StateClaims {
        StateClaims {
            state_id: Uuid::from_u128(1),
            user_id: Uuid::from_u128(2),
            platform: "x".into(),
            expires_at: 1_900_000_000,
            return_url: "https://app.example/settings".into(),
        }
    }

    #[test]
    fn a_signed_state_verifies_and_round_trips() {
        let state = sign(&claims(), b"key").unwrap();
        assert_eq!(verify(&state, b"key").unwrap(), claims());
    }

    #[test]
    fn any_change_is_tampering() {
        let state = sign(&claims(), b"key").unwrap();
        assert_eq!(verify(&state, b"other"), Err(StateRefusal::Tampered));
        let mut other = claims();
        other.user_id = Uuid::from_u128(3);
        let forged = sign(&other, b"attacker").unwrap();
        let (forged_payload, _) = forged.split_once('.').unwrap();
        let (_, tag) = state.split_once('.').unwrap();
        assert_eq!(
            verify(&format!("{forged_payload}.{tag}"), b"key"),
            Err(StateRefusal::Tampered)
        );
        assert_eq!(verify("nodot", b"key"), Err(StateRefusal::Malformed));
    }

    #[test]
    fn challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let verifier = new_verifier().unwrap();
        assert_eq!(verifier.len(), 43);
    }
}

//! OAuth tokens at rest: `connected_accounts.access_token` and
//! `refresh_token` hold AES-256-GCM ciphertexts made here, and
//! `token_key_id` names the key, so keys can be rotated. The key is the Spin
//! variable `token_encryption_key`: base64 of 32 random bytes.
//!
//! Sealed form: `v1.<key id>.<base64url(nonce || ciphertext+tag)>`. The key
//! id is bound into the ciphertext as associated data, so a token cannot be
//! moved under another key id unnoticed.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use crate::error::{Error, Result};

const VERSION: &str = "v1";
const NONCE_BYTES: usize = 12;

fn cipher(key_b64: &str) -> Result<Aes256Gcm> {
    let key = STANDARD
        .decode(key_b64.trim())
        .map_err(|_| Error::Config("token_encryption_key is not valid base64".into()))?;
    Aes256Gcm::new_from_slice(&key)
        .map_err(|_| Error::Config("token_encryption_key must be 32 bytes (base64)".into()))
}

/// Encrypts `plain` under the key `key_b64` named `key_id`.
pub fn seal(plain: &str, key_b64: &str, key_id: &str) -> Result<String> {
    if key_id.is_empty() || key_id.contains('.') {
        return Err(Error::Config(
            "token key id must be non-empty without '.'".into(),
        ));
    }
    let cipher = cipher(key_b64)?;
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::Config(format!("no randomness for a token nonce: {e}")))?;
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain.as_bytes(),
                aad: key_id.as_bytes(),
            },
        )
        .map_err(|_| Error::Config("token encryption failed".into()))?;
    let mut bytes = nonce.to_vec();
    bytes.extend_from_slice(&sealed);
    Ok(format!(
        "{VERSION}.{key_id}.{}",
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The key id a sealed token names, without decrypting it.
pub fn key_id(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(VERSION), Some(id), Some(_)) => Some(id),
        _ => None,
    }
}

/// Decrypts a token made by [`seal`]. The error never contains the token.
pub fn open(sealed: &str, key_b64: &str) -> Result<String> {
    let mut parts = sealed.splitn(3, '.');
    let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Config(
            "stored token is not in the sealed v1 form".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| Error::Config("stored token is not valid base64url".into()))?;
    if bytes.len() <= NONCE_BYTES {
        return Err(Error::Config("stored token is truncated".into()));
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let plain = cipher(key_b64)?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: id.as_bytes(),
            },
        )
        .map_err(|_| {
            Error::Config(format!(
                "stored token does not open with the configured key (key id `{id}`)"
            ))
        })?;
    String::from_utf8(plain).map_err(|_| Error::Config("stored token is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn sealed_tokens_open_and_hide_their_text() {
        let sealed = seal("strava-access-123", KEY, "k1").unwrap();
        assert!(sealed.starts_with("v1.k1."));
        assert!(!sealed.contains("strava-access-123"));
        assert_eq!(key_id(&sealed), Some("k1"));
        assert_eq!(open(&sealed, KEY).unwrap(), "strava-access-123");
        // Random nonces: the same token seals differently each time.
        assert_ne!(sealed, seal("strava-access-123", KEY, "k1").unwrap());
    }

    #[test]
    fn tampering_and_wrong_keys_are_refused_without_leaking() {
        let sealed = seal("secret-token", KEY, "k1").unwrap();
        let moved = sealed.replacen("v1.k1.", "v1.k2.", 1);
        let error = open(&moved, KEY).unwrap_err().to_string();
        assert!(
            error.contains("k2") && !error.contains("secret-token"),
            "{error}"
        );
        let other_key = "HxscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQAfHh0=";
        assert!(open(&sealed, other_key).is_err());
        assert!(open("plain-token", KEY).is_err());
        assert!(seal("x", "c2hvcnQ=", "k1").is_err());
    }
}

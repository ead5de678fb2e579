//! OAuth tokens at rest: `connected_accounts.access_token` and
//! `refresh_token` hold AES-256-GCM ciphertexts made here, and
//! `token_key_id` names the key, so keys can be rotated. The key is the Spin
//! variable `token_encryption_key`: base64 of 32 random bytes.
//!
//! Sealed form: `v1.<key id>.<base64url(nonce || ciphertext+tag)>`. The key
//! id is bound into the ciphertext as associated data, so a token cannot be
//! moved under another key id unnoticed.
//!
//! Key rotation: the variable is either one key (`<base64>`, whose id is
//! [`DEFAULT_KEY_ID`] when sealing and which opens tokens of any id, as
//! before rotation existed) or a key ring `<id>:<base64>,<id>:<base64>,...`
//! whose first key is the current one (new tokens are sealed under it) and
//! whose others only open older tokens. `token-rotation` re-seals tokens of
//! older keys under the current one ([`Keyring::reseal`]), so an older key
//! can be dropped from the list once no `token_key_id` names it.

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

/// The key id of a single key given without one.
pub const DEFAULT_KEY_ID: &str = "k1";

/// The keys of `token_encryption_key`: the current one first, then older
/// ones kept for reading. `Debug` shows key ids only.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Aes256Gcm)>,
    /// One key given without an id: it opens tokens of any key id.
    single: bool,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Reads the variable's value: `<base64>` or `<id>:<base64>,...`.
    /// Errors name key ids or positions, never key material.
    pub fn parse(spec: &str) -> Result<Keyring> {
        let spec = spec.trim();
        if !spec.contains(':') {
            return Ok(Keyring {
                keys: vec![(DEFAULT_KEY_ID.to_string(), cipher(spec)?)],
                single: true,
            });
        }
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (position, entry) in spec.split(',').map(str::trim).enumerate() {
            let Some((id, key)) = entry.split_once(':') else {
                return Err(Error::Config(format!(
                    "token_encryption_key entry {} is not `<key id>:<base64 key>`",
                    position + 1
                )));
            };
            let id = id.trim();
            check_key_id(id)?;
            if keys.iter().any(|(known, _)| known == id) {
                return Err(Error::Config(format!(
                    "token_encryption_key names key id `{id}` twice"
                )));
            }
            let cipher = cipher(key).map_err(|_| {
                Error::Config(format!(
                    "token_encryption_key: key `{id}` must be base64 of 32 bytes"
                ))
            })?;
            keys.push((id.to_string(), cipher));
        }
        Ok(Keyring {
            keys,
            single: false,
        })
    }

    /// The id new tokens are sealed under.
    pub fn current_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Every key id, current first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Seals `plain` under the current key.
    pub fn seal(&self, plain: &str) -> Result<String> {
        let (id, cipher) = &self.keys[0];
        seal_with(cipher, plain, id)
    }

    /// Opens a token sealed under any key of the ring.
    pub fn open(&self, sealed: &str) -> Result<String> {
        let id = key_id(sealed)
            .ok_or_else(|| Error::Config("stored token is not in the sealed v1 form".into()))?;
        let cipher = if self.single {
            &self.keys[0].1
        } else {
            &self
                .keys
                .iter()
                .find(|(known, _)| known == id)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "stored token names key id `{id}`, which token_encryption_key no longer holds"
                    ))
                })?
                .1
        };
        open_with(cipher, sealed)
    }

    /// Whether `sealed` is under the current key id.
    pub fn is_current(&self, sealed: &str) -> bool {
        key_id(sealed) == Some(self.current_id())
    }

    /// `sealed` opened and sealed again under the current key, or `None`
    /// when it already is under it.
    pub fn reseal(&self, sealed: &str) -> Result<Option<String>> {
        if self.is_current(sealed) {
            return Ok(None);
        }
        let plain = self.open(sealed)?;
        self.seal(&plain).map(Some)
    }
}

fn check_key_id(key_id: &str) -> Result<()> {
    if key_id.is_empty() || key_id.contains(['.', ':', ',']) || key_id.contains(char::is_whitespace)
    {
        return Err(Error::Config(
            "token key id must be non-empty without '.', ':', ',' or spaces".into(),
        ));
    }
    Ok(())
}

/// Encrypts `plain` under the key named `key_id`: `keys` is the variable's
/// value, one key (used whatever `key_id`) or a key ring (the key of that
/// id). [`Keyring::seal`] seals under the current key.
pub fn seal(plain: &str, keys: &str, key_id: &str) -> Result<String> {
    if key_id.is_empty() || key_id.contains('.') {
        return Err(Error::Config(
            "token key id must be non-empty without '.'".into(),
        ));
    }
    let ring = Keyring::parse(keys)?;
    if ring.single {
        return seal_with(&ring.keys[0].1, plain, key_id);
    }
    let (_, cipher) = ring
        .keys
        .iter()
        .find(|(id, _)| id == key_id)
        .ok_or_else(|| Error::Config(format!("token_encryption_key holds no key `{key_id}`")))?;
    seal_with(cipher, plain, key_id)
}

fn seal_with(cipher: &Aes256Gcm, plain: &str, key_id: &str) -> Result<String> {
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

/// Decrypts a token made by [`seal`] with the variable's value `keys` (one
/// key, or a key ring whose key of the token's id is used). The error never
/// contains the token.
pub fn open(sealed: &str, keys: &str) -> Result<String> {
    Keyring::parse(keys)?.open(sealed)
}

fn open_with(cipher: &Aes256Gcm, sealed: &str) -> Result<String> {
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
    let plain = cipher
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

    const OLD: &str = "HxscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQAfHh0=";

    #[test]
    fn a_key_ring_seals_under_its_first_key_and_opens_older_ones() {
        let old_token = seal("old-secret", OLD, "k1").unwrap();
        let ring = Keyring::parse(&format!("k2:{KEY}, k1:{OLD}")).unwrap();
        assert_eq!(ring.current_id(), "k2");
        assert_eq!(ring.key_ids(), vec!["k2", "k1"]);
        assert_eq!(ring.open(&old_token).unwrap(), "old-secret");
        // The module functions read a ring too (callers that only open).
        assert_eq!(
            open(&old_token, &format!("k2:{KEY},k1:{OLD}")).unwrap(),
            "old-secret"
        );
        assert!(!ring.is_current(&old_token));
        let resealed = ring.reseal(&old_token).unwrap().unwrap();
        assert_eq!(key_id(&resealed), Some("k2"));
        assert_eq!(ring.open(&resealed).unwrap(), "old-secret");
        assert_eq!(ring.reseal(&resealed).unwrap(), None);
        // Once k1 is retired, its tokens no longer open, and the error says
        // which key id is missing, never the key or the token.
        let retired = Keyring::parse(&format!("k2:{KEY}")).unwrap();
        let error = retired.open(&old_token).unwrap_err().to_string();
        assert!(error.contains("`k1`") && !error.contains(OLD), "{error}");
        assert!(!format!("{ring:?}").contains(KEY));
    }

    #[test]
    fn one_key_without_an_id_still_reads_every_sealed_token() {
        let ring = Keyring::parse(KEY).unwrap();
        assert_eq!(ring.current_id(), DEFAULT_KEY_ID);
        let other_id = seal("t", KEY, "legacy").unwrap();
        assert_eq!(ring.open(&other_id).unwrap(), "t");
        assert_eq!(key_id(&ring.seal("t").unwrap()), Some("k1"));
    }

    #[test]
    fn malformed_rings_are_refused_without_showing_keys() {
        for spec in [
            format!("k1:{KEY},k1:{OLD}"),
            format!("k.1:{KEY}"),
            format!("k1:{KEY},{OLD}"),
            "k1:c2hvcnQ=".to_string(),
        ] {
            let error = Keyring::parse(&spec).unwrap_err().to_string();
            assert!(!error.contains(KEY) && !error.contains(OLD), "{error}");
        }
    }
}

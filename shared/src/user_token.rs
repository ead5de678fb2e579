//! A Supabase user access token: an HS256 JWT signed with the project's JWT
//! secret (the secret's text is the HMAC key), `sub` the user id, `role`
//! `authenticated`, `exp` in the future. Messages say what is wrong and
//! never contain the token. Shared by every route that acts for a
//! signed-in user (feed publishing, media reads).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::error::Error;

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    role: Option<String>,
    exp: Option<f64>,
}

fn refused(why: &str) -> Error {
    Error::Unauthorized(why.to_string())
}

/// The user id of a valid access token in `authorization` (the header
/// value), checked against `secret` at `now_seconds`.
pub fn user_id(authorization: Option<&str>, secret: &str, now_seconds: i64) -> Result<Uuid, Error> {
    let token = authorization
        .ok_or_else(|| refused("missing Authorization header"))?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| refused("Authorization must be `Bearer <access token>`"))?;
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refused("access token is not a JWT"));
    };
    let header: Header = decode(header_b64)?;
    if header.alg.as_deref() != Some("HS256") {
        return Err(refused("access token must be signed with HS256"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64.trim_end_matches('='))
        .map_err(|_| refused("access token signature is not base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| refused("access token cannot be checked"))?;
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&signature)
        .map_err(|_| refused("access token signature does not match"))?;

    let claims: Claims = decode(payload_b64)?;
    match claims.exp {
        Some(exp) if exp > now_seconds as f64 => {}
        Some(_) => return Err(refused("access token has expired")),
        None => return Err(refused("access token has no expiry")),
    }
    if claims.role.as_deref() != Some("authenticated") {
        return Err(refused("access token is not a signed-in user's"));
    }
    claims
        .sub
        .as_deref()
        .and_then(|sub| Uuid::parse_str(sub).ok())
        .ok_or_else(|| refused("access token has no user id"))
}

fn decode<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| refused("access token is not base64url JSON"))?;
    serde_json::from_slice(&bytes).map_err(|_| refused("access token is not base64url JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";
    const USER: &str = "6f1c1a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b";

    fn sign(header: &Value, claims: &Value, secret: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_valid_token_names_its_user() {
        let token = sign(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &json!({"sub": USER, "role": "authenticated", "exp": 2_000_000_000, "aud": "authenticated"}),
            SECRET,
        );
        let id = user_id(Some(&bearer(&token)), SECRET, 1_900_000_000).unwrap();
        assert_eq!(id.to_string(), USER);
    }

    #[test]
    fn every_fault_is_refused_with_its_own_message() {
        let good = json!({"sub": USER, "role": "authenticated", "exp": 2_000_000_000});
        let header = json!({"alg": "HS256"});
        let now = 1_900_000_000;
        let message = |auth: Option<String>| match user_id(auth.as_deref(), SECRET, now) {
            Err(Error::Unauthorized(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(message(None), "missing Authorization header");
        assert!(message(Some("Basic x".into())).contains("Bearer"));
        assert!(message(Some(bearer("abc"))).contains("not a JWT"));
        let wrong_secret = sign(&header, &good, "another-secret");
        assert!(message(Some(bearer(&wrong_secret))).contains("does not match"));
        let mut expired = good.clone();
        expired["exp"] = json!(now - 1);
        assert!(message(Some(bearer(&sign(&header, &expired, SECRET)))).contains("expired"));
        let mut anon = good.clone();
        anon["role"] = json!("anon");
        assert!(message(Some(bearer(&sign(&header, &anon, SECRET)))).contains("signed-in"));
        let mut no_sub = good.clone();
        no_sub["sub"] = json!("not-a-uuid");
        assert!(message(Some(bearer(&sign(&header, &no_sub, SECRET)))).contains("user id"));
        let none_alg = sign(&json!({"alg": "none"}), &good, SECRET);
        assert!(message(Some(bearer(&none_alg))).contains("HS256"));
    }
}

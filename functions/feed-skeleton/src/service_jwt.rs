//! The AppView's service JWT on `getFeedSkeleton`, checked as the reference
//! feed generator (`@atproto/xrpc-server` `verifyJwt`) checks it: three
//! base64url parts; not an access/refresh/DPoP token; `exp` in the future;
//! `aud` our service DID; `lxm` the method called; then the ES256K or ES256
//! signature (compact `r||s`, low-S) over `header.payload` against the
//! issuer's `#atproto` key from its DID document (`publicKeyMultibase`,
//! multicodec secp256k1-pub 0xe7 or p256-pub 0x1200, compressed point). An
//! `iss` may carry a `#fragment` (a service of that DID); like the reference
//! feed generator, the DID's `#atproto` key is what signs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{AuthFailure, FeedError};

/// The method this component serves behind a service JWT.
pub const GET_FEED_SKELETON: &str = "app.bsky.feed.getFeedSkeleton";

/// Multicodec prefix (varint) of a compressed secp256k1 public key (0xe7).
const SECP256K1_PREFIX: [u8; 2] = [0xe7, 0x01];
/// Multicodec prefix (varint) of a compressed P-256 public key (0x1200).
const P256_PREFIX: [u8; 2] = [0x80, 0x24];

/// A service JWT whose claims passed; its signature is still to be checked.
#[derive(Debug, Clone)]
pub struct ServiceJwt {
    /// `alg` from the header.
    pub alg: String,
    /// The issuer's DID (`iss` without any `#fragment`).
    pub issuer_did: String,
    /// `header.payload`, the signed bytes.
    signing_input: Vec<u8>,
    /// The decoded signature.
    signature: Vec<u8>,
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    typ: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<String>,
    exp: Option<f64>,
    lxm: Option<String>,
}

fn bad_jwt() -> FeedError {
    FeedError::auth(AuthFailure::BadJwt, "poorly formatted jwt")
}

/// The bearer token of an `Authorization` header value, if it has one.
pub fn bearer_token(header: Option<&str>) -> Result<&str, FeedError> {
    header
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            FeedError::auth(
                AuthFailure::AuthenticationRequired,
                "Authentication Required",
            )
        })
}

/// Parses `token` and checks its claims against our DID, the method and
/// `now_seconds` (Unix). The signature is checked later with [`verify`],
/// once the issuer's key is known.
pub fn check_claims(
    token: &str,
    service_did: &str,
    method: &str,
    now_seconds: i64,
) -> Result<ServiceJwt, FeedError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad_jwt());
    };
    let header: Header = decode_json(header_b64)?;
    if matches!(
        header.typ.as_deref(),
        Some("at+jwt" | "refresh+jwt" | "dpop+jwt")
    ) {
        return Err(FeedError::auth(AuthFailure::BadJwtType, "Invalid jwt type"));
    }
    let claims: Claims = decode_json(payload_b64)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64.trim_end_matches('='))
        .map_err(|_| bad_jwt())?;

    let exp = claims.exp.ok_or_else(bad_jwt)?;
    if (now_seconds as f64) > exp {
        return Err(FeedError::auth(AuthFailure::JwtExpired, "jwt expired"));
    }
    if claims.aud.as_deref() != Some(service_did) {
        return Err(FeedError::auth(
            AuthFailure::BadJwtAudience,
            "jwt audience does not match service did",
        ));
    }
    match claims.lxm.as_deref() {
        Some(lxm) if lxm == method => {}
        Some(_) => {
            return Err(FeedError::auth(
                AuthFailure::BadJwtLexiconMethod,
                format!("bad jwt lexicon method (\"lxm\"). must match: {method}"),
            ));
        }
        None => {
            return Err(FeedError::auth(
                AuthFailure::BadJwtLexiconMethod,
                format!("missing jwt lexicon method (\"lxm\"). must match: {method}"),
            ));
        }
    }
    let iss = claims.iss.unwrap_or_default();
    let issuer_did = iss.split('#').next().unwrap_or_default().to_string();
    if !is_did(&issuer_did) {
        return Err(FeedError::auth(
            AuthFailure::BadJwt,
            "jwt issuer is not a valid did",
        ));
    }
    Ok(ServiceJwt {
        alg: header.alg.unwrap_or_default(),
        issuer_did,
        signing_input: format!("{header_b64}.{payload_b64}").into_bytes(),
        signature,
    })
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, FeedError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| bad_jwt())?;
    serde_json::from_slice(&bytes).map_err(|_| bad_jwt())
}

/// `did:<method>:<id>` with a lowercase method and a non-empty id of the
/// characters DIDs allow.
pub fn is_did(text: &str) -> bool {
    let mut parts = text.splitn(3, ':');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some("did"), Some(method), Some(id))
            if !method.is_empty()
                && method.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && !id.is_empty()
                && id.len() <= 2048
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:%-".contains(&b))
    )
}

/// A public key an issuer signs with.
#[derive(Debug, Clone)]
pub enum SigningKey {
    /// secp256k1 (JWT `alg` ES256K).
    K256(k256::ecdsa::VerifyingKey),
    /// NIST P-256 (JWT `alg` ES256).
    P256(p256::ecdsa::VerifyingKey),
}

impl SigningKey {
    /// Reads a Multikey `publicKeyMultibase` (`z` + base58btc of the
    /// multicodec prefix and the compressed point).
    pub fn from_multikey(multibase: &str) -> Result<Self, String> {
        let encoded = multibase
            .strip_prefix('z')
            .ok_or("publicKeyMultibase is not base58btc (no 'z' prefix)")?;
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|e| format!("publicKeyMultibase is not base58btc: {e}"))?;
        if let Some(point) = bytes.strip_prefix(&SECP256K1_PREFIX) {
            k256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(SigningKey::K256)
                .map_err(|_| "not a valid secp256k1 public key".to_string())
        } else if let Some(point) = bytes.strip_prefix(&P256_PREFIX) {
            p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(SigningKey::P256)
                .map_err(|_| "not a valid P-256 public key".to_string())
        } else {
            Err("unsupported key type (expected secp256k1 or P-256)".into())
        }
    }

    /// The Multikey form (compressed point), the form the key cache keeps.
    pub fn to_multikey(&self) -> String {
        let mut bytes = Vec::with_capacity(35);
        match self {
            SigningKey::K256(key) => {
                bytes.extend_from_slice(&SECP256K1_PREFIX);
                bytes.extend_from_slice(key.to_encoded_point(true).as_bytes());
            }
            SigningKey::P256(key) => {
                bytes.extend_from_slice(&P256_PREFIX);
                bytes.extend_from_slice(key.to_encoded_point(true).as_bytes());
            }
        }
        format!("z{}", bs58::encode(bytes).into_string())
    }
}

/// The verification method `key_id` (`#atproto`) of a DID document, as a
/// key: a `Multikey`, or the older `EcdsaSecp256k1VerificationKey2019` /
/// `EcdsaSecp256r1VerificationKey2019` whose multibase is the bare point.
pub fn key_from_did_document(doc: &Value, did: &str, key_id: &str) -> Result<SigningKey, String> {
    if doc.get("id").and_then(Value::as_str) != Some(did) {
        return Err("the DID document is for another DID".into());
    }
    let full_id = format!("{did}{key_id}");
    let method = doc
        .get("verificationMethod")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| {
            let id = m.get("id").and_then(Value::as_str);
            id == Some(key_id) || id == Some(full_id.as_str())
        })
        .ok_or_else(|| format!("the DID document has no {key_id} key"))?;
    let multibase = method
        .get("publicKeyMultibase")
        .and_then(Value::as_str)
        .ok_or("the key has no publicKeyMultibase")?;
    match method.get("type").and_then(Value::as_str) {
        Some("EcdsaSecp256k1VerificationKey2019") => bare_point(multibase)
            .and_then(|p| {
                k256::ecdsa::VerifyingKey::from_sec1_bytes(&p).map_err(|_| "bad key".into())
            })
            .map(SigningKey::K256),
        Some("EcdsaSecp256r1VerificationKey2019") => bare_point(multibase)
            .and_then(|p| {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&p).map_err(|_| "bad key".into())
            })
            .map(SigningKey::P256),
        _ => SigningKey::from_multikey(multibase),
    }
}

fn bare_point(multibase: &str) -> Result<Vec<u8>, String> {
    let encoded = multibase
        .strip_prefix('z')
        .ok_or("publicKeyMultibase is not base58btc")?;
    bs58::decode(encoded)
        .into_vec()
        .map_err(|e| format!("publicKeyMultibase is not base58btc: {e}"))
}

/// Checks the JWT's signature with `key`; the `alg` must fit the key type,
/// and the signature must be 64 bytes with a low S, as atproto requires.
pub fn verify(jwt: &ServiceJwt, key: &SigningKey) -> Result<(), FeedError> {
    let refused = || {
        FeedError::auth(
            AuthFailure::BadJwtSignature,
            "jwt signature does not match jwt issuer",
        )
    };
    match (jwt.alg.as_str(), key) {
        ("ES256K", SigningKey::K256(key)) => {
            use k256::ecdsa::signature::Verifier;
            let signature =
                k256::ecdsa::Signature::from_slice(&jwt.signature).map_err(|_| refused())?;
            if signature.normalize_s().is_some() {
                return Err(refused());
            }
            key.verify(&jwt.signing_input, &signature)
                .map_err(|_| refused())
        }
        ("ES256", SigningKey::P256(key)) => {
            use p256::ecdsa::signature::Verifier;
            let signature =
                p256::ecdsa::Signature::from_slice(&jwt.signature).map_err(|_| refused())?;
            if signature.normalize_s().is_some() {
                return Err(refused());
            }
            key.verify(&jwt.signing_input, &signature)
                .map_err(|_| refused())
        }
        (alg, _) => Err(FeedError::auth(
            AuthFailure::BadJwtSignature,
            format!("jwt alg {alg:?} does not fit the issuer's key type"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SERVICE: &str = "did:web:feeds.example.com";

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn k256_key() -> k256::ecdsa::SigningKey {
        k256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap()
    }

    fn p256_key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap()
    }

    fn token_k256(claims: &Value, key: &k256::ecdsa::SigningKey) -> String {
        use k256::ecdsa::signature::Signer;
        let input = format!(
            "{}.{}",
            b64(&json!({"typ": "JWT", "alg": "ES256K"})),
            b64(claims)
        );
        let signature: k256::ecdsa::Signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn token_p256(claims: &Value, key: &p256::ecdsa::SigningKey) -> String {
        use p256::ecdsa::signature::Signer;
        let input = format!(
            "{}.{}",
            b64(&json!({"typ": "JWT", "alg": "ES256"})),
            b64(claims)
        );
        let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
        let signature = signature.normalize_s().unwrap_or(signature);
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn claims() -> Value {
        json!({"iss": "did:plc:viewer", "aud": SERVICE, "exp": 2_000_000_000, "lxm": GET_FEED_SKELETON})
    }

    fn failure(result: Result<ServiceJwt, FeedError>) -> AuthFailure {
        match result {
            Err(FeedError::Auth { failure, .. }) => failure,
            other => panic!("expected an auth failure, got {other:?}"),
        }
    }

    #[test]
    fn a_good_es256k_token_verifies_and_a_tampered_one_does_not() {
        let key = k256_key();
        let public = SigningKey::K256(*key.verifying_key());
        let token = token_k256(&claims(), &key);
        let jwt = check_claims(&token, SERVICE, GET_FEED_SKELETON, 1_900_000_000).unwrap();
        assert_eq!(jwt.issuer_did, "did:plc:viewer");
        verify(&jwt, &public).unwrap();

        let other = SigningKey::K256(
            *k256::ecdsa::SigningKey::from_slice(&[8u8; 32])
                .unwrap()
                .verifying_key(),
        );
        assert!(verify(&jwt, &other).is_err());

        // Same signature, other payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(
            &json!({"iss": "did:plc:someone", "aud": SERVICE, "exp": 2_000_000_000, "lxm": GET_FEED_SKELETON}),
        );
        parts[1] = &forged;
        let forged = parts.join(".");
        let jwt = check_claims(&forged, SERVICE, GET_FEED_SKELETON, 1_900_000_000).unwrap();
        assert!(verify(&jwt, &public).is_err());
    }

    #[test]
    fn a_good_es256_token_verifies_and_alg_must_fit_the_key() {
        let key = p256_key();
        let public = SigningKey::P256(*key.verifying_key());
        let token = token_p256(&claims(), &key);
        let jwt = check_claims(&token, SERVICE, GET_FEED_SKELETON, 1_900_000_000).unwrap();
        verify(&jwt, &public).unwrap();
        let k256_public = SigningKey::K256(*k256_key().verifying_key());
        assert!(verify(&jwt, &k256_public).is_err());
    }

    #[test]
    fn high_s_signatures_are_refused() {
        use p256::ecdsa::signature::Signer;
        let key = p256_key();
        let input = format!("{}.{}", b64(&json!({"alg": "ES256"})), b64(&claims()));
        let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
        let low = signature.normalize_s().unwrap_or(signature);
        // Flip S to the high half: still a valid ECDSA signature, refused.
        let (r, s) = low.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(high.to_bytes()));
        let jwt = check_claims(&token, SERVICE, GET_FEED_SKELETON, 1_900_000_000).unwrap();
        assert!(verify(&jwt, &SigningKey::P256(*key.verifying_key())).is_err());
    }

    #[test]
    fn claims_are_checked_in_the_reference_order() {
        let key = k256_key();
        let now = 1_900_000_000;
        let check = |claims: Value| {
            failure(check_claims(
                &token_k256(&claims, &key),
                SERVICE,
                GET_FEED_SKELETON,
                now,
            ))
        };
        let mut expired = claims();
        expired["exp"] = json!(now - 1);
        assert_eq!(check(expired), AuthFailure::JwtExpired);
        let mut audience = claims();
        audience["aud"] = json!("did:web:elsewhere.example");
        assert_eq!(check(audience), AuthFailure::BadJwtAudience);
        let mut method = claims();
        method["lxm"] = json!("app.bsky.feed.getTimeline");
        assert_eq!(check(method), AuthFailure::BadJwtLexiconMethod);
        let mut no_method = claims();
        no_method.as_object_mut().unwrap().remove("lxm");
        assert_eq!(check(no_method), AuthFailure::BadJwtLexiconMethod);
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(no_exp), AuthFailure::BadJwt);
        let mut bad_iss = claims();
        bad_iss["iss"] = json!("viewer");
        assert_eq!(check(bad_iss), AuthFailure::BadJwt);
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(
                failure(check_claims(junk, SERVICE, GET_FEED_SKELETON, now)),
                AuthFailure::BadJwt,
                "{junk}"
            );
        }
        let access = format!(
            "{}.{}.sig",
            b64(&json!({"alg": "ES256K", "typ": "at+jwt"})),
            b64(&claims())
        );
        assert_eq!(
            failure(check_claims(&access, SERVICE, GET_FEED_SKELETON, now)),
            AuthFailure::BadJwtType
        );
    }

    #[test]
    fn an_issuer_fragment_is_dropped() {
        let mut claims = claims();
        claims["iss"] = json!("did:plc:viewer#atproto_labeler");
        let token = token_k256(&claims, &k256_key());
        let jwt = check_claims(&token, SERVICE, GET_FEED_SKELETON, 0).unwrap();
        assert_eq!(jwt.issuer_did, "did:plc:viewer");
    }

    #[test]
    fn bearer_header_is_required() {
        assert!(bearer_token(None).is_err());
        assert!(bearer_token(Some("Basic x")).is_err());
        assert!(bearer_token(Some("Bearer ")).is_err());
        assert_eq!(bearer_token(Some("Bearer abc")).unwrap(), "abc");
    }

    #[test]
    fn multikeys_round_trip_and_did_documents_give_the_atproto_key() {
        let k = SigningKey::K256(*k256_key().verifying_key());
        let p = SigningKey::P256(*p256_key().verifying_key());
        let k_text = k.to_multikey();
        let p_text = p.to_multikey();
        // The well-known prefixes of compressed secp256k1 / P-256 multikeys.
        assert!(k_text.starts_with("zQ3s"), "{k_text}");
        assert!(p_text.starts_with("zDn"), "{p_text}");
        assert_eq!(
            SigningKey::from_multikey(&k_text).unwrap().to_multikey(),
            k_text
        );
        assert_eq!(
            SigningKey::from_multikey(&p_text).unwrap().to_multikey(),
            p_text
        );
        assert!(SigningKey::from_multikey("z1111").is_err());
        assert!(SigningKey::from_multikey("Q3sh").is_err());

        let doc = json!({
            "id": "did:plc:viewer",
            "verificationMethod": [
                {"id": "did:plc:viewer#other", "type": "Multikey", "publicKeyMultibase": p_text},
                {"id": "did:plc:viewer#atproto", "type": "Multikey", "controller": "did:plc:viewer", "publicKeyMultibase": k_text}
            ]
        });
        let key = key_from_did_document(&doc, "did:plc:viewer", "#atproto").unwrap();
        assert_eq!(key.to_multikey(), k_text);
        assert!(key_from_did_document(&doc, "did:plc:someone", "#atproto").is_err());
        assert!(key_from_did_document(&doc, "did:plc:viewer", "#missing").is_err());
    }

    #[test]
    fn dids_are_recognised() {
        assert!(is_did("did:plc:ewvi7nxzyoun6zhxrhs64oiz"));
        assert!(is_did("did:web:feeds.example.com"));
        assert!(!is_did("did:plc:"));
        assert!(!is_did("did:PLC:x"));
        assert!(!is_did("plc:x"));
        assert!(!is_did("did:plc:a/b"));
    }
}

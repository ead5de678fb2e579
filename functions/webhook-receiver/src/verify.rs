//! Authenticity checks, pure functions over bytes (no Spin calls), so they
//! are unit- and property-tested natively: the size limit, the subscription
//! handshakes, Meta's `X-Hub-Signature-256`, and Standard Webhooks
//! (Replicate). Header values arrive as raw bytes: a value that is not text
//! is a `bad_encoding`, never a panic. Every comparison with a secret or a
//! signature is constant-time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::WebhookError;

type HmacSha256 = Hmac<Sha256>;

/// The largest body accepted: 1 MiB (exactly 1 MiB is fine).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How far a Standard Webhooks timestamp may be from now, either side
/// (300 s is still fine).
pub const TOLERANCE_SECONDS: i64 = 300;

/// Refuses a request early when its `Content-Length` announces more than the
/// limit. An absent or unparseable value is left to the counted read.
pub fn check_content_length(value: Option<&[u8]>) -> Result<(), WebhookError> {
    let announced = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(length) if length > MAX_BODY_BYTES as u64 => Err(WebhookError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        }),
        _ => Ok(()),
    }
}

/// The two subscription handshakes' parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// `hub.challenge`, to be echoed back.
    pub challenge: String,
}

/// Checks a subscription handshake's query string (`hub.mode=subscribe`,
/// `hub.verify_token`, `hub.challenge`, URL-encoded) against our verify
/// token: `hub.mode` other than `subscribe` is 400, a token that is not ours
/// (or none) 403, no challenge 400. The first value of a repeated parameter
/// counts.
pub fn check_handshake(query: &str, verify_token: &str) -> Result<Handshake, WebhookError> {
    let mut mode = None;
    let mut token = None;
    let mut challenge = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "hub.mode" => &mut mode,
            "hub.verify_token" => &mut token,
            "hub.challenge" => &mut challenge,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    if mode.as_deref() != Some("subscribe") {
        return Err(WebhookError::UnsupportedMode);
    }
    let token = token.unwrap_or_default();
    // An empty configured token never matches: an unconfigured receiver
    // must not confirm anyone's subscription.
    if verify_token.is_empty() || !bool::from(token.as_bytes().ct_eq(verify_token.as_bytes())) {
        return Err(WebhookError::VerifyTokenMismatch);
    }
    let challenge = challenge.ok_or(WebhookError::MissingParameter("hub.challenge"))?;
    Ok(Handshake { challenge })
}

/// Checks Meta's `X-Hub-Signature-256: sha256=<hex>` over the raw body with
/// the app secret.
pub fn check_meta_signature(
    header: Option<&[u8]>,
    body: &[u8],
    app_secret: &[u8],
) -> Result<(), WebhookError> {
    let header = present(header).ok_or(WebhookError::MissingHeader("X-Hub-Signature-256"))?;
    let bad = || {
        WebhookError::BadEncoding(
            "X-Hub-Signature-256 must be `sha256=` followed by 64 hexadecimal digits".into(),
        )
    };
    let hex_digest = header.strip_prefix(b"sha256=").ok_or_else(bad)?;
    if hex_digest.len() != 64 {
        return Err(bad());
    }
    let expected = hex::decode(hex_digest).map_err(|_| bad())?;
    let mut mac = keyed(app_secret);
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::SignatureMismatch("X-Hub-Signature-256 does not match the body"))
}

/// The three Standard Webhooks headers, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardHeaders<'a> {
    /// `webhook-id`: the message id, the same on every retry.
    pub id: Option<&'a [u8]>,
    /// `webhook-timestamp`: Unix seconds.
    pub timestamp: Option<&'a [u8]>,
    /// `webhook-signature`: space-separated `v1,<base64>` entries.
    pub signature: Option<&'a [u8]>,
}

/// Decodes a Standard Webhooks signing secret: `whsec_` stripped, the rest
/// base64. A secret that does not decode is a configuration error (the
/// message never contains the secret).
pub fn decode_signing_secret(secret: &str) -> Result<Vec<u8>, WebhookError> {
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    match STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(WebhookError::Shared(shared::Error::Config(
            "variable `replicate_webhook_secret` is not a whsec_ base64 secret".into(),
        ))),
    }
}

/// Checks a Standard Webhooks request (Replicate): headers present and
/// text, the timestamp integer seconds within [`TOLERANCE_SECONDS`] of
/// `now` either side, and one `v1` entry the HMAC-SHA256 of
/// `"{id}.{timestamp}.{body}"` under `key`. Malformed entries are skipped.
/// Returns the `webhook-id`, the item's dedupe key.
pub fn check_standard_webhook(
    headers: StandardHeaders<'_>,
    body: &[u8],
    key: &[u8],
    now: i64,
) -> Result<String, WebhookError> {
    let id = present(headers.id).ok_or(WebhookError::MissingHeader("webhook-id"))?;
    let timestamp =
        present(headers.timestamp).ok_or(WebhookError::MissingHeader("webhook-timestamp"))?;
    let signature =
        present(headers.signature).ok_or(WebhookError::MissingHeader("webhook-signature"))?;
    let id = visible_text(id)
        .ok_or_else(|| WebhookError::BadEncoding("webhook-id must be visible ASCII text".into()))?;
    let signature = text(signature)
        .ok_or_else(|| WebhookError::BadEncoding("webhook-signature must be ASCII text".into()))?;
    let seconds = parse_seconds(timestamp).ok_or(WebhookError::BadTimestamp)?;
    let skew = now.saturating_sub(seconds);
    if skew.unsigned_abs() > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(WebhookError::StaleTimestamp {
            skew,
            tolerance: TOLERANCE_SECONDS,
        });
    }
    let mut mac = keyed(key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let (mut decoded, mut malformed) = (0usize, 0usize);
    let matched = signature
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, encoded)| match STANDARD.decode(encoded) {
            Ok(candidate) => {
                decoded += 1;
                Some(candidate)
            }
            Err(_) => {
                malformed += 1;
                None
            }
        })
        // Every entry is compared (no early exit on the first match).
        .fold(subtle::Choice::from(0), |any, candidate| {
            any | candidate.as_slice().ct_eq(expected.as_slice())
        });
    if bool::from(matched) {
        Ok(id.to_string())
    } else {
        Err(WebhookError::SignatureMismatch(mismatch_reason(
            decoded, malformed,
        )))
    }
}

/// Why no `v1` entry matched, so a sender can tell a bad encoding from a
/// wrong secret: when every `v1` entry there is fails to decode as base64,
/// the message says the entries are malformed (the code stays
/// `signature_mismatch`, as Standard Webhooks senders expect a 401 either
/// way).
fn mismatch_reason(decoded: usize, malformed: usize) -> &'static str {
    match (decoded, malformed) {
        (0, 1) => "the only v1 entry of webhook-signature is malformed: it is not valid base64",
        (0, m) if m > 1 => "every v1 entry of webhook-signature is malformed: none is valid base64",
        _ => "no v1 entry of webhook-signature matches",
    }
}

/// An HMAC-SHA256 keyed with `key` (any length is a valid HMAC key).
fn keyed(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // new_from_slice never fails for HMAC; an empty key stands in.
        Err(_) => <HmacSha256 as Mac>::new(&Default::default()),
    }
}

/// A header value that is present and not blank.
fn present(value: Option<&[u8]>) -> Option<&[u8]> {
    value
        .map(<[u8]>::trim_ascii)
        .filter(|value| !value.is_empty())
}

/// ASCII text (printable, spaces allowed).
fn text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ')
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Visible ASCII without spaces.
fn visible_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(u8::is_ascii_graphic)
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Integer Unix seconds: ASCII digits only (no sign, no fraction), at most
/// 18 of them so the value fits an `i64`. Public so the receiver can keep a
/// verified `webhook-timestamp` with the stored item.
pub fn parse_seconds(value: &[u8]) -> Option<i64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn meta_header(body: &[u8], secret: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())).into_bytes()
    }

    fn standard_signature(id: &str, ts: i64, body: &[u8], key: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    fn standard(
        id: &str,
        ts: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<String, WebhookError> {
        check_standard_webhook(
            StandardHeaders {
                id: Some(id.as_bytes()),
                timestamp: Some(ts.as_bytes()),
                signature: Some(signature.as_bytes()),
            },
            body,
            SECRET_KEY,
            now,
        )
    }

    fn code(result: Result<impl std::fmt::Debug, WebhookError>) -> &'static str {
        match result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn content_length_over_the_limit_is_refused_and_the_limit_itself_is_fine() {
        assert_eq!(code(check_content_length(Some(b"1048576"))), "ok");
        assert_eq!(
            code(check_content_length(Some(b"1048577"))),
            "payload_too_large"
        );
        assert_eq!(
            code(check_content_length(Some(b"99999999999999999999"))),
            "ok",
            "unparseable values are left to the counted read"
        );
        assert_eq!(code(check_content_length(None)), "ok");
    }

    #[test]
    fn handshakes_check_mode_then_token_then_challenge() {
        assert_eq!(
            check_handshake(
                "hub.mode=subscribe&hub.challenge=a%20b%22c&hub.verify_token=tok",
                "tok"
            )
            .unwrap()
            .challenge,
            "a b\"c"
        );
        assert_eq!(
            code(check_handshake(
                "hub.mode=unsubscribe&hub.challenge=x&hub.verify_token=tok",
                "tok"
            )),
            "unsupported_mode"
        );
        assert_eq!(
            code(check_handshake(
                "hub.challenge=x&hub.verify_token=tok",
                "tok"
            )),
            "unsupported_mode"
        );
        assert_eq!(
            code(check_handshake(
                "hub.mode=subscribe&hub.challenge=x&hub.verify_token=nope",
                "tok"
            )),
            "verify_token_mismatch"
        );
        assert_eq!(
            code(check_handshake("hub.mode=subscribe&hub.challenge=x", "tok")),
            "verify_token_mismatch"
        );
        assert_eq!(
            code(check_handshake(
                "hub.mode=subscribe&hub.challenge=x&hub.verify_token=",
                ""
            )),
            "verify_token_mismatch",
            "an unconfigured token matches nothing"
        );
        assert_eq!(
            code(check_handshake(
                "hub.mode=subscribe&hub.verify_token=tok",
                "tok"
            )),
            "missing_parameter"
        );
    }

    #[test]
    fn meta_signatures() {
        let body = br#"{"object":"instagram","entry":[]}"#;
        let good = meta_header(body, b"app-secret");
        assert_eq!(
            code(check_meta_signature(Some(&good), body, b"app-secret")),
            "ok"
        );
        let upper = String::from_utf8(good.clone())
            .unwrap()
            .replace("sha256=", "")
            .to_uppercase();
        assert_eq!(
            code(check_meta_signature(
                Some(format!("sha256={upper}").as_bytes()),
                body,
                b"app-secret"
            )),
            "ok",
            "hex digits in either case"
        );
        assert_eq!(
            code(check_meta_signature(None, body, b"app-secret")),
            "missing_header"
        );
        assert_eq!(
            code(check_meta_signature(Some(b"  "), body, b"app-secret")),
            "missing_header"
        );
        assert_eq!(
            code(check_meta_signature(Some(&good[7..]), body, b"app-secret")),
            "bad_encoding"
        );
        assert_eq!(
            code(check_meta_signature(
                Some(b"sha256=zz"),
                body,
                b"app-secret"
            )),
            "bad_encoding"
        );
        let mut not_hex = good.clone();
        not_hex[10] = b'g';
        assert_eq!(
            code(check_meta_signature(Some(&not_hex), body, b"app-secret")),
            "bad_encoding"
        );
        assert_eq!(
            code(check_meta_signature(Some(&good), body, b"other-secret")),
            "signature_mismatch"
        );
        assert_eq!(
            code(check_meta_signature(
                Some(&good),
                b"{\"object\":\"instagram\",\"entry\":[1]}",
                b"app-secret"
            )),
            "signature_mismatch"
        );
    }

    #[test]
    fn signing_secrets_strip_whsec_and_decode_base64() {
        let encoded = STANDARD.encode(SECRET_KEY);
        assert_eq!(
            decode_signing_secret(&format!("whsec_{encoded}")).unwrap(),
            SECRET_KEY
        );
        assert_eq!(decode_signing_secret(&encoded).unwrap(), SECRET_KEY);
        assert_eq!(
            code(decode_signing_secret("whsec_not base64!")),
            "configuration_error"
        );
        assert_eq!(code(decode_signing_secret("")), "configuration_error");
        let message = decode_signing_secret("whsec_s3cr3t!!")
            .unwrap_err()
            .to_string();
        assert!(!message.contains("s3cr3t"), "{message}");
    }

    #[test]
    fn standard_webhooks_accept_within_300_seconds_either_side() {
        let body = br#"{"id":"p1","status":"succeeded"}"#;
        let now = 1_700_000_000;
        for ts in [now, now - 300, now + 300] {
            let signature = standard_signature("msg_1", ts, body, SECRET_KEY);
            assert_eq!(
                standard("msg_1", &ts.to_string(), &signature, body, now).unwrap(),
                "msg_1"
            );
        }
        for ts in [now - 301, now + 301] {
            let signature = standard_signature("msg_1", ts, body, SECRET_KEY);
            assert_eq!(
                code(standard("msg_1", &ts.to_string(), &signature, body, now)),
                "stale_timestamp"
            );
        }
    }

    #[test]
    fn standard_webhooks_refusals_have_their_own_codes() {
        let body = b"{}";
        let now = 1_700_000_000;
        let ts = now.to_string();
        let good = standard_signature("msg_1", now, body, SECRET_KEY);
        let headers =
            |id: Option<&'static str>, t: Option<&'static str>, s: Option<&'static str>| {
                StandardHeaders {
                    id: id.map(str::as_bytes),
                    timestamp: t.map(str::as_bytes),
                    signature: s.map(str::as_bytes),
                }
            };
        for missing in [
            headers(None, Some("1"), Some("v1,x")),
            headers(Some("a"), None, Some("v1,x")),
            headers(Some("a"), Some("1"), None),
            headers(Some(""), Some("1"), Some("v1,x")),
        ] {
            assert_eq!(
                code(check_standard_webhook(missing, body, SECRET_KEY, now)),
                "missing_header"
            );
        }
        for bad in ["1.5", "abc", "-1", "+1", "1e9", "9999999999999999999"] {
            assert_eq!(
                code(standard("msg_1", bad, &good, body, now)),
                "bad_timestamp",
                "{bad}"
            );
        }
        assert_eq!(
            code(check_standard_webhook(
                StandardHeaders {
                    id: Some(b"msg_\xff"),
                    timestamp: Some(ts.as_bytes()),
                    signature: Some(good.as_bytes()),
                },
                body,
                SECRET_KEY,
                now
            )),
            "bad_encoding"
        );
        assert_eq!(
            code(standard(
                "msg_1",
                &ts,
                &good.replace("v1,", "v1,\u{e9}"),
                body,
                now
            )),
            "bad_encoding"
        );
        assert_eq!(
            code(standard("msg_2", &ts, &good, body, now)),
            "signature_mismatch",
            "the id is signed"
        );
        assert_eq!(
            code(standard(
                "msg_1",
                &ts,
                &good.replace("v1,", "v2,"),
                body,
                now
            )),
            "signature_mismatch",
            "only v1 entries count"
        );
        assert_eq!(
            code(standard("msg_1", &ts, &good, b"{ }", now)),
            "signature_mismatch"
        );
    }

    #[test]
    fn one_matching_v1_entry_among_several_and_malformed_ones_is_enough() {
        let body = b"{}";
        let now = 1_700_000_000;
        let good = standard_signature("msg_1", now, body, SECRET_KEY);
        let other = standard_signature("msg_1", now, body, b"another key");
        let header = format!("v1,!!notbase64 garbage v1a,xx {other}  v2,abc {good}");
        assert_eq!(
            standard("msg_1", &now.to_string(), &header, body, now).unwrap(),
            "msg_1"
        );
    }

    #[test]
    fn a_malformed_only_v1_entry_is_a_mismatch_that_says_so() {
        let body = b"{}";
        let now = 1_700_000_000;
        let ts = now.to_string();
        let message = |header: &str| match standard("msg_1", &ts, header, body, now) {
            Err(e @ WebhookError::SignatureMismatch(_)) => e.to_string(),
            other => panic!("expected signature_mismatch, got {other:?}"),
        };
        let only_bad = message("v1,!!not*base64");
        assert!(only_bad.contains("malformed"), "{only_bad}");
        assert!(only_bad.contains("base64"), "{only_bad}");
        let all_bad = message("v1,%%% v1,$$$ v2,AAAA");
        assert!(all_bad.contains("every v1 entry"), "{all_bad}");
        // A well-formed entry under the wrong key is a plain mismatch: the
        // sender's secret is wrong, not its encoding.
        let wrong_key = standard_signature("msg_1", now, body, b"another key");
        let wrong = message(&wrong_key);
        assert!(!wrong.contains("malformed"), "{wrong}");
        assert_eq!(wrong, "no v1 entry of webhook-signature matches");
        // One decodable entry beside a malformed one: the decodable one was
        // compared and did not match, so it is a plain mismatch too.
        let mixed = message(&format!("v1,!!bad {wrong_key}"));
        assert_eq!(mixed, "no v1 entry of webhook-signature matches");
    }

    #[test]
    fn timestamps_are_checked_before_signatures() {
        let body = b"{}";
        let now = 1_700_000_000;
        assert_eq!(
            code(standard("msg_1", "1", "v1,AAAA", body, now)),
            "stale_timestamp"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn standard_webhook_checks_never_panic(
                id in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                ts in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24)),
                sig in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
                body in proptest::collection::vec(any::<u8>(), 0..200),
                key in proptest::collection::vec(any::<u8>(), 0..80),
                now in any::<i64>(),
            ) {
                let headers = StandardHeaders {
                    id: id.as_deref(),
                    timestamp: ts.as_deref(),
                    signature: sig.as_deref(),
                };
                let _outcome = check_standard_webhook(headers, &body, &key, now);
            }

            #[test]
            fn standard_webhook_signature_texts_never_panic(
                sig in "[ -~]{0,200}",
                ts in "[0-9+-]{0,20}",
                now in any::<i64>(),
            ) {
                let _outcome = standard("msg_1", &ts, &sig, b"{}", now);
            }

            #[test]
            fn a_correct_signature_is_accepted_and_any_change_refused(
                id in "[a-zA-Z0-9_]{1,32}",
                body in proptest::collection::vec(any::<u8>(), 0..300),
                skew in -300i64..=300,
                flip in any::<proptest::sample::Index>(),
            ) {
                let now = 1_700_000_000;
                let ts = now + skew;
                let signature = standard_signature(&id, ts, &body, SECRET_KEY);
                prop_assert_eq!(standard(&id, &ts.to_string(), &signature, &body, now).unwrap(), id.clone());
                if !body.is_empty() {
                    let mut changed = body.clone();
                    let i = flip.index(changed.len());
                    changed[i] ^= 0x01;
                    prop_assert_eq!(
                        code(standard(&id, &ts.to_string(), &signature, &changed, now)),
                        "signature_mismatch"
                    );
                }
            }

            #[test]
            fn meta_signature_checks_never_panic(
                header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
                body in proptest::collection::vec(any::<u8>(), 0..200),
                secret in proptest::collection::vec(any::<u8>(), 0..80),
            ) {
                let _outcome = check_meta_signature(header.as_deref(), &body, &secret);
            }

            #[test]
            fn meta_signatures_round_trip(
                body in proptest::collection::vec(any::<u8>(), 0..300),
                secret in proptest::collection::vec(any::<u8>(), 0..80),
            ) {
                let header = meta_header(&body, &secret);
                prop_assert!(check_meta_signature(Some(&header), &body, &secret).is_ok());
            }

            #[test]
            fn handshakes_never_panic(query in ".{0,200}", token in ".{0,20}") {
                let _outcome = check_handshake(&query, &token);
            }

            #[test]
            fn content_lengths_never_panic(value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30))) {
                let _outcome = check_content_length(value.as_deref());
            }

            #[test]
            fn signing_secrets_never_panic(secret in ".{0,80}") {
                let _outcome = decode_signing_secret(&secret);
            }
        }
    }
}

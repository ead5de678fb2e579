//! What an accepted webhook is stored as, pure functions over the body (no
//! Spin calls): its dedupe key, its event type, the platform account it is
//! about, and the payload itself (the JSON as received, or, when the body
//! is not JSON, its text as a JSON string with the parse error). Nothing is
//! normalized here; `ingest` reads these rows later.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::WebhookError;

/// One accepted webhook, ready for `store_webhook_event`.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// `platform_enum` label: `strava`, `instagram` or `replicate`.
    pub platform: &'static str,
    /// e.g. `strava.activity.create`, `instagram.changes`, `replicate.prediction`.
    pub event_type: String,
    /// The dedupe key, unique per platform.
    pub external_id: String,
    /// The JSON text stored as `payload`.
    pub payload: String,
    /// The platform's user id, when the event names one account.
    pub platform_user_id: Option<String>,
    /// Why the payload cannot be processed (stored `failed`), if so.
    pub error: Option<String>,
}

/// The payload to store for `body`: its JSON text as received, or, when it
/// is not JSON (or holds `\u0000`, which `jsonb` refuses), its text as a
/// JSON string together with the reason it cannot be processed.
pub fn storable(
    body: &[u8],
    parsed: Result<&Value, &serde_json::Error>,
) -> (String, Option<String>) {
    match parsed {
        Ok(value) if !holds_nul(value) => (String::from_utf8_lossy(body).into_owned(), None),
        Ok(_) => (
            as_json_string(body),
            Some("payload holds \\u0000, which PostgreSQL jsonb cannot store".into()),
        ),
        Err(e) => (
            as_json_string(body),
            Some(format!("payload is not JSON: {e}")),
        ),
    }
}

/// The body's text (invalid UTF-8 replaced, NUL characters too) as a JSON
/// string literal.
fn as_json_string(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).replace('\0', "\u{FFFD}");
    Value::String(text).to_string()
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A JSON scalar as decimal text: strings as they are, integers in decimal;
/// anything else (floats, objects, null) is not an identifier.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Strava's event. A body that is not JSON cannot be authenticated (400
/// `bad_json`, nothing stored); a JSON body whose `subscription_id`
/// (compared as decimal text) is not `ours` is 401 `unknown_subscription`.
/// An accepted event is keyed
/// `"{object_type}:{object_id}:{aspect_type}:{event_time}"`; one of ours
/// that lacks those fields is still stored, `failed`, keyed by the body's
/// SHA-256, so nothing is lost.
pub fn strava_item(body: &[u8], ours: &str) -> Result<Item, WebhookError> {
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadJson(e.to_string()))?;
    let field = |name: &str| parsed.get(name).and_then(scalar_text);
    if ours.is_empty() || field("subscription_id").as_deref() != Some(ours) {
        return Err(WebhookError::UnknownSubscription);
    }
    let (payload, mut error) = storable(body, Ok(&parsed));
    let (event_type, external_id) = match (
        field("object_type"),
        field("object_id"),
        field("aspect_type"),
        field("event_time"),
    ) {
        // PostgreSQL text cannot hold NUL: such a key falls back to the hash.
        (Some(object_type), Some(object_id), Some(aspect_type), Some(event_time))
            if ![&object_type, &object_id, &aspect_type, &event_time]
                .iter()
                .any(|part| part.contains('\0')) =>
        {
            (
                format!("strava.{object_type}.{aspect_type}"),
                format!("{object_type}:{object_id}:{aspect_type}:{event_time}"),
            )
        }
        _ => {
            error.get_or_insert_with(|| {
                "event lacks object_type, object_id, aspect_type or event_time".into()
            });
            (
                "strava.unknown".into(),
                format!("body:{}", sha256_hex(body)),
            )
        }
    };
    Ok(Item {
        platform: "strava",
        event_type,
        external_id,
        payload,
        platform_user_id: field("owner_id"),
        error,
    })
}

/// An authenticated Instagram (Meta) POST: one row per POST keyed by the
/// SHA-256 of the raw body (Meta resends the same bytes); entries are split
/// later by `ingest`. The account is resolved only when every entry names
/// the same one.
pub fn instagram_item(body: &[u8]) -> Item {
    let parsed = serde_json::from_slice::<Value>(body);
    let (payload, error) = storable(body, parsed.as_ref());
    Item {
        platform: "instagram",
        event_type: "instagram.changes".into(),
        external_id: sha256_hex(body),
        payload,
        platform_user_id: parsed.ok().as_ref().and_then(single_entry_account),
        error,
    }
}

/// The `entry[].id` shared by every entry, if there is exactly one.
fn single_entry_account(value: &Value) -> Option<String> {
    let entries = value.get("entry")?.as_array()?;
    let mut ids = entries.iter().map(|e| e.get("id").and_then(scalar_text));
    let first = ids.next()??;
    ids.all(|id| id.as_deref() == Some(first.as_str()))
        .then_some(first)
}

/// The key under which a Replicate item's payload keeps the verified
/// `webhook-timestamp` (Unix seconds): ai-dispatch applies stored webhooks in
/// its order (`claim_replicate_webhooks`, migration 0023). Replicate's
/// prediction and training objects have no such field.
pub const WEBHOOK_TIMESTAMP_KEY: &str = "webhook_timestamp";

/// An authenticated Replicate webhook, keyed by its `webhook-id`, for the
/// AI dispatcher. A JSON object body also keeps `sent_at` (the verified
/// `webhook-timestamp`) under [`WEBHOOK_TIMESTAMP_KEY`]; any other body is
/// stored as [`storable`] makes it.
pub fn replicate_item(webhook_id: String, sent_at: Option<i64>, body: &[u8]) -> Item {
    let parsed = serde_json::from_slice::<Value>(body);
    let (mut payload, error) = storable(body, parsed.as_ref());
    if let (Ok(Value::Object(fields)), None, Some(seconds)) = (parsed, &error, sent_at) {
        let mut fields = fields;
        fields.insert(WEBHOOK_TIMESTAMP_KEY.into(), seconds.into());
        payload = Value::Object(fields).to_string();
    }
    Item {
        platform: "replicate",
        event_type: "replicate.prediction".into(),
        external_id: webhook_id,
        payload,
        platform_user_id: None,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strava_body(subscription: Value) -> Vec<u8> {
        json!({
            "aspect_type": "create", "event_time": 1_516_126_040_u64, "object_id": 1_360_128_428_u64,
            "object_type": "activity", "owner_id": 134_815, "subscription_id": subscription,
            "updates": {}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn strava_events_are_keyed_and_typed() {
        let item = strava_item(&strava_body(json!(120_475)), "120475").unwrap();
        assert_eq!(item.external_id, "activity:1360128428:create:1516126040");
        assert_eq!(item.event_type, "strava.activity.create");
        assert_eq!(item.platform_user_id.as_deref(), Some("134815"));
        assert_eq!(item.error, None);
        let stored: Value = serde_json::from_str(&item.payload).unwrap();
        assert_eq!(stored["object_id"], 1_360_128_428_u64);
        assert!(
            strava_item(&strava_body(json!("120475")), "120475").is_ok(),
            "a string id compares as decimal text too"
        );
    }

    #[test]
    fn strava_subscription_ids_must_be_ours_exactly() {
        for other in [
            json!(120_476),
            json!(120_475.0),
            json!(null),
            json!("0120475"),
        ] {
            assert_eq!(
                strava_item(&strava_body(other.clone()), "120475")
                    .unwrap_err()
                    .code(),
                "unknown_subscription",
                "{other}"
            );
        }
        assert_eq!(
            strava_item(&strava_body(json!(120_475)), "")
                .unwrap_err()
                .code(),
            "unknown_subscription",
            "an unconfigured id matches nothing"
        );
        assert_eq!(
            strava_item(b"[1,2]", "120475").unwrap_err().code(),
            "unknown_subscription"
        );
    }

    #[test]
    fn strava_non_json_is_bad_json() {
        assert_eq!(
            strava_item(b"object_id=1", "1").unwrap_err().code(),
            "bad_json"
        );
        assert_eq!(strava_item(b"", "1").unwrap_err().code(), "bad_json");
    }

    #[test]
    fn an_incomplete_strava_event_of_ours_is_stored_failed() {
        let body = br#"{"subscription_id": 7, "object_type": "activity"}"#;
        let item = strava_item(body, "7").unwrap();
        assert!(item.error.is_some());
        assert_eq!(item.external_id, format!("body:{}", sha256_hex(body)));
        assert_eq!(item.event_type, "strava.unknown");
        let nul = br#"{"subscription_id": 7, "object_type": "a\u0000", "object_id": 1, "aspect_type": "create", "event_time": 2}"#;
        let item = strava_item(nul, "7").unwrap();
        assert!(item.error.as_deref().unwrap().contains("u0000"));
        assert!(item.external_id.starts_with("body:"));
        assert!(
            serde_json::from_str::<Value>(&item.payload)
                .unwrap()
                .is_string()
        );
    }

    #[test]
    fn instagram_posts_are_keyed_by_their_bytes() {
        let body = br#"{"object":"instagram","entry":[{"id":"17841400000","time":1,"changes":[]},{"id":"17841400000","time":2,"changes":[]}]}"#;
        let item = instagram_item(body);
        assert_eq!(item.external_id, sha256_hex(body));
        assert_eq!(item.external_id.len(), 64);
        assert_eq!(item.platform_user_id.as_deref(), Some("17841400000"));
        let mixed = br#"{"object":"instagram","entry":[{"id":"1"},{"id":"2"}]}"#;
        assert_eq!(instagram_item(mixed).platform_user_id, None);
        let text = instagram_item(b"not json \xff\x00");
        assert!(
            text.error
                .as_deref()
                .unwrap()
                .starts_with("payload is not JSON")
        );
        assert_eq!(
            serde_json::from_str::<Value>(&text.payload).unwrap(),
            json!("not json \u{FFFD}\u{FFFD}")
        );
    }

    #[test]
    fn replicate_items_keep_the_webhook_id() {
        let item = replicate_item("msg_1".into(), None, br#"{"id":"p","status":"succeeded"}"#);
        assert_eq!(
            (item.platform, item.external_id.as_str(), item.error),
            ("replicate", "msg_1", None)
        );
    }

    #[test]
    fn replicate_items_keep_the_webhook_timestamp_beside_the_prediction() {
        let body = br#"{"id":"p","status":"processing","output":null}"#;
        let item = replicate_item("msg_1".into(), Some(1_700_000_123), body);
        let stored: Value = serde_json::from_str(&item.payload).unwrap();
        assert_eq!(
            stored,
            json!({"id": "p", "status": "processing", "output": null, "webhook_timestamp": 1_700_000_123})
        );
        // Not an object, or not JSON: stored as received, no timestamp added.
        for body in [&b"[1,2]"[..], b"not json"] {
            let item = replicate_item("m".into(), Some(5), body);
            assert_eq!(item.payload, replicate_item("m".into(), None, body).payload);
            assert!(!item.payload.contains("webhook_timestamp"));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn strava_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300), ours in "[0-9]{0,8}") {
                let _outcome = strava_item(&body, &ours);
            }

            #[test]
            fn strava_json_events_never_panic(
                sub in any::<i64>(), object_id in any::<u64>(), time in any::<i64>(),
                object_type in ".{0,12}", aspect in ".{0,12}", owner in proptest::option::of(any::<i64>()),
            ) {
                let body = json!({
                    "subscription_id": sub, "object_id": object_id, "event_time": time,
                    "object_type": object_type, "aspect_type": aspect, "owner_id": owner,
                }).to_string();
                let item = strava_item(body.as_bytes(), &sub.to_string()).unwrap();
                prop_assert!(serde_json::from_str::<Value>(&item.payload).is_ok());
            }

            #[test]
            fn every_stored_payload_is_json(body in proptest::collection::vec(any::<u8>(), 0..300)) {
                for item in [instagram_item(&body), replicate_item("m".into(), Some(1), &body)] {
                    let stored: Value = serde_json::from_str(&item.payload).unwrap();
                    prop_assert!(!holds_nul(&stored));
                    prop_assert_eq!(item.error.is_none(), serde_json::from_slice::<Value>(&body).is_ok() && !holds_nul(&stored));
                }
            }

            #[test]
            fn json_text_bodies_never_panic(body in "\\PC{0,200}") {
                let _item = instagram_item(body.as_bytes());
                let _outcome = strava_item(body.as_bytes(), "1");
            }
        }
    }
}

//! The bots' routes: events and artifacts, each request answered by one
//! SQL function that checks the bot token, that its owner owns the run and
//! that the run still takes input.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::db::Database;
use spin_sdk::http::Response;
use spin_sdk::pg4::ParameterValue;

use crate::artifacts;
use crate::auth;
use crate::error::{PipelineError, Result, refusal};
use crate::request::Call;
use crate::runs::jsonb;
use crate::sql;

/// The largest event body accepted.
pub const MAX_EVENT_BYTES: u64 = 256 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEvent {
    bot_name: Option<String>,
    event_type: String,
    #[serde(default)]
    payload: Value,
    event_id: Option<String>,
}

/// `POST /pipeline/runs/{run_id}/events {bot_name, event_type, payload,
/// event_id?}`: 201 with the event and the run's status; 200 with the
/// stored event when `event_id` was seen before; 409 for a move the run
/// does not allow (after cancelled, completed or failed).
pub fn record_event(call: &mut Call, db: &Database, run_id: &str) -> Result<Response> {
    let token = auth::bot_token_hash(call)?;
    let body = call.read_body(MAX_EVENT_BYTES)?;
    let event: NewEvent = serde_json::from_slice(&body).map_err(|e| {
        PipelineError::bad_request(format!(
            "expected {{\"bot_name\", \"event_type\", \"payload\", \"event_id\"?}}: {e}"
        ))
    })?;
    if let Some(name) = &event.bot_name {
        check_bot_name(name)?;
    }
    check_label("event_type", &event.event_type, 100)?;
    if let Some(id) = &event.event_id {
        check_label("event_id", id, 200)?;
    }
    let payload = match event.payload {
        Value::Null => ParameterValue::DbNull,
        other => jsonb(&other),
    };
    let answer: Value = db.call(
        &sql::RECORD_EVENT,
        &[
            token.into(),
            run_id.to_string().into(),
            optional(event.bot_name),
            event.event_type.into(),
            payload,
            optional(event.event_id),
        ],
    )?;
    if let Some(refused) = refusal(&answer) {
        return Err(refused);
    }
    let status = if answer["outcome"] == "duplicate" {
        200
    } else {
        201
    };
    Ok(shared::response::json(
        status,
        &json!({
            "duplicate": answer["outcome"] == "duplicate",
            "event": answer["event"],
            "status": answer["status"],
            "previous_status": answer.get("previous_status").cloned().unwrap_or(Value::Null),
        }),
    ))
}

/// `POST /pipeline/runs/{run_id}/artifacts?bot_name=&kind=&name=` with the
/// file as the body and its SHA-256 in `Content-Digest` or
/// `x-checksum-sha256` ([`artifacts::upload`]).
pub fn upload_artifact(call: &mut Call, db: &Database, run_id: &str) -> Result<Response> {
    let limits = artifacts::Limits::from_variables()?;
    if let Some(length) = call.content_length()?
        && length > limits.max_bytes
    {
        // Refused from the headers: the body is not read, nothing stored.
        return Err(PipelineError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let checked = (|| {
        let token = auth::bot_token_hash(call)?;
        let announced = announced_sha256(call)?;
        Ok::<_, PipelineError>((token, announced))
    })();
    let (token, announced) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            call.discard_body(limits.max_bytes);
            return Err(e);
        }
    };
    let bot_name = call.query("bot_name").map(str::to_string);
    if let Some(name) = &bot_name {
        check_bot_name(name)?;
    }
    let kind = call.query("kind").unwrap_or("file").to_string();
    check_label("kind", &kind, 100)?;
    let name = call.query("name").map(str::to_string);
    if let Some(name) = &name {
        check_label("name", name, 300)?;
    }
    let content_type = call
        .header("content-type")
        .unwrap_or("application/octet-stream")
        .trim()
        .to_string();
    if !valid_media_type(&content_type) {
        return Err(PipelineError::bad_request(
            "Content-Type must be a media type such as application/zip",
        ));
    }
    artifacts::upload(
        call,
        db,
        &limits,
        artifacts::Upload {
            token,
            run_id: run_id.to_string(),
            bot_name,
            kind,
            name,
            content_type,
            announced,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLink {
    url: String,
    sha256: String,
    bot_name: Option<String>,
    kind: Option<String>,
    name: Option<String>,
}

/// `POST /pipeline/runs/{run_id}/artifact-links {url, sha256, bot_name?,
/// kind?, name?}`: records an artifact kept elsewhere; the pipeline's job
/// fetches it later and marks it verified or failed. 202 with the artifact.
pub fn register_link(call: &mut Call, db: &Database, run_id: &str) -> Result<Response> {
    let token = auth::bot_token_hash(call)?;
    let body = call.read_body(MAX_EVENT_BYTES)?;
    let link: NewLink = serde_json::from_slice(&body).map_err(|e| {
        PipelineError::bad_request(format!(
            "expected {{\"url\", \"sha256\", \"bot_name\"?, \"kind\"?, \"name\"?}}: {e}"
        ))
    })?;
    if let Some(name) = &link.bot_name {
        check_bot_name(name)?;
    }
    let checksum = hex_sha256(&link.sha256)
        .ok_or_else(|| PipelineError::bad_request("sha256 must be 64 hexadecimal digits"))?;
    let url = url::Url::parse(&link.url)
        .map_err(|e| PipelineError::bad_request(format!("url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(PipelineError::bad_request("url must be an http(s) URL"));
    }
    if link.url.len() > 2048 {
        return Err(PipelineError::bad_request(
            "url is longer than 2048 characters",
        ));
    }
    let kind = link.kind.unwrap_or_else(|| "file".into());
    check_label("kind", &kind, 100)?;
    let mut meta = json!({ "checksum_algorithm": "sha-256", "source": "link" });
    if let Some(name) = link.name {
        check_label("name", &name, 300)?;
        meta["name"] = json!(name);
    }
    let answer: Value = db.call(
        &sql::REGISTER_ARTIFACT_LINK,
        &[
            token.into(),
            run_id.to_string().into(),
            optional(link.bot_name),
            jsonb(
                &json!({ "url": url.as_str(), "checksum": checksum, "kind": kind, "meta": meta }),
            ),
        ],
    )?;
    if let Some(refused) = refusal(&answer) {
        return Err(refused);
    }
    Ok(shared::response::json(
        202,
        &json!({ "artifact": answer["artifact"] }),
    ))
}

/// The SHA-256 the bot announced, as lower-case hex: `Content-Digest:
/// sha-256=:<base64>:` (RFC 9530) or `x-checksum-sha256: <hex>`; both must
/// agree when both are sent.
pub fn announced_sha256(call: &Call) -> Result<String> {
    let from_digest = call
        .header("content-digest")
        .map(|value| {
            content_digest_sha256(value).ok_or_else(|| {
                PipelineError::bad_request(
                    "Content-Digest must carry sha-256=:<base64 of 32 bytes>:",
                )
            })
        })
        .transpose()?;
    let from_hex = call
        .header("x-checksum-sha256")
        .map(|value| {
            hex_sha256(value).ok_or_else(|| {
                PipelineError::bad_request("x-checksum-sha256 must be 64 hexadecimal digits")
            })
        })
        .transpose()?;
    match (from_digest, from_hex) {
        (Some(a), Some(b)) if a != b => Err(PipelineError::bad_request(
            "Content-Digest and x-checksum-sha256 name different checksums",
        )),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(PipelineError::bad_request(
            "send the artifact's SHA-256 in Content-Digest (sha-256=:<base64>:) or x-checksum-sha256 (hex)",
        )),
    }
}

/// The sha-256 member of an RFC 9530 `Content-Digest` dictionary, as hex.
pub fn content_digest_sha256(value: &str) -> Option<String> {
    value.split(',').find_map(|member| {
        let (key, rest) = member.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("sha-256") {
            return None;
        }
        // A byte sequence is :base64:, parameters may follow after `;`.
        let item = rest.split(';').next()?.trim();
        let encoded = item.strip_prefix(':')?.strip_suffix(':')?;
        let bytes = STANDARD.decode(encoded).ok()?;
        (bytes.len() == 32).then(|| hex::encode(bytes))
    })
}

/// 64 hex digits, lower-cased.
pub fn hex_sha256(value: &str) -> Option<String> {
    let value = value.trim();
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// A bot's name: 1 to 100 printable characters.
pub fn check_bot_name(name: &str) -> Result<()> {
    check_label("bot_name", name, 100)
}

fn check_label(what: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(PipelineError::bad_request(format!(
            "{what} must be 1 to {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(PipelineError::bad_request(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// `type/subtype` with optional parameters, as HTTP allows.
fn valid_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value.len() <= 200
        && !value.chars().any(char::is_control)
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| token(t) && token(s))
}

fn optional(value: Option<String>) -> ParameterValue {
    value.map_or(ParameterValue::DbNull, ParameterValue::Str)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn content_digest_reads_the_sha256_member_among_others() {
        let b64 = STANDARD.encode(hex::decode(EMPTY_SHA256).unwrap());
        assert_eq!(
            content_digest_sha256(&format!("sha-256=:{b64}:")).as_deref(),
            Some(EMPTY_SHA256)
        );
        assert_eq!(
            content_digest_sha256(&format!("sha-512=:AAAA:, SHA-256=:{b64}:;x=1")).as_deref(),
            Some(EMPTY_SHA256)
        );
        assert_eq!(
            content_digest_sha256("sha-256=:AAAA:"),
            None,
            "16 bits is not a SHA-256"
        );
        assert_eq!(
            content_digest_sha256(&format!("sha-256={b64}")),
            None,
            "needs the colons"
        );
        assert_eq!(content_digest_sha256("md5=:AAAA:"), None);
    }

    #[test]
    fn hex_checksums_are_64_hex_digits() {
        assert_eq!(
            hex_sha256(&EMPTY_SHA256.to_uppercase()).as_deref(),
            Some(EMPTY_SHA256)
        );
        assert_eq!(hex_sha256(&EMPTY_SHA256[1..]), None);
        assert_eq!(hex_sha256(&format!("{}g", &EMPTY_SHA256[1..])), None);
    }

    #[test]
    fn media_types_are_type_slash_subtype() {
        assert!(valid_media_type("application/zip"));
        assert!(valid_media_type("text/plain; charset=utf-8"));
        assert!(!valid_media_type("zip"));
        assert!(!valid_media_type("text/"));
        assert!(!valid_media_type("text/plain\r\nx: y"));
    }

    #[test]
    fn labels_refuse_empty_long_and_control_characters() {
        assert!(check_bot_name("builder").is_ok());
        assert!(check_bot_name(" ").is_err());
        assert!(check_bot_name(&"x".repeat(101)).is_err());
        assert!(check_bot_name("a\nb").is_err());
    }
}

//! Answers `/webhooks/{platform}`: the subscription handshakes (`GET`
//! strava, instagram) and the events (`POST` strava, instagram, replicate).
//! Checks run cheapest first: the size limit (the announced
//! `Content-Length`, then the counted read, which stops at the limit), then
//! authenticity, then one SQL call stores the raw payload, and only then the
//! 200. A refused request touches no table and leaves one log line with its
//! reason (never the payload, a header value or a secret).

use serde::Deserialize;
use serde_json::json;
use shared::config;
use shared::db::Database;
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::pg4::ParameterValue;
use wasi::io::streams::StreamError;

use crate::error::WebhookError;
use crate::payload::{self, Item};
use crate::sql;
use crate::verify::{self, MAX_BODY_BYTES, StandardHeaders};

/// Bytes asked for per read of the request body.
const READ_CHUNK: u64 = 64 * 1024;

/// Answers one request; every refusal is logged with its reason.
pub fn answer(request: IncomingRequest) -> Response {
    let method = request.method();
    let target = request.path_with_query().unwrap_or_default();
    // The query string (a handshake's verify token) is never logged.
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    match route(&request, &method, path, query) {
        Ok(response) => response,
        Err(error) => {
            eprintln!(
                "webhook-receiver: {method} {path} refused: {} {}: {}",
                error.status(),
                error.code(),
                one_line(&error.to_string())
            );
            error.response()
        }
    }
}

/// The first part of a reason, for the log: driver errors can carry a
/// multi-line chain and a backtrace.
fn one_line(reason: &str) -> String {
    const MAX: usize = 300;
    let reason = reason
        .split("Stack backtrace:")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match reason.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &reason[..cut]),
        None => reason,
    }
}

fn route(
    request: &IncomingRequest,
    method: &Method,
    path: &str,
    query: &str,
) -> Result<Response, WebhookError> {
    let platform = path
        .trim_end_matches('/')
        .strip_prefix("/webhooks/")
        .unwrap_or_default();
    match (platform, method) {
        ("strava", Method::Get) => {
            let token = config::required("strava_verify_token")?;
            let handshake = verify::check_handshake(query, &token)?;
            // Strava wants the challenge back inside JSON (serde escapes it).
            Ok(shared::response::json(
                200,
                &json!({ "hub.challenge": handshake.challenge }),
            ))
        }
        ("instagram", Method::Get) => {
            let token = config::required("instagram_verify_token")?;
            let handshake = verify::check_handshake(query, &token)?;
            // Meta wants the challenge back as the plain body.
            Ok(Response::builder()
                .status(200)
                .header("content-type", "text/plain; charset=utf-8")
                .body(handshake.challenge)
                .build())
        }
        ("strava", Method::Post) => {
            let body = read_body(request)?;
            let ours = config::required("strava_subscription_id")?;
            store(payload::strava_item(&body, ours.trim())?)
        }
        ("instagram", Method::Post) => {
            let body = read_body(request)?;
            let secret = config::required("instagram_app_secret")?;
            let signature = header(request, "x-hub-signature-256");
            verify::check_meta_signature(signature.as_deref(), &body, secret.as_bytes())?;
            store(payload::instagram_item(&body))
        }
        ("replicate", Method::Post) => {
            let body = read_body(request)?;
            let key =
                verify::decode_signing_secret(&config::required("replicate_webhook_secret")?)?;
            let (id, timestamp, signature) = (
                header(request, "webhook-id"),
                header(request, "webhook-timestamp"),
                header(request, "webhook-signature"),
            );
            let headers = StandardHeaders {
                id: id.as_deref(),
                timestamp: timestamp.as_deref(),
                signature: signature.as_deref(),
            };
            let webhook_id = verify::check_standard_webhook(headers, &body, &key, now_seconds())?;
            // Verified just above, so it parses; ai-dispatch applies in its order.
            let sent_at = timestamp.as_deref().and_then(verify::parse_seconds);
            store(payload::replicate_item(webhook_id, sent_at, &body))
        }
        ("strava" | "instagram" | "replicate", other) => {
            Err(WebhookError::MethodNotAllowed(other.to_string()))
        }
        _ => Err(WebhookError::NotFound(path.to_string())),
    }
}

/// The first value of header `name`, as raw bytes.
fn header(request: &IncomingRequest, name: &str) -> Option<Vec<u8>> {
    request.headers().get(name).into_iter().next()
}

/// Reads the body, refusing it as soon as it is known to be over the limit:
/// from `Content-Length` before reading, or while counting (a chunked body
/// is never read past the limit).
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, WebhookError> {
    let announced = header(request, "content-length");
    verify::check_content_length(announced.as_deref())?;
    let too_large = || WebhookError::PayloadTooLarge {
        limit: MAX_BODY_BYTES,
    };
    let capacity = announced
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY_BYTES);
    let body = request
        .consume()
        .map_err(|()| WebhookError::UnreadableBody("the body was already taken".into()))?;
    // Declared after `body`, so dropped before it, as WASI requires.
    let stream = body
        .stream()
        .map_err(|()| WebhookError::UnreadableBody("the body stream was already taken".into()))?;
    let mut bytes = Vec::with_capacity(capacity);
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(bytes),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(WebhookError::UnreadableBody(e.to_debug_string()));
            }
        }
    }
}

/// Unix seconds now (the wall clock Spin gives the component).
fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What `store_webhook_event` answers.
#[derive(Debug, Deserialize)]
struct Stored {
    /// A row with the same `(platform, external_id)` was already there.
    duplicate: bool,
}

/// Stores the item (committed when the call returns), then answers 200. A
/// redelivery is a 200 that changed nothing. A database outage is the
/// shared 503 with `Retry-After`, never a 200.
fn store(item: Item) -> Result<Response, WebhookError> {
    let db = Database::open(&config::database_url()?)?;
    let text = |value: Option<String>| value.map_or(ParameterValue::DbNull, ParameterValue::Str);
    // Authenticated but unprocessable: kept, marked failed, answered 200.
    let failed = item
        .error
        .as_ref()
        .map(|error| format!("{} {}: {error}", item.platform, item.event_type));
    let stored: Stored = db.call(
        &sql::STORE_WEBHOOK_EVENT,
        &[
            ParameterValue::Str(item.platform.to_string()),
            ParameterValue::Str(item.event_type),
            ParameterValue::Str(item.external_id),
            ParameterValue::Jsonb(item.payload.into_bytes()),
            text(item.platform_user_id),
            text(item.error),
        ],
    )?;
    if let Some(failed) = failed {
        eprintln!("webhook-receiver: stored as failed: {failed}");
    }
    Ok(shared::response::json(
        200,
        &json!({ "received": true, "duplicate": stored.duplicate }),
    ))
}

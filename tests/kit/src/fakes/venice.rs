//! A loopback fake of Venice's native image API, following
//! `shared/PLATFORMS.md` "Venice" and Venice's API reference
//! (`docs.venice.ai`: image generation guide, error codes, rate limits):
//!
//! - `POST /api/v1/image/generate` with `Authorization: Bearer <key>` and a
//!   JSON body:
//!   - `model` (string, required), `prompt` (string, required, 1 to 7,500
//!     characters), `negative_prompt` (string);
//!   - `width`, `height` (whole numbers, 1 to 1,280, default 1,024),
//!     `steps` (whole number), `cfg_scale` (number), `seed` (whole number),
//!     `variants` (1 to 4, default 1), `style_preset`, `safe_mode`,
//!     `hide_watermark`, `embed_exif_metadata` (accepted, not used);
//!   - `format`: `webp` (default) or `png` (`jpeg` is Venice's third format;
//!     this fake encodes none and answers 400 for it);
//!   - `return_binary` (default false).
//!
//!   Answer 200 (`return_binary` false): `{"id": "generate-image-<n>",
//!   "images": [<base64 image>, ... one per variant], "timing":
//!   {"inferenceDuration", "inferencePreprocessingTime",
//!   "inferenceQueueTime", "total"}}` (milliseconds), each image a real PNG
//!   or lossless WebP of exactly `width` x `height` pixels whose pixels
//!   differ from call to call. With `return_binary` true the body is the
//!   first image itself (`content-type: image/png` / `image/webp`).
//!   Every answer carries `x-ratelimit-limit-requests`,
//!   `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests`
//!   (a Unix time in seconds).
//! - Errors, in Venice's shapes:
//!   - 401 `{"error": "Authentication failed"}`: missing or wrong key;
//!   - 400 `{"error": "Invalid request parameters", "details": {<field>:
//!     {"_errors": [..]}}, "issues": [{"code", "path": [<field>],
//!     "message"}]}`: a body that breaks the rules above;
//!   - 404 `{"error": "Not found"}`: any other path or method;
//!   - and what a test queues with [`FakeVenice::fail_next`]:
//!     [`Fault::content_policy`] (422 `{"error": "Content policy
//!     violation"}`), [`Fault::rate_limited`] (429 `{"error": "Rate limit
//!     exceeded"}` with `Retry-After` and the rate-limit headers),
//!     [`Fault::server_error`] (500 `{"error": "Inference processing
//!     failed"}`), [`Fault::status`] (any status and body), and
//!     [`Fault::slow`] (a valid answer after a delay).
//!
//! [`FakeVenice::served`] gives the image bytes of every 200, so a test can
//! compare what reached the object store byte for byte.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::KitError;
use crate::fake::{FakeServer, RecordedRequest, ResponseFuture};

/// The path of the image endpoint.
pub const GENERATE_PATH: &str = "/api/v1/image/generate";

/// The largest width or height the fake accepts (Venice's documented cap).
pub const MAX_SIDE: u64 = 1280;

/// Requests per minute Venice allows image models (reported in headers).
const IMAGE_REQUESTS_PER_MINUTE: u64 = 20;

/// A canned answer for the next request to the image endpoint.
#[derive(Debug, Clone)]
pub enum Fault {
    /// This status with this JSON body and, if given, `Retry-After`.
    Status {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: Value,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// Wait this long, then answer as usual.
    Slow(Duration),
}

impl Fault {
    /// Any status with Venice's plain error body `{"error": message}`.
    pub fn status(status: u16, message: &str) -> Self {
        Fault::Status {
            status,
            body: json!({ "error": message }),
            retry_after: None,
        }
    }

    /// 422: the prompt tripped Venice's content policy.
    pub fn content_policy() -> Self {
        Self::status(422, "Content policy violation")
    }

    /// 429 with `Retry-After: seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        Fault::Status {
            status: 429,
            body: json!({ "error": "Rate limit exceeded" }),
            retry_after: Some(seconds),
        }
    }

    /// 500: the model failed.
    pub fn server_error() -> Self {
        Self::status(500, "Inference processing failed")
    }

    /// A normal answer after `delay`.
    pub fn slow(delay: Duration) -> Self {
        Fault::Slow(delay)
    }
}

#[derive(Default)]
struct State {
    key: String,
    faults: VecDeque<Fault>,
    generated: u64,
    served: Vec<Vec<Vec<u8>>>,
}

/// A running fake Venice; stops when dropped.
pub struct FakeVenice {
    server: FakeServer,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn answer(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> http::Response<Bytes> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header(
            "x-ratelimit-limit-requests",
            IMAGE_REQUESTS_PER_MINUTE.to_string(),
        )
        .header("x-ratelimit-reset-requests", (now_unix() + 60).to_string());
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(Bytes::from(body))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

fn json_answer(status: u16, body: &Value, headers: &[(&str, String)]) -> http::Response<Bytes> {
    answer(
        status,
        "application/json",
        body.to_string().into_bytes(),
        headers,
    )
}

/// 400 in Venice's validation shape for one field.
fn invalid(field: &str, code: &str, message: &str) -> http::Response<Bytes> {
    let mut details = Map::new();
    details.insert("_errors".into(), json!([]));
    details.insert(field.into(), json!({ "_errors": [message] }));
    json_answer(
        400,
        &json!({
            "error": "Invalid request parameters",
            "details": details,
            "issues": [{ "code": code, "path": [field], "message": message }],
        }),
        &[],
    )
}

/// An image the fake makes: `width` x `height` RGBA pixels in a pattern
/// seeded by `seed`, encoded as `format` (`png` or `webp`).
pub fn make_image(format: &str, width: u32, height: u32, seed: u64) -> Result<Vec<u8>, String> {
    let mut pixels = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            let v = (u64::from(x) * 7 + u64::from(y) * 13 + seed * 31) as u8;
            pixels.extend_from_slice(&[
                v,
                v.wrapping_mul(3),
                (seed as u8).wrapping_add(x as u8),
                255,
            ]);
        }
    }
    let mut out = Vec::new();
    match format {
        "png" => {
            let mut encoder = png::Encoder::new(&mut out, width, height);
            encoder.set_color(png::ColorType::Rgba);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
            writer
                .write_image_data(&pixels)
                .map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
        }
        "webp" => {
            image_webp::WebPEncoder::new(&mut out)
                .encode(&pixels, width, height, image_webp::ColorType::Rgba8)
                .map_err(|e| e.to_string())?;
        }
        other => return Err(format!("the fake does not encode {other}")),
    }
    Ok(out)
}

impl FakeVenice {
    /// Starts the fake accepting API key `key`.
    pub async fn start(key: &str) -> Result<Self, KitError> {
        let state = Arc::new(Mutex::new(State {
            key: key.to_string(),
            ..State::default()
        }));
        let handler_state = state.clone();
        let server = FakeServer::start_async(move |request: RecordedRequest| -> ResponseFuture {
            let state = handler_state.clone();
            Box::pin(async move {
                if request.method != http::Method::POST || request.uri.path() != GENERATE_PATH {
                    return json_answer(404, &json!({ "error": "Not found" }), &[]);
                }
                let expected = format!("Bearer {}", lock(&state).key);
                let authorized = request
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v == expected);
                if !authorized {
                    return json_answer(401, &json!({ "error": "Authentication failed" }), &[]);
                }
                let fault = lock(&state).faults.pop_front();
                match fault {
                    Some(Fault::Status {
                        status,
                        body,
                        retry_after,
                    }) => {
                        let mut headers = vec![];
                        if let Some(seconds) = retry_after {
                            headers.push(("retry-after", seconds.to_string()));
                            headers.push(("x-ratelimit-remaining-requests", "0".to_string()));
                        }
                        return json_answer(status, &body, &headers);
                    }
                    Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
                    None => {}
                }
                generate(&state, &request)
            })
        })
        .await?;
        Ok(FakeVenice { server, state })
    }

    /// `http://127.0.0.1:<port>` (the `venice_api_url`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Queues `fault` for the next request to the image endpoint (after
    /// the key check; faults are used in order).
    pub fn fail_next(&self, fault: Fault) {
        lock(&self.state).faults.push_back(fault);
    }

    /// The images of every 200 so far, in order: one list per answer.
    pub fn served(&self) -> Vec<Vec<Vec<u8>>> {
        lock(&self.state).served.clone()
    }
}

/// Checks the body and answers with the images.
fn generate(state: &Mutex<State>, request: &RecordedRequest) -> http::Response<Bytes> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body) else {
        return invalid("body", "invalid_type", "Expected object, received string");
    };
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => return invalid("model", "invalid_type", "Required"),
    }
    match body.get("prompt").and_then(Value::as_str) {
        Some(p) if !p.is_empty() && p.chars().count() <= 7500 => {}
        Some(_) => {
            return invalid(
                "prompt",
                "too_big",
                "String must contain at most 7500 character(s)",
            );
        }
        None => return invalid("prompt", "invalid_type", "Required"),
    }
    // A side's problem as (code, message), turned into the 400 below.
    let side = |name: &str| -> Result<u32, (&'static str, String)> {
        match body.get(name) {
            None => Ok(1024),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_SIDE).contains(&n) => Ok(n as u32),
                Some(_) => Err((
                    "too_big",
                    format!("Number must be less than or equal to {MAX_SIDE}"),
                )),
                None => Err(("invalid_type", "Expected number".to_string())),
            },
        }
    };
    let width = match side("width") {
        Ok(w) => w,
        Err((code, message)) => return invalid("width", code, &message),
    };
    let height = match side("height") {
        Ok(h) => h,
        Err((code, message)) => return invalid("height", code, &message),
    };
    let variants = match body.get("variants") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=4).contains(&n) => n,
            _ => return invalid("variants", "too_big", "Number must be between 1 and 4"),
        },
    };
    let format = match body.get("format") {
        None => "webp",
        Some(Value::String(f)) if f == "webp" || f == "png" => f.as_str(),
        Some(Value::String(f)) if f == "jpeg" => {
            return invalid("format", "custom", "this fake encodes png and webp only");
        }
        Some(_) => {
            return invalid(
                "format",
                "invalid_enum_value",
                "Expected 'jpeg' | 'png' | 'webp'",
            );
        }
    };
    let binary = body
        .get("return_binary")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut st = lock(state);
    st.generated += 1;
    let n = st.generated;
    let mut images = Vec::new();
    for v in 0..variants {
        match make_image(format, width, height, n * 10 + v) {
            Ok(image) => images.push(image),
            Err(e) => return json_answer(500, &json!({ "error": e }), &[]),
        }
    }
    st.served.push(images.clone());
    drop(st);
    let remaining = (
        "x-ratelimit-remaining-requests",
        (IMAGE_REQUESTS_PER_MINUTE - 1).to_string(),
    );
    if binary {
        let first = images.into_iter().next().unwrap_or_default();
        return answer(200, &format!("image/{format}"), first, &[remaining]);
    }
    json_answer(
        200,
        &json!({
            "id": format!("generate-image-{n}"),
            "images": images.iter().map(|i| STANDARD.encode(i)).collect::<Vec<_>>(),
            "timing": {
                "inferenceDuration": 40,
                "inferencePreprocessingTime": 2,
                "inferenceQueueTime": 3,
                "total": 45,
            },
        }),
        &[remaining],
    )
}

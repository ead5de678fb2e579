//! Venice images (issue 15, seed 000 `ai_jobs`, `ai_assets`,
//! `ai_job_events`): each run claims queued image jobs with the queue
//! contract (`claim_next_ai_jobs`, whose screen refuses other users'
//! references and charges one credit at the first claim), asks Venice's
//! `POST /api/v1/image/generate` for the job's model, prompt and params,
//! decodes the base64 images, stores each in the `generations` bucket at
//! `{user_id}/ai-images/{job_id}/{n}.{ext}`, and settles the job with one
//! SQL call, `finish_venice_image_job` (migration 0024), which re-checks
//! the lease and the owner, records the `ai_assets` rows (type and size
//! read from each image's header), completes or fails the job, refunds a
//! dead-lettered job's credit and notifies the user. Every Venice call is
//! one `api_logs` row (`shared::provider_log`), without the key or the
//! prompt.
//!
//! What Venice answers decides what happens to the job:
//! - 200 with images: stored and recorded (`succeeded`);
//! - 429: deferred for `Retry-After` (or `x-ratelimit-reset-requests`), the
//!   attempt not counted, and the run stops: the key is out of quota;
//! - 401, 402, 403 (our key or balance): deferred, the run stops; the user
//!   is not charged for our configuration;
//! - 5xx, 408, timeouts, broken connections, an unreadable answer, a store
//!   outage: retried with the queue's backoff, dead-lettered (and refunded)
//!   after the last attempt;
//! - other 4xx (400 validation, 422 content policy, 404 model): failed at
//!   once with Venice's own message, and refunded.
//!
//! Variables: `venice_api_url`, `venice_api_key` (secret; unset: the run
//! claims nothing and says so) and the store's `media_store_*`.

mod image;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value, json};
use shared::db::Database;
use shared::object_store::{ObjectStore, StoreConfig};
use shared::outbound::{OutboundRequest, SendFailure};
use shared::provider_log::{self, ProviderCall};
use shared::sql::SqlCall;
use shared::{Error, config};
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

/// Claims queued AI jobs (`$1` worker, `$2` lease seconds, `$3` max items):
/// the queue contract's claim with 0017's screen and first-claim charge.
pub const CLAIM_AI_JOBS: SqlCall = SqlCall {
    name: "claim_next_ai_jobs",
    sql: "select public.claim_next_ai_jobs($1::text, $2::integer, $3::integer) as items",
};

/// Settles one job (`$1` id, `$2` lease token, `$3` outcome, `$4` detail).
pub const FINISH_VENICE_IMAGE_JOB: SqlCall = SqlCall {
    name: "finish_venice_image_job",
    sql: "select public.finish_venice_image_job($1::uuid, $2::bigint, $3::text, $4::jsonb) as answer",
};

/// Venice's native image endpoint.
pub const GENERATE_PATH: &str = "/api/v1/image/generate";

/// The bucket AI outputs go to (seed 004's `generations`, whose storage
/// policies give each user the folder named by their id).
pub const BUCKET: &str = "generations";

/// The model asked for when a job names none.
pub const DEFAULT_MODEL: &str = "venice-sd35";

/// The largest answer read: four variants of a large PNG, base64-encoded.
const MAX_ANSWER_BYTES: usize = 96 * 1024 * 1024;

/// How long a 429 without `Retry-After` defers a job.
const DEFAULT_RATE_LIMIT_WAIT: u64 = 60;

/// How long a refused key or balance defers a job: time for an operator.
const KEY_REFUSED_WAIT: u64 = 600;

/// Settings of one run (the `venice` object of a job request body; absent:
/// defaults; see the crate's `RunSettings`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The lease of a claimed job, seconds (30..=3600): longer than the
    /// slowest generation (four times `call_timeout_ms`) plus storing.
    pub lease_seconds: u32,
    /// Connect, first-byte and between-bytes timeout of the Venice call,
    /// milliseconds (100..=600000). Image models take from seconds to a
    /// couple of minutes before the first byte.
    pub call_timeout_ms: u64,
    /// Timeout of each object store request, milliseconds (100..=120000).
    pub store_timeout_ms: u64,
    /// Stop claiming after this many seconds (1..=600).
    pub run_seconds: u64,
    /// Stop after this many jobs.
    pub max_items: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lease_seconds: 900,
            call_timeout_ms: 180_000,
            store_timeout_ms: 30_000,
            // A cron run every minute: stop claiming well before the next.
            run_seconds: 45,
            max_items: None,
        }
    }
}

impl Settings {
    /// The same settings clamped to their ranges.
    pub fn clamped(mut self) -> Self {
        self.lease_seconds = self.lease_seconds.clamp(30, 3600);
        self.call_timeout_ms = self.call_timeout_ms.clamp(100, 600_000);
        self.store_timeout_ms = self.store_timeout_ms.clamp(100, 120_000);
        self.run_seconds = self.run_seconds.clamp(1, 600);
        self
    }
}

/// A claimed job, as `claim_next_ai_jobs` answers it.
#[derive(Debug, Clone, Deserialize)]
struct Job {
    id: Uuid,
    lease_token: i64,
    user_id: Uuid,
    kind: String,
    provider: String,
    model: Option<String>,
    prompt: String,
    #[serde(default)]
    params: Value,
}

/// How one job ended this time.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Images stored; the assets to record.
    Succeeded {
        venice_id: Option<String>,
        model: String,
        timing: Value,
        assets: Vec<Value>,
    },
    /// Refused for good (content policy, validation, bad params).
    Failed(String),
    /// Worth another attempt (5xx, timeouts, store down), not before the
    /// given seconds.
    Retry(String, Option<u64>),
    /// Not the job's fault (rate limit, our key): back to the queue after
    /// `wait` seconds without using an attempt; the run stops.
    Deferred { reason: String, wait: u64 },
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::Retry(..) => "retry",
            Outcome::Deferred { .. } => "deferred",
        }
    }

    fn detail(&self) -> Value {
        match self {
            Outcome::Succeeded {
                venice_id,
                model,
                timing,
                assets,
            } => {
                json!({"venice_id": venice_id, "model": model, "timing": timing, "assets": assets})
            }
            Outcome::Failed(why) => json!({ "error": why }),
            Outcome::Retry(why, after) => json!({ "error": why, "retry_after_seconds": after }),
            Outcome::Deferred { reason, wait } => {
                json!({ "reason": reason, "retry_after_seconds": wait })
            }
        }
    }
}

/// An answer as read: status, headers (lower-case names), body.
type RawAnswer = (u16, Vec<(String, String)>, Vec<u8>);

/// What the run needs besides the database.
struct Venice {
    base_url: String,
    key: String,
    store: ObjectStore,
    timeout: Duration,
}

/// Claims and generates until nothing is due, time is up, or Venice says
/// to stop; answers `{"worker_id", "claimed", "outcomes", "images",
/// "stale", "stopped", "seconds"}`. Without a key or an object store it
/// claims nothing (a claim would charge a credit for work it cannot do)
/// and answers `{"skipped": why}`.
pub fn run(db: &Database, settings: &Settings) -> Result<Value, Error> {
    let settings = settings.clone().clamped();
    let Some(key) = config::optional("venice_api_key") else {
        return Ok(json!({ "skipped": "venice_api_key is not set" }));
    };
    let store_config = match StoreConfig::from_variables() {
        Ok(store_config) => store_config,
        Err(e) => return Ok(json!({ "skipped": format!("no object store: {e}") })),
    };
    let venice = Venice {
        base_url: config::base_url("venice_api_url")?,
        key,
        store: ObjectStore::new(
            store_config,
            Duration::from_millis(settings.store_timeout_ms),
        ),
        timeout: Duration::from_millis(settings.call_timeout_ms),
    };
    let worker_id = format!(
        "ai-dispatch/venice/{}",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    let started = Instant::now();
    let mut claimed = 0u32;
    let mut images = 0usize;
    let mut stale = 0u32;
    let mut outcomes: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut stopped = "nothing due".to_string();
    loop {
        if started.elapsed() >= Duration::from_secs(settings.run_seconds) {
            stopped = "run time used up".into();
            break;
        }
        if settings.max_items.is_some_and(|max| claimed >= max) {
            stopped = "max_items reached".into();
            break;
        }
        // One job per claim: a generation takes long, and a batch would
        // hold the later jobs' leases while the first one renders.
        let batch: Vec<Job> = db.call(
            &CLAIM_AI_JOBS,
            &[
                worker_id.clone().into(),
                ParameterValue::Int32(i32::try_from(settings.lease_seconds).unwrap_or(900)),
                ParameterValue::Int32(1),
            ],
        )?;
        let Some(job) = batch.into_iter().next() else {
            break;
        };
        claimed += 1;
        let outcome = venice.generate(db, &job)?;
        *outcomes.entry(outcome.name()).or_default() += 1;
        if let Outcome::Succeeded { assets, .. } = &outcome {
            images += assets.len();
        }
        let answer: Value = db.call(
            &FINISH_VENICE_IMAGE_JOB,
            &[
                ParameterValue::Uuid(job.id.to_string()),
                ParameterValue::Int64(job.lease_token),
                outcome.name().to_string().into(),
                ParameterValue::Jsonb(outcome.detail().to_string().into_bytes()),
            ],
        )?;
        if answer.get("accepted") != Some(&Value::Bool(true)) {
            stale += 1;
        }
        if let Outcome::Deferred { reason, .. } = &outcome {
            stopped = reason.clone();
            break;
        }
    }
    Ok(json!({
        "worker_id": worker_id,
        "claimed": claimed,
        "outcomes": outcomes,
        "images": images,
        "stale": stale,
        "stopped": stopped,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

impl Venice {
    /// One job: check it, call Venice (one `api_logs` row), store the
    /// images. Only a database failure is an `Err`.
    fn generate(&self, db: &Database, job: &Job) -> Result<Outcome, Error> {
        if job.provider != "venice" {
            return Ok(Outcome::Failed(format!(
                "ai-dispatch sends image jobs to Venice only; this job names provider {:?}",
                job.provider
            )));
        }
        if job.kind != "image" {
            return Ok(Outcome::Failed(format!(
                "Venice makes images only; this job's kind is {:?}",
                job.kind
            )));
        }
        let model = job
            .model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or(DEFAULT_MODEL)
            .to_string();
        let body = match request_body(&model, &job.prompt, &job.params) {
            Ok(body) => body,
            Err(why) => return Ok(Outcome::Failed(why)),
        };

        let started = Instant::now();
        let answer = self.call(&body);
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let secrets = [self.key.as_str(), job.prompt.as_str()];
        let (status, outcome) = match answer {
            Ok((status, headers, bytes)) => {
                (Some(status), classify(status, &headers, &bytes, now_unix()))
            }
            Err(e) if e.is_transient() => (None, Answer::Retry(e.to_string(), None)),
            // Denied host or a malformed URL: our configuration, not the job.
            Err(e) => (
                None,
                Answer::Deferred {
                    reason: format!("Venice cannot be called: {e}"),
                    wait: KEY_REFUSED_WAIT,
                },
            ),
        };
        let outcome = outcome.scrubbed(&secrets);
        provider_log::record(
            db,
            &ProviderCall {
                provider: "venice".into(),
                method: "POST".into(),
                path: GENERATE_PATH.into(),
                status_code: status,
                duration_ms,
                user_id: Some(job.user_id),
                model: Some(model.clone()),
                error: outcome.error().map(str::to_string),
            },
        )?;
        Ok(match outcome {
            Answer::Images {
                venice_id,
                timing,
                images,
            } => self.store(job, model, venice_id, timing, images),
            Answer::Failed(why) => Outcome::Failed(why),
            Answer::Retry(why, after) => Outcome::Retry(why, after),
            Answer::Deferred { reason, wait } => Outcome::Deferred { reason, wait },
        })
    }

    /// `POST {venice_api_url}/api/v1/image/generate`: status, headers and
    /// the whole body, read by a deadline of four times the timeout.
    fn call(&self, body: &Value) -> Result<RawAnswer, SendFailure> {
        let mut incoming = OutboundRequest::post(&format!("{}{GENERATE_PATH}", self.base_url))
            .bearer(&self.key)
            .json(body)
            .timeout(self.timeout)
            .open()?;
        let deadline = Instant::now() + self.timeout.saturating_mul(4);
        let mut bytes = Vec::new();
        while let Some(chunk) = incoming.read_chunk(256 * 1024)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_ANSWER_BYTES {
                return Err(SendFailure::Decode(
                    incoming.target.clone(),
                    format!("answer larger than {MAX_ANSWER_BYTES} bytes"),
                ));
            }
            if Instant::now() > deadline {
                return Err(SendFailure::Timeout(incoming.target.clone()));
            }
        }
        Ok((
            incoming.status,
            std::mem::take(&mut incoming.headers),
            bytes,
        ))
    }

    /// Decodes and stores every image; the assets to record, or why not.
    fn store(
        &self,
        job: &Job,
        model: String,
        venice_id: Option<String>,
        timing: Value,
        encoded: Vec<String>,
    ) -> Outcome {
        let mut assets = Vec::with_capacity(encoded.len());
        for (n, text) in encoded.iter().enumerate() {
            let picture = match image::decode(text) {
                Ok(picture) => picture,
                Err(why) => return Outcome::Retry(format!("Venice answered {why}"), None),
            };
            let path = format!(
                "{}/ai-images/{}/{n}.{}",
                job.user_id, job.id, picture.extension
            );
            let bytes = picture.bytes.len();
            if let Err(e) = self.store.put(BUCKET, &path, picture.mime, picture.bytes) {
                // The images are lost with this answer; the next attempt
                // asks Venice again (the queue's backoff gives the store time).
                return Outcome::Retry(e.to_string(), None);
            }
            assets.push(json!({
                "bucket": BUCKET,
                "path": path,
                "mime": picture.mime,
                "width": picture.width,
                "height": picture.height,
                "bytes": bytes,
            }));
        }
        Outcome::Succeeded {
            venice_id,
            model,
            timing,
            assets,
        }
    }
}

/// Venice's answer, read.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// 2xx with `images`.
    Images {
        venice_id: Option<String>,
        timing: Value,
        images: Vec<String>,
    },
    /// A refusal of this job.
    Failed(String),
    /// Transient; `Retry-After` if given.
    Retry(String, Option<u64>),
    /// Rate limit or our key/balance.
    Deferred { reason: String, wait: u64 },
}

impl Answer {
    /// The error text for `api_logs`, if the call did not give images.
    fn error(&self) -> Option<&str> {
        match self {
            Answer::Images { .. } => None,
            Answer::Failed(why) | Answer::Retry(why, _) => Some(why),
            Answer::Deferred { reason, .. } => Some(reason),
        }
    }

    /// The same answer with every secret (the key, the prompt) cut out of
    /// its messages: a provider may echo what it was sent.
    fn scrubbed(self, secrets: &[&str]) -> Self {
        match self {
            Answer::Failed(why) => Answer::Failed(scrub(&why, secrets)),
            Answer::Retry(why, after) => Answer::Retry(scrub(&why, secrets), after),
            Answer::Deferred { reason, wait } => Answer::Deferred {
                reason: scrub(&reason, secrets),
                wait,
            },
            images => images,
        }
    }
}

/// The JSON Venice's image endpoint takes: the model, the prompt, the
/// params it knows (checked for type; other keys are ignored) and
/// `return_binary: false`, so the images come back as base64 in JSON.
fn request_body(model: &str, prompt: &str, params: &Value) -> Result<Value, String> {
    if prompt.trim().is_empty() {
        return Err("the prompt is empty".into());
    }
    let params = match params {
        Value::Null => Map::new(),
        Value::Object(map) => map.clone(),
        _ => return Err("params must be a JSON object".into()),
    };
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("prompt".into(), json!(prompt));
    // Seed 000's clients may send size as "WxH".
    if let Some(size) = params.get("size") {
        let parsed = size.as_str().and_then(|s| {
            let (w, h) = s.split_once(['x', 'X'])?;
            Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?))
        });
        let Some((w, h)) = parsed else {
            return Err(format!(
                "params.size must look like \"1024x768\", not {size}"
            ));
        };
        body.insert("width".into(), json!(w));
        body.insert("height".into(), json!(h));
    }
    for (name, kind) in PARAMS {
        let Some(value) = params.get(*name) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let ok = match kind {
            Kind::Text => value.is_string(),
            Kind::Whole => value.as_u64().is_some(),
            Kind::Number => value.is_number(),
            Kind::Flag => value.is_boolean(),
            Kind::Format => matches!(value.as_str(), Some("png" | "webp" | "jpeg")),
        };
        if !ok {
            return Err(format!(
                "params.{name} must be {}, not {value}",
                kind.describe()
            ));
        }
        body.insert((*name).to_string(), value.clone());
    }
    body.insert("return_binary".into(), json!(false));
    Ok(Value::Object(body))
}

/// The type a passed param must have.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Whole,
    Number,
    Flag,
    Format,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Whole => "a whole number",
            Kind::Number => "a number",
            Kind::Flag => "true or false",
            Kind::Format => "\"png\", \"webp\" or \"jpeg\"",
        }
    }
}

/// The request fields of `POST /api/v1/image/generate` a job may set.
const PARAMS: &[(&str, Kind)] = &[
    ("negative_prompt", Kind::Text),
    ("width", Kind::Whole),
    ("height", Kind::Whole),
    ("steps", Kind::Whole),
    ("cfg_scale", Kind::Number),
    ("seed", Kind::Whole),
    ("variants", Kind::Whole),
    ("format", Kind::Format),
    ("style_preset", Kind::Text),
    ("aspect_ratio", Kind::Text),
    ("resolution", Kind::Text),
    ("lora_strength", Kind::Whole),
    ("safe_mode", Kind::Flag),
    ("hide_watermark", Kind::Flag),
    ("embed_exif_metadata", Kind::Flag),
];

/// The success body: `{"id", "images": [base64...], "timing": {...}}`.
#[derive(Debug, Deserialize)]
struct Generated {
    id: Option<String>,
    images: Vec<String>,
    #[serde(default)]
    timing: Value,
}

/// Reads Venice's answer (`now` in Unix seconds, for a reset timestamp).
fn classify(status: u16, headers: &[(String, String)], body: &[u8], now: u64) -> Answer {
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<Generated>(body) {
            Ok(generated) if !generated.images.is_empty() => Answer::Images {
                venice_id: generated.id,
                timing: generated.timing,
                images: generated.images,
            },
            Ok(_) => Answer::Retry(
                format!("Venice answered HTTP {status} without images"),
                None,
            ),
            Err(e) => Answer::Retry(
                format!(
                    "Venice answered HTTP {status} with a body that is not the image JSON: {e}"
                ),
                None,
            ),
        };
    }
    let message = error_message(body);
    let said = |what: &str| format!("{what} (HTTP {status}): {message}");
    let retry_after = retry_after_seconds(headers, now);
    match status {
        429 => Answer::Deferred {
            reason: said("Venice rate limit"),
            wait: retry_after.unwrap_or(DEFAULT_RATE_LIMIT_WAIT).max(1),
        },
        401 | 403 => Answer::Deferred {
            reason: said("Venice refused the API key"),
            wait: KEY_REFUSED_WAIT,
        },
        402 => Answer::Deferred {
            reason: said("the Venice account cannot pay"),
            wait: KEY_REFUSED_WAIT,
        },
        408 | 409 | 425 => Answer::Retry(said("Venice could not finish"), retry_after),
        s if s >= 500 => Answer::Retry(said("Venice failed"), retry_after),
        _ => Answer::Failed(said("Venice refused the image")),
    }
}

/// Venice's error text: `{"error": "..."}`, `{"error": {"message"}}`
/// (OpenAI style), with a validation error's `issues` (`path: message`)
/// appended; otherwise the start of the body.
fn error_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        return if text.is_empty() {
            "no message".into()
        } else {
            text.chars().take(300).collect()
        };
    };
    let mut message = match value.get("error") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string(),
        _ => value
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string(),
    };
    if let Some(issues) = value.get("issues").and_then(Value::as_array) {
        let listed: Vec<String> = issues
            .iter()
            .take(5)
            .filter_map(|issue| {
                let text = issue.get("message")?.as_str()?;
                let path = issue
                    .get("path")
                    .and_then(Value::as_array)
                    .map(|p| {
                        p.iter()
                            .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .unwrap_or_default();
                Some(if path.is_empty() {
                    text.to_string()
                } else {
                    format!("{path}: {text}")
                })
            })
            .collect();
        if !listed.is_empty() {
            message = format!("{message} ({})", listed.join("; "));
        }
    }
    message
}

/// Seconds to wait: `Retry-After` (seconds or an HTTP date), else Venice's
/// `x-ratelimit-reset-requests` (a Unix time, seconds or milliseconds).
fn retry_after_seconds(headers: &[(String, String)], now: u64) -> Option<u64> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    if let Some(value) = header("retry-after") {
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(seconds);
        }
        if let Ok(seconds) = value.parse::<f64>()
            && seconds.is_finite()
            && seconds >= 0.0
        {
            return Some(seconds.ceil() as u64);
        }
    }
    let reset = header("x-ratelimit-reset-requests")?.parse::<u64>().ok()?;
    let reset = if reset > 100_000_000_000 {
        reset / 1000
    } else {
        reset
    };
    if reset > 1_000_000_000 {
        Some(reset.saturating_sub(now))
    } else {
        // Small numbers are a delay, not a time.
        Some(reset)
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `text` with every non-trivial secret replaced.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        let secret = secret.trim();
        // A one-word prompt like "cat" would blank out ordinary words.
        if secret.len() >= 8 {
            text = text.replace(secret, "[redacted]");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_request_carries_known_params_and_asks_for_base64() {
        let body = request_body(
            "venice-sd35",
            "a kite over the sea",
            &json!({"width": 512, "height": 384, "steps": 20, "cfg_scale": 7.5, "seed": 42,
                    "format": "png", "negative_prompt": "blur", "unknown": 1}),
        )
        .unwrap();
        assert_eq!(body["model"], "venice-sd35");
        assert_eq!(body["prompt"], "a kite over the sea");
        assert_eq!(
            (body["width"].as_u64(), body["height"].as_u64()),
            (Some(512), Some(384))
        );
        assert_eq!(body["cfg_scale"], 7.5);
        assert_eq!(body["return_binary"], false);
        assert!(body.get("unknown").is_none());
    }

    #[test]
    fn bad_params_are_refused_with_the_field() {
        let err = request_body("m", "p", &json!({"width": "big"})).unwrap_err();
        assert!(err.contains("params.width"), "{err}");
        let err = request_body("m", "p", &json!({"format": "gif"})).unwrap_err();
        assert!(err.contains("params.format"), "{err}");
        assert!(request_body("m", "  ", &json!({})).is_err());
        assert!(request_body("m", "p", &json!([1])).is_err());
        let sized = request_body("m", "p", &json!({"size": "640x480"})).unwrap();
        assert_eq!(
            (sized["width"].as_u64(), sized["height"].as_u64()),
            (Some(640), Some(480))
        );
        assert!(request_body("m", "p", &json!({"size": "big"})).is_err());
    }

    #[test]
    fn answers_map_to_outcomes() {
        let ok = classify(
            200,
            &[],
            br#"{"id":"g-1","images":["AAAA"],"timing":{"total":5}}"#,
            0,
        );
        assert!(matches!(ok, Answer::Images { ref images, .. } if images.len() == 1));
        assert!(matches!(classify(200, &[], b"{}", 0), Answer::Retry(..)));
        assert!(matches!(
            classify(200, &[], br#"{"images":[]}"#, 0),
            Answer::Retry(..)
        ));

        let policy = classify(422, &[], br#"{"error":"Content policy violation"}"#, 0);
        assert_eq!(
            policy,
            Answer::Failed("Venice refused the image (HTTP 422): Content policy violation".into())
        );
        let invalid = classify(
            400,
            &[],
            br#"{"error":"Invalid request parameters","details":{},"issues":[{"path":["width"],"message":"Number must be less than or equal to 1280"}]}"#,
            0,
        );
        assert!(
            matches!(&invalid, Answer::Failed(m) if m.contains("width: Number must be less than or equal to 1280")),
            "{invalid:?}"
        );

        let limited = classify(
            429,
            &headers(&[("Retry-After", "17")]),
            br#"{"error":"Rate limit exceeded"}"#,
            0,
        );
        assert!(
            matches!(limited, Answer::Deferred { wait: 17, .. }),
            "{limited:?}"
        );
        let reset = classify(
            429,
            &headers(&[("x-ratelimit-reset-requests", "1700000030")]),
            b"{}",
            1_700_000_000,
        );
        assert!(
            matches!(reset, Answer::Deferred { wait: 30, .. }),
            "{reset:?}"
        );
        assert!(matches!(
            classify(429, &[], b"", 0),
            Answer::Deferred { wait: 60, .. }
        ));

        assert!(matches!(
            classify(401, &[], br#"{"error":"Authentication failed"}"#, 0),
            Answer::Deferred { .. }
        ));
        assert!(matches!(
            classify(402, &[], b"{}", 0),
            Answer::Deferred { .. }
        ));
        assert!(matches!(
            classify(503, &headers(&[("retry-after", "5")]), b"busy", 0),
            Answer::Retry(_, Some(5))
        ));
        assert!(matches!(classify(500, &[], b"", 0), Answer::Retry(_, None)));
        assert!(matches!(
            classify(404, &[], br#"{"error":"Model not found"}"#, 0),
            Answer::Failed(_)
        ));
    }

    #[test]
    fn openai_style_errors_are_read() {
        assert_eq!(
            error_message(br#"{"error":{"message":"too long","type":"invalid_request_error"}}"#),
            "too long"
        );
        assert_eq!(
            error_message(b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_message(b""), "no message");
    }

    #[test]
    fn secrets_and_prompts_are_scrubbed_from_messages() {
        let answer =
            Answer::Failed("rejected prompt 'a secret garden party' with key vk-123456789".into())
                .scrubbed(&["vk-123456789", "a secret garden party"]);
        let Answer::Failed(text) = answer else {
            panic!("still failed")
        };
        assert!(
            !text.contains("vk-123456789") && !text.contains("secret garden"),
            "{text}"
        );
        assert_eq!(scrub("a cat sat", &["cat"]), "a cat sat");
    }

    #[test]
    fn settings_default_and_clamp() {
        let d = Settings::default().clamped();
        assert_eq!((d.lease_seconds, d.call_timeout_ms), (900, 180_000));
        let s: Settings =
            serde_json::from_value(json!({"call_timeout_ms": 1, "max_items": 2})).unwrap();
        let s = s.clamped();
        assert_eq!((s.call_timeout_ms, s.max_items), (100, Some(2)));
        assert!(serde_json::from_value::<Settings>(json!({"batch": 3})).is_err());
    }
}

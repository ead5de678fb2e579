//! A loopback fake of Replicate's HTTP API (`shared/PLATFORMS.md`
//! "Replicate", and Replicate's HTTP API reference), field by field:
//!
//! - `POST /v1/predictions` `{version, input, webhook?,
//!   webhook_events_filter?}` and `POST /v1/models/{owner}/{name}/predictions`
//!   `{input, webhook?, webhook_events_filter?}` with `Authorization: Bearer
//!   <token>` -> **201** with the prediction: `{id, model, version, input,
//!   logs: "", output: null, data_removed: false, error: null, status:
//!   "starting", source: "api", created_at, started_at: null, completed_at:
//!   null, urls: {get, cancel, stream, web}, metrics: {}, webhook?,
//!   webhook_events_filter?}`. A body without `input` (or, on
//!   `/v1/predictions`, without `version`), or with an unknown top-level
//!   field, is **422** `{title: "Input validation failed", detail, status,
//!   invalid_fields: [{type, field, description}]}`.
//! - `GET /v1/predictions/{id}` -> 200 the prediction as it is now; an
//!   unknown id 404 `{title: "Not found", detail: "Not found.", status: 404}`.
//! - `POST /v1/models/{owner}/{name}/versions/{version}/trainings`
//!   `{destination, input, webhook?, webhook_events_filter?}` -> 201 the
//!   training `{id, model, version, destination, input, status: "starting",
//!   output: null, error: null, logs, created_at, urls, metrics}`; when it
//!   succeeds `output` is `{version: "<destination>:<new version>",
//!   weights: "<url of the weights file>"}`. `GET /v1/trainings/{id}`.
//! - `POST /v1/models` `{owner, name, visibility, hardware, description?}`
//!   -> 201 `{url, owner, name, description, visibility, latest_version}`;
//!   an existing owner/name is 409 (`A model with that name and owner
//!   already exists.`).
//! - Errors, Replicate's problem-details shape `{title, detail, status}`:
//!   no or unknown token **401** `Unauthenticated` ("You did not pass a
//!   valid authentication token"); a token told to throttle, or more than
//!   [`FakeReplicate::set_creation_limit`] creations in the last 60 s,
//!   **429** `Request was throttled.` with `Retry-After: <seconds>`; queued
//!   faults ([`FakeReplicate::fail_next_creations`]) answer any status
//!   (402, 5xx, 422) with that shape.
//! - Status goes `starting` -> `processing` -> `succeeded` | `failed` |
//!   `canceled`; `succeeded` sets `output` (the file URLs, a list),
//!   `metrics.predict_time` (seconds, float) and `completed_at`; `failed`
//!   sets `error`.
//! - Output files are served at `GET /files/{prediction id}/{name}` with
//!   `Content-Type` and `Content-Length`, and **deleted** (404) once the
//!   "hour" has passed since completion ([`FakeReplicate::set_file_lifetime`],
//!   one hour by default), as Replicate deletes outputs after an hour.
//! - Webhooks: for each event the prediction's `webhook_events_filter`
//!   lets through (`start` on processing, `completed` on succeeded, failed
//!   and canceled; no filter: all), a `POST` of the whole prediction to its
//!   `webhook` URL, signed as Standard Webhooks: `webhook-id: msg_<random>`
//!   (the same on every repeat of that delivery), `webhook-timestamp: <unix
//!   seconds>`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//!   "{id}.{timestamp}.{body}" with the base64-decoded secret after
//!   "whsec_">`. Hooks: repeat every delivery, drop them, or hold them for
//!   the test to release in any order ([`Delivery`]).
//! - [`AutoRun`]: every created prediction runs by itself (processing,
//!   then succeeded with generated PNG-typed files) after a delay, for
//!   benchmarks and tests that only watch our side.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::KitError;
use crate::fake::{FakeServer, RecordedRequest};

/// What a token answers to every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAnswer {
    /// Works.
    Valid,
    /// 429 with `Retry-After: seconds`.
    Throttled(u64),
    /// 401: revoked.
    Revoked,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Extra deliveries of each webhook (same `webhook-id`, fresh timestamp).
    pub repeat: usize,
    /// Lose every webhook (never sent).
    pub drop: bool,
    /// Keep them until [`FakeReplicate::release_held`].
    pub hold: bool,
}

/// Every prediction runs by itself.
#[derive(Debug, Clone, Copy)]
pub struct AutoRun {
    /// From creation to `processing`, and again to `succeeded`.
    pub delay: Duration,
    /// Output files per prediction.
    pub outputs: usize,
    /// Bytes per output file.
    pub bytes: usize,
    /// `metrics.predict_time` reported.
    pub predict_time: f64,
}

/// One output file of a prediction.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// File name (`out-0.png`).
    pub name: String,
    /// Its media type.
    pub content_type: String,
    /// Its bytes.
    pub bytes: Bytes,
}

impl OutputFile {
    /// A PNG-typed file of `size` bytes (PNG signature, then a pattern
    /// seeded by `seed`).
    pub fn png(name: &str, size: usize, seed: u8) -> Self {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend((0..size.saturating_sub(8)).map(|i| (i as u8).wrapping_mul(31) ^ seed));
        OutputFile {
            name: name.into(),
            content_type: "image/png".into(),
            bytes: Bytes::from(bytes),
        }
    }
}

/// A prediction creation the fake accepted.
#[derive(Debug, Clone)]
pub struct Creation {
    /// Prediction id.
    pub id: String,
    /// The bearer token used.
    pub token: String,
    /// The request path.
    pub path: String,
    /// The request body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// A webhook held back ([`Delivery::hold`]).
#[derive(Debug, Clone)]
pub struct HeldWebhook {
    /// `webhook-id`.
    pub webhook_id: String,
    /// Where it goes.
    pub url: String,
    /// The prediction as it was at that event.
    pub body: Value,
}

/// One delivery attempt and the app's answer (None: no answer).
#[derive(Debug, Clone)]
pub struct Delivered {
    /// `webhook-id`.
    pub webhook_id: String,
    /// The prediction's status in the body.
    pub status: String,
    /// The app's HTTP status.
    pub answer: Option<u16>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, TokenAnswer>,
    predictions: HashMap<String, Value>,
    trainings: HashMap<String, Value>,
    models: HashMap<String, Value>,
    /// prediction id -> files, and when they were completed.
    files: HashMap<String, (Vec<OutputFile>, Option<Instant>)>,
    creations: Vec<Creation>,
    refused: Vec<(String, u16)>,
    faults: VecDeque<(u16, String)>,
    file_lifetime: Option<Duration>,
    creation_limit: Option<usize>,
    auto: Option<AutoRun>,
    delivery: Delivery,
    held: Vec<HeldWebhook>,
    delivered: Vec<Delivered>,
    next: u64,
}

struct Inner {
    state: Mutex<State>,
    secret: String,
    key: Vec<u8>,
    base: Mutex<String>,
    /// Where webhooks really go (the running app), whatever host the
    /// prediction's `webhook` names.
    webhook_target: Mutex<Option<String>>,
    client: reqwest::Client,
}

/// A running fake Replicate; stops when dropped.
pub struct FakeReplicate {
    server: FakeServer,
    inner: Arc<Inner>,
}

impl FakeReplicate {
    /// Starts the fake with a fresh `whsec_` signing secret and no tokens.
    pub async fn start() -> Result<Self, KitError> {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            secret: format!("whsec_{}", STANDARD.encode(key)),
            key: key.to_vec(),
            base: Mutex::new(String::new()),
            webhook_target: Mutex::new(None),
            client: reqwest::Client::new(),
        });
        let handler = inner.clone();
        let server = FakeServer::start(move |request| answer(&handler, request)).await?;
        if let Ok(mut base) = inner.base.lock() {
            *base = server.url();
        }
        Ok(FakeReplicate { server, inner })
    }

    /// `http://127.0.0.1:<port>`: the `replicate_api_url`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Delivers webhooks to `base` (`http://127.0.0.1:<port>` of the running
    /// app) with the path of the prediction's `webhook` URL, as a tunnel to
    /// the public URL would.
    pub fn route_webhooks_to(&self, base: &str) {
        if let Ok(mut target) = self.inner.webhook_target.lock() {
            *target = Some(base.trim_end_matches('/').to_string());
        }
    }

    /// The `whsec_...` secret webhooks are signed with (the app's
    /// `replicate_webhook_secret`).
    pub fn webhook_secret(&self) -> &str {
        &self.inner.secret
    }

    /// Accepts `token` (answering as `answer`).
    pub fn set_token(&self, token: &str, answer: TokenAnswer) {
        lock(&self.inner).tokens.insert(token.into(), answer);
    }

    /// The next `n` creations answer `status` with `detail`.
    pub fn fail_next_creations(&self, n: usize, status: u16, detail: &str) {
        let mut state = lock(&self.inner);
        for _ in 0..n {
            state.faults.push_back((status, detail.into()));
        }
    }

    /// How long output files live after completion ("the hour").
    pub fn set_file_lifetime(&self, lifetime: Duration) {
        lock(&self.inner).file_lifetime = Some(lifetime);
    }

    /// Refuses (429) creations beyond `per_minute` in the last 60 s.
    pub fn set_creation_limit(&self, per_minute: usize) {
        lock(&self.inner).creation_limit = Some(per_minute);
    }

    /// Runs every new prediction by itself (None: the test drives them).
    pub fn set_auto(&self, auto: Option<AutoRun>) {
        lock(&self.inner).auto = auto;
    }

    /// How webhooks are delivered from now on.
    pub fn set_delivery(&self, delivery: Delivery) {
        lock(&self.inner).delivery = delivery;
    }

    /// Every accepted creation.
    pub fn creations(&self) -> Vec<Creation> {
        lock(&self.inner).creations.clone()
    }

    /// Every refused request: (token, status).
    pub fn refused(&self) -> Vec<(String, u16)> {
        lock(&self.inner).refused.clone()
    }

    /// A prediction as it is now.
    pub fn prediction(&self, id: &str) -> Option<Value> {
        lock(&self.inner).predictions.get(id).cloned()
    }

    /// A training as it is now.
    pub fn training(&self, id: &str) -> Option<Value> {
        lock(&self.inner).trainings.get(id).cloned()
    }

    /// Webhooks held back, in the order they were made.
    pub fn held(&self) -> Vec<HeldWebhook> {
        lock(&self.inner).held.clone()
    }

    /// Every delivery attempt so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        lock(&self.inner).delivered.clone()
    }

    /// Sends the held webhooks in `order` (indexes into [`Self::held`]),
    /// each signed now, and forgets them all.
    pub async fn release_held(&self, order: &[usize]) {
        let held = std::mem::take(&mut lock(&self.inner).held);
        for &i in order {
            if let Some(h) = held.get(i) {
                deliver(&self.inner, h.clone()).await;
            }
        }
    }

    /// Moves a prediction to `processing` (webhook `start`).
    pub async fn start_prediction(&self, id: &str) {
        transition(&self.inner, id, Transition::Processing).await;
    }

    /// Ends a prediction `succeeded` with `files` and `predict_time`
    /// (webhook `completed`).
    pub async fn succeed(&self, id: &str, files: Vec<OutputFile>, predict_time: f64) {
        transition(&self.inner, id, Transition::Succeeded(files, predict_time)).await;
    }

    /// Ends a prediction `failed` with `error`.
    pub async fn fail(&self, id: &str, error: &str) {
        transition(&self.inner, id, Transition::Failed(error.into())).await;
    }

    /// Ends a prediction `canceled`.
    pub async fn cancel(&self, id: &str) {
        transition(&self.inner, id, Transition::Canceled).await;
    }

    /// Ends a training `succeeded`: a new version of its destination and a
    /// weights file.
    pub async fn succeed_training(&self, id: &str, weights: OutputFile) {
        transition(&self.inner, id, Transition::TrainingSucceeded(weights)).await;
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    inner
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn base(inner: &Inner) -> String {
    inner.base.lock().map(|b| b.clone()).unwrap_or_default()
}

fn json_response(status: u16, body: &Value, retry_after: Option<u64>) -> http::Response<Bytes> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(seconds) = retry_after {
        builder = builder.header("retry-after", seconds.to_string());
    }
    builder
        .body(Bytes::from(body.to_string()))
        .unwrap_or_default()
}

fn problem(status: u16, title: &str, detail: &str) -> Value {
    json!({ "title": title, "detail": detail, "status": status })
}

fn answer(inner: &Arc<Inner>, request: &RecordedRequest) -> http::Response<Bytes> {
    let path = request.uri.path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let ["files", id, name] = segments.as_slice() {
        return file(inner, id, name);
    }
    let token = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let verdict = lock(inner).tokens.get(&token).cloned();
    match verdict {
        None | Some(TokenAnswer::Revoked) => {
            lock(inner).refused.push((token, 401));
            return json_response(
                401,
                &problem(
                    401,
                    "Unauthenticated",
                    "You did not pass a valid authentication token",
                ),
                None,
            );
        }
        Some(TokenAnswer::Throttled(seconds)) => {
            lock(inner).refused.push((token, 429));
            return json_response(
                429,
                &problem(
                    429,
                    "Request was throttled.",
                    &format!("Request was throttled. Expected available in {seconds} seconds."),
                ),
                Some(seconds),
            );
        }
        Some(TokenAnswer::Valid) => {}
    }
    let method = request.method.as_str();
    match (method, segments.as_slice()) {
        ("POST", ["v1", "predictions"]) => create(inner, request, &token, &path, None),
        ("POST", ["v1", "models", owner, name, "predictions"]) => {
            let model = format!("{owner}/{name}");
            create(inner, request, &token, &path, Some(model))
        }
        ("POST", ["v1", "models"]) => create_model(inner, request),
        ("GET", ["v1", "predictions", id]) => match lock(inner).predictions.get(*id) {
            Some(p) => json_response(200, p, None),
            None => json_response(404, &problem(404, "Not found", "Not found."), None),
        },
        (
            "POST",
            [
                "v1",
                "models",
                owner,
                name,
                "versions",
                version,
                "trainings",
            ],
        ) => train(inner, request, &format!("{owner}/{name}"), version),
        ("GET", ["v1", "trainings", id]) => match lock(inner).trainings.get(*id) {
            Some(t) => json_response(200, t, None),
            None => json_response(404, &problem(404, "Not found", "Not found."), None),
        },
        _ => json_response(404, &problem(404, "Not found", "Not found."), None),
    }
}

fn invalid(fields: &[(&str, &str, &str)]) -> http::Response<Bytes> {
    let detail: Vec<String> = fields
        .iter()
        .map(|(_, f, d)| format!("- {f}: {d}"))
        .collect();
    json_response(
        422,
        &json!({
            "title": "Input validation failed",
            "detail": detail.join("\n"),
            "status": 422,
            "invalid_fields": fields.iter().map(|(t, f, d)| json!({"type": t, "field": f, "description": d})).collect::<Vec<_>>(),
        }),
        None,
    )
}

fn create(
    inner: &Arc<Inner>,
    request: &RecordedRequest,
    token: &str,
    path: &str,
    model: Option<String>,
) -> http::Response<Bytes> {
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return invalid(&[("invalid_json", "", "the body is not JSON")]);
    };
    let allowed = [
        "version",
        "input",
        "webhook",
        "webhook_events_filter",
        "stream",
    ];
    if let Some(map) = body.as_object() {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                return invalid(&[(
                    "additional_property_not_allowed",
                    "",
                    &format!("Additional property {key} is not allowed"),
                )]);
            }
        }
    }
    if !body.get("input").is_some_and(Value::is_object) {
        return invalid(&[("required", "", "input is required")]);
    }
    if model.is_none() && !body.get("version").is_some_and(Value::is_string) {
        return invalid(&[("required", "", "version is required")]);
    }
    let mut state = lock(inner);
    if let Some((status, detail)) = state.faults.pop_front() {
        let title = match status {
            402 => "Insufficient credit",
            422 => "Input validation failed",
            s if s >= 500 => "Internal Server Error",
            _ => "Error",
        };
        state.refused.push((token.to_string(), status));
        return json_response(status, &problem(status, title, &detail), None);
    }
    if let Some(limit) = state.creation_limit {
        let window = Instant::now() - Duration::from_secs(60);
        let recent = state.creations.iter().filter(|c| c.at > window).count();
        if recent >= limit {
            state.refused.push((token.to_string(), 429));
            return json_response(
                429,
                &problem(
                    429,
                    "Request was throttled.",
                    "Request was throttled. Expected available in 1 second.",
                ),
                Some(1),
            );
        }
    }
    state.next += 1;
    let id = format!("p{:06}{}", state.next, random_suffix());
    let base = base(inner);
    let mut prediction = json!({
        "id": id,
        "model": model.clone().unwrap_or_else(|| "owner/model".into()),
        "version": body.get("version").cloned().unwrap_or(json!("official")),
        "input": body["input"],
        "logs": "",
        "output": null,
        "data_removed": false,
        "error": null,
        "status": "starting",
        "source": "api",
        "created_at": now(),
        "started_at": null,
        "completed_at": null,
        "urls": {
            "get": format!("{base}/v1/predictions/{id}"),
            "cancel": format!("{base}/v1/predictions/{id}/cancel"),
            "stream": format!("{base}/v1/predictions/{id}/stream"),
            "web": format!("{base}/p/{id}"),
        },
        "metrics": {},
    });
    if let Some(webhook) = body.get("webhook") {
        prediction["webhook"] = webhook.clone();
    }
    if let Some(filter) = body.get("webhook_events_filter") {
        prediction["webhook_events_filter"] = filter.clone();
    }
    state.predictions.insert(id.clone(), prediction.clone());
    state.creations.push(Creation {
        id: id.clone(),
        token: token.to_string(),
        path: path.to_string(),
        body,
        at: Instant::now(),
    });
    if let Some(auto) = state.auto {
        let inner = inner.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(auto.delay).await;
            transition(&inner, &id, Transition::Processing).await;
            tokio::time::sleep(auto.delay).await;
            let files = (0..auto.outputs)
                .map(|i| OutputFile::png(&format!("out-{i}.png"), auto.bytes, i as u8))
                .collect();
            transition(&inner, &id, Transition::Succeeded(files, auto.predict_time)).await;
        });
    }
    json_response(201, &prediction, None)
}

fn create_model(inner: &Arc<Inner>, request: &RecordedRequest) -> http::Response<Bytes> {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let (Some(owner), Some(name)) = (
        body.get("owner").and_then(Value::as_str),
        body.get("name").and_then(Value::as_str),
    ) else {
        return invalid(&[("required", "", "owner and name are required")]);
    };
    let id = format!("{owner}/{name}");
    let mut state = lock(inner);
    if state.models.contains_key(&id) {
        return json_response(
            409,
            &problem(
                409,
                "Conflict",
                "A model with that name and owner already exists.",
            ),
            None,
        );
    }
    let model = json!({"url": format!("https://replicate.com/{id}"), "owner": owner, "name": name,
                       "description": body.get("description"), "visibility": body.get("visibility"),
                       "latest_version": null});
    state.models.insert(id, model.clone());
    json_response(201, &model, None)
}

fn train(
    inner: &Arc<Inner>,
    request: &RecordedRequest,
    model: &str,
    version: &str,
) -> http::Response<Bytes> {
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return invalid(&[("invalid_json", "", "the body is not JSON")]);
    };
    let Some(destination) = body.get("destination").and_then(Value::as_str) else {
        return invalid(&[("required", "", "destination is required")]);
    };
    if !body.get("input").is_some_and(Value::is_object) {
        return invalid(&[("required", "", "input is required")]);
    }
    let mut state = lock(inner);
    state.next += 1;
    let id = format!("t{:06}{}", state.next, random_suffix());
    let base = base(inner);
    let mut training = json!({
        "id": id, "model": model, "version": version, "destination": destination,
        "input": body["input"], "logs": "", "output": null, "error": null,
        "status": "starting", "created_at": now(), "started_at": null, "completed_at": null,
        "urls": {"get": format!("{base}/v1/trainings/{id}"), "cancel": format!("{base}/v1/trainings/{id}/cancel")},
        "metrics": {},
    });
    if let Some(webhook) = body.get("webhook") {
        training["webhook"] = webhook.clone();
    }
    if let Some(filter) = body.get("webhook_events_filter") {
        training["webhook_events_filter"] = filter.clone();
    }
    state.trainings.insert(id, training.clone());
    json_response(201, &training, None)
}

fn file(inner: &Inner, id: &str, name: &str) -> http::Response<Bytes> {
    let state = lock(inner);
    let lifetime = state.file_lifetime.unwrap_or(Duration::from_secs(3600));
    let found = state.files.get(id).and_then(|(files, done)| {
        let expired = done.is_some_and(|d| d.elapsed() > lifetime);
        if expired {
            None
        } else {
            files.iter().find(|f| f.name == name).cloned()
        }
    });
    match found {
        Some(f) => http::Response::builder()
            .status(200)
            .header("content-type", f.content_type)
            .header("content-length", f.bytes.len())
            .body(f.bytes)
            .unwrap_or_default(),
        None => http::Response::builder()
            .status(404)
            .body(Bytes::from_static(b"Not Found"))
            .unwrap_or_default(),
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

enum Transition {
    Processing,
    Succeeded(Vec<OutputFile>, f64),
    Failed(String),
    Canceled,
    TrainingSucceeded(OutputFile),
}

/// Changes a prediction (or training) and sends its webhook, if the filter
/// lets the event through.
async fn transition(inner: &Arc<Inner>, id: &str, change: Transition) {
    let base = base(inner);
    let (body, url, event) = {
        let mut state = lock(inner);
        let is_training = state.trainings.contains_key(id);
        let mut files_to_keep = None;
        let object = if is_training {
            state.trainings.get_mut(id)
        } else {
            state.predictions.get_mut(id)
        };
        let Some(object) = object else {
            return;
        };
        let event = match change {
            Transition::Processing => {
                object["status"] = json!("processing");
                object["started_at"] = json!(now());
                "start"
            }
            Transition::Succeeded(files, predict_time) => {
                let urls: Vec<String> = files
                    .iter()
                    .map(|f| format!("{base}/files/{id}/{}", f.name))
                    .collect();
                object["status"] = json!("succeeded");
                object["output"] = json!(urls);
                object["completed_at"] = json!(now());
                object["metrics"] =
                    json!({ "predict_time": predict_time, "total_time": predict_time + 0.5 });
                files_to_keep = Some(files);
                "completed"
            }
            Transition::TrainingSucceeded(weights) => {
                let destination = object["destination"]
                    .as_str()
                    .unwrap_or("owner/model")
                    .to_string();
                object["status"] = json!("succeeded");
                object["output"] = json!({
                    "version": format!("{destination}:{}", random_suffix()),
                    "weights": format!("{base}/files/{id}/{}", weights.name),
                });
                object["completed_at"] = json!(now());
                object["metrics"] = json!({ "predict_time": 120.0 });
                files_to_keep = Some(vec![weights]);
                "completed"
            }
            Transition::Failed(error) => {
                object["status"] = json!("failed");
                object["error"] = json!(error);
                object["completed_at"] = json!(now());
                "completed"
            }
            Transition::Canceled => {
                object["status"] = json!("canceled");
                object["completed_at"] = json!(now());
                "completed"
            }
        };
        let body = object.clone();
        let url = object
            .get("webhook")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(files) = files_to_keep {
            state
                .files
                .insert(id.to_string(), (files, Some(Instant::now())));
        }
        (body, url, event)
    };
    let Some(url) = url else {
        return;
    };
    let wanted = body
        .get("webhook_events_filter")
        .and_then(Value::as_array)
        .is_none_or(|events| events.iter().any(|e| e.as_str() == Some(event)));
    if !wanted {
        return;
    }
    let held = HeldWebhook {
        webhook_id: format!("msg_{}", random_suffix()),
        url,
        body,
    };
    let delivery = lock(inner).delivery;
    if delivery.drop {
        return;
    }
    if delivery.hold {
        lock(inner).held.push(held);
        return;
    }
    for _ in 0..=delivery.repeat {
        deliver(inner, held.clone()).await;
    }
}

/// Sends one webhook, signed now; records the app's answer.
async fn deliver(inner: &Inner, webhook: HeldWebhook) {
    let body = webhook.body.to_string();
    let timestamp = Utc::now().timestamp().to_string();
    let signature = sign(&inner.key, &webhook.webhook_id, &timestamp, body.as_bytes());
    let target = inner.webhook_target.lock().ok().and_then(|t| t.clone());
    let url = match (target, url::Url::parse(&webhook.url)) {
        (Some(base), Ok(parsed)) => format!("{base}{}", parsed.path()),
        _ => webhook.url.clone(),
    };
    let answer = inner
        .client
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", &webhook.webhook_id)
        .header("webhook-timestamp", &timestamp)
        .header("webhook-signature", format!("v1,{signature}"))
        .body(body)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16());
    lock(inner).delivered.push(Delivered {
        webhook_id: webhook.webhook_id,
        status: webhook.body["status"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        answer,
    });
}

/// Standard Webhooks' `v1` signature: base64 of HMAC-SHA256 over
/// `"{id}.{timestamp}.{body}"`.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

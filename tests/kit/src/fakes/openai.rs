//! A loopback fake of an OpenAI-compatible chat completions API (OpenAI,
//! Venice's `/api/v1`, and the many servers that copy them), as `adapt`
//! calls it:
//!
//! - `POST /v1/chat/completions` with `Authorization: Bearer <key>` and a
//!   JSON body `{model, messages: [{role, content}], response_format?,
//!   temperature?, ...}`. A missing or wrong key answers 401 `{"error":
//!   {"message": "Incorrect API key provided.", "type":
//!   "invalid_request_error", "code": "invalid_api_key"}}`; a body without
//!   `model` or `messages` 400 `invalid_request_error`; any other path 404.
//! - 200 answers are `{"id": "chatcmpl-<n>", "object": "chat.completion",
//!   "created", "model", "choices": [{"index": 0, "message": {"role":
//!   "assistant", "content", "refusal"}, "logprobs": null, "finish_reason":
//!   "stop" | "length"}], "usage": {"prompt_tokens", "completion_tokens",
//!   "total_tokens"}}`; tokens are counted as a quarter of the characters
//!   (prompt: every message's content; completion: the content), at least 1.
//! - Error answers carry `{"error": {"message", "type", "code"}}`: 429
//!   `rate_limit_exceeded` with `Retry-After` (seconds), 500 `server_error`.
//!
//! What it answers is scripted ([`Script`], one per call, in order); with
//! nothing queued it answers a valid adaptation ([`valid_adaptations`]) for
//! exactly the platforms the request's `response_format.json_schema.schema`
//! requires (all four in JSON mode). [`FakeOpenAi::start_instant`] answers
//! every call with one precomputed valid answer for all four platforms and
//! no parsing, for benchmarks. [`FakeOpenAi::set_latency`] makes every
//! answer take that long (a model thinking). Every request is recorded;
//! [`FakeOpenAi::chats`] gives the prompts as sent.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use outpost_test_kit::fakes::openai::{FakeOpenAi, Script};
//! let model = FakeOpenAi::start("sk-test").await?;
//! model.script(Script::Content("not json".into()));
//! // adapt_api_url = model.url(), adapt_api_base_path = "/v1", adapt_api_key = "sk-test"
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::KitError;
use crate::fake::{FakeServer, RecordedRequest, ResponseFuture};

/// The path the fake serves.
pub const COMPLETIONS_PATH: &str = "/v1/chat/completions";

/// What one call answers.
#[derive(Debug, Clone)]
pub enum Script {
    /// 200 with this text as `message.content` (invalid JSON, prose, ...).
    Content(String),
    /// 200 with this JSON (serialized) as `message.content`.
    Json(Value),
    /// 200 with `content: null` and this `message.refusal`.
    Refusal(String),
    /// 200 with `finish_reason: "length"` and the first half of a valid answer.
    Truncated,
    /// 429 `rate_limit_exceeded` with `Retry-After: <secs>`.
    RateLimited {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// This status with an OpenAI error body (500: `server_error`).
    Status(u16),
}

/// One chat request as the fake got it.
#[derive(Debug, Clone)]
pub struct Chat {
    /// `model`.
    pub model: String,
    /// `(role, content)` of each message, in order.
    pub messages: Vec<(String, String)>,
    /// `response_format` as sent (`Value::Null` when absent).
    pub response_format: Value,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

impl Chat {
    /// Every message's content joined with newlines.
    pub fn text(&self) -> String {
        self.messages
            .iter()
            .map(|(_, c)| c.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The platforms the request's schema requires.
    pub fn platforms(&self) -> Vec<String> {
        schema_platforms(&self.response_format)
    }
}

#[derive(Default)]
struct State {
    key: String,
    scripts: VecDeque<Script>,
    calls: u64,
    /// Precomputed answer of instant mode.
    instant: Option<Bytes>,
    /// How long each answer takes.
    latency: Duration,
}

/// The fake; cheap to clone, stops with the last clone.
#[derive(Clone)]
pub struct FakeOpenAi {
    state: Arc<Mutex<State>>,
    server: Arc<FakeServer>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeOpenAi {
    /// Starts the fake on `127.0.0.1:0`, accepting bearer `key`.
    pub async fn start(key: &str) -> Result<Self, KitError> {
        Self::start_with(key, None).await
    }

    /// Starts the fake in instant mode: every authorised call gets one
    /// precomputed valid answer for all four platforms, without parsing the
    /// request (a baseline for benchmarks).
    pub async fn start_instant(key: &str) -> Result<Self, KitError> {
        let all = ["linkedin", "x", "bluesky", "substack"];
        let body = completion_body(
            1,
            "instant",
            &valid_adaptations(&all).to_string(),
            None,
            "stop",
            100,
        );
        Self::start_with(key, Some(Bytes::from(body.to_string()))).await
    }

    async fn start_with(key: &str, instant: Option<Bytes>) -> Result<Self, KitError> {
        let state = Arc::new(Mutex::new(State {
            key: key.to_string(),
            instant,
            ..State::default()
        }));
        let handler_state = state.clone();
        let server = FakeServer::start_async(move |req: RecordedRequest| -> ResponseFuture {
            let answer = serve(&handler_state, &req);
            let latency = lock(&handler_state).latency;
            Box::pin(async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                answer
            })
        })
        .await?;
        Ok(FakeOpenAi {
            state,
            server: Arc::new(server),
        })
    }

    /// `http://127.0.0.1:<port>` (the `adapt_api_url`; its base path is `/v1`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Makes every answer from now on take `latency` (decided when the
    /// request arrives, answered after the wait).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Queues what the next calls answer, in order.
    pub fn script(&self, script: Script) {
        lock(&self.state).scripts.push_back(script);
    }

    /// Scripts not used yet.
    pub fn pending_scripts(&self) -> usize {
        lock(&self.state).scripts.len()
    }

    /// `POST /v1/chat/completions` calls received (refused ones included).
    pub fn calls(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method == http::Method::POST && r.uri.path() == COMPLETIONS_PATH)
            .count()
    }

    /// Every request received, raw, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Every chat request received, oldest first.
    pub fn chats(&self) -> Vec<Chat> {
        self.server
            .requests()
            .iter()
            .filter(|r| r.uri.path() == COMPLETIONS_PATH)
            .filter_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).ok()?;
                Some(Chat {
                    model: body["model"].as_str().unwrap_or_default().to_string(),
                    messages: body["messages"]
                        .as_array()
                        .map(|ms| {
                            ms.iter()
                                .map(|m| {
                                    (
                                        m["role"].as_str().unwrap_or_default().to_string(),
                                        m["content"].as_str().unwrap_or_default().to_string(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    response_format: body.get("response_format").cloned().unwrap_or(Value::Null),
                    authorization: r
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                })
            })
            .collect()
    }
}

/// A valid adaptation for `platforms`: short posts well within every limit.
pub fn valid_adaptations(platforms: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for p in platforms {
        let variant = match *p {
            "linkedin" => json!({
                "text": "Small releases beat big launches. Every week we ship one thing, learn from it, and ship the next. Here's what that changed for our team.",
                "hashtags": ["shipping", "buildinpublic"]
            }),
            "x" => {
                json!({"text": "Small releases beat big launches. Ship one thing a week, learn, repeat.", "thread": []})
            }
            "bluesky" => {
                json!({"text": "Small releases beat big launches: one thing a week, learn, repeat."})
            }
            "substack" => json!({
                "title": "Why small releases beat big launches",
                "body": "Every week we ship one thing.\n\nHere is what it taught us."
            }),
            _ => continue,
        };
        out.insert((*p).to_string(), variant);
    }
    Value::Object(out)
}

/// A variant over `platform`'s limit: X 700 weighted characters of words
/// (a thread's worth), Bluesky 420 graphemes, LinkedIn 3,100, a Substack
/// title of 300.
pub fn over_long_variant(platform: &str) -> Value {
    let words = |n: usize| {
        (1..=n)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match platform {
        "x" => json!({"text": words(100), "thread": []}),
        "bluesky" => json!({"text": "b".repeat(420)}),
        "linkedin" => json!({"text": "l".repeat(3100), "hashtags": []}),
        "substack" => json!({"title": "t".repeat(300), "body": "body"}),
        _ => Value::Null,
    }
}

/// The platforms a `response_format` schema requires (all four without one).
pub fn schema_platforms(response_format: &Value) -> Vec<String> {
    response_format["json_schema"]["schema"]["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_else(|| {
            ["linkedin", "x", "bluesky", "substack"]
                .map(String::from)
                .to_vec()
        })
}

fn tokens(chars: usize) -> u64 {
    (chars as u64 / 4).max(1)
}

fn completion_body(
    n: u64,
    model: &str,
    content: &str,
    refusal: Option<&str>,
    finish_reason: &str,
    prompt_tokens: u64,
) -> Value {
    let completion_tokens = tokens(content.chars().count() + refusal.map_or(0, str::len));
    json!({
        "id": format!("chatcmpl-{n}"),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": if refusal.is_some() { Value::Null } else { json!(content) },
                "refusal": refusal,
            },
            "logprobs": null,
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    })
}

fn respond(status: u16, body: Bytes, headers: &[(&str, String)]) -> http::Response<Bytes> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(body)
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

fn error(
    status: u16,
    message: &str,
    kind: &str,
    code: Option<&str>,
    headers: &[(&str, String)],
) -> http::Response<Bytes> {
    let body = json!({"error": {"message": message, "type": kind, "code": code}});
    respond(status, Bytes::from(body.to_string()), headers)
}

fn serve(state: &Mutex<State>, req: &RecordedRequest) -> http::Response<Bytes> {
    if req.uri.path() != COMPLETIONS_PATH {
        return error(404, "Not found", "invalid_request_error", None, &[]);
    }
    if req.method != http::Method::POST {
        return error(
            405,
            "Method not allowed",
            "invalid_request_error",
            None,
            &[],
        );
    }
    let (instant, script, n) = {
        let mut st = lock(state);
        let expected = format!("Bearer {}", st.key);
        let authorised = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected);
        if !authorised {
            return error(
                401,
                "Incorrect API key provided.",
                "invalid_request_error",
                Some("invalid_api_key"),
                &[],
            );
        }
        st.calls += 1;
        let script = if st.instant.is_some() {
            None
        } else {
            st.scripts.pop_front()
        };
        (st.instant.clone(), script, st.calls)
    };
    if let Some(body) = instant {
        return respond(200, body, &[]);
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return error(
            400,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
            &[],
        );
    };
    let (Some(model), Some(messages)) = (body["model"].as_str(), body["messages"].as_array())
    else {
        return error(
            400,
            "you must provide a model and messages",
            "invalid_request_error",
            None,
            &[],
        );
    };
    let prompt_chars: usize = messages
        .iter()
        .map(|m| m["content"].as_str().map_or(0, |c| c.chars().count()))
        .sum();
    let prompt_tokens = tokens(prompt_chars);
    let platforms = schema_platforms(&body["response_format"]);
    let names: Vec<&str> = platforms.iter().map(String::as_str).collect();
    let ok = |content: &str, refusal: Option<&str>, finish: &str| {
        let body = completion_body(n, model, content, refusal, finish, prompt_tokens);
        respond(200, Bytes::from(body.to_string()), &[])
    };
    match script {
        None => ok(&valid_adaptations(&names).to_string(), None, "stop"),
        Some(Script::Json(value)) => ok(&value.to_string(), None, "stop"),
        Some(Script::Content(text)) => ok(&text, None, "stop"),
        Some(Script::Refusal(text)) => ok("", Some(&text), "stop"),
        Some(Script::Truncated) => {
            let whole = valid_adaptations(&names).to_string();
            let half: String = whole.chars().take(whole.chars().count() / 2).collect();
            ok(&half, None, "length")
        }
        Some(Script::RateLimited { retry_after_secs }) => error(
            429,
            "Rate limit reached for requests. Please try again later.",
            "requests",
            Some("rate_limit_exceeded"),
            &[("retry-after", retry_after_secs.to_string())],
        ),
        Some(Script::Status(status)) => error(
            status,
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
            &[],
        ),
    }
}

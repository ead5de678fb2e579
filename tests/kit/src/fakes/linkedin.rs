//! A loopback fake of LinkedIn's Posts API (`PLATFORMS.md`, "X and
//! LinkedIn"): `POST /rest/posts` with `Authorization: Bearer`, a
//! `LinkedIn-Version: YYYYMM` header, the member's author URN and
//! `commentary` of at most 3,000 characters. Answers as LinkedIn does: 201
//! with an empty body and the new post's URN in `x-restli-id`; 400
//! `VERSION_MISSING` without the version header; 401
//! `INVALID_ACCESS_TOKEN` for a missing, unknown or revoked token; 403 when
//! the author is not the token's member; 422 for a missing field, a
//! commentary over 3,000 characters, or the same commentary again by the
//! same author ("Content is a duplicate of urn:li:share:..."); 429 with
//! `Retry-After` when a fault says so.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use outpost_test_kit::fakes::linkedin::FakeLinkedIn;
//! let li = FakeLinkedIn::start().await?;
//! li.add_member("abc123", "token-abc");
//! // point `linkedin_api_url` at li.url()
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::KitError;
use crate::fake::{FakeServer, RecordedRequest, ResponseFuture};

type Answer = http::Response<Bytes>;

/// A fault for the next `POST /rest/posts` ([`FakeLinkedIn::inject`]).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer `status` with `{"status", "message"}`, doing nothing.
    Status {
        /// HTTP status.
        status: u16,
        /// `message`.
        message: String,
    },
    /// 429 with `Retry-After`; nothing posted.
    RateLimited {
        /// Seconds in `Retry-After`.
        retry_after_secs: u64,
    },
    /// Post it, then answer 504 (the answer is lost, the post exists).
    CommitThen504,
}

/// A post on the fake LinkedIn.
#[derive(Debug, Clone)]
pub struct LinkedInPost {
    /// `urn:li:share:<n>`.
    pub urn: String,
    /// Author URN.
    pub author: String,
    /// Commentary as sent (little-text escapes included).
    pub commentary: String,
    /// The `LinkedIn-Version` header it came with.
    pub version: String,
    /// The whole request body.
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// token -> person id
    tokens: HashMap<String, String>,
    revoked: Vec<String>,
    posts: Vec<LinkedInPost>,
    faults: VecDeque<Fault>,
    next_id: u64,
}

/// The fake LinkedIn; cheap to clone, stops with the last clone.
#[derive(Clone)]
pub struct FakeLinkedIn {
    state: Arc<Mutex<State>>,
    server: Arc<FakeServer>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeLinkedIn {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> Result<Self, KitError> {
        let state = Arc::new(Mutex::new(State {
            next_id: 7_200_000_000_000_000_000,
            ..State::default()
        }));
        let handler_state = state.clone();
        let server = FakeServer::start_async(move |req: RecordedRequest| -> ResponseFuture {
            let state = handler_state.clone();
            Box::pin(async move { serve(&state, &req) })
        })
        .await?;
        Ok(FakeLinkedIn {
            state,
            server: Arc::new(server),
        })
    }

    /// `http://127.0.0.1:<port>` (the `linkedin_api_url`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Adds a member (`urn:li:person:<person_id>`) whose access token is `token`.
    pub fn add_member(&self, person_id: &str, token: &str) {
        lock(&self.state)
            .tokens
            .insert(token.into(), person_id.into());
    }

    /// Revokes a token: 401 from now on.
    pub fn revoke_token(&self, token: &str) {
        lock(&self.state).revoked.push(token.into());
    }

    /// Queues a fault for the next `POST /rest/posts`.
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.push_back(fault);
    }

    /// Every post, oldest first.
    pub fn posts(&self) -> Vec<LinkedInPost> {
        lock(&self.state).posts.clone()
    }
}

fn error(status: u16, message: &str, code: Option<&str>) -> Answer {
    let mut body = json!({ "status": status, "message": message });
    if let Some(code) = code {
        body["code"] = json!(code);
    }
    if status == 401 {
        body["serviceErrorCode"] = json!(65600);
    }
    let mut r = http::Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The commentary's length as a reader sees it: little-text escapes undone.
fn visible_chars(commentary: &str) -> usize {
    let mut count = 0;
    let mut escaped = false;
    for c in commentary.chars() {
        if c == '\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        count += 1;
    }
    count
}

fn serve(state: &Mutex<State>, req: &RecordedRequest) -> Answer {
    if req.uri.path() != "/rest/posts" {
        return error(404, "Not Found", None);
    }
    if req.method != http::Method::POST {
        return error(405, "Method Not Allowed", None);
    }
    let fault = lock(state).faults.pop_front();
    match fault {
        Some(Fault::Status { status, message }) => return error(status, &message, None),
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut r = error(429, "Resource level throttle limit reached", None);
            if let Ok(v) = http::HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            return r;
        }
        Some(Fault::CommitThen504) => {
            drop(create(state, req));
            return error(504, "Gateway Timeout", None);
        }
        None => {}
    }
    create(state, req)
}

fn create(state: &Mutex<State>, req: &RecordedRequest) -> Answer {
    let mut st = lock(state);
    let token = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let person = token
        .filter(|t| !st.revoked.contains(t))
        .and_then(|t| st.tokens.get(&t).cloned());
    let Some(person) = person else {
        return error(401, "Invalid access token", Some("INVALID_ACCESS_TOKEN"));
    };
    let version = req
        .headers
        .get("linkedin-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if version.len() != 6 || !version.chars().all(|c| c.is_ascii_digit()) {
        return error(
            400,
            "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
            Some("VERSION_MISSING"),
        );
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return error(400, "Request body is not valid JSON", None),
    };
    for field in [
        "author",
        "commentary",
        "visibility",
        "distribution",
        "lifecycleState",
    ] {
        if body.get(field).is_none() {
            return error(
                422,
                &format!("/{field} :: field is required but not found"),
                None,
            );
        }
    }
    let author = body["author"].as_str().unwrap_or_default().to_string();
    if author != format!("urn:li:person:{person}") {
        return error(
            403,
            &format!("Not enough permissions to post as {author}"),
            Some("ACCESS_DENIED"),
        );
    }
    let commentary = body["commentary"].as_str().unwrap_or_default().to_string();
    if visible_chars(&commentary) > 3000 {
        return error(
            422,
            "/commentary :: length exceeds the maximum of 3000 characters",
            None,
        );
    }
    if let Some(existing) = st
        .posts
        .iter()
        .find(|p| p.author == author && p.commentary == commentary)
    {
        return error(
            422,
            &format!("Content is a duplicate of {}", existing.urn),
            None,
        );
    }
    st.next_id += 1;
    let urn = format!("urn:li:share:{}", st.next_id);
    st.posts.push(LinkedInPost {
        urn: urn.clone(),
        author,
        commentary,
        version,
        body,
    });
    let mut r = http::Response::new(Bytes::new());
    *r.status_mut() = http::StatusCode::CREATED;
    if let Ok(v) = http::HeaderValue::from_str(&urn) {
        r.headers_mut().insert("x-restli-id", v);
    }
    r
}

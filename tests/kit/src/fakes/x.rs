//! A loopback fake of the X API v2 for publishing (`PLATFORMS.md`, "X and
//! LinkedIn"): `POST /2/tweets` `{text, reply?: {in_reply_to_tweet_id}}`
//! with an OAuth 2.0 user token, 280 weighted characters (twitter-text:
//! URLs 23, CJK and emoji 2), threads as reply chains, and X's answers:
//! 201 `{"data": {"id", "text", "edit_history_tweet_ids"}}`; 401
//! `Unauthorized` for a missing, unknown or revoked token; 403 "You are not
//! allowed to create a Tweet with duplicate content." for the same text by
//! the same user; 400 `invalid-request` for a reply to an unknown post or
//! text that is empty or too long; 429 with `x-rate-limit-limit`,
//! `-remaining`, `-reset` (Unix seconds). Every answer carries the
//! rate-limit headers. `GET /2/users/{id}/tweets` lists a user's posts,
//! newest first (`max_results`, `tweet.fields=created_at`).
//!
//! OAuth 2.0 (X's "OAuth 2.0 Authorization Code Flow with PKCE"; shared
//! rules in [`crate::fakes::oauth`]):
//!
//! - `GET /i/oauth2/authorize?response_type=code&client_id&redirect_uri&
//!   scope&state&code_challenge&code_challenge_method=S256` (x.com) -> 302
//!   to `redirect_uri?state&code` for the user set with
//!   [`FakeX::consent_as`], or `?error=access_denied&error_description&
//!   state` after [`FakeX::deny_next`]. PKCE is required: no
//!   `code_challenge` is a 400 `invalid_request` page.
//! - `POST /2/oauth2/token` (form; a confidential client authenticates
//!   with HTTP Basic `client_id:client_secret`, a public one sends
//!   `client_id`): `grant_type=authorization_code&code&redirect_uri&
//!   code_verifier` or `grant_type=refresh_token&refresh_token` -> 200
//!   `{token_type: "bearer", expires_in: 7200, access_token, scope,
//!   refresh_token}` (`refresh_token` only when the scope has
//!   `offline.access`). Refresh tokens rotate: the one presented stops
//!   working. Refusals are 400 `{error, error_description}`: a bad, used
//!   or expired code, a wrong `redirect_uri` or `code_verifier` is
//!   `invalid_request` ("Value passed for the authorization code was
//!   invalid."); an unknown, used or revoked refresh token is
//!   `invalid_grant`; wrong client credentials are 401
//!   `unauthorized_client`.
//! - `POST /2/oauth2/revoke` (form `token`, `token_type_hint`, client as
//!   above) -> 200 `{"revoked": true}`; the token stops working.
//! - `GET /2/users/me` (Bearer) -> `{"data": {"id", "name", "username"}}`.
//! - [`FakeX::fail_oauth_next`] answers the next OAuth requests (token,
//!   revoke, `/2/users/me`) with a 5xx or 429 (with `x-rate-limit-*`).
//!   The fake never sleeps (except [`Fault::Hang`]), so it is "instant"
//!   for benchmarks as it is.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use outpost_test_kit::fakes::x::{FakeX, Fault};
//! let x = FakeX::start().await?;
//! x.add_user("1001", "alice", "token-alice");
//! x.inject(Fault::RateLimited { reset_in_secs: 30 });
//! // point `x_api_url` at x.url()
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use unicode_segmentation::UnicodeSegmentation;

use crate::KitError;
use crate::fake::{FakeServer, RecordedRequest, ResponseFuture};
use crate::fakes::oauth::{Grant, OAuth, OAuthFault, Refusal, Rules};

/// Posts a user may make per 15-minute window before 429.
pub const POSTS_PER_WINDOW: usize = 100;

type Answer = http::Response<Bytes>;

/// A fault for the next `POST /2/tweets` ([`FakeX::inject`]).
#[derive(Debug, Clone)]
pub enum Fault {
    /// No fault: answer this call normally (to aim a later fault).
    Pass,
    /// Answer `status` with X's problem body (`title`, `detail`), doing nothing.
    Status {
        /// HTTP status.
        status: u16,
        /// `detail`.
        detail: String,
    },
    /// 429 `Too Many Requests` with `x-rate-limit-reset` this many seconds
    /// ahead; nothing posted.
    RateLimited {
        /// Seconds until the window resets.
        reset_in_secs: i64,
    },
    /// Post it, then answer 503 (the answer is lost, the post exists).
    CommitThen503,
    /// Post it at once, then hold the answer this long.
    Hang(Duration),
}

/// A post on the fake X.
#[derive(Debug, Clone)]
pub struct Tweet {
    /// Its id (a decimal string, increasing).
    pub id: String,
    /// Author's user id.
    pub author_id: String,
    /// Its text.
    pub text: String,
    /// The post it replies to.
    pub in_reply_to: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

struct State {
    oauth: OAuth,
    /// token -> user id
    tokens: HashMap<String, String>,
    revoked: Vec<String>,
    /// user id -> username
    users: HashMap<String, String>,
    tweets: Vec<Tweet>,
    faults: VecDeque<Fault>,
    next_id: u64,
    /// user id -> post times in the current window
    window: HashMap<String, VecDeque<DateTime<Utc>>>,
    /// How long a token answer is held after the grant is done (tokens
    /// already rotated): a caller that stalls meanwhile.
    token_answer_delay: Duration,
}

/// The fake X; cheap to clone, stops with the last clone.
#[derive(Clone)]
pub struct FakeX {
    state: Arc<Mutex<State>>,
    server: Arc<FakeServer>,
}

impl FakeX {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> Result<Self, KitError> {
        let state = Arc::new(Mutex::new(State {
            oauth: OAuth::new(Rules {
                access_lifetime: 7200,
                refresh_tokens: true,
                rotate_refresh: true,
                prefix: "x-",
                refresh_scope: Some("offline.access"),
            }),
            tokens: HashMap::new(),
            revoked: Vec::new(),
            users: HashMap::new(),
            tweets: Vec::new(),
            faults: VecDeque::new(),
            next_id: 1_870_000_000_000_000_000,
            window: HashMap::new(),
            token_answer_delay: Duration::ZERO,
        }));
        let handler_state = state.clone();
        let server = FakeServer::start_async(move |req: RecordedRequest| -> ResponseFuture {
            let state = handler_state.clone();
            Box::pin(async move { serve(state, req).await })
        })
        .await?;
        Ok(FakeX {
            state,
            server: Arc::new(server),
        })
    }

    /// Holds every token answer `delay` after the grant is done (the
    /// refresh token already rotated), as if the caller stalled.
    pub fn delay_token_answers(&self, delay: Duration) {
        lock(&self.state).token_answer_delay = delay;
    }

    /// `http://127.0.0.1:<port>` (the `x_api_url`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request received.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Adds a user whose OAuth 2.0 access token is `token`.
    pub fn add_user(&self, user_id: &str, username: &str, token: &str) {
        let mut st = self.lock();
        st.users.insert(user_id.into(), username.into());
        st.tokens.insert(token.into(), user_id.into());
    }

    /// Revokes a token: it answers 401 from now on.
    pub fn revoke_token(&self, token: &str) {
        let mut st = self.lock();
        st.oauth.revoke(token);
        st.revoked.push(token.into());
    }

    /// Requires these client credentials on the token and revoke endpoints.
    pub fn expect_client(&self, client_id: &str, client_secret: &str) {
        self.lock().oauth.expect_client(client_id, client_secret);
    }

    /// Authorizations are approved by user `user_id` from now on (added as
    /// `username` if new).
    pub fn consent_as(&self, user_id: &str, username: &str) {
        let mut st = self.lock();
        st.users
            .entry(user_id.into())
            .or_insert_with(|| username.into());
        st.oauth.consent_as(user_id);
    }

    /// The next `times` authorizations answer `error=access_denied`.
    pub fn deny_next(&self, times: usize) {
        self.lock().oauth.deny_next(times);
    }

    /// Tokens for `user_id` (added as `username` if new) as a completed
    /// connect with `tweet.read tweet.write users.read offline.access`
    /// would give them, issued at `issued_at` (Unix seconds; earlier than
    /// two hours ago for an expired access token).
    pub fn grant(&self, user_id: &str, username: &str, issued_at: i64) -> Grant {
        let mut st = self.lock();
        st.users
            .entry(user_id.into())
            .or_insert_with(|| username.into());
        st.oauth.mint(
            user_id,
            "tweet.read tweet.write users.read offline.access",
            issued_at,
        )
    }

    /// Access tokens live `seconds` from now on (7,200 by default).
    pub fn set_access_lifetime(&self, seconds: i64) {
        self.lock().oauth.set_access_lifetime(seconds);
    }

    /// The next `times` OAuth requests whose path contains `path_contains`
    /// (None: token, revoke and `/2/users/me` alike) answer `status`
    /// (429 with `x-rate-limit-reset` a minute ahead); nothing changes.
    pub fn fail_oauth_next(&self, times: usize, status: u16, path_contains: Option<&str>) {
        self.lock().oauth.fail_next(
            times,
            OAuthFault {
                path_contains: path_contains.map(str::to_string),
                status,
                retry_after: None,
            },
        );
    }

    /// Whether a refresh token would be accepted now.
    pub fn refresh_valid(&self, refresh_token: &str) -> bool {
        self.lock().oauth.refresh_valid(refresh_token)
    }

    /// Whether an access token works now.
    pub fn access_valid(&self, access_token: &str) -> bool {
        let st = self.lock();
        !st.revoked.iter().any(|t| t == access_token)
            && (st.tokens.contains_key(access_token) || st.oauth.user_of(access_token).is_some())
    }

    /// Successful refreshes so far.
    pub fn refreshes(&self) -> usize {
        self.lock().oauth.refreshes
    }

    /// Successful code exchanges so far.
    pub fn code_exchanges(&self) -> usize {
        self.lock().oauth.exchanges
    }

    /// Tokens presented to `POST /2/oauth2/revoke`.
    pub fn revocations(&self) -> Vec<String> {
        self.lock().oauth.revocations.clone()
    }

    /// Queues a fault for the next `POST /2/tweets`.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Every post, oldest first.
    pub fn tweets(&self) -> Vec<Tweet> {
        self.lock().tweets.clone()
    }

    /// A user's posts, oldest first.
    pub fn tweets_of(&self, user_id: &str) -> Vec<Tweet> {
        self.lock()
            .tweets
            .iter()
            .filter(|t| t.author_id == user_id)
            .cloned()
            .collect()
    }

    /// How many `POST /2/tweets` arrived (faulted ones included).
    pub fn post_calls(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == http::Method::POST && r.uri.path() == "/2/tweets")
            .count()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// twitter-text's weighted length: URLs (words starting `http://` or
/// `https://`) 23, emoji 2, code points in the light ranges 1, others 2.
pub fn weighted_length(text: &str) -> usize {
    let mut weight = 0;
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            weight += 1;
        }
        if word.starts_with("http://") || word.starts_with("https://") {
            weight += 23;
            continue;
        }
        for grapheme in word.graphemes(true) {
            let chars: Vec<char> = grapheme.chars().collect();
            // An emoji sequence (modifiers, ZWJ, flags, keycaps) weighs 2 in all.
            let emoji = chars.len() > 1
                && chars.iter().any(|&c| {
                    matches!(u32::from(c), 0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0xFE0F | 0x200D | 0x20E3)
                });
            weight += if emoji {
                2
            } else {
                chars
                    .iter()
                    .map(|&c| match u32::from(c) {
                        0..=4351 | 8192..=8205 | 8208..=8223 | 8242..=8247 => 1,
                        _ => 2,
                    })
                    .sum()
            };
        }
    }
    weight
}

fn problem(status: u16, title: &str, detail: &str) -> Answer {
    let body = json!({ "title": title, "detail": detail, "type": "about:blank", "status": status });
    answer(status, &body)
}

fn invalid_request(message: &str) -> Answer {
    answer(
        400,
        &json!({
            "errors": [{ "message": message }],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        }),
    )
}

fn answer(status: u16, body: &Value) -> Answer {
    let mut r = http::Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn with_limits(mut r: Answer, remaining: usize, reset: i64) -> Answer {
    let h = r.headers_mut();
    for (name, value) in [
        ("x-rate-limit-limit", POSTS_PER_WINDOW.to_string()),
        ("x-rate-limit-remaining", remaining.to_string()),
        ("x-rate-limit-reset", reset.to_string()),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    r
}

fn bearer(req: &RecordedRequest) -> Option<String> {
    req.headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

async fn serve(state: Arc<Mutex<State>>, req: RecordedRequest) -> Answer {
    let path = req.uri.path().to_string();
    if matches!(
        path.as_str(),
        "/i/oauth2/authorize" | "/2/oauth2/token" | "/2/oauth2/revoke" | "/2/users/me"
    ) {
        let answer = oauth_answer(&mut lock(&state), &req, &path);
        let delay = lock(&state).token_answer_delay;
        if path == "/2/oauth2/token" && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        return answer;
    }
    if req.method == http::Method::POST && path == "/2/tweets" {
        let fault = lock(&state).faults.pop_front();
        return match fault {
            None | Some(Fault::Pass) => create(&state, &req),
            Some(Fault::Status { status, detail }) => {
                let title = http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error");
                problem(status, title, &detail)
            }
            Some(Fault::RateLimited { reset_in_secs }) => with_limits(
                problem(429, "Too Many Requests", "Too Many Requests"),
                0,
                Utc::now().timestamp() + reset_in_secs,
            ),
            Some(Fault::CommitThen503) => {
                drop(create(&state, &req));
                problem(503, "Service Unavailable", "Service Unavailable")
            }
            Some(Fault::Hang(d)) => {
                let a = create(&state, &req);
                tokio::time::sleep(d).await;
                a
            }
        };
    }
    if req.method == http::Method::GET
        && let Some(user) = path
            .strip_prefix("/2/users/")
            .and_then(|rest| rest.strip_suffix("/tweets"))
    {
        return list(&state, &req, user);
    }
    problem(404, "Not Found Error", "no such endpoint")
}

fn authed(st: &State, req: &RecordedRequest) -> Option<String> {
    let token = bearer(req)?;
    if st.revoked.contains(&token) {
        return None;
    }
    st.tokens
        .get(&token)
        .cloned()
        .or_else(|| st.oauth.user_of(&token))
}

fn oauth_error(status: u16, error: &str, description: &str) -> Answer {
    answer(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn oauth_answer(st: &mut State, req: &RecordedRequest, path: &str) -> Answer {
    if path == "/i/oauth2/authorize" {
        // X requires PKCE: without a challenge the authorize page refuses.
        if !crate::fakes::oauth::params(req).contains_key("code_challenge") {
            return oauth_error(
                400,
                "invalid_request",
                "Missing required parameter [code_challenge].",
            );
        }
        return match st.oauth.authorize(req, &[]) {
            Ok(location) => {
                let mut r = answer(302, &json!({}));
                if let Ok(v) = http::HeaderValue::from_str(&location) {
                    r.headers_mut().insert(http::header::LOCATION, v);
                }
                r
            }
            Err(message) => oauth_error(400, "invalid_request", &message),
        };
    }
    if let Some(fault) = st.oauth.take_fault(path) {
        let title = http::StatusCode::from_u16(fault.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let r = problem(fault.status, title, title);
        return if fault.status == 429 {
            with_limits(r, 0, Utc::now().timestamp() + 60)
        } else {
            r
        };
    }
    if path == "/2/users/me" {
        if req.method != http::Method::GET {
            return problem(405, "Method Not Allowed", "GET only");
        }
        let Some(user) = authed(st, req) else {
            return problem(401, "Unauthorized", "Unauthorized");
        };
        let username = st.users.get(&user).cloned().unwrap_or_default();
        return answer(
            200,
            &json!({ "data": { "id": user, "name": username, "username": username } }),
        );
    }
    if req.method != http::Method::POST {
        return problem(405, "Method Not Allowed", "POST only");
    }
    if path == "/2/oauth2/revoke" {
        let params = crate::fakes::oauth::params(req);
        let Some(token) = params.get("token") else {
            return oauth_error(
                400,
                "invalid_request",
                "Missing required parameter [token].",
            );
        };
        st.oauth.revoke(token);
        st.revoked.push(token.clone());
        return answer(200, &json!({ "revoked": true }));
    }
    let params = crate::fakes::oauth::params(req);
    let result = match params.get("grant_type").map(String::as_str) {
        Some("authorization_code") => st.oauth.exchange(req),
        Some("refresh_token") => st.oauth.refresh(req),
        _ => {
            return oauth_error(
                400,
                "invalid_request",
                "Value passed for the grant type was invalid.",
            );
        }
    };
    match result {
        Ok(grant) => token_answer(&grant),
        Err(Refusal::Client) => oauth_error(
            401,
            "unauthorized_client",
            "Missing valid authorization header",
        ),
        Err(Refusal::RefreshToken) => oauth_error(
            400,
            "invalid_grant",
            "Value passed for the token was invalid.",
        ),
        Err(Refusal::Code(_) | Refusal::Verifier) => oauth_error(
            400,
            "invalid_request",
            "Value passed for the authorization code was invalid.",
        ),
        Err(Refusal::Request(what)) => oauth_error(400, "invalid_request", what),
    }
}

fn token_answer(grant: &Grant) -> Answer {
    let mut body = json!({
        "token_type": "bearer",
        "expires_in": grant.expires_in,
        "access_token": grant.access_token,
        "scope": grant.scope,
    });
    if let Some(refresh) = &grant.refresh_token {
        body["refresh_token"] = json!(refresh);
    }
    answer(200, &body)
}

fn create(state: &Mutex<State>, req: &RecordedRequest) -> Answer {
    let mut st = lock(state);
    let Some(user) = authed(&st, req) else {
        return problem(401, "Unauthorized", "Unauthorized");
    };
    let now = Utc::now();
    let window = st.window.entry(user.clone()).or_default();
    while window
        .front()
        .is_some_and(|t| *t <= now - chrono::TimeDelta::minutes(15))
    {
        window.pop_front();
    }
    let reset = window
        .front()
        .map_or(now, |t| *t + chrono::TimeDelta::minutes(15))
        .timestamp();
    if window.len() >= POSTS_PER_WINDOW {
        return with_limits(
            problem(429, "Too Many Requests", "Too Many Requests"),
            0,
            reset,
        );
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return invalid_request("Request body is not valid JSON"),
    };
    let Some(text) = body.get("text").and_then(Value::as_str) else {
        return invalid_request("$.text is required");
    };
    if text.trim().is_empty() {
        return invalid_request("Tweet text is empty");
    }
    if weighted_length(text) > 280 {
        return invalid_request("Tweet text is too long");
    }
    let reply_to = body
        .pointer("/reply/in_reply_to_tweet_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(parent) = &reply_to
        && !st.tweets.iter().any(|t| &t.id == parent)
    {
        return invalid_request(
            "The `reply.in_reply_to_tweet_id` query parameter value is not a Tweet you can reply to",
        );
    }
    if st
        .tweets
        .iter()
        .any(|t| t.author_id == user && t.text == text)
    {
        return problem(
            403,
            "Forbidden",
            "You are not allowed to create a Tweet with duplicate content.",
        );
    }
    st.next_id += 1;
    let id = st.next_id.to_string();
    st.tweets.push(Tweet {
        id: id.clone(),
        author_id: user.clone(),
        text: text.to_string(),
        in_reply_to: reply_to,
        created_at: now,
    });
    let window = st.window.entry(user).or_default();
    window.push_back(now);
    let remaining = POSTS_PER_WINDOW.saturating_sub(window.len());
    with_limits(
        answer(
            201,
            &json!({ "data": { "id": id, "text": text, "edit_history_tweet_ids": [id] } }),
        ),
        remaining,
        reset,
    )
}

fn list(state: &Mutex<State>, req: &RecordedRequest, user: &str) -> Answer {
    let st = lock(state);
    if authed(&st, req).is_none() {
        return problem(401, "Unauthorized", "Unauthorized");
    }
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let max = query
        .get("max_results")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(5, 100);
    let with_created = query
        .get("tweet.fields")
        .is_some_and(|f| f.split(',').any(|x| x == "created_at"));
    let data: Vec<Value> = st
        .tweets
        .iter()
        .rev()
        .filter(|t| t.author_id == user)
        .take(max)
        .map(|t| {
            let mut v = json!({ "id": t.id, "text": t.text, "edit_history_tweet_ids": [t.id] });
            if with_created {
                v["created_at"] = json!(t.created_at.to_rfc3339_opts(SecondsFormat::Millis, true));
            }
            v
        })
        .collect();
    let mut meta = json!({ "result_count": data.len() });
    if let (Some(first), Some(last)) = (data.first(), data.last()) {
        meta["newest_id"] = first["id"].clone();
        meta["oldest_id"] = last["id"].clone();
    }
    if data.is_empty() {
        return answer(200, &json!({ "meta": meta }));
    }
    answer(200, &json!({ "data": data, "meta": meta }))
}

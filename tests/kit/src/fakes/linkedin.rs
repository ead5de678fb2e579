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
//! OAuth 2.0 (LinkedIn's "Authorization Code Flow (3-legged OAuth)" and
//! "Sign In with LinkedIn using OpenID Connect"; shared rules in
//! [`crate::fakes::oauth`]):
//!
//! - `GET /oauth/v2/authorization?response_type=code&client_id&
//!   redirect_uri&state&scope[&code_challenge&code_challenge_method=S256]`
//!   (www.linkedin.com) -> 302 to `redirect_uri?code&state` for the member
//!   set with [`FakeLinkedIn::consent_as`]; after
//!   [`FakeLinkedIn::deny_next`] `?error=user_cancelled_authorize&
//!   error_description=The+user+cancelled+the+authorization&state`, as
//!   LinkedIn answers a member pressing "Cancel".
//! - `POST /oauth/v2/accessToken` (form: `grant_type=authorization_code`,
//!   `code`, `client_id`, `client_secret`, `redirect_uri`, and
//!   `code_verifier` when a challenge was sent) -> 200 `{access_token,
//!   expires_in: 5184000, scope, token_type: "Bearer", id_token}` (60
//!   days), plus `refresh_token` and `refresh_token_expires_in` (one year)
//!   once [`FakeLinkedIn::enable_refresh_tokens`] was called (LinkedIn
//!   gives refresh tokens only to approved apps). A bad, used or expired
//!   code, a wrong `redirect_uri` or `code_verifier` is 400
//!   `invalid_request` ("Unable to retrieve access token: appid/redirect
//!   uri/code verifier does not match authorization code. Or authorization
//!   code expired. ..."); wrong client credentials are 401
//!   `invalid_client`. `grant_type=refresh_token&refresh_token` gives a new
//!   access token and the **same** refresh token (LinkedIn's refresh tokens
//!   do not rotate; `refresh_token_expires_in` counts down); an unknown
//!   refresh token is 400 `invalid_grant`.
//! - `GET /v2/userinfo` (Bearer, api.linkedin.com) -> `{sub,
//!   email_verified, name, locale: {country, language}, given_name,
//!   family_name, email, picture}`; `sub` is the person id of
//!   `urn:li:person:<sub>`.
//! - No token revocation endpoint for members. [`FakeLinkedIn::fail_oauth_next`]
//!   answers the next OAuth requests with a 5xx or 429 (`Retry-After`).
//!   Nothing sleeps: the fake is "instant" for benchmarks as it is.
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
use crate::fakes::oauth::{Grant, OAuth, OAuthFault, Refusal, Rules};

/// Refresh tokens last a year (when the app has them).
const REFRESH_LIFETIME_SECONDS: i64 = 365 * 86_400;

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

/// A member's profile as `/v2/userinfo` gives it.
#[derive(Debug, Clone)]
struct Profile {
    given_name: String,
    family_name: String,
    email: String,
}

struct State {
    oauth: OAuth,
    refresh_enabled: bool,
    /// refresh token -> Unix seconds it expires
    refresh_expiry: HashMap<String, i64>,
    profiles: HashMap<String, Profile>,
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
            oauth: OAuth::new(Rules {
                access_lifetime: 60 * 86_400,
                refresh_tokens: false,
                rotate_refresh: false,
                prefix: "AQV",
                refresh_scope: None,
            }),
            refresh_enabled: false,
            refresh_expiry: HashMap::new(),
            profiles: HashMap::new(),
            tokens: HashMap::new(),
            revoked: Vec::new(),
            posts: Vec::new(),
            faults: VecDeque::new(),
            next_id: 7_200_000_000_000_000_000,
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
        let mut st = lock(&self.state);
        st.oauth.revoke(token);
        st.revoked.push(token.into());
    }

    /// Requires these client credentials on `/oauth/v2/accessToken`.
    pub fn expect_client(&self, client_id: &str, client_secret: &str) {
        lock(&self.state)
            .oauth
            .expect_client(client_id, client_secret);
    }

    /// The app has programmatic refresh tokens (off by default, as for most
    /// LinkedIn apps): token answers carry `refresh_token` from now on.
    pub fn enable_refresh_tokens(&self) {
        let mut st = lock(&self.state);
        st.refresh_enabled = true;
        st.oauth.set_refresh_tokens(true);
    }

    /// Sets a member's name and e-mail for `/v2/userinfo` (default
    /// `Member`, the person id, `<id>@example.com`).
    pub fn name_member(&self, person_id: &str, given_name: &str, family_name: &str, email: &str) {
        lock(&self.state).profiles.insert(
            person_id.into(),
            Profile {
                given_name: given_name.into(),
                family_name: family_name.into(),
                email: email.into(),
            },
        );
    }

    /// Authorizations are approved by member `person_id` from now on.
    pub fn consent_as(&self, person_id: &str) {
        lock(&self.state).oauth.consent_as(person_id);
    }

    /// The next `times` authorizations answer `user_cancelled_authorize`.
    pub fn deny_next(&self, times: usize) {
        lock(&self.state).oauth.deny_next(times);
    }

    /// Tokens for `person_id` as a completed connect with `openid profile
    /// email w_member_social` would give them, issued at `issued_at`
    /// (refresh token only after [`FakeLinkedIn::enable_refresh_tokens`]).
    pub fn grant(&self, person_id: &str, issued_at: i64) -> Grant {
        let mut st = lock(&self.state);
        let grant = st
            .oauth
            .mint(person_id, "email,openid,profile,w_member_social", issued_at);
        if let Some(refresh) = &grant.refresh_token {
            st.refresh_expiry
                .insert(refresh.clone(), issued_at + REFRESH_LIFETIME_SECONDS);
        }
        grant
    }

    /// Access tokens live `seconds` from now on (60 days by default).
    pub fn set_access_lifetime(&self, seconds: i64) {
        lock(&self.state).oauth.set_access_lifetime(seconds);
    }

    /// The next `times` OAuth requests whose path contains `path_contains`
    /// (None: token and userinfo alike) answer `status`; nothing changes.
    pub fn fail_oauth_next(&self, times: usize, status: u16, path_contains: Option<&str>) {
        lock(&self.state).oauth.fail_next(
            times,
            OAuthFault {
                path_contains: path_contains.map(str::to_string),
                status,
                retry_after: (status == 429).then_some(60),
            },
        );
    }

    /// Successful refreshes so far.
    pub fn refreshes(&self) -> usize {
        lock(&self.state).oauth.refreshes
    }

    /// Successful code exchanges so far.
    pub fn code_exchanges(&self) -> usize {
        lock(&self.state).oauth.exchanges
    }

    /// Whether an access token works now.
    pub fn access_valid(&self, access_token: &str) -> bool {
        let st = lock(&self.state);
        !st.revoked.iter().any(|t| t == access_token)
            && (st.tokens.contains_key(access_token) || st.oauth.user_of(access_token).is_some())
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

fn oauth_error(status: u16, error: &str, description: &str) -> Answer {
    let body = json!({ "error": error, "error_description": description });
    let mut r = http::Response::new(Bytes::from(body.to_string()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn json_answer(body: &Value) -> Answer {
    let mut r = http::Response::new(Bytes::from(body.to_string()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn oauth_answer(st: &mut State, req: &RecordedRequest, path: &str) -> Answer {
    if path == "/oauth/v2/authorization" {
        if st.oauth_deny_pending() {
            // LinkedIn's own error code for "Cancel".
            return match st.oauth.authorize(req, &[]) {
                Ok(location) => redirect(&location.replace(
                    "error=access_denied&error_description=The+user+denied+the+request",
                    "error=user_cancelled_authorize&error_description=The+user+cancelled+the+authorization",
                )),
                Err(message) => oauth_error(400, "invalid_request", &message),
            };
        }
        return match st.oauth.authorize(req, &[]) {
            Ok(location) => redirect(&location),
            Err(message) => oauth_error(400, "invalid_request", &message),
        };
    }
    if let Some(fault) = st.oauth.take_fault(path) {
        let mut r = error(fault.status, "Service unavailable", None);
        if let Some(seconds) = fault.retry_after
            && let Ok(v) = http::HeaderValue::from_str(&seconds.to_string())
        {
            r.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
        return r;
    }
    if path == "/v2/userinfo" {
        let token = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        let person = (!st.revoked.contains(&token))
            .then(|| {
                st.tokens
                    .get(&token)
                    .cloned()
                    .or_else(|| st.oauth.user_of(&token))
            })
            .flatten();
        let Some(person) = person else {
            return error(401, "Invalid access token", Some("INVALID_ACCESS_TOKEN"));
        };
        let profile = st.profiles.get(&person).cloned().unwrap_or(Profile {
            given_name: "Member".into(),
            family_name: person.clone(),
            email: format!("{person}@example.com"),
        });
        return json_answer(&json!({
            "sub": person,
            "email_verified": true,
            "name": format!("{} {}", profile.given_name, profile.family_name),
            "locale": { "country": "US", "language": "en" },
            "given_name": profile.given_name,
            "family_name": profile.family_name,
            "email": profile.email,
            "picture": format!("https://media.licdn.com/dms/image/{person}/profile.jpg"),
        }));
    }
    let params = crate::fakes::oauth::params(req);
    let refreshing = params.get("grant_type").map(String::as_str) == Some("refresh_token");
    if refreshing
        && let Some(presented) = params.get("refresh_token")
        && st
            .refresh_expiry
            .get(presented)
            .is_some_and(|at| *at <= chrono::Utc::now().timestamp())
    {
        return oauth_error(
            400,
            "invalid_grant",
            "The provided authorization grant or refresh token is invalid, expired or revoked.",
        );
    }
    let result = match params.get("grant_type").map(String::as_str) {
        Some("authorization_code") => st.oauth.exchange(req),
        Some("refresh_token") => st.oauth.refresh(req),
        _ => {
            return oauth_error(
                400,
                "unsupported_grant_type",
                "The grant_type is not supported",
            );
        }
    };
    let grant = match result {
        Ok(grant) => grant,
        Err(Refusal::Client) => {
            return oauth_error(401, "invalid_client", "Client authentication failed");
        }
        Err(Refusal::RefreshToken) => {
            return oauth_error(
                400,
                "invalid_grant",
                "The provided authorization grant or refresh token is invalid, expired or revoked.",
            );
        }
        Err(Refusal::Code(_) | Refusal::Verifier) => {
            return oauth_error(
                400,
                "invalid_request",
                "Unable to retrieve access token: appid/redirect uri/code verifier does not match authorization code. Or authorization code expired. Or external member binding exists",
            );
        }
        Err(Refusal::Request(what)) => return oauth_error(400, "invalid_request", what),
    };
    let now = chrono::Utc::now().timestamp();
    let mut body = json!({
        "access_token": grant.access_token,
        "expires_in": grant.expires_in,
        "scope": grant.scope.replace(' ', ","),
        "token_type": "Bearer",
        "id_token": format!("eyJ.{}.sig", grant.user),
    });
    if let Some(refresh) = &grant.refresh_token {
        let expires_at = *st
            .refresh_expiry
            .entry(refresh.clone())
            .or_insert(now + REFRESH_LIFETIME_SECONDS);
        body["refresh_token"] = json!(refresh);
        body["refresh_token_expires_in"] = json!(expires_at - now);
    }
    json_answer(&body)
}

fn redirect(location: &str) -> Answer {
    let mut r = http::Response::new(Bytes::new());
    *r.status_mut() = http::StatusCode::FOUND;
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

impl State {
    fn oauth_deny_pending(&self) -> bool {
        self.oauth.denials_pending() > 0
    }
}

fn serve(state: &Mutex<State>, req: &RecordedRequest) -> Answer {
    let path = req.uri.path().to_string();
    if matches!(
        path.as_str(),
        "/oauth/v2/authorization" | "/oauth/v2/accessToken" | "/v2/userinfo"
    ) {
        return oauth_answer(&mut lock(state), req, &path);
    }
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

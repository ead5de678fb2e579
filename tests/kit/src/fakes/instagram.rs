//! A loopback fake of the Instagram Graph API (Instagram API with Instagram
//! Login), following `shared/PLATFORMS.md` "Instagram (Meta Graph)" and
//! Meta's reference field by field, on version-less paths (a real base URL
//! may carry `/v21.0`):
//!
//! - `GET /{media-id}?fields=...` -> the media with exactly the requested
//!   fields (only `id` without `fields`), nested `children{...}` as
//!   `{"children": {"data": [...]}}`. Media fields: `id`, `caption`,
//!   `media_type` (`IMAGE`, `VIDEO`, `CAROUSEL_ALBUM`), `media_product_type`
//!   (`FEED`, `REELS`, `STORY`), `media_url`, `permalink`, `thumbnail_url`
//!   (videos only), `timestamp` (`2024-01-15T10:30:00+0000`: a `+0000`
//!   offset, as Graph writes it), `username`, `like_count`,
//!   `comments_count`, `children` (albums).
//! - `GET /me/media` and `GET /{ig-user-id}/media` `?fields=&limit=&after=`
//!   -> `{"data": [...], "paging": {"cursors": {"before", "after"},
//!   "next"?}}`, newest first, `limit` 25 by default (at most 100); `next`
//!   (a full URL, with the token, as Graph gives it) is absent on the last
//!   page.
//! - The token is the `access_token` query parameter (or `Authorization:
//!   Bearer`). Errors are HTTP 400 with `{"error": {"message", "type",
//!   "code", "error_subcode"?, "fbtrace_id"}}`: an unknown or revoked token
//!   is code 190 `OAuthException`; a media that does not exist or is not
//!   the token's user's is code 100 `GraphMethodException` subcode 33; a
//!   rate limit ([`Fault::rate_limited`]) is code 4 "Application request
//!   limit reached".
//!
//! OAuth (Instagram API with Instagram Login, "Business Login for
//! Instagram"; shared rules in [`crate::fakes::oauth`]), every host on the
//! one loopback port:
//!
//! - `GET /oauth/authorize?client_id&redirect_uri&response_type=code&
//!   scope&state[&code_challenge&code_challenge_method=S256]`
//!   (www.instagram.com) -> 302 to `redirect_uri?state&code#_` (Instagram
//!   appends `#_`) for the user set with [`FakeInstagram::consent_as`], or
//!   `?error=access_denied&error_reason=user_denied&error_description=
//!   The+user+denied+your+request.&state` after
//!   [`FakeInstagram::deny_next`]. Instagram does not document PKCE; the
//!   fake checks a `code_challenge` when one was sent.
//! - `POST /oauth/access_token` (api.instagram.com; form `client_id`,
//!   `client_secret`, `grant_type=authorization_code`, `redirect_uri`,
//!   `code`, `code_verifier`) -> 200 `{"data": [{"access_token",
//!   "user_id", "permissions"}]}`: a **short-lived** token (one hour). A
//!   bad, used or expired code, a wrong `redirect_uri` or verifier is 400
//!   `{"error_type": "OAuthException", "code": 400, "error_message":
//!   "Invalid authorization code"}`; wrong client credentials 400 "Invalid
//!   platform app" (`invalid_client`).
//! - `GET /access_token?grant_type=ig_exchange_token&client_secret&
//!   access_token` (graph.instagram.com) -> `{access_token, token_type:
//!   "bearer", expires_in: 5184000}`: the 60-day long-lived token for a
//!   short-lived one (a long-lived or unknown token is code 190, a wrong
//!   secret code 101 "Error validating client secret").
//! - `GET /refresh_access_token?grant_type=ig_refresh_token&access_token`
//!   -> the same shape, a new 60-day token, for a long-lived token at
//!   least 24 hours old and unexpired (younger: code 100 "the token must
//!   be at least 24 hours old"; short-lived, expired or unknown: code 190).
//! - `GET /me?fields=user_id,username,...` -> `{"id", "user_id",
//!   "username", ...}` (only the asked fields besides `id`; the fake's `id`
//!   and `user_id` are both the professional account's id).
//! - Instagram has no revocation endpoint (apps learn of removal through
//!   the deauthorize callback). 5xx and 429-like faults on these paths come
//!   from [`FakeInstagram::fail_next`] with [`Fault::on_path`]. Nothing
//!   sleeps: the fake is "instant" for benchmarks as it is.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::{Map, Value, json};

use crate::KitError;
use crate::fake::{FakeServer, RecordedRequest};
use crate::fakes::oauth::{self, Grant, OAuth, Refusal, Rules};

/// Short-lived tokens (from the code exchange) last an hour.
const SHORT_LIVED_SECONDS: i64 = 3600;
/// Long-lived tokens last 60 days.
const LONG_LIVED_SECONDS: i64 = 60 * 86_400;

/// A canned answer for the next matching request.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests whose path contains this (None: any).
    pub path_contains: Option<String>,
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
}

impl Fault {
    /// A Graph error with `status`, `code` and `message`.
    pub fn graph(status: u16, code: i64, kind: &str, message: &str) -> Self {
        Fault {
            path_contains: None,
            status,
            body: graph_error(message, kind, code, None),
            retry_after: None,
        }
    }

    /// Code 4, "Application request limit reached" (HTTP 400, as Graph).
    pub fn rate_limited() -> Self {
        Self::graph(
            400,
            4,
            "OAuthException",
            "(#4) Application request limit reached",
        )
    }

    /// A server error (`status` >= 500) with Graph's "unexpected error" body.
    pub fn server_error(status: u16) -> Self {
        Self::graph(
            status,
            2,
            "OAuthException",
            "An unexpected error has occurred. Please retry your request later.",
        )
    }

    /// Only for requests whose path contains `needle`.
    pub fn on_path(mut self, needle: &str) -> Self {
        self.path_contains = Some(needle.to_string());
        self
    }
}

struct User {
    username: String,
    /// Newest first.
    media: Vec<Value>,
}

struct State {
    oauth: OAuth,
    /// Short-lived tokens not yet exchanged.
    short_lived: std::collections::HashSet<String>,
    users: BTreeMap<String, User>,
    tokens: HashMap<String, String>,
    faults: VecDeque<(usize, Fault)>,
    base: String,
}

/// A running fake Instagram Graph API; stops when dropped.
pub struct FakeInstagram {
    server: FakeServer,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn graph_error(message: &str, kind: &str, code: i64, subcode: Option<i64>) -> Value {
    let mut error = json!({
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": format!("A{}", random_hex(10)),
    });
    if let Some(subcode) = subcode {
        error["error_subcode"] = json!(subcode);
    }
    json!({ "error": error })
}

/// `2024-01-15T10:30:00+0000`, Graph's timestamp form.
pub fn graph_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%z").to_string()
}

impl FakeInstagram {
    /// Starts the fake.
    pub async fn start() -> Result<Self, KitError> {
        let state = Arc::new(Mutex::new(State {
            oauth: OAuth::new(Rules {
                // What the code exchange gives; long-lived ones are minted
                // with their own lifetime.
                access_lifetime: SHORT_LIVED_SECONDS,
                refresh_tokens: false,
                rotate_refresh: false,
                prefix: "IGAA",
                refresh_scope: None,
            }),
            short_lived: std::collections::HashSet::new(),
            users: BTreeMap::new(),
            tokens: HashMap::new(),
            faults: VecDeque::new(),
            base: String::new(),
        }));
        let handler_state = state.clone();
        let server = FakeServer::start(move |request| answer(&handler_state, request)).await?;
        lock(&state).base = server.url();
        Ok(FakeInstagram { server, state })
    }

    /// `http://127.0.0.1:<port>`: the `instagram_graph_url`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// Adds an Instagram professional account; answers its access token.
    pub fn add_user(&self, ig_user_id: &str, username: &str) -> String {
        let token = format!("IGQV{}", random_hex(24));
        let mut state = lock(&self.state);
        state.users.insert(
            ig_user_id.to_string(),
            User {
                username: username.to_string(),
                media: Vec::new(),
            },
        );
        state.tokens.insert(token.clone(), ig_user_id.to_string());
        token
    }

    /// Revokes every token of the user (code 190 afterwards).
    pub fn revoke(&self, ig_user_id: &str) {
        let mut state = lock(&self.state);
        state.tokens.retain(|_, user| user != ig_user_id);
        state.oauth.revoke_user(ig_user_id);
    }

    /// Requires these client credentials (Instagram app id and secret).
    pub fn expect_client(&self, client_id: &str, client_secret: &str) {
        lock(&self.state)
            .oauth
            .expect_client(client_id, client_secret);
    }

    /// Authorizations are approved by `ig_user_id` from now on (added as
    /// `username` if new).
    pub fn consent_as(&self, ig_user_id: &str, username: &str) {
        let mut state = lock(&self.state);
        state
            .users
            .entry(ig_user_id.to_string())
            .or_insert_with(|| User {
                username: username.to_string(),
                media: Vec::new(),
            });
        state.oauth.consent_as(ig_user_id);
    }

    /// The next `times` authorizations answer `error=access_denied`.
    pub fn deny_next(&self, times: usize) {
        lock(&self.state).oauth.deny_next(times);
    }

    /// A long-lived token for `ig_user_id` (added as `username` if new)
    /// issued at `issued_at` (Unix seconds): older than 24 hours to be
    /// refreshable, older than 60 days to be expired.
    pub fn grant(&self, ig_user_id: &str, username: &str, issued_at: i64) -> Grant {
        let mut state = lock(&self.state);
        state
            .users
            .entry(ig_user_id.to_string())
            .or_insert_with(|| User {
                username: username.to_string(),
                media: Vec::new(),
            });
        state.oauth.mint_access_lasting(
            ig_user_id,
            "instagram_business_basic,instagram_business_content_publish",
            issued_at,
            LONG_LIVED_SECONDS,
        )
    }

    /// Whether an access token works now.
    pub fn access_valid(&self, access_token: &str) -> bool {
        let state = lock(&self.state);
        state.tokens.contains_key(access_token) || state.oauth.user_of(access_token).is_some()
    }

    /// Successful `ig_refresh_token` refreshes so far.
    pub fn refreshes(&self) -> usize {
        lock(&self.state).oauth.refreshes
    }

    /// Successful code exchanges so far.
    pub fn code_exchanges(&self) -> usize {
        lock(&self.state).oauth.exchanges
    }

    /// Publishes `media` (see [`FakeInstagram::image`], [`FakeInstagram::video`],
    /// [`FakeInstagram::carousel`]) as the user's newest; `username` is set.
    pub fn add_media(&self, ig_user_id: &str, mut media: Value) {
        let mut state = lock(&self.state);
        if let Some(user) = state.users.get_mut(ig_user_id) {
            media["username"] = json!(user.username);
            user.media.insert(0, media);
        }
    }

    /// Deletes a media.
    pub fn remove_media(&self, ig_user_id: &str, media_id: &str) {
        if let Some(user) = lock(&self.state).users.get_mut(ig_user_id) {
            user.media.retain(|m| m["id"] != media_id);
        }
    }

    /// The next `times` matching requests answer with `fault`.
    pub fn fail_next(&self, times: usize, fault: Fault) {
        lock(&self.state).faults.push_back((times, fault));
    }

    /// An `IMAGE` feed post.
    pub fn image(id: &str, caption: Option<&str>, at: DateTime<Utc>) -> Value {
        json!({
            "id": id,
            "caption": caption,
            "media_type": "IMAGE",
            "media_product_type": "FEED",
            "media_url": cdn(id, "jpg"),
            "permalink": format!("https://www.instagram.com/p/{id}/"),
            "timestamp": graph_time(at),
            "like_count": 12,
            "comments_count": 1,
        })
    }

    /// A `VIDEO`: a feed video, or a reel with `media_product_type` `REELS`.
    pub fn video(id: &str, caption: Option<&str>, at: DateTime<Utc>, reel: bool) -> Value {
        json!({
            "id": id,
            "caption": caption,
            "media_type": "VIDEO",
            "media_product_type": if reel { "REELS" } else { "FEED" },
            "media_url": cdn(id, "mp4"),
            "thumbnail_url": cdn(&format!("{id}_thumb"), "jpg"),
            "permalink": format!("https://www.instagram.com/reel/{id}/"),
            "timestamp": graph_time(at),
            "like_count": 40,
            "comments_count": 3,
        })
    }

    /// A `CAROUSEL_ALBUM` whose children are `children` (images and videos
    /// made as above; their captions are dropped, as Graph has none for
    /// children).
    pub fn carousel(
        id: &str,
        caption: Option<&str>,
        at: DateTime<Utc>,
        children: Vec<Value>,
    ) -> Value {
        let children: Vec<Value> = children
            .into_iter()
            .map(|mut child| {
                if let Some(map) = child.as_object_mut() {
                    for key in [
                        "caption",
                        "like_count",
                        "comments_count",
                        "media_product_type",
                    ] {
                        map.remove(key);
                    }
                }
                child
            })
            .collect();
        json!({
            "id": id,
            "caption": caption,
            "media_type": "CAROUSEL_ALBUM",
            "media_product_type": "FEED",
            "media_url": children.first().map(|c| c["media_url"].clone()).unwrap_or(Value::Null),
            "permalink": format!("https://www.instagram.com/p/{id}/"),
            "timestamp": graph_time(at),
            "like_count": 7,
            "comments_count": 0,
            "children": {"data": children},
        })
    }
}

fn cdn(id: &str, ext: &str) -> String {
    format!(
        "https://scontent.cdninstagram.com/v/t51.2885-15/{id}.{ext}?_nc_ht=scontent.cdninstagram.com&oh=00_{id}&oe=67A1B2C3"
    )
}

/// Splits a Graph `fields` list at top-level commas: `a,b{c,d},e` ->
/// `[("a", None), ("b", Some("c,d")), ("e", None)]`.
fn split_fields(fields: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    let bytes = fields.as_bytes();
    let mut push = |part: &str| {
        let part = part.trim();
        if part.is_empty() {
            return;
        }
        match part.find('{') {
            Some(open) if part.ends_with('}') => out.push((
                part[..open].trim().to_string(),
                Some(part[open + 1..part.len() - 1].to_string()),
            )),
            _ => out.push((part.to_string(), None)),
        }
    };
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                push(&fields[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&fields[start..]);
    out
}

/// The media with only `fields` (Graph answers nothing it was not asked).
fn select(media: &Value, fields: &str) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), media["id"].clone());
    for (name, nested) in split_fields(fields) {
        let Some(value) = media.get(&name) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let value = match (name.as_str(), nested) {
            ("children", Some(sub)) => {
                let data: Vec<Value> = value["data"]
                    .as_array()
                    .map(|children| children.iter().map(|c| select(c, &sub)).collect())
                    .unwrap_or_default();
                json!({ "data": data })
            }
            ("children", None) => {
                let data: Vec<Value> = value["data"]
                    .as_array()
                    .map(|children| children.iter().map(|c| json!({"id": c["id"]})).collect())
                    .unwrap_or_default();
                json!({ "data": data })
            }
            _ => value.clone(),
        };
        out.insert(name, value);
    }
    Value::Object(out)
}

fn respond(status: u16, body: &Value, retry_after: Option<u64>) -> http::Response<Bytes> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .header(
            "x-app-usage",
            r#"{"call_count":1,"total_cputime":1,"total_time":1}"#,
        );
    if let Some(seconds) = retry_after {
        builder = builder.header("retry-after", seconds.to_string());
    }
    builder
        .body(Bytes::from(body.to_string()))
        .unwrap_or_else(|_| http::Response::new(Bytes::new()))
}

fn answer(shared: &Mutex<State>, request: &RecordedRequest) -> http::Response<Bytes> {
    let mut state = lock(shared);
    let path = request.uri.path().to_string();
    let fault = state.faults.iter().position(|(_, f)| {
        f.path_contains
            .as_ref()
            .is_none_or(|n| path.contains(n.as_str()))
    });
    if let Some(index) = fault {
        let (times, fault) = state.faults[index].clone();
        if times <= 1 {
            state.faults.remove(index);
        } else {
            state.faults[index].0 = times - 1;
        }
        return respond(fault.status, &fault.body, fault.retry_after);
    }
    match (request.method.as_str(), path.as_str()) {
        ("GET", "/oauth/authorize") => return authorize(&mut state, request),
        ("POST", "/oauth/access_token") => return exchange_code(&mut state, request),
        ("GET", "/access_token") => return long_lived(&mut state, request, false),
        ("GET", "/refresh_access_token") => return long_lived(&mut state, request, true),
        _ => {}
    }
    if request.method != http::Method::GET {
        let body = graph_error(
            "Unsupported request - method type: post",
            "GraphMethodException",
            100,
            None,
        );
        return respond(400, &body, None);
    }
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let token = params.get("access_token").cloned().or_else(|| {
        request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string)
    });
    let owner = token.as_ref().and_then(|t| {
        state
            .tokens
            .get(t)
            .cloned()
            .or_else(|| state.oauth.user_of(t))
    });
    let Some(user_id) = owner else {
        let body = graph_error(
            "Invalid OAuth access token - Cannot parse access token",
            "OAuthException",
            190,
            None,
        );
        return respond(400, &body, None);
    };
    let fields = params.get("fields").cloned().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["me"] => {
            let username = state
                .users
                .get(&user_id)
                .map(|u| u.username.clone())
                .unwrap_or_default();
            let me = json!({
                "id": user_id,
                "user_id": user_id,
                "username": username,
                "name": username,
                "account_type": "BUSINESS",
                "profile_picture_url": format!("https://scontent.cdninstagram.com/{user_id}.jpg"),
                "followers_count": 42,
                "follows_count": 7,
                "media_count": state.users.get(&user_id).map_or(0, |u| u.media.len()),
            });
            respond(200, &select(&me, &fields), None)
        }
        [owner, "media"] if *owner == "me" || *owner == user_id => {
            let limit = params
                .get("limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(25)
                .clamp(1, 100);
            let start = params
                .get("after")
                .and_then(|c| STANDARD.decode(c).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<usize>().ok())
                .unwrap_or(0);
            let all = state
                .users
                .get(&user_id)
                .map(|u| u.media.clone())
                .unwrap_or_default();
            let page: Vec<Value> = all
                .iter()
                .skip(start)
                .take(limit)
                .map(|m| select(m, &fields))
                .collect();
            let end = start + page.len();
            // Opaque cursors: `after` names where the next page starts.
            let mut paging = json!({"cursors": {
                "before": STANDARD.encode(start.to_string()),
                "after": STANDARD.encode(end.to_string()),
            }});
            if end < all.len()
                && let Ok(mut next) = url::Url::parse(&format!("{}{}", state.base, path))
            {
                next.query_pairs_mut()
                    .append_pair("access_token", token.as_deref().unwrap_or(""))
                    .append_pair("fields", &fields)
                    .append_pair("limit", &limit.to_string())
                    .append_pair("after", &STANDARD.encode(end.to_string()));
                paging["next"] = json!(next.to_string());
            }
            respond(200, &json!({"data": page, "paging": paging}), None)
        }
        [media_id] => {
            let media = state
                .users
                .get(&user_id)
                .and_then(|u| u.media.iter().find(|m| m["id"] == *media_id))
                .cloned();
            match media {
                Some(media) => respond(200, &select(&media, &fields), None),
                None => {
                    let message = format!(
                        "Unsupported get request. Object with ID '{media_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation"
                    );
                    respond(
                        400,
                        &graph_error(&message, "GraphMethodException", 100, Some(33)),
                        None,
                    )
                }
            }
        }
        _ => {
            let body = graph_error("Unknown path components", "OAuthException", 2500, None);
            respond(400, &body, None)
        }
    }
}

fn authorize(state: &mut State, request: &RecordedRequest) -> http::Response<Bytes> {
    match state.oauth.authorize(request, &[]) {
        Ok(location) => {
            let location = if location.contains("error=access_denied") {
                location.replace(
                    "error_description=The+user+denied+the+request",
                    "error_reason=user_denied&error_description=The+user+denied+your+request.",
                )
            } else {
                // Instagram appends `#_` to the redirect.
                format!("{location}#_")
            };
            http::Response::builder()
                .status(302)
                .header("location", location)
                .body(Bytes::new())
                .unwrap_or_else(|_| http::Response::new(Bytes::new()))
        }
        Err(message) => respond(
            400,
            &json!({"error_type": "OAuthException", "code": 400, "error_message": message}),
            None,
        ),
    }
}

fn exchange_code(state: &mut State, request: &RecordedRequest) -> http::Response<Bytes> {
    let params = oauth::params(request);
    if params.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return respond(
            400,
            &json!({"error_type": "OAuthException", "code": 400, "error_message": "Invalid grant_type"}),
            None,
        );
    }
    let grant = match state.oauth.exchange(request) {
        Ok(grant) => grant,
        Err(refusal) => {
            let message = match refusal {
                Refusal::Client => "Invalid platform app",
                Refusal::Request(what) => what,
                _ => "Invalid authorization code",
            };
            return respond(
                400,
                &json!({"error_type": "OAuthException", "code": 400, "error_message": message}),
                None,
            );
        }
    };
    // The code exchange gives a short-lived token (the rules' lifetime).
    state.short_lived.insert(grant.access_token.clone());
    let body = json!({"data": [{
        "access_token": grant.access_token,
        "user_id": grant.user,
        "permissions": grant.scope,
    }]});
    respond(200, &body, None)
}

fn long_lived(
    state: &mut State,
    request: &RecordedRequest,
    refresh: bool,
) -> http::Response<Bytes> {
    let params = oauth::params(request);
    let invalid = || {
        graph_error(
            "Error validating access token: Session has expired or is invalid",
            "OAuthException",
            190,
            None,
        )
    };
    let token = params.get("access_token").cloned().unwrap_or_default();
    let expected_grant = if refresh {
        "ig_refresh_token"
    } else {
        "ig_exchange_token"
    };
    if params.get("grant_type").map(String::as_str) != Some(expected_grant) {
        let body = graph_error("Unsupported grant_type", "OAuthException", 100, None);
        return respond(400, &body, None);
    }
    let now = Utc::now().timestamp();
    let user = if refresh {
        // A token the test added directly counts as long-lived and old.
        let (user, issued_at) = match (state.tokens.get(&token), state.oauth.times_of(&token)) {
            (Some(user), _) => (user.clone(), 0),
            (None, Some((issued_at, _))) if !state.short_lived.contains(&token) => {
                match state.oauth.user_of(&token) {
                    Some(user) => (user, issued_at),
                    None => return respond(400, &invalid(), None),
                }
            }
            _ => return respond(400, &invalid(), None),
        };
        if now - issued_at < 86_400 {
            let body = graph_error(
                "(#100) The access token must be at least 24 hours old to be refreshed",
                "OAuthException",
                100,
                None,
            );
            return respond(400, &body, None);
        }
        state.oauth.refreshes += 1;
        user
    } else {
        if !state.short_lived.contains(&token) {
            return respond(400, &invalid(), None);
        }
        let Some(user) = state.oauth.user_of(&token) else {
            return respond(400, &invalid(), None);
        };
        let secret = params.get("client_secret").cloned().unwrap_or_default();
        if !state.oauth.secret_matches(&secret) {
            let body = graph_error(
                "Error validating client secret.",
                "OAuthException",
                101,
                None,
            );
            return respond(400, &body, None);
        }
        state.short_lived.remove(&token);
        user
    };
    let grant = state.oauth.mint_access_lasting(
        &user,
        "instagram_business_basic,instagram_business_content_publish",
        now,
        LONG_LIVED_SECONDS,
    );
    let body = json!({
        "access_token": grant.access_token,
        "token_type": "bearer",
        "expires_in": LONG_LIVED_SECONDS,
    });
    respond(200, &body, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn fields_are_split_at_top_level_commas() {
        assert_eq!(
            split_fields("id,caption,children{id,media_url},timestamp"),
            vec![
                ("id".into(), None),
                ("caption".into(), None),
                ("children".into(), Some("id,media_url".into())),
                ("timestamp".into(), None),
            ]
        );
    }

    #[test]
    fn graph_times_have_a_plus_0000_offset() {
        let at = DateTime::parse_from_rfc3339("2024-01-15T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(graph_time(at), "2024-01-15T10:30:00+0000");
    }
}

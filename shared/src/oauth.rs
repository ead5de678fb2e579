//! The OAuth token endpoints of Strava, Instagram, X and LinkedIn, as their
//! documentation describes them, for both halves of an account's life: the
//! `connect` component exchanges authorization codes, `token-rotation` (and
//! ingest or publish meeting an expired token) refreshes.
//!
//! The logic is pure and separate from the call: [`App::request`] builds a
//! [`TokenRequest`] (method, URL, query, form, client credentials) and
//! [`parse_reply`] reads a [`Reply`] into a [`TokenGrant`] or a
//! [`TokenFailure`], so both test natively and in wasm; [`App::send`] only
//! joins them over `shared::outbound`.
//!
//! | platform | code exchange | refresh |
//! |---|---|---|
//! | Strava | `POST {strava}/oauth/token` form `client_id, client_secret, code, grant_type=authorization_code` | same URL, `grant_type=refresh_token, refresh_token`; the refresh token rotates; answer has `expires_at` (Unix s) |
//! | Instagram | `POST {instagram api}/oauth/access_token` form `client_id, client_secret, grant_type=authorization_code, redirect_uri, code` (short-lived, 1 h), then `GET {graph}/access_token?grant_type=ig_exchange_token&client_secret&access_token` (60 days) | `GET {graph}/refresh_access_token?grant_type=ig_refresh_token&access_token` (the long-lived token itself, once 24 h old) |
//! | X | `POST {x}/2/oauth2/token` form `code, grant_type, redirect_uri, code_verifier, client_id`; a confidential client adds `Authorization: Basic base64(id:secret)` | `grant_type=refresh_token, refresh_token, client_id` (+ Basic); needs scope `offline.access`; rotates |
//! | LinkedIn | `POST {linkedin}/oauth/v2/accessToken` form `grant_type, code, redirect_uri, client_id, client_secret` | `grant_type=refresh_token, refresh_token, client_id, client_secret` (programmatic refresh tokens, approved apps only) |
//!
//! A PKCE `code_verifier` is sent whenever the caller has one (X requires
//! it; the others ignore or accept it).
//!
//! Failures are classified once, here ([`TokenFailure`]): the platform
//! refusing the grant (`invalid_grant`, a revoked app, Instagram's code 190)
//! means the user must connect again; timeouts, 5xx and 429 mean try later;
//! a refusal of *our* credentials (`invalid_client`, Strava blaming the
//! `Application`) is a configuration fault that must not disconnect anyone.
//! No message made here carries a token, code, verifier or client secret.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::outbound::{OutboundRequest, Reply, SendFailure, describe_target};

/// How long a token endpoint may take before the call counts as transient.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long Instagram's short-lived token lasts (the code exchange does not
/// say).
const INSTAGRAM_SHORT_LIVED_SECONDS: i64 = 3600;

/// The platforms whose accounts connect through OAuth 2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Strava (6-hour access tokens, rotating refresh tokens).
    Strava,
    /// Instagram API with Instagram Login (60-day long-lived tokens).
    Instagram,
    /// X (2-hour access tokens, rotating refresh tokens with `offline.access`).
    X,
    /// LinkedIn (60-day access tokens, refresh tokens for approved apps).
    LinkedIn,
}

impl Platform {
    /// Every OAuth platform.
    pub const ALL: [Platform; 4] = [
        Platform::Strava,
        Platform::Instagram,
        Platform::X,
        Platform::LinkedIn,
    ];

    /// The `platform_enum` value.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Strava => "strava",
            Platform::Instagram => "instagram",
            Platform::X => "x",
            Platform::LinkedIn => "linkedin",
        }
    }

    /// The platform's name as users read it.
    pub fn label(self) -> &'static str {
        match self {
            Platform::Strava => "Strava",
            Platform::Instagram => "Instagram",
            Platform::X => "X",
            Platform::LinkedIn => "LinkedIn",
        }
    }

    /// The platform named `name` (a `platform_enum` value), if it is an
    /// OAuth platform.
    pub fn from_name(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The token endpoint's path under the platform's OAuth base URL
    /// (Instagram: the code exchange on `api.instagram.com`).
    pub fn token_path(self) -> &'static str {
        match self {
            Platform::Strava => "/oauth/token",
            Platform::Instagram => "/oauth/access_token",
            Platform::X => "/2/oauth2/token",
            Platform::LinkedIn => "/oauth/v2/accessToken",
        }
    }

    /// Whether a refresh hands out a new refresh token that replaces the old
    /// one (the old stops working, so the new must be saved before use).
    pub fn rotates_refresh_tokens(self) -> bool {
        matches!(self, Platform::Strava | Platform::X)
    }
}

/// What the platform is asked to grant.
#[derive(Clone, Copy)]
pub enum Grant<'a> {
    /// `grant_type=authorization_code`: the code from the callback, the
    /// redirect URI it was issued for, and the PKCE verifier if any.
    AuthorizationCode {
        /// The `code` query parameter of the callback.
        code: &'a str,
        /// The exact `redirect_uri` of the authorize request.
        redirect_uri: &'a str,
        /// The PKCE `code_verifier` whose S256 challenge was sent.
        code_verifier: Option<&'a str>,
    },
    /// `grant_type=refresh_token` (Strava, X, LinkedIn).
    RefreshToken(&'a str),
    /// Instagram: a short-lived token exchanged for the 60-day one
    /// (`ig_exchange_token`).
    InstagramLongLived(&'a str),
    /// Instagram: a long-lived token refreshed for another 60 days
    /// (`ig_refresh_token`).
    InstagramRefresh(&'a str),
}

impl Grant<'_> {
    /// The secrets this grant carries, to scrub from any message.
    fn secrets(&self) -> Vec<&str> {
        match *self {
            Grant::AuthorizationCode {
                code,
                code_verifier,
                ..
            } => std::iter::once(code).chain(code_verifier).collect(),
            Grant::RefreshToken(token)
            | Grant::InstagramLongLived(token)
            | Grant::InstagramRefresh(token) => vec![token],
        }
    }

    /// The grant's name in messages and logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Grant::AuthorizationCode { .. } => "authorization code exchange",
            Grant::RefreshToken(_) => "token refresh",
            Grant::InstagramLongLived(_) => "long-lived token exchange",
            Grant::InstagramRefresh(_) => "long-lived token refresh",
        }
    }
}

/// One platform application: its credentials and where its token endpoints
/// are (base URLs are variables so tests point them at loopback fakes).
#[derive(Clone)]
pub struct App {
    /// Which platform.
    pub platform: Platform,
    /// The application's client id.
    pub client_id: String,
    /// The application's client secret; empty for a public client (X).
    pub client_secret: String,
    /// The base URL of the token endpoint, without trailing slash:
    /// `https://www.strava.com`, `https://api.instagram.com`,
    /// `https://api.x.com`, `https://www.linkedin.com`.
    pub oauth_base_url: String,
    /// Instagram only: the Graph API base (`https://graph.instagram.com`)
    /// where long-lived tokens are made and refreshed.
    pub graph_base_url: String,
}

// The client secret never reaches a log through Debug.
impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("platform", &self.platform)
            .field("client_id", &self.client_id)
            .field("oauth_base_url", &self.oauth_base_url)
            .field("graph_base_url", &self.graph_base_url)
            .finish_non_exhaustive()
    }
}

impl App {
    /// The token request for `grant`. Errors when the grant does not exist
    /// on this platform (an Instagram grant elsewhere, or a refresh-token
    /// grant on Instagram, whose long-lived token is refreshed itself).
    pub fn request(&self, grant: &Grant<'_>) -> Result<TokenRequest, TokenFailure> {
        let token_url = format!(
            "{}{}",
            self.oauth_base_url.trim_end_matches('/'),
            self.platform.token_path()
        );
        let graph = self.graph_base_url.trim_end_matches('/');
        let mut request = TokenRequest {
            method: "POST",
            url: token_url,
            query: Vec::new(),
            form: Vec::new(),
            basic: None,
        };
        let secret = (!self.client_secret.is_empty()).then_some(self.client_secret.as_str());
        match (self.platform, *grant) {
            (Platform::Instagram, Grant::RefreshToken(_))
            | (
                Platform::Strava | Platform::X | Platform::LinkedIn,
                Grant::InstagramLongLived(_) | Grant::InstagramRefresh(_),
            ) => {
                return Err(TokenFailure::Application(format!(
                    "{} has no {}",
                    self.platform.label(),
                    grant.describe()
                )));
            }
            (Platform::Instagram, Grant::InstagramLongLived(token)) => {
                request.method = "GET";
                request.url = format!("{graph}/access_token");
                request.query = pairs(&[
                    ("grant_type", "ig_exchange_token"),
                    ("client_secret", &self.client_secret),
                    ("access_token", token),
                ]);
            }
            (Platform::Instagram, Grant::InstagramRefresh(token)) => {
                request.method = "GET";
                request.url = format!("{graph}/refresh_access_token");
                request.query =
                    pairs(&[("grant_type", "ig_refresh_token"), ("access_token", token)]);
            }
            (
                _,
                Grant::AuthorizationCode {
                    code,
                    redirect_uri,
                    code_verifier,
                },
            ) => {
                request.form = pairs(&[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", redirect_uri),
                ]);
                if let Some(verifier) = code_verifier {
                    request.form.push(("code_verifier".into(), verifier.into()));
                }
                self.add_client(&mut request, secret);
            }
            (_, Grant::RefreshToken(token)) => {
                request.form = pairs(&[("grant_type", "refresh_token"), ("refresh_token", token)]);
                self.add_client(&mut request, secret);
            }
        }
        Ok(request)
    }

    /// Client authentication as each platform documents it: X takes HTTP
    /// Basic from a confidential client and `client_id` in the form from
    /// anyone; the others take both as form fields.
    fn add_client(&self, request: &mut TokenRequest, secret: Option<&str>) {
        request
            .form
            .push(("client_id".into(), self.client_id.clone()));
        match (self.platform, secret) {
            (Platform::X, Some(secret)) => {
                request.basic = Some((self.client_id.clone(), secret.to_string()));
            }
            (_, Some(secret)) => request
                .form
                .push(("client_secret".into(), secret.to_string())),
            (_, None) => {}
        }
    }

    /// Sends the token request for `grant` and reads the answer; `now` is
    /// the clock that turns `expires_in` into `expires_at`.
    pub fn send(&self, grant: &Grant<'_>, now: DateTime<Utc>) -> Exchange {
        let started = Instant::now();
        let request = match self.request(grant) {
            Ok(request) => request,
            Err(failure) => {
                return Exchange {
                    outcome: Err(failure),
                    status: None,
                    duration_ms: 0,
                    method: "POST",
                    path: self.platform.token_path().to_string(),
                };
            }
        };
        let method = request.method;
        let path = request.path();
        let reply = request.to_outbound().timeout(TOKEN_TIMEOUT).send();
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, outcome) = match reply {
            Ok(reply) => (
                Some(reply.status),
                parse_reply(self.platform, grant, &reply, now),
            ),
            Err(failure) => (None, Err(TokenFailure::from_send(&failure))),
        };
        Exchange {
            outcome,
            status,
            duration_ms,
            method,
            path,
        }
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What one call to a token endpoint gave, with what a provider log needs
/// (status, duration, path without query) and nothing secret.
#[derive(Debug)]
pub struct Exchange {
    /// The grant, or why there is none.
    pub outcome: Result<TokenGrant, TokenFailure>,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Wall time of the call.
    pub duration_ms: u64,
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The endpoint's path (no query: Instagram's carries the token).
    pub path: String,
}

/// A token request, built but not sent. Its `Debug` names parameters but
/// never shows their values.
#[derive(Clone)]
pub struct TokenRequest {
    method: &'static str,
    url: String,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    basic: Option<(String, String)>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |list: &[(String, String)]| {
            list.iter()
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        f.debug_struct("TokenRequest")
            .field("method", &self.method)
            .field("target", &describe_target(&self.url))
            .field("query", &names(&self.query))
            .field("form", &names(&self.form))
            .field("basic_auth", &self.basic.is_some())
            .finish()
    }
}

impl TokenRequest {
    /// `GET` or `POST`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The URL without its query.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL's path (for logs).
    pub fn path(&self) -> String {
        url::Url::parse(&self.url)
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    }

    /// The value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        find(&self.query, name)
    }

    /// The value of form field `name`.
    pub fn form_field(&self, name: &str) -> Option<&str> {
        find(&self.form, name)
    }

    /// The form fields' names in order.
    pub fn form_names(&self) -> Vec<&str> {
        self.form.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The `Authorization: Basic` value, if the client authenticates so.
    pub fn basic_authorization(&self) -> Option<String> {
        self.basic
            .as_ref()
            .map(|(id, secret)| format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))))
    }

    /// The request for `shared::outbound`.
    pub fn to_outbound(&self) -> OutboundRequest {
        let mut request =
            OutboundRequest::new(self.method, &self.url).header("accept", "application/json");
        if !self.query.is_empty() {
            let query: Vec<(&str, &str)> = self
                .query
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            request = request.query(&query);
        }
        if let Some(value) = self.basic_authorization() {
            request = request.header("authorization", &value);
        }
        if self.method == "POST" {
            let form: Vec<(&str, &str)> = self
                .form
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            request = request.form(&form);
        }
        request
    }
}

fn find<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Tokens granted by the platform. `Debug` hides the tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The access token.
    pub access_token: String,
    /// The refresh token, when the platform gave one (Strava and X rotate
    /// it: the old one no longer works).
    pub refresh_token: Option<String>,
    /// When the access token expires (Strava's `expires_at`, or now plus
    /// the others' `expires_in`); `None` when the platform did not say.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the refresh token expires (LinkedIn's `refresh_token_expires_in`).
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// The granted scopes, as the platform lists them.
    pub scope: Option<String>,
    /// The platform's user id when the token answer names it (Strava's
    /// `athlete.id`, Instagram's `user_id`); identity is still to be asked
    /// from the platform's identity endpoint.
    pub platform_user_id: Option<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<set>"),
            )
            .field("expires_at", &self.expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("scope", &self.scope)
            .field("platform_user_id", &self.platform_user_id)
            .finish_non_exhaustive()
    }
}

/// Why no tokens were granted. Messages never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFailure {
    /// The platform refused the grant itself (`invalid_grant`, a revoked
    /// app, an expired or already-used token or code): retrying cannot
    /// help; the user must connect the account again.
    #[error("{0}")]
    Refused(String),
    /// No usable answer now (timeout, broken connection, 5xx, 429): keep
    /// the tokens and try again later, after `retry_after` seconds if the
    /// platform said.
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// The platform's `Retry-After`, in seconds.
        retry_after: Option<u64>,
    },
    /// The platform refused our application (client id or secret, a denied
    /// outbound host, a malformed request): a configuration fault, not the
    /// account's, so the account keeps its tokens.
    #[error("{0}")]
    Application(String),
}

impl TokenFailure {
    /// Whether trying again later can succeed without the user.
    pub fn is_transient(&self) -> bool {
        matches!(self, TokenFailure::Transient { .. })
    }

    /// Whether the user must connect the account again.
    pub fn is_refused(&self) -> bool {
        matches!(self, TokenFailure::Refused(_))
    }

    /// A short code for reports: `refused`, `transient`, `application`.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenFailure::Refused(_) => "refused",
            TokenFailure::Transient { .. } => "transient",
            TokenFailure::Application(_) => "application",
        }
    }

    /// A failure with no answer at all.
    pub fn from_send(failure: &SendFailure) -> TokenFailure {
        if failure.is_transient() {
            TokenFailure::Transient {
                message: failure.to_string(),
                retry_after: None,
            }
        } else {
            TokenFailure::Application(failure.to_string())
        }
    }
}

/// Reads the answer of a token endpoint: the grant on 2xx, otherwise the
/// classified failure. `now` turns `expires_in` into `expires_at`.
pub fn parse_reply(
    platform: Platform,
    grant: &Grant<'_>,
    reply: &Reply,
    now: DateTime<Utc>,
) -> Result<TokenGrant, TokenFailure> {
    let scrub = |text: &str| scrub(text, &grant.secrets());
    let what = format!("{} {}", platform.label(), grant.describe());
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    if reply.is_success() {
        let Some(body) = body else {
            return Err(TokenFailure::Transient {
                message: format!("{what}: answer {} is not JSON", reply.status),
                retry_after: None,
            });
        };
        return grant_from(platform, grant, &body, now).ok_or_else(|| TokenFailure::Transient {
            message: format!("{what}: answer {} has no access_token", reply.status),
            retry_after: None,
        });
    }
    let reason = body
        .as_ref()
        .map(|b| scrub(&error_text(b)))
        .unwrap_or_default();
    let described = if reason.is_empty() {
        format!("{what} failed with {}", reply.status)
    } else {
        format!("{what} failed with {}: {reason}", reply.status)
    };
    if reply.status == 429 || reply.status == 408 || reply.status >= 500 {
        return Err(TokenFailure::Transient {
            message: described,
            retry_after: reply.retry_after_seconds(),
        });
    }
    let class = body
        .as_ref()
        .map_or(Class::Unknown, |b| classify(platform, b));
    Err(match class {
        Class::Refused => TokenFailure::Refused(described),
        Class::Transient => TokenFailure::Transient {
            message: described,
            retry_after: reply.retry_after_seconds(),
        },
        Class::Application | Class::Unknown => TokenFailure::Application(described),
    })
}

enum Class {
    Refused,
    Transient,
    Application,
    Unknown,
}

/// Reads an error body in each platform's shape.
fn classify(platform: Platform, body: &Value) -> Class {
    // RFC 6749 §5.2 (X, LinkedIn): {"error", "error_description"}.
    if let Some(code) = body.get("error").and_then(Value::as_str) {
        let description = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        return match code {
            "invalid_grant" => Class::Refused,
            "temporarily_unavailable" | "server_error" => Class::Transient,
            // X answers an unknown or used token or code with
            // invalid_request "Value passed for the token (authorization
            // code) was invalid."; LinkedIn "... refresh token is invalid,
            // expired or revoked" or "... authorization code expired".
            "invalid_request"
                if (description.contains("token") || description.contains("code"))
                    && !description.contains("client")
                    && ["invalid", "expired", "revoked", "does not match"]
                        .iter()
                        .any(|w| description.contains(w)) =>
            {
                Class::Refused
            }
            _ => Class::Application,
        };
    }
    // Graph API (Instagram): {"error": {"message", "type", "code", ...}}.
    if let Some(error) = body.get("error").filter(|e| e.is_object()) {
        return match error.get("code").and_then(Value::as_i64) {
            Some(190) => Class::Refused,
            Some(1 | 2 | 4 | 17 | 32 | 341 | 613) => Class::Transient,
            _ => Class::Application,
        };
    }
    // Instagram's api.instagram.com: {"error_type", "code", "error_message"}.
    if let Some(kind) = body.get("error_type").and_then(Value::as_str) {
        let message = body
            .get("error_message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        return if kind == "OAuthException"
            && (message.contains("code") || message.contains("token"))
            && !message.contains("client")
        {
            Class::Refused
        } else {
            Class::Application
        };
    }
    // Strava: {"message", "errors": [{"resource", "field", "code"}]}.
    if platform == Platform::Strava
        && let Some(errors) = body.get("errors").and_then(Value::as_array)
    {
        let blames = |what: &str| {
            errors.iter().any(|e| {
                e.get("resource").and_then(Value::as_str) == Some(what)
                    || e.get("field").and_then(Value::as_str) == Some(what)
            })
        };
        if blames("Application") || blames("client_id") || blames("client_secret") {
            return Class::Application;
        }
        if blames("RefreshToken")
            || blames("refresh_token")
            || blames("AuthorizationCode")
            || blames("code")
            || blames("Athlete")
        {
            return Class::Refused;
        }
        return Class::Application;
    }
    Class::Unknown
}

/// The platform's own words for an error, whatever its shape.
fn error_text(body: &Value) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let parts: Vec<String> = match body.get("error") {
        Some(Value::String(code)) => std::iter::once(code.clone())
            .chain(text(body.get("error_description")))
            .collect(),
        Some(Value::Object(error)) => text(error.get("message")).into_iter().collect(),
        _ => text(body.get("error_message"))
            .or_else(|| text(body.get("message")))
            .into_iter()
            // Strava's details: "resource field code" per error.
            .chain(
                body.get("errors")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .take(3)
                    .map(|e| {
                        ["resource", "field", "code"]
                            .map(|k| e.get(k).and_then(Value::as_str).unwrap_or("?"))
                            .join(" ")
                    }),
            )
            .collect(),
    };
    let mut joined = parts.join(": ");
    if joined.len() > 300 {
        let mut end = 300;
        while !joined.is_char_boundary(end) {
            end -= 1;
        }
        joined.truncate(end);
    }
    joined
}

/// Removes every secret from `text` (a platform could echo one back).
fn scrub(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .fold(text.to_string(), |acc, secret| {
            acc.replace(secret, "<redacted>")
        })
}

/// The grant in the answer body, in each platform's shape.
fn grant_from(
    platform: Platform,
    grant: &Grant<'_>,
    body: &Value,
    now: DateTime<Utc>,
) -> Option<TokenGrant> {
    // Instagram Login's code exchange answers {"data": [{...}]}; older
    // answers are the object itself.
    let body = body
        .get("data")
        .and_then(Value::as_array)
        .and_then(|list| list.first())
        .unwrap_or(body);
    let access_token = body.get("access_token")?.as_str()?.to_string();
    if access_token.is_empty() {
        return None;
    }
    let seconds = |name: &str| body.get(name).and_then(as_i64);
    let after = |s: i64| now.checked_add_signed(chrono::Duration::seconds(s));
    let expires_at = match seconds("expires_at") {
        Some(at) => DateTime::from_timestamp(at, 0),
        None => match seconds("expires_in") {
            Some(s) => after(s),
            None if platform == Platform::Instagram
                && matches!(grant, Grant::AuthorizationCode { .. }) =>
            {
                after(INSTAGRAM_SHORT_LIVED_SECONDS)
            }
            None => None,
        },
    };
    let scope = match body.get("scope").or_else(|| body.get("permissions")) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    };
    let id = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let platform_user_id = body
        .get("athlete")
        .and_then(|a| a.get("id"))
        .and_then(id)
        .or_else(|| body.get("user_id").and_then(id));
    Some(TokenGrant {
        access_token,
        refresh_token: body
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        expires_at,
        refresh_expires_at: seconds("refresh_token_expires_in").and_then(after),
        scope,
        platform_user_id,
    })
}

/// A number that platforms send as a JSON number or a numeric string.
fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(platform: Platform, secret: &str) -> App {
        App {
            platform,
            client_id: "client-1".into(),
            client_secret: secret.into(),
            oauth_base_url: "https://oauth.example/".into(),
            graph_base_url: "https://graph.example".into(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply::new(status, &[], body, "https://oauth.example/token")
    }

    const CODE: Grant<'static> = Grant::AuthorizationCode {
        code: "the-code-123",
        redirect_uri: "https://app.example/connect/x/callback",
        code_verifier: Some("verifier-abcdef"),
    };

    #[test]
    fn x_code_exchange_uses_basic_for_confidential_clients_and_sends_the_verifier() {
        let request = app(Platform::X, "s3cret").request(&CODE).unwrap();
        assert_eq!(request.method(), "POST");
        assert_eq!(request.url(), "https://oauth.example/2/oauth2/token");
        assert_eq!(request.form_field("grant_type"), Some("authorization_code"));
        assert_eq!(request.form_field("code"), Some("the-code-123"));
        assert_eq!(request.form_field("code_verifier"), Some("verifier-abcdef"));
        assert_eq!(
            request.form_field("redirect_uri"),
            Some("https://app.example/connect/x/callback")
        );
        assert_eq!(request.form_field("client_id"), Some("client-1"));
        assert_eq!(request.form_field("client_secret"), None);
        assert_eq!(
            request.basic_authorization().as_deref(),
            Some("Basic Y2xpZW50LTE6czNjcmV0")
        );
        // A public client has no Basic header.
        let public = app(Platform::X, "").request(&CODE).unwrap();
        assert_eq!(public.basic_authorization(), None);
        // Debug never shows a value.
        let debug = format!("{request:?}");
        assert!(
            !debug.contains("the-code-123") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn strava_and_linkedin_send_client_credentials_as_form_fields() {
        for (platform, path) in [
            (Platform::Strava, "/oauth/token"),
            (Platform::LinkedIn, "/oauth/v2/accessToken"),
        ] {
            let request = app(platform, "s3cret")
                .request(&Grant::RefreshToken("refresh-xyz"))
                .unwrap();
            assert_eq!(request.url(), format!("https://oauth.example{path}"));
            assert_eq!(request.form_field("grant_type"), Some("refresh_token"));
            assert_eq!(request.form_field("refresh_token"), Some("refresh-xyz"));
            assert_eq!(request.form_field("client_id"), Some("client-1"));
            assert_eq!(request.form_field("client_secret"), Some("s3cret"));
            assert_eq!(request.basic_authorization(), None);
        }
    }

    #[test]
    fn instagram_exchanges_and_refreshes_on_the_graph_host_by_get() {
        let instagram = app(Platform::Instagram, "app-secret");
        let exchange = instagram
            .request(&Grant::InstagramLongLived("short-token"))
            .unwrap();
        assert_eq!(exchange.method(), "GET");
        assert_eq!(exchange.url(), "https://graph.example/access_token");
        assert_eq!(
            exchange.query_param("grant_type"),
            Some("ig_exchange_token")
        );
        assert_eq!(exchange.query_param("client_secret"), Some("app-secret"));
        assert_eq!(exchange.query_param("access_token"), Some("short-token"));
        assert_eq!(exchange.path(), "/access_token");
        let refresh = instagram
            .request(&Grant::InstagramRefresh("long-token"))
            .unwrap();
        assert_eq!(refresh.url(), "https://graph.example/refresh_access_token");
        assert_eq!(refresh.query_param("grant_type"), Some("ig_refresh_token"));
        assert_eq!(refresh.query_param("access_token"), Some("long-token"));
        assert_eq!(refresh.query_param("client_secret"), None);
        // The code exchange is a form POST on api.instagram.com.
        let code = instagram.request(&CODE).unwrap();
        assert_eq!(code.url(), "https://oauth.example/oauth/access_token");
        assert_eq!(code.form_field("client_secret"), Some("app-secret"));
        // Grants of other platforms are refused before any call.
        assert!(instagram.request(&Grant::RefreshToken("r")).is_err());
        assert!(
            app(Platform::X, "")
                .request(&Grant::InstagramRefresh("t"))
                .is_err()
        );
    }

    #[test]
    fn answers_become_grants_with_absolute_expiry() {
        let strava = parse_reply(
            Platform::Strava,
            &Grant::RefreshToken("old"),
            &reply(
                200,
                r#"{"token_type":"Bearer","access_token":"a1","expires_at":1800021600,"expires_in":21600,"refresh_token":"r2","athlete":{"id":134815}}"#,
            ),
            now(),
        )
        .unwrap();
        assert_eq!(strava.access_token, "a1");
        assert_eq!(strava.refresh_token.as_deref(), Some("r2"));
        assert_eq!(strava.expires_at.unwrap().timestamp(), 1_800_021_600);
        assert_eq!(strava.platform_user_id.as_deref(), Some("134815"));

        let x = parse_reply(
            Platform::X,
            &Grant::RefreshToken("old"),
            &reply(
                200,
                r#"{"token_type":"bearer","expires_in":7200,"access_token":"a","scope":"tweet.write offline.access","refresh_token":"r"}"#,
            ),
            now(),
        )
        .unwrap();
        assert_eq!(x.expires_at.unwrap().timestamp(), 1_800_007_200);
        assert_eq!(x.scope.as_deref(), Some("tweet.write offline.access"));

        let linkedin = parse_reply(
            Platform::LinkedIn,
            &Grant::RefreshToken("old"),
            &reply(
                200,
                r#"{"access_token":"a","expires_in":5184000,"refresh_token":"r","refresh_token_expires_in":525600,"scope":"w_member_social"}"#,
            ),
            now(),
        )
        .unwrap();
        assert_eq!(
            linkedin.refresh_expires_at.unwrap().timestamp(),
            1_800_525_600
        );

        let instagram_code = parse_reply(
            Platform::Instagram,
            &CODE,
            &reply(
                200,
                r#"{"data":[{"access_token":"short","user_id":"17841400","permissions":"instagram_business_basic,instagram_business_content_publish"}]}"#,
            ),
            now(),
        )
        .unwrap();
        assert_eq!(instagram_code.access_token, "short");
        assert_eq!(instagram_code.platform_user_id.as_deref(), Some("17841400"));
        assert_eq!(
            instagram_code.expires_at.unwrap().timestamp(),
            1_800_003_600
        );
        let debug = format!("{instagram_code:?}");
        assert!(!debug.contains("short"), "{debug}");
    }

    #[test]
    fn refusals_outages_and_configuration_faults_are_never_confused() {
        let refresh = Grant::RefreshToken("refresh-secret-1");
        let cases: &[(Platform, u16, &str, &str)] = &[
            (
                Platform::X,
                400,
                r#"{"error":"invalid_grant","error_description":"revoked"}"#,
                "refused",
            ),
            (
                Platform::X,
                400,
                r#"{"error":"invalid_request","error_description":"Value passed for the token was invalid."}"#,
                "refused",
            ),
            (
                Platform::X,
                401,
                r#"{"error":"invalid_client","error_description":"Missing valid authorization header"}"#,
                "application",
            ),
            (
                Platform::X,
                400,
                r#"{"error":"invalid_request","error_description":"Value passed for the authorization code was invalid."}"#,
                "refused",
            ),
            (
                Platform::X,
                401,
                r#"{"error":"unauthorized_client","error_description":"Missing valid authorization header"}"#,
                "application",
            ),
            (
                Platform::Instagram,
                400,
                r#"{"error_type":"OAuthException","code":400,"error_message":"Invalid authorization code"}"#,
                "refused",
            ),
            (
                Platform::Instagram,
                400,
                r#"{"error_type":"OAuthException","code":400,"error_message":"Invalid platform app"}"#,
                "application",
            ),
            (
                Platform::Instagram,
                400,
                r#"{"error":{"message":"Error validating client secret","type":"OAuthException","code":101}}"#,
                "application",
            ),
            (
                Platform::LinkedIn,
                400,
                r#"{"error":"invalid_request","error_description":"The provided authorization grant or refresh token is invalid, expired or revoked"}"#,
                "refused",
            ),
            (
                Platform::LinkedIn,
                400,
                r#"{"error":"invalid_request","error_description":"A required parameter \"client_id\" is missing"}"#,
                "application",
            ),
            (
                Platform::Strava,
                400,
                r#"{"message":"Bad Request","errors":[{"resource":"RefreshToken","field":"refresh_token","code":"invalid"}]}"#,
                "refused",
            ),
            (
                Platform::Strava,
                401,
                r#"{"message":"Authorization Error","errors":[{"resource":"Application","field":"client_id","code":"invalid"}]}"#,
                "application",
            ),
            (
                Platform::Instagram,
                400,
                r#"{"error":{"message":"Error validating access token","type":"OAuthException","code":190}}"#,
                "refused",
            ),
            (
                Platform::Instagram,
                400,
                r#"{"error":{"message":"Application request limit reached","type":"OAuthException","code":4,"is_transient":true}}"#,
                "transient",
            ),
            (
                Platform::X,
                503,
                r#"{"title":"Service Unavailable"}"#,
                "transient",
            ),
            (Platform::X, 500, "oops", "transient"),
            (
                Platform::Strava,
                429,
                r#"{"message":"Rate Limit Exceeded"}"#,
                "transient",
            ),
            (Platform::X, 400, r#"{"unexpected":"shape"}"#, "application"),
            (Platform::X, 200, r#"{"token_type":"bearer"}"#, "transient"),
            (Platform::X, 200, "not json", "transient"),
        ];
        for (platform, status, body, kind) in cases {
            let failure =
                parse_reply(*platform, &refresh, &reply(*status, body), now()).unwrap_err();
            assert_eq!(
                failure.kind(),
                *kind,
                "{platform:?} {status} {body}: {failure}"
            );
        }
        let limited = Reply::new(429, &[("Retry-After", "120")], "{}", "t");
        match parse_reply(Platform::X, &refresh, &limited, now()) {
            Err(TokenFailure::Transient { retry_after, .. }) => assert_eq!(retry_after, Some(120)),
            other => panic!("{other:?}"),
        }
        assert!(TokenFailure::from_send(&SendFailure::Timeout("t".into())).is_transient());
        assert!(!TokenFailure::from_send(&SendFailure::Denied("t".into())).is_refused());
    }

    #[test]
    fn messages_never_echo_the_secret_sent() {
        let grant = Grant::RefreshToken("refresh-secret-1");
        let body =
            r#"{"error":"invalid_grant","error_description":"token refresh-secret-1 was revoked"}"#;
        let failure = parse_reply(Platform::X, &grant, &reply(400, body), now()).unwrap_err();
        let text = failure.to_string();
        assert!(failure.is_refused());
        assert!(
            !text.contains("refresh-secret-1") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn platforms_round_trip_their_enum_names() {
        for platform in Platform::ALL {
            assert_eq!(Platform::from_name(platform.name()), Some(platform));
        }
        assert_eq!(Platform::from_name("bluesky"), None);
        assert!(
            Platform::X.rotates_refresh_tokens() && !Platform::LinkedIn.rotates_refresh_tokens()
        );
    }
}

//! The OAuth 2.0 authorization server the four platform fakes share (Strava,
//! Instagram, X, LinkedIn): the part of RFC 6749 and RFC 7636 (PKCE) that is
//! the same everywhere. Each fake keeps its own wire format (paths, error
//! bodies, answer fields) and calls this for the bookkeeping:
//!
//! - authorize: a consenting user (set by the test with `consent_as`) gets
//!   a single-use code bound to the client id, the `redirect_uri`, the
//!   scope and the PKCE `code_challenge` (S256 only; `plain` is refused),
//!   valid for ten minutes; `deny_next` makes the next authorizations answer
//!   `error=access_denied` instead, as a user pressing "Cancel" does.
//! - code exchange: the code must exist, be unused and unexpired, and come
//!   with the same client id and `redirect_uri`; when a challenge was given
//!   the `code_verifier` must hash to it (BASE64URL(SHA256(verifier)),
//!   no padding). A code is spent by its first exchange, right or wrong (as
//!   RFC 6749 §4.1.2 asks of a code used twice).
//! - refresh: an unknown, revoked or already rotated refresh token is
//!   refused; with rotation on, the old refresh token stops working the
//!   moment the new one is issued.
//! - client authentication: once the fake was told the client
//!   (`expect_client`), the client id must match and the secret, sent as
//!   HTTP Basic or as `client_secret` in the form, must match too.
//! - faults: `fail_next` answers the next matching OAuth requests (token,
//!   refresh, revoke, identity) with a status (5xx, 429 with
//!   `Retry-After`) and changes nothing.
//!
//! Nothing here sleeps: every answer is computed at once under one lock, so
//! the fakes are "instant" for benchmarks (see each fake's `instant`).

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::fake::RecordedRequest;

/// How long an authorization code lives.
const CODE_LIFETIME_SECONDS: i64 = 600;

/// A platform's token rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Seconds an access token lives.
    pub access_lifetime: i64,
    /// Whether refresh tokens are issued at all.
    pub refresh_tokens: bool,
    /// Whether a refresh answers a new refresh token and kills the old one.
    pub rotate_refresh: bool,
    /// Prefix of issued tokens (for readable test failures).
    pub prefix: &'static str,
    /// A refresh token is issued only when the granted scope has this
    /// (X: `offline.access`); None: always.
    pub refresh_scope: Option<&'static str>,
}

/// Tokens the fake issued for a user (by the token endpoint or directly by
/// a test with the fake's `grant`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The platform user the tokens belong to.
    pub user: String,
    /// Bearer access token.
    pub access_token: String,
    /// Refresh token, when the platform issues one.
    pub refresh_token: Option<String>,
    /// Unix seconds when the access token expires.
    pub expires_at: i64,
    /// Seconds the access token lives from now.
    pub expires_in: i64,
    /// Granted scope, as the authorize request asked it.
    pub scope: String,
}

/// Why the token endpoint refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown client or wrong secret (`invalid_client`, 401).
    Client,
    /// Unknown, used or expired code; redirect_uri or client mismatch.
    Code(&'static str),
    /// The `code_verifier` does not match the `code_challenge`.
    Verifier,
    /// Unknown, revoked or rotated refresh token.
    RefreshToken,
    /// A required parameter is missing or malformed.
    Request(&'static str),
}

/// An injected answer for OAuth requests ([`OAuth::fail_next`]).
#[derive(Debug, Clone)]
pub struct OAuthFault {
    /// Only requests whose path contains this (None: every OAuth request).
    pub path_contains: Option<String>,
    /// HTTP status (5xx, 429, ...).
    pub status: u16,
    /// `Retry-After` seconds, if any.
    pub retry_after: Option<u64>,
}

#[derive(Debug, Clone)]
struct Pending {
    user: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    challenge: Option<String>,
    expires_at: i64,
}

#[derive(Debug, Clone)]
struct Access {
    user: String,
    expires_at: i64,
    issued_at: i64,
}

#[derive(Debug, Clone)]
struct Refresh {
    user: String,
    scope: String,
}

/// The shared authorization-server state (inside each fake's lock).
#[derive(Debug)]
pub struct OAuth {
    rules: Rules,
    client: Option<(String, String)>,
    consenting: Option<String>,
    deny: usize,
    codes: HashMap<String, Pending>,
    access: HashMap<String, Access>,
    refresh: HashMap<String, Refresh>,
    faults: VecDeque<(usize, OAuthFault)>,
    /// Successful code exchanges.
    pub exchanges: usize,
    /// Successful refreshes.
    pub refreshes: usize,
    /// Tokens revoked through the revocation endpoint.
    pub revocations: Vec<String>,
}

/// A random token.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The S256 code challenge of a verifier (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The query and (form) body parameters of a request, body winning.
pub fn params(request: &RecordedRequest) -> HashMap<String, String> {
    let mut params: HashMap<String, String> =
        url::form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    params.extend(url::form_urlencoded::parse(&request.body).into_owned());
    params
}

/// `(client_id, client_secret)` from `Authorization: Basic` (RFC 6749
/// §2.3.1, form-urlencoded parts), if present.
pub fn basic_client(request: &RecordedRequest) -> Option<(String, String)> {
    let encoded = request
        .headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// The bearer token of a request (`Authorization: Bearer`).
pub fn bearer(request: &RecordedRequest) -> Option<String> {
    request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

impl OAuth {
    /// An authorization server with these rules.
    pub fn new(rules: Rules) -> Self {
        OAuth {
            rules,
            client: None,
            consenting: None,
            deny: 0,
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            faults: VecDeque::new(),
            exchanges: 0,
            refreshes: 0,
            revocations: Vec::new(),
        }
    }

    /// Requires these client credentials.
    pub fn expect_client(&mut self, id: &str, secret: &str) {
        self.client = Some((id.into(), secret.into()));
    }

    /// Authorizations are approved by this user from now on.
    pub fn consent_as(&mut self, user: &str) {
        self.consenting = Some(user.into());
    }

    /// The next `times` authorizations are denied (`access_denied`).
    pub fn deny_next(&mut self, times: usize) {
        self.deny += times;
    }

    /// Authorizations still to be denied.
    pub fn denials_pending(&self) -> usize {
        self.deny
    }

    /// Whether refresh tokens are issued from now on.
    pub fn set_refresh_tokens(&mut self, on: bool) {
        self.rules.refresh_tokens = on;
    }

    /// Answers the next `times` OAuth requests whose path contains
    /// `path_contains` (all when None) with `status`.
    pub fn fail_next(&mut self, times: usize, fault: OAuthFault) {
        self.faults.push_back((times, fault));
    }

    /// Takes the fault for a request to `path`, if one is queued.
    pub fn take_fault(&mut self, path: &str) -> Option<OAuthFault> {
        let index = self.faults.iter().position(|(_, f)| {
            f.path_contains
                .as_ref()
                .is_none_or(|needle| path.contains(needle.as_str()))
        })?;
        let (times, fault) = self.faults[index].clone();
        if times <= 1 {
            self.faults.remove(index);
        } else {
            self.faults[index].0 = times - 1;
        }
        Some(fault)
    }

    /// Handles an authorize request: `Ok(location)` is where the browser is
    /// sent (the `redirect_uri` with `code` and `state`, or with
    /// `error=access_denied`, `error_description` and `state`); `Err` is a
    /// request the server will not redirect for (no or bad client id or
    /// redirect_uri: shown to the user as an error page, per RFC 6749
    /// §4.1.2.1), with its message. `extra` adds parameters to a granted
    /// redirect (Strava's `scope`).
    pub fn authorize(
        &mut self,
        request: &RecordedRequest,
        extra: &[(&str, String)],
    ) -> Result<String, String> {
        let params = params(request);
        let get = |k: &str| params.get(k).cloned().unwrap_or_default();
        let client_id = get("client_id");
        if client_id.is_empty() {
            return Err("client_id is missing".into());
        }
        if let Some((id, _)) = &self.client
            && *id != client_id
        {
            return Err("invalid client_id".into());
        }
        let redirect_uri = get("redirect_uri");
        let Ok(mut location) = url::Url::parse(&redirect_uri) else {
            return Err("invalid redirect_uri".into());
        };
        let state = params.get("state").cloned();
        let mut error = |code: &str, description: &str| {
            let mut pairs = location.query_pairs_mut();
            pairs.append_pair("error", code);
            pairs.append_pair("error_description", description);
            if let Some(state) = &state {
                pairs.append_pair("state", state);
            }
            drop(pairs);
            location.to_string()
        };
        if get("response_type") != "code" {
            return Ok(error(
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        let challenge = params.get("code_challenge").cloned();
        if challenge.is_some() && get("code_challenge_method") != "S256" {
            return Ok(error(
                "invalid_request",
                "code_challenge_method must be S256",
            ));
        }
        if self.deny > 0 {
            self.deny -= 1;
            return Ok(error("access_denied", "The user denied the request"));
        }
        let Some(user) = self.consenting.clone() else {
            return Err("nobody is logged in to approve this request".into());
        };
        let code = random_token("code-");
        self.codes.insert(
            code.clone(),
            Pending {
                user,
                client_id,
                redirect_uri,
                scope: get("scope"),
                challenge,
                expires_at: Utc::now().timestamp() + CODE_LIFETIME_SECONDS,
            },
        );
        let mut pairs = location.query_pairs_mut();
        if let Some(state) = &state {
            pairs.append_pair("state", state);
        }
        pairs.append_pair("code", &code);
        for (name, value) in extra {
            pairs.append_pair(name, value);
        }
        drop(pairs);
        Ok(location.to_string())
    }

    fn check_client(&self, request: &RecordedRequest, params: &HashMap<String, String>) -> bool {
        let Some((id, secret)) = &self.client else {
            return true;
        };
        let (given_id, given_secret) = match basic_client(request) {
            Some((id, secret)) => (Some(id), Some(secret)),
            None => (
                params.get("client_id").cloned(),
                params.get("client_secret").cloned(),
            ),
        };
        given_id.as_ref() == Some(id) && given_secret.as_ref() == Some(secret)
    }

    /// Whether `secret` is the expected client secret (true when none is
    /// expected).
    pub fn secret_matches(&self, secret: &str) -> bool {
        self.client
            .as_ref()
            .is_none_or(|(_, expected)| expected == secret)
    }

    /// The `authorization_code` grant.
    pub fn exchange(&mut self, request: &RecordedRequest) -> Result<Grant, Refusal> {
        let params = params(request);
        if !self.check_client(request, &params) {
            return Err(Refusal::Client);
        }
        let Some(code) = params.get("code") else {
            return Err(Refusal::Request("code is missing"));
        };
        // Spent by this attempt, whatever its outcome.
        let Some(pending) = self.codes.remove(code) else {
            return Err(Refusal::Code("unknown or used authorization code"));
        };
        if pending.expires_at <= Utc::now().timestamp() {
            return Err(Refusal::Code("authorization code expired"));
        }
        let client_id = basic_client(request)
            .map(|(id, _)| id)
            .or_else(|| params.get("client_id").cloned());
        if client_id.as_deref() != Some(pending.client_id.as_str()) {
            return Err(Refusal::Code("code was issued to another client"));
        }
        if params.get("redirect_uri") != Some(&pending.redirect_uri) {
            return Err(Refusal::Code("redirect_uri does not match"));
        }
        if let Some(challenge) = &pending.challenge {
            match params.get("code_verifier") {
                Some(verifier) if s256(verifier) == *challenge => {}
                _ => return Err(Refusal::Verifier),
            }
        }
        self.exchanges += 1;
        Ok(self.mint(&pending.user, &pending.scope, Utc::now().timestamp()))
    }

    /// The `refresh_token` grant.
    pub fn refresh(&mut self, request: &RecordedRequest) -> Result<Grant, Refusal> {
        let params = params(request);
        if !self.check_client(request, &params) {
            return Err(Refusal::Client);
        }
        let Some(presented) = params.get("refresh_token") else {
            return Err(Refusal::Request("refresh_token is missing"));
        };
        let Some(known) = self.refresh.get(presented).cloned() else {
            return Err(Refusal::RefreshToken);
        };
        let now = Utc::now().timestamp();
        let mut grant = if self.rules.rotate_refresh {
            self.refresh.remove(presented);
            self.mint(&known.user, &known.scope, now)
        } else {
            let mut grant = self.mint_access(&known.user, &known.scope, now);
            grant.refresh_token = Some(presented.clone());
            grant
        };
        grant.scope = known.scope;
        self.refreshes += 1;
        Ok(grant)
    }

    /// Issues new tokens for `user` (access, and refresh when the platform
    /// has them), as a completed authorization would.
    pub fn mint(&mut self, user: &str, scope: &str, issued_at: i64) -> Grant {
        let mut grant = self.mint_access(user, scope, issued_at);
        let wanted = self
            .rules
            .refresh_scope
            .is_none_or(|needed| scope.split([' ', ',']).any(|s| s == needed));
        if self.rules.refresh_tokens && wanted {
            let refresh = random_token(&format!("{}r-", self.rules.prefix));
            self.refresh.insert(
                refresh.clone(),
                Refresh {
                    user: user.into(),
                    scope: scope.into(),
                },
            );
            grant.refresh_token = Some(refresh);
        }
        grant
    }

    /// Issues a new access token only.
    pub fn mint_access(&mut self, user: &str, scope: &str, issued_at: i64) -> Grant {
        let lifetime = self.rules.access_lifetime;
        self.mint_access_lasting(user, scope, issued_at, lifetime)
    }

    /// Issues a new access token living `lifetime` seconds from `issued_at`.
    pub fn mint_access_lasting(
        &mut self,
        user: &str,
        scope: &str,
        issued_at: i64,
        lifetime: i64,
    ) -> Grant {
        let access = random_token(self.rules.prefix);
        let expires_at = issued_at + lifetime;
        self.access.insert(
            access.clone(),
            Access {
                user: user.into(),
                expires_at,
                issued_at,
            },
        );
        Grant {
            user: user.into(),
            access_token: access,
            refresh_token: None,
            expires_at,
            expires_in: expires_at - Utc::now().timestamp(),
            scope: scope.into(),
        }
    }

    /// Registers a refresh token made elsewhere (a fake's own `add_...`).
    pub fn adopt_refresh(&mut self, user: &str, refresh_token: &str) {
        self.refresh.insert(
            refresh_token.into(),
            Refresh {
                user: user.into(),
                scope: String::new(),
            },
        );
    }

    /// The user an unexpired, unrevoked access token belongs to.
    pub fn user_of(&self, access_token: &str) -> Option<String> {
        let access = self.access.get(access_token)?;
        (access.expires_at > Utc::now().timestamp()).then(|| access.user.clone())
    }

    /// `(issued_at, expires_at)` of an access token the fake issued.
    pub fn times_of(&self, access_token: &str) -> Option<(i64, i64)> {
        self.access
            .get(access_token)
            .map(|a| (a.issued_at, a.expires_at))
    }

    /// Whether a refresh token is currently valid.
    pub fn refresh_valid(&self, refresh_token: &str) -> bool {
        self.refresh.contains_key(refresh_token)
    }

    /// Revokes one token (access or refresh) through the revocation
    /// endpoint: answers whether it was known.
    pub fn revoke(&mut self, token: &str) -> bool {
        let known = self.access.remove(token).is_some() | self.refresh.remove(token).is_some();
        self.revocations.push(token.into());
        known
    }

    /// Revokes every token of `user` (the user removed the app).
    pub fn revoke_user(&mut self, user: &str) {
        self.access.retain(|_, a| a.user != user);
        self.refresh.retain(|_, r| r.user != user);
    }

    /// Replaces the access lifetime (seconds).
    pub fn set_access_lifetime(&mut self, seconds: i64) {
        self.rules.access_lifetime = seconds;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}

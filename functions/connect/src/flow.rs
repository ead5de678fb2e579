//! The OAuth 2.0 authorization-code flow with PKCE:
//!
//! - `POST /connect/{platform}/start` `{"return_url"?}` with the user's
//!   Supabase access token -> 200 `{"authorize_url", "expires_at"}`.
//! - `GET /connect/{platform}/callback?code&state` (or `?error&state`) ->
//!   303 to the return URL with `connected=<platform>&account_id=<id>`, or
//!   with `error=<reason>&platform=<platform>` where `reason` is one of
//!   `access_denied`, `state_expired`, `state_replayed`, `code_refused`,
//!   `app_rejected`, `platform_unavailable`, `platform_error`,
//!   `identity_unavailable`, `identity_taken`, `server_error`. A state that does not verify
//!   (malformed, tampered, another platform's, unknown) names no trusted
//!   return URL: 400 `state_invalid`.
//!
//! Nothing is written before the platform has vouched for the identity,
//! and then in one SQL call (`store_connected_account`).

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use shared::db::Database;
use shared::oauth::{Grant, Platform, TokenFailure, TokenGrant};
use shared::provider_log::{self, ProviderCall};
use shared::{response, user_token};
use spin_sdk::http::{Request, Response};
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::error::ConnectError;
use crate::platforms;
use crate::settings::{PlatformConfig, Settings};
use crate::sql;
use crate::state::{self, StateClaims};

/// The signed-in user of a request.
pub fn user_of(request: &Request, settings: &Settings) -> Result<Uuid, ConnectError> {
    Ok(user_token::user_id(
        request.header("authorization").and_then(|v| v.as_str()),
        &settings.jwt_secret,
        Utc::now().timestamp(),
    )?)
}

#[derive(Deserialize, Default)]
struct StartBody {
    return_url: Option<String>,
}

#[derive(Deserialize)]
struct Begun {
    id: Uuid,
}

/// `POST /connect/{platform}/start`.
pub fn start(
    request: &Request,
    platform: Platform,
    settings: &Settings,
) -> Result<Response, ConnectError> {
    let user = user_of(request, settings)?;
    let body: StartBody = if request.body().iter().all(u8::is_ascii_whitespace) {
        StartBody::default()
    } else {
        serde_json::from_slice(request.body()).map_err(|e| {
            ConnectError::BadRequest(format!("body must be JSON {{\"return_url\"}}: {e}"))
        })?
    };
    let return_url = match body.return_url {
        Some(url) => settings
            .return_urls
            .check(&url)
            .map_err(ConnectError::ReturnUrl)?,
        None => settings.return_urls.default_url().ok_or_else(|| {
            ConnectError::ReturnUrl("no return_url given and connect_return_urls is empty".into())
        })?,
    };
    let config = PlatformConfig::load(platform)?;
    let verifier = state::new_verifier()?;
    let sealed_verifier = settings.keyring.seal(&verifier)?;
    let redirect_uri = settings.redirect_uri(platform, full_url(request));
    let db = Database::open(&settings.database_url)?;
    let begun: Begun = db.call(
        &sql::BEGIN_CONNECT_STATE,
        &[
            ParameterValue::Uuid(user.to_string()),
            ParameterValue::Str(platform.name().into()),
            ParameterValue::Str(sealed_verifier),
            ParameterValue::Str(return_url.clone()),
            ParameterValue::Str(redirect_uri.clone()),
            ParameterValue::Int32(i32::try_from(settings.state_ttl_seconds).unwrap_or(600)),
        ],
    )?;
    let expires_at = Utc::now().timestamp() + settings.state_ttl_seconds;
    let claims = StateClaims {
        state_id: begun.id,
        user_id: user,
        platform: platform.name().into(),
        expires_at,
        return_url,
    };
    let signed = state::sign(&claims, &settings.state_key)?;
    let url = platforms::authorize_url(
        &config,
        &redirect_uri,
        &signed,
        &state::challenge(&verifier),
    )?;
    Ok(response::json(
        200,
        &json!({
            "authorize_url": url,
            "platform": platform.name(),
            "expires_at": chrono::DateTime::from_timestamp(expires_at, 0).map(|t| t.to_rfc3339()),
        }),
    ))
}

#[derive(Deserialize)]
struct Consumed {
    ok: bool,
    reason: Option<String>,
    code_verifier: Option<String>,
    redirect_uri: Option<String>,
}

#[derive(Deserialize)]
struct Stored {
    ok: bool,
    account_id: Option<Uuid>,
    message: Option<String>,
}

/// How a callback ends: where the browser goes back to, with what.
struct Outcome {
    return_url: String,
    pairs: Vec<(&'static str, String)>,
}

impl Outcome {
    fn error(claims: &StateClaims, reason: &str) -> Outcome {
        Outcome {
            return_url: claims.return_url.clone(),
            pairs: vec![
                ("error", reason.into()),
                ("platform", claims.platform.clone()),
            ],
        }
    }

    fn response(self) -> Response {
        let location = match url::Url::parse(&self.return_url) {
            Ok(mut url) => {
                {
                    let mut query = url.query_pairs_mut();
                    for (k, v) in &self.pairs {
                        query.append_pair(k, v);
                    }
                }
                url.to_string()
            }
            Err(_) => self.return_url,
        };
        Response::builder()
            .status(303)
            .header("location", location)
            .header("cache-control", "no-store")
            .header("referrer-policy", "no-referrer")
            .body(Vec::new())
            .build()
    }
}

fn full_url(request: &Request) -> Option<&str> {
    request.header("spin-full-url").and_then(|v| v.as_str())
}

fn query_params(request: &Request) -> Vec<(String, String)> {
    let uri = request.uri();
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// `GET /connect/{platform}/callback`.
pub fn callback(
    request: &Request,
    platform: Platform,
    settings: &Settings,
) -> Result<Response, ConnectError> {
    let params = query_params(request);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let raw_state = param("state")
        .ok_or_else(|| ConnectError::State("the callback has no state parameter".into()))?;
    let claims = state::verify(&raw_state, &settings.state_key)
        .map_err(|e| ConnectError::State(e.to_string()))?;
    if claims.platform != platform.name() {
        return Err(ConnectError::State(format!(
            "the state was issued for {}, not {}",
            claims.platform,
            platform.name()
        )));
    }
    let db = Database::open(&settings.database_url)?;
    let consumed: Consumed = db.call(
        &sql::CONSUME_CONNECT_STATE,
        &[
            ParameterValue::Uuid(claims.state_id.to_string()),
            ParameterValue::Uuid(claims.user_id.to_string()),
            ParameterValue::Str(platform.name().into()),
        ],
    )?;
    if !consumed.ok {
        return match consumed.reason.as_deref() {
            Some("replayed") => Ok(Outcome::error(&claims, "state_replayed").response()),
            Some("expired") => Ok(Outcome::error(&claims, "state_expired").response()),
            _ => Err(ConnectError::State(
                "the state names no connect that was started".into(),
            )),
        };
    }
    if claims.expires_at <= Utc::now().timestamp() {
        return Ok(Outcome::error(&claims, "state_expired").response());
    }
    if let Some(error) = param("error") {
        // access_denied (RFC 6749), LinkedIn's user_cancelled_*: the user said no.
        let reason = if error == "access_denied" || error.starts_with("user_cancelled") {
            "access_denied"
        } else {
            "platform_error"
        };
        return Ok(Outcome::error(&claims, reason).response());
    }
    let Some(code) = param("code") else {
        return Ok(Outcome::error(&claims, "code_refused").response());
    };
    let verifier = consumed
        .code_verifier
        .as_deref()
        .map(|sealed| settings.keyring.open(sealed))
        .transpose()?;
    let redirect_uri = consumed
        .redirect_uri
        .unwrap_or_else(|| settings.redirect_uri(platform, full_url(request)));
    let config = PlatformConfig::load(platform)?;
    // Strava names the accepted scope on the redirect, not in the token answer.
    let redirect_scope = param("scope");
    let exchange_input = Exchange {
        code: &code,
        verifier: verifier.as_deref(),
        redirect_uri: &redirect_uri,
        redirect_scope: redirect_scope.as_deref(),
    };
    match connect(&db, &config, &claims, &exchange_input, settings) {
        Ok(account_id) => Ok(Outcome {
            return_url: claims.return_url.clone(),
            pairs: vec![
                ("connected", platform.name().into()),
                ("account_id", account_id.to_string()),
            ],
        }
        .response()),
        Err(reason) => Ok(Outcome::error(&claims, reason).response()),
    }
}

/// What the callback brought for the code exchange.
struct Exchange<'a> {
    code: &'a str,
    verifier: Option<&'a str>,
    redirect_uri: &'a str,
    redirect_scope: Option<&'a str>,
}

/// Exchanges, asks who, stores. The error is the outcome's reason.
fn connect(
    db: &Database,
    config: &PlatformConfig,
    claims: &StateClaims,
    input: &Exchange<'_>,
    settings: &Settings,
) -> Result<Uuid, &'static str> {
    let platform = config.app.platform;
    let grant = exchange(
        db,
        config,
        claims.user_id,
        &Grant::AuthorizationCode {
            code: input.code,
            redirect_uri: input.redirect_uri,
            code_verifier: input.verifier,
        },
    )?;
    let scope = grant
        .scope
        .clone()
        .or_else(|| input.redirect_scope.map(str::to_string));
    let grant = if platform == Platform::Instagram {
        exchange(
            db,
            config,
            claims.user_id,
            &Grant::InstagramLongLived(&grant.access_token),
        )?
    } else {
        grant
    };
    let identity =
        platforms::who_am_i(config, &grant.access_token).map_err(|_| "identity_unavailable")?;
    let seal = |token: &str| settings.keyring.seal(token).map_err(|_| "server_error");
    let account = json!({
        "platform_user_id": identity.id,
        "username": identity.username,
        "display_name": identity.display_name,
        "avatar_url": identity.avatar_url,
        "access_token": seal(&grant.access_token)?,
        "refresh_token": grant.refresh_token.as_deref().map(seal).transpose()?,
        "token_key_id": settings.keyring.current_id(),
        "token_expires_at": grant.expires_at.map(|t| t.to_rfc3339()),
        "scope": scope,
        "profile_data": platforms::profile_data(platform, &identity),
    });
    let stored: Stored = db
        .call(
            &sql::STORE_CONNECTED_ACCOUNT,
            &[
                ParameterValue::Uuid(claims.user_id.to_string()),
                ParameterValue::Str(platform.name().into()),
                ParameterValue::Jsonb(account.to_string().into_bytes()),
            ],
        )
        .map_err(|e| {
            eprintln!(
                "connect: storing the {} account failed: {e}",
                platform.name()
            );
            "server_error"
        })?;
    match (stored.ok, stored.account_id) {
        (true, Some(id)) => Ok(id),
        _ => {
            eprintln!(
                "connect: {}",
                stored
                    .message
                    .as_deref()
                    .unwrap_or("identity verified by another user")
            );
            Err("identity_taken")
        }
    }
}

/// One token-endpoint call, logged to `api_logs` (path, status, duration,
/// the failure's class and message: never the code or a token).
fn exchange(
    db: &Database,
    config: &PlatformConfig,
    user: Uuid,
    grant: &Grant<'_>,
) -> Result<TokenGrant, &'static str> {
    let exchange = config.app.send(grant, Utc::now());
    let call = ProviderCall {
        provider: config.app.platform.name().into(),
        method: exchange.method.into(),
        path: exchange.path.clone(),
        status_code: exchange.status,
        duration_ms: exchange.duration_ms,
        user_id: Some(user),
        model: None,
        error: exchange
            .outcome
            .as_ref()
            .err()
            .map(|e| format!("{}: {e}", e.kind())),
    };
    // The log is evidence, not part of the connect: a failure to write it
    // does not fail the user's connect.
    if let Err(e) = provider_log::record(db, &call) {
        eprintln!("connect: api_logs not written: {e}");
    }
    exchange.outcome.map_err(|failure| match failure {
        TokenFailure::Transient { .. } => "platform_unavailable",
        TokenFailure::Refused(_) => "code_refused",
        // A refusal of our client credentials is a configuration fault;
        // anything else the platform refuses is the code.
        TokenFailure::Application(_) if matches!(exchange.status, Some(401)) => "app_rejected",
        TokenFailure::Application(_) => "code_refused",
    })
}

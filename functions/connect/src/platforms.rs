//! What differs per platform: the authorize page and its scopes, who a
//! token belongs to, and how a grant is revoked.
//!
//! | platform | authorize | who am I | revoke |
//! |---|---|---|---|
//! | Strava | `{strava}/oauth/authorize`, scope `read,activity:read_all`, `approval_prompt=auto` | `GET /api/v3/athlete` | `POST /oauth/deauthorize` |
//! | Instagram | `{www.instagram.com}/oauth/authorize`, scope `instagram_business_basic,instagram_business_content_publish` | `GET {graph}/me?fields=user_id,username,name,profile_picture_url` | none (deauthorize callback only) |
//! | X | `{x.com}/i/oauth2/authorize`, scope `tweet.read tweet.write users.read offline.access` | `GET /2/users/me` | `POST /2/oauth2/revoke` |
//! | LinkedIn | `{www.linkedin.com}/oauth/v2/authorization`, scope `openid profile email w_member_social` | `GET /v2/userinfo` | none for members |

use std::time::Duration;

use serde_json::{Value, json};
use shared::oauth::Platform;
use shared::outbound::{OutboundRequest, Reply};

use crate::error::ConnectError;
use crate::settings::PlatformConfig;

/// How long an identity or revocation call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The authorize page's path and the scopes asked for.
fn authorize_path_and_scope(platform: Platform) -> (&'static str, &'static str) {
    match platform {
        Platform::Strava => ("/oauth/authorize", "read,activity:read_all"),
        Platform::Instagram => (
            "/oauth/authorize",
            "instagram_business_basic,instagram_business_content_publish",
        ),
        Platform::X => (
            "/i/oauth2/authorize",
            "tweet.read tweet.write users.read offline.access",
        ),
        Platform::LinkedIn => (
            "/oauth/v2/authorization",
            "openid profile email w_member_social",
        ),
    }
}

/// The URL the user's browser is sent to.
pub fn authorize_url(
    config: &PlatformConfig,
    redirect_uri: &str,
    state: &str,
    challenge: &str,
) -> Result<String, ConnectError> {
    let platform = config.app.platform;
    let (path, scope) = authorize_path_and_scope(platform);
    let mut url = url::Url::parse(&format!("{}{path}", config.authorize_base)).map_err(|_| {
        ConnectError::Shared(shared::Error::Config(format!(
            "the {} authorize base URL is not a URL",
            platform.label()
        )))
    })?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &config.app.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        if platform == Platform::Strava {
            query.append_pair("approval_prompt", "auto");
        }
    }
    Ok(url.to_string())
}

/// Who the platform says a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The platform's stable id for the account (`platform_user_id`).
    pub id: String,
    /// Handle or name shown to the user.
    pub username: String,
    /// Display name, if any.
    pub display_name: Option<String>,
    /// Avatar URL, if any.
    pub avatar_url: Option<String>,
}

fn failed(platform: Platform, what: &str, reply: &Reply) -> ConnectError {
    let message = format!("{} {what} answered {}", platform.label(), reply.status);
    if reply.status == 429 || reply.status >= 500 {
        ConnectError::PlatformUnavailable(message)
    } else {
        ConnectError::Platform(message)
    }
}

fn send(platform: Platform, what: &str, request: OutboundRequest) -> Result<Value, ConnectError> {
    let reply = request.timeout(CALL_TIMEOUT).send().map_err(|e| {
        let message = format!("{} {what} failed: {e}", platform.label());
        if e.is_transient() {
            ConnectError::PlatformUnavailable(message)
        } else {
            ConnectError::Platform(message)
        }
    })?;
    if !reply.is_success() {
        return Err(failed(platform, what, &reply));
    }
    serde_json::from_slice(&reply.body).map_err(|_| {
        ConnectError::Platform(format!("{} {what} answer is not JSON", platform.label()))
    })
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Asks the platform who `access_token` belongs to.
pub fn who_am_i(config: &PlatformConfig, access_token: &str) -> Result<Identity, ConnectError> {
    let platform = config.app.platform;
    let what = "identity lookup";
    let api = &config.api_base;
    let (id, username, display, avatar) = match platform {
        Platform::Strava => {
            let body = send(
                platform,
                what,
                OutboundRequest::get(&format!("{api}/api/v3/athlete")).bearer(access_token),
            )?;
            let name = [text(&body, "/firstname"), text(&body, "/lastname")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            (
                text(&body, "/id"),
                text(&body, "/username"),
                Some(name).filter(|n| !n.is_empty()),
                text(&body, "/profile"),
            )
        }
        Platform::Instagram => {
            // The Graph API takes the token as a query parameter; the
            // outbound error text names the host only, never the query.
            let body = send(
                platform,
                what,
                OutboundRequest::get(&format!("{api}/me")).query(&[
                    ("fields", "user_id,username,name,profile_picture_url"),
                    ("access_token", access_token),
                ]),
            )?;
            (
                text(&body, "/user_id").or_else(|| text(&body, "/id")),
                text(&body, "/username"),
                text(&body, "/name"),
                text(&body, "/profile_picture_url"),
            )
        }
        Platform::X => {
            let body = send(
                platform,
                what,
                OutboundRequest::get(&format!("{api}/2/users/me"))
                    .query(&[("user.fields", "profile_image_url")])
                    .bearer(access_token),
            )?;
            (
                text(&body, "/data/id"),
                text(&body, "/data/username"),
                text(&body, "/data/name"),
                text(&body, "/data/profile_image_url"),
            )
        }
        Platform::LinkedIn => {
            let body = send(
                platform,
                what,
                OutboundRequest::get(&format!("{api}/v2/userinfo")).bearer(access_token),
            )?;
            (
                text(&body, "/sub"),
                text(&body, "/name"),
                text(&body, "/name"),
                text(&body, "/picture"),
            )
        }
    };
    let id = id.ok_or_else(|| {
        ConnectError::Platform(format!("{} {what} named no account id", platform.label()))
    })?;
    Ok(Identity {
        username: username.unwrap_or_else(|| id.clone()),
        id,
        display_name: display,
        avatar_url: avatar,
    })
}

/// Whether the platform has a revocation endpoint for member grants.
pub fn can_revoke(platform: Platform) -> bool {
    matches!(platform, Platform::Strava | Platform::X)
}

/// Revokes the grant at the platform: X revokes the refresh token and the
/// access token (`POST /2/oauth2/revoke`), Strava deauthorizes the app for
/// the athlete (`POST /oauth/deauthorize`, all tokens).
pub fn revoke(
    config: &PlatformConfig,
    access_token: Option<&str>,
    refresh_token: Option<&str>,
) -> Result<(), ConnectError> {
    let platform = config.app.platform;
    let api = &config.api_base;
    match platform {
        Platform::Strava => {
            let token = access_token.ok_or_else(|| {
                ConnectError::Platform("no Strava access token to deauthorize with".into())
            })?;
            send(
                platform,
                "deauthorize",
                OutboundRequest::post(&format!("{api}/oauth/deauthorize"))
                    .form(&[("access_token", token)]),
            )?;
        }
        Platform::X => {
            for (token, hint) in [
                (refresh_token, "refresh_token"),
                (access_token, "access_token"),
            ] {
                let Some(token) = token else { continue };
                let mut request = OutboundRequest::post(&format!("{api}/2/oauth2/revoke")).form(&[
                    ("token", token),
                    ("token_type_hint", hint),
                    ("client_id", &config.app.client_id),
                ]);
                if !config.app.client_secret.is_empty() {
                    use base64::Engine;
                    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        config.app.client_id, config.app.client_secret
                    ));
                    request = request.header("authorization", &format!("Basic {basic}"));
                }
                send(platform, "token revocation", request)?;
            }
        }
        Platform::Instagram | Platform::LinkedIn => {}
    }
    Ok(())
}

/// The profile details kept in `profile_data` (no e-mail, no tokens).
pub fn profile_data(platform: Platform, identity: &Identity) -> Value {
    json!({
        "connected_via": "oauth",
        "platform": platform.name(),
        "display_name": identity.display_name,
    })
}

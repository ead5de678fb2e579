//! The component's variables, read once per request.

use shared::config;
use shared::oauth::{App, Platform};
use shared::token_cipher::Keyring;

use crate::error::ConnectError;
use crate::return_url::AllowList;

/// Default lifetime of a started connect: long enough to log in and
/// consent, short enough that a leaked authorize URL soon stops working.
const DEFAULT_STATE_TTL_SECONDS: i64 = 600;

/// Everything a connect route needs.
pub struct Settings {
    /// Postgres connection string.
    pub database_url: String,
    /// Key of the `state` MAC (`connect_state_key`).
    pub state_key: Vec<u8>,
    /// Return URLs allowed (`connect_return_urls`).
    pub return_urls: AllowList,
    /// Our public base URL (`connect_public_url`): redirect URIs are
    /// `{this}/connect/{platform}/callback`, registered with each platform.
    /// Empty: the origin the start request came to (`spin-full-url`); a
    /// spoofed host gains nothing, since the platform only redirects to
    /// registered URIs.
    pub public_url: String,
    /// Seconds a started connect lives (`connect_state_ttl_seconds`).
    pub state_ttl_seconds: i64,
    /// Supabase JWT secret, for the user's access token.
    pub jwt_secret: String,
    /// Token sealing keys (`token_encryption_key`).
    pub keyring: Keyring,
}

fn refused(name: &str) -> ConnectError {
    ConnectError::Shared(shared::Error::Config(format!(
        "variable `{name}` is empty: connect needs it"
    )))
}

impl Settings {
    /// Reads the variables every route uses.
    pub fn load() -> Result<Settings, ConnectError> {
        let state_key = config::maybe_empty("connect_state_key")?;
        if state_key.len() < 16 {
            return Err(refused("connect_state_key (at least 16 characters)"));
        }
        let return_urls = AllowList::parse(&config::maybe_empty("connect_return_urls")?)
            .map_err(|e| ConnectError::Shared(shared::Error::Config(e)))?;
        let public_url = config::maybe_empty("connect_public_url")?
            .trim_end_matches('/')
            .to_string();
        let jwt_secret = config::maybe_empty("supabase_jwt_secret")?;
        if jwt_secret.is_empty() {
            return Err(refused("supabase_jwt_secret"));
        }
        let key = config::maybe_empty("token_encryption_key")?;
        if key.is_empty() {
            return Err(refused("token_encryption_key"));
        }
        let state_ttl_seconds = config::optional("connect_state_ttl_seconds")
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|s| (1..=3600).contains(s))
            .unwrap_or(DEFAULT_STATE_TTL_SECONDS);
        Ok(Settings {
            database_url: config::database_url()?,
            state_key: state_key.into_bytes(),
            return_urls,
            public_url,
            state_ttl_seconds,
            jwt_secret,
            keyring: Keyring::parse(&key)?,
        })
    }

    /// The redirect URI registered for `platform`, for a request that came
    /// to `full_url`.
    pub fn redirect_uri(&self, platform: Platform, full_url: Option<&str>) -> String {
        let base = if self.public_url.is_empty() {
            full_url
                .and_then(|u| url::Url::parse(u).ok())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default()
        } else {
            self.public_url.clone()
        };
        format!("{base}/connect/{}/callback", platform.name())
    }
}

/// A platform's application and endpoints.
pub struct PlatformConfig {
    /// Token endpoint client (shared with token-rotation).
    pub app: App,
    /// Base of the browser-facing authorize page.
    pub authorize_base: String,
    /// Base of the API that says who the token belongs to (and revokes).
    pub api_base: String,
}

fn base(name: &str) -> Result<String, ConnectError> {
    Ok(config::base_url(name)?)
}

fn client(name: &str) -> Result<String, ConnectError> {
    let value = config::maybe_empty(name)?;
    if value.is_empty() {
        return Err(refused(name));
    }
    Ok(value)
}

impl PlatformConfig {
    /// Reads `platform`'s variables.
    pub fn load(platform: Platform) -> Result<PlatformConfig, ConnectError> {
        let (client_id, client_secret, oauth_base, graph, authorize_base, api_base) = match platform
        {
            Platform::Strava => {
                let api = base("strava_api_url")?;
                (
                    client("strava_client_id")?,
                    client("strava_client_secret")?,
                    api.clone(),
                    String::new(),
                    api.clone(),
                    api,
                )
            }
            Platform::Instagram => {
                let graph = base("instagram_graph_url")?;
                (
                    client("instagram_client_id")?,
                    client("instagram_app_secret")?,
                    base("instagram_api_url")?,
                    graph.clone(),
                    base("instagram_authorize_url")?,
                    graph,
                )
            }
            Platform::X => {
                let api = base("x_api_url")?;
                (
                    client("x_client_id")?,
                    config::maybe_empty("x_client_secret")?,
                    api.clone(),
                    String::new(),
                    base("x_authorize_url")?,
                    api,
                )
            }
            Platform::LinkedIn => {
                let oauth = base("linkedin_oauth_url")?;
                (
                    client("linkedin_client_id")?,
                    client("linkedin_client_secret")?,
                    oauth.clone(),
                    String::new(),
                    oauth,
                    base("linkedin_api_url")?,
                )
            }
        };
        Ok(PlatformConfig {
            app: App {
                platform,
                client_id,
                client_secret,
                oauth_base_url: oauth_base,
                graph_base_url: graph,
            },
            authorize_base,
            api_base,
        })
    }
}

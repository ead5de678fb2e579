//! The component's settings, from its Spin variables, read once per run.

use shared::{Error, config};

/// Where the platforms are and the key that opens stored tokens.
pub struct Config {
    /// Strava API base (`https://www.strava.com`).
    pub strava_api_url: String,
    /// Instagram Graph API base (`https://graph.instagram.com`).
    pub instagram_graph_url: String,
    /// Bluesky AppView base (`https://public.api.bsky.app`).
    pub bluesky_appview_url: String,
    /// Strava app credentials for token refresh, when the manifest maps them
    /// (variables `strava_client_id` / `strava_client_secret`).
    pub strava_client_id: Option<String>,
    /// See `strava_client_id`.
    pub strava_client_secret: Option<String>,
    token_key: Option<String>,
}

impl Config {
    /// Reads the variables. The platform URLs are required (the manifest
    /// gives them defaults); the token key is checked only when a token is
    /// opened, so Bluesky polling works without it.
    pub fn load() -> Result<Config, Error> {
        Ok(Config {
            strava_api_url: config::base_url("strava_api_url")?,
            instagram_graph_url: config::base_url("instagram_graph_url")?,
            bluesky_appview_url: config::base_url("bluesky_appview_url")?,
            strava_client_id: config::optional("strava_client_id"),
            strava_client_secret: config::optional("strava_client_secret"),
            token_key: config::optional("token_encryption_key"),
        })
    }

    /// The AES-256-GCM key of `shared::token_cipher` (base64).
    pub fn token_key(&self) -> Result<&str, Error> {
        self.token_key
            .as_deref()
            .ok_or_else(|| Error::Config("variable `token_encryption_key` is empty".into()))
    }
}

//! Publishing settings, read once per run from the linking component's Spin variables.

use shared::{Error, config};

/// Everything publishing reads from the linking component's variables.
#[derive(Clone)]
pub struct Config {
    /// The Postgres connection string.
    pub database_url: String,
    /// The Bluesky PDS (sessions, records, blobs, handles).
    pub pds_url: String,
    /// The Bluesky AppView (post metrics).
    pub appview_url: String,
    /// The X API.
    pub x_api_url: String,
    /// The LinkedIn API.
    pub linkedin_api_url: String,
    /// The object store post images are read from (signed requests).
    pub media_store: shared::object_store::StoreConfig,
    /// Base64 AES-256-GCM key of OAuth tokens at rest (may be empty: X and
    /// LinkedIn posts then fail with a configuration message).
    pub token_encryption_key: String,
}

// The key never reaches a log through Debug.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("pds_url", &self.pds_url)
            .field("appview_url", &self.appview_url)
            .field("x_api_url", &self.x_api_url)
            .field("linkedin_api_url", &self.linkedin_api_url)
            .field("media_store", &self.media_store)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the variables; the base URLs must be set (they have defaults
    /// in `spin.toml`).
    pub fn load() -> Result<Self, Error> {
        let url = config::base_url;
        Ok(Config {
            database_url: config::database_url()?,
            pds_url: url("bluesky_pds_url")?,
            appview_url: url("bluesky_appview_url")?,
            x_api_url: url("x_api_url")?,
            linkedin_api_url: url("linkedin_api_url")?,
            media_store: shared::object_store::StoreConfig::from_variables()?,
            token_encryption_key: config::maybe_empty("token_encryption_key")?,
        })
    }
}

//! The component's settings, read once per request from Spin variables.

use shared::Error;
use shared::config;

/// Everything this component reads from its variables.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Postgres connection string.
    pub database_url: String,
    /// The feed generator's service DID (`did:web:<host>`).
    pub service_did: String,
    /// The public host name the feed generator is served at.
    pub hostname: String,
    /// Whether getFeedSkeleton requires a valid service JWT.
    pub verify_jwt: bool,
    /// Where issuers' DID documents are resolved.
    pub plc_directory_url: String,
    /// The Supabase project's JWT secret (empty: publishing is off).
    pub supabase_jwt_secret: String,
    /// The PDS that holds the owners' repos.
    pub pds_url: String,
}

impl Config {
    /// Reads the variables; only `database_url`, `feed_service_did` and
    /// `feed_hostname` must be non-empty.
    pub fn load() -> Result<Self, Error> {
        Ok(Config {
            database_url: config::database_url()?,
            service_did: config::required("feed_service_did")?,
            hostname: config::required("feed_hostname")?,
            verify_jwt: config::maybe_empty("feed_verify_jwt")?
                .trim()
                .eq_ignore_ascii_case("true"),
            plc_directory_url: config::maybe_empty("plc_directory_url")?
                .trim_end_matches('/')
                .to_string(),
            supabase_jwt_secret: config::maybe_empty("supabase_jwt_secret")?,
            pds_url: config::maybe_empty("bluesky_pds_url")?,
        })
    }
}

//! Everything two Outpost components share: the database calls (every one a
//! named SQL function returning one `jsonb` value), the error type and its
//! HTTP mapping, component configuration, and the plumbing of job components
//! (bearer check, heartbeats, the cron export).

#![forbid(unsafe_code)]

pub mod bluesky;
pub mod bluesky_session;
pub mod config;
pub mod db;
pub mod error;
pub mod jobs;
pub mod oauth;
pub mod object_store;
pub mod outbound;
pub mod provider_log;
pub mod response;
pub mod sql;
pub mod token_cipher;
pub mod token_refresh;
pub mod user_token;

pub use error::Error;

/// Re-exported so that [`cron_component!`] expands in component crates
/// without each one naming `wit-bindgen` itself.
#[doc(hidden)]
pub use wit_bindgen;

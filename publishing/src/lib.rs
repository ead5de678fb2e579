//! Publishing one claimed scheduled post to Bluesky, X or LinkedIn exactly
//! once, and refreshing the metrics of recent Bluesky posts. A library, not
//! a component: `schedule-claim` links it and publishes the posts it claims
//! in its own instance, because a cron-served component may not chain to
//! another (Spin refuses the whole app; `../shared/SPIN.md` §0).
//!
//! - [`attempt::run`] takes one claimed post (`scheduled_post_id`,
//!   `lease_token`) and answers its outcome (`published` | `retry` | `dead`
//!   | `failed` | `deferred` | `stale`); every outcome is recorded in SQL.
//!   The leases the worker holds are kept alive by [`lease::HeldLeases`]
//!   while it works, so a dead worker's posts are free again within one
//!   short lease.
//! - [`metrics::refresh`] refreshes one batch of Bluesky metrics.
//!
//! Variables (of the linking component): `database_url`,
//! `bluesky_pds_url`, `bluesky_appview_url`, `x_api_url`,
//! `linkedin_api_url`, `media_store_*` (`shared::object_store`), `token_encryption_key`.

pub mod attempt;
pub mod bluesky_post;
pub mod config;
pub mod deadline;
pub mod facets;
pub mod lease;
pub mod limits;
pub mod linkedin_post;
pub mod media;
pub mod metrics;
pub mod oauth;
pub mod outcome;
pub mod sql;
pub mod tid;
pub mod tlds;
pub mod x_post;
pub mod x_text;

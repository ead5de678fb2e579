//! `publish`: publishes one claimed scheduled post to Bluesky, X or
//! LinkedIn exactly once, and refreshes the metrics of recent Bluesky
//! posts. A private route: `schedule-claim` calls it through Spin service
//! chaining.
//!
//! - `POST /publish` `{"scheduled_post_id", "lease_token", "lease_seconds"?,
//!   "call_timeout_ms"?}` -> `{"scheduled_post_id", "outcome": "published" |
//!   "retry" | "dead" | "failed" | "deferred" | "stale", "platform_post_id"?,
//!   "url"?, "error"?}` (200 whatever the platform said: the outcome is
//!   recorded; 4xx/5xx only for a bad request or a database failure).
//! - `POST /metrics` -> `{"claimed", "found", "updated", "history"}`.
//!
//! Variables: `database_url`, `bluesky_pds_url`, `bluesky_appview_url`,
//! `x_api_url`, `linkedin_api_url`, `media_store_url`,
//! `token_encryption_key`. Outbound hosts: those URLs and the database.

pub mod attempt;
pub mod bluesky_post;
pub mod config;
pub mod deadline;
pub mod facets;
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

use shared::db::Database;
use shared::{Error, response};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

use crate::attempt::PublishRequest;
use crate::config::Config;

#[http_component]
fn handle(request: Request) -> Response {
    response::from_result(route(&request))
}

fn route(request: &Request) -> Result<Response, Error> {
    if *request.method() != Method::Post {
        return Err(Error::MethodNotAllowed(request.method().to_string()));
    }
    let path = request.path().trim_end_matches('/').to_string();
    if path != "/publish" && path != "/metrics" {
        return Err(Error::NotFound(format!("no route {path}")));
    }
    let config = Config::load()?;
    let db = Database::open(&config.database_url)?;
    let body = if path == "/publish" {
        let wanted: PublishRequest = serde_json::from_slice(request.body()).map_err(|e| {
            Error::BadRequest(format!(
                "expected {{\"scheduled_post_id\", \"lease_token\"}}: {e}"
            ))
        })?;
        let report = attempt::run(&db, &config, &wanted)?;
        serde_json::to_value(report).map_err(|e| Error::Database(e.to_string()))?
    } else {
        metrics::refresh(&db, &config)?
    };
    Ok(response::json(200, &body))
}

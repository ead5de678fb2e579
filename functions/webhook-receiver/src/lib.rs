//! `webhook-receiver`: `/webhooks/{strava,instagram,replicate}`. Answers the
//! Strava and Meta subscription handshakes, checks each event's authenticity
//! (Strava's `subscription_id`, Meta's `X-Hub-Signature-256`, Replicate's
//! Standard Webhooks signature and timestamp), archives the raw payload in
//! `ingested_items` (deduplicated, committed) and only then answers 200. No
//! platform calls, no normalization: `ingest` does that later.
//!
//! Variables: `database_url`, `strava_verify_token`,
//! `strava_subscription_id`, `instagram_verify_token`,
//! `instagram_app_secret`, `replicate_webhook_secret`. Outbound: the database.

mod error;
mod payload;
mod receive;
mod sql;
mod verify;

use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;

/// Takes the raw request so an oversized body is refused before it is read.
#[http_component]
fn handle(request: IncomingRequest) -> Response {
    receive::answer(request)
}

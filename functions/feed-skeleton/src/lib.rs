//! `feed-skeleton`: serves Bluesky custom feeds from `indexed_posts`.
//!
//! - `GET /xrpc/app.bsky.feed.getFeedSkeleton?feed=&limit=&cursor=`: one
//!   page, newest first, with a cursor that names one post exactly
//!   (`cursor.rs`); one SQL call per request. With `feed_verify_jwt` on, the
//!   AppView's service JWT is checked (`service_jwt.rs`, keys cached in SQL
//!   by `signing_keys.rs`).
//! - `GET /xrpc/app.bsky.feed.describeFeedGenerator` and
//!   `GET /.well-known/did.json`.
//! - `POST /feeds/{id}/publish` with the owner's Supabase access token:
//!   writes the feed's generator record to the owner's repo (`publish.rs`).
//!
//! Errors use XRPC's `{error, message}` shape (`error.rs`).

mod config;
mod cursor;
mod error;
mod publish;
mod service_jwt;
mod signing_keys;
mod skeleton;
mod sql;

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

use crate::config::Config;
use crate::error::FeedError;

#[http_component]
fn handle(request: Request) -> Response {
    route(&request).unwrap_or_else(|e| e.response())
}

fn route(request: &Request) -> Result<Response, FeedError> {
    let config = Config::load()?;
    let path = request.path().trim_end_matches('/');
    if path.starts_with("/feeds/") {
        return publish::publish(request, &config);
    }
    if *request.method() != Method::Get {
        return Err(FeedError::MethodNotAllowed(request.method().to_string()));
    }
    match path {
        "/xrpc/app.bsky.feed.getFeedSkeleton" => skeleton::get_feed_skeleton(request, &config),
        "/xrpc/app.bsky.feed.describeFeedGenerator" => skeleton::describe_feed_generator(&config),
        "/.well-known/did.json" => skeleton::did_document(&config),
        _ => Err(FeedError::NotFound(format!("no route {path}"))),
    }
}

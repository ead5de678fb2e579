//! The Instagram Graph API calls of ingest: one media object and the
//! user's media list, both with [`INSTAGRAM_MEDIA_FIELDS`], on the
//! version-less paths of `instagram_graph_url` (`/{media-id}`,
//! `/me/media`). The token goes in the `access_token` query parameter as
//! the Graph API documents (the outbound client never puts queries in
//! messages). Errors are Graph's `{"error": {message, type, code,
//! fbtrace_id}}`: code 190 is a rejected token, codes 4/17/32/613 a rate
//! limit (the work waits `Retry-After`, else half an hour), 100 a media
//! that does not exist (any more) for this token.

use chrono::Duration;
use serde_json::Value;
use shared::outbound::{OutboundRequest, Reply};

use crate::parse::{self, INSTAGRAM_MEDIA_FIELDS};
use crate::run::{Failure, REQUEST_TIMEOUT, Run};

/// The `platform_enum` value.
pub const PLATFORM: &str = "instagram";

/// Media per `/me/media` page.
pub const PAGE_SIZE: &str = "50";

/// `GET /{media-id}?fields=...`: the media, or `None` when Graph says it
/// does not exist for this token (code 100, or 404).
pub fn media(run: &Run, token: &str, media_id: &str) -> Result<Option<Value>, Failure> {
    run.check_pause(PLATFORM)?;
    let url = format!("{}/{media_id}", run.config.instagram_graph_url);
    let reply = send(
        OutboundRequest::get(&url)
            .query(&[("fields", INSTAGRAM_MEDIA_FIELDS), ("access_token", token)]),
    )?;
    if reply.status == 404 || parse::graph_error(&reply.body).is_some_and(|e| e.code == 100) {
        return Ok(None);
    }
    accept(run, &reply)?;
    decode(&reply).map(Some)
}

/// `GET /me/media?fields=...&limit=50[&after=cursor]`: one page.
pub fn media_page(run: &Run, token: &str, after: Option<&str>) -> Result<Value, Failure> {
    run.check_pause(PLATFORM)?;
    let url = format!("{}/me/media", run.config.instagram_graph_url);
    let mut query = vec![
        ("fields", INSTAGRAM_MEDIA_FIELDS),
        ("limit", PAGE_SIZE),
        ("access_token", token),
    ];
    if let Some(after) = after {
        query.push(("after", after));
    }
    let reply = send(OutboundRequest::get(&url).query(&query))?;
    accept(run, &reply)?;
    decode(&reply)
}

fn send(request: OutboundRequest) -> Result<Reply, Failure> {
    request.timeout(REQUEST_TIMEOUT).send().map_err(|e| {
        if e.is_transient() {
            Failure::transient(e.to_string())
        } else {
            Failure::permanent(e.to_string())
        }
    })
}

fn accept(run: &Run, reply: &Reply) -> Result<(), Failure> {
    if reply.is_success() {
        return Ok(());
    }
    let graph = parse::graph_error(&reply.body);
    let message = match &graph {
        Some(e) => format!("{} ({} code {})", e.message, e.kind, e.code),
        None => parse::truncate(reply.text().trim(), 200),
    };
    let rate_limited = reply.status == 429 || graph.as_ref().is_some_and(|e| e.is_rate_limit());
    if rate_limited {
        let now = run.now();
        let wait = reply.retry_after_seconds().unwrap_or(1800).min(86_400);
        let until = now + Duration::seconds(i64::try_from(wait).unwrap_or(1800));
        let reason = format!("Instagram answered {}: {message}", reply.status);
        run.pause(PLATFORM, until, &reason)?;
        return Err(Failure::RateLimited {
            platform: PLATFORM,
            until,
            reason,
        });
    }
    if reply.status == 401 || graph.as_ref().is_some_and(|e| e.is_token_rejected()) {
        return Err(Failure::TokenRejected {
            account_id: None,
            message: format!("Instagram answered {}: {message}", reply.status),
        });
    }
    if reply.status >= 500 {
        return Err(Failure::Transient {
            message: format!("Instagram answered {}: {message}", reply.status),
            retry_after: reply.retry_after_seconds(),
        });
    }
    Err(Failure::permanent(format!(
        "Instagram answered {}: {message}",
        reply.status
    )))
}

fn decode(reply: &Reply) -> Result<Value, Failure> {
    reply
        .json::<Value>()
        .map_err(|e| Failure::transient(e.to_string()))
}

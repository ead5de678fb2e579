//! The Strava API calls of ingest (`PLATFORMS.md`, Strava): one activity,
//! the athlete's activity list (the token refresh is `shared::oauth`, through
//! `shared::token_refresh`). Every answer's
//! `X-RateLimit-*` / `X-ReadRateLimit-*` headers are read: a used-up window
//! pauses Strava for the run and in the database until the window ends (the
//! next quarter hour, or the next UTC day), and a 429 does the same (or
//! waits `Retry-After`), so the work waits instead of failing. A 401 is a
//! rejected token.

use chrono::Duration;
use serde_json::Value;
use shared::outbound::{OutboundRequest, Reply};

use crate::parse::{self, StravaUsage};
use crate::run::{Failure, REQUEST_TIMEOUT, Run};

/// The `platform_enum` value.
pub const PLATFORM: &str = "strava";

/// `GET /api/v3/activities/{id}`: the detailed activity, or `None` when
/// Strava does not have it for this token (404: deleted, or private without
/// `activity:read_all`).
pub fn activity(run: &Run, token: &str, id: &str) -> Result<Option<Value>, Failure> {
    run.check_pause(PLATFORM)?;
    let url = format!("{}/api/v3/activities/{id}", run.config.strava_api_url);
    let reply = send(run, OutboundRequest::get(&url).bearer(token))?;
    if reply.status == 404 {
        return Ok(None);
    }
    accept(run, &reply)?;
    decode(&reply).map(Some)
}

/// `GET /api/v3/athlete/activities` with `params` (`before`, `after`,
/// `page`, `per_page`): a JSON array of summary activities.
pub fn activities(run: &Run, token: &str, params: &[(&str, &str)]) -> Result<Value, Failure> {
    run.check_pause(PLATFORM)?;
    let url = format!("{}/api/v3/athlete/activities", run.config.strava_api_url);
    let reply = send(run, OutboundRequest::get(&url).bearer(token).query(params))?;
    accept(run, &reply)?;
    decode(&reply)
}

fn send(run: &Run, request: OutboundRequest) -> Result<Reply, Failure> {
    let reply = request.timeout(REQUEST_TIMEOUT).send().map_err(|e| {
        if e.is_transient() {
            Failure::transient(e.to_string())
        } else {
            Failure::permanent(e.to_string())
        }
    })?;
    note_usage(run, &reply)?;
    Ok(reply)
}

/// Pauses Strava when a window is used up (the request that used it up got
/// its answer; the next one would be refused).
fn note_usage(run: &Run, reply: &Reply) -> Result<(), Failure> {
    let now = run.now();
    let pairs = [
        ("x-ratelimit-limit", "x-ratelimit-usage", "X-RateLimit"),
        (
            "x-readratelimit-limit",
            "x-readratelimit-usage",
            "X-ReadRateLimit",
        ),
    ];
    for (limit, usage, name) in pairs {
        if let Some(usage) = StravaUsage::parse(reply.header(limit), reply.header(usage))
            && let Some(until) = usage.resume_at(now)
        {
            let reason = format!(
                "{name} usage {},{} of {},{}",
                usage.short_usage, usage.daily_usage, usage.short_limit, usage.daily_limit
            );
            run.pause(PLATFORM, until, &reason)?;
        }
    }
    Ok(())
}

/// Maps a non-2xx answer to its failure.
fn accept(run: &Run, reply: &Reply) -> Result<(), Failure> {
    if reply.is_success() {
        return Ok(());
    }
    let message = parse::strava_message(&reply.body);
    Err(match reply.status {
        429 => {
            let now = run.now();
            let until = reply
                .retry_after_seconds()
                .map(|s| now + Duration::seconds(i64::try_from(s.min(86_400)).unwrap_or(900)))
                .or_else(|| run.paused_until(PLATFORM))
                .unwrap_or_else(|| parse::next_quarter_hour(now));
            let reason = format!("429 from Strava: {message}");
            run.pause(PLATFORM, until, &reason)?;
            Failure::RateLimited {
                platform: PLATFORM,
                until,
                reason,
            }
        }
        401 => Failure::TokenRejected {
            account_id: None,
            message: format!("Strava answered 401: {message}"),
        },
        status if status >= 500 => Failure::Transient {
            message: format!("Strava answered {status}: {message}"),
            retry_after: reply.retry_after_seconds(),
        },
        status => Failure::permanent(format!("Strava answered {status}: {message}")),
    })
}

fn decode(reply: &Reply) -> Result<Value, Failure> {
    reply
        .json::<Value>()
        .map_err(|e| Failure::transient(e.to_string()))
}

//! `adapt` (Nexus, seed 002): one idea, every platform's post, in the
//! user's voice.
//!
//! Routes, each with the user's Supabase access token (`Authorization:
//! Bearer <jwt>`, `supabase_jwt_secret`):
//!
//! - `POST /adapt` `{idea, platforms: [linkedin|x|bluesky|substack],
//!   voice_profile_id?, tone?, target_audience?, force?}`: 201 with the
//!   stored `content_adaptations` row, `adaptations` in the seed's shape
//!   (`linkedin {text, hashtags}`, `x {text, thread}`, `bluesky {text}`,
//!   `substack {title, body}`); 200 with the stored row when the same idea
//!   with the same options (`idea_hash`) was adapted before, unless `force`.
//!   Without `voice_profile_id` the user's default profile is used.
//! - `POST /adapt/{id}/regenerate` `{platform}`: 200 with the row, that
//!   platform's variant written again.
//! - `GET /adapt/{id}`: 200 with the row.
//!
//! The model: any OpenAI-compatible chat completions API (`adapt_api_url`
//! origin + `adapt_api_base_path`, `adapt_model`, `adapt_api_key` or else
//! `venice_api_key`; Venice by default), asked for structured output
//! (`adapt_response_format`: `json_schema` or `json_object`), with
//! `adapt_timeout_seconds` (120) for the first byte. Prompts come from the
//! `prompts` table. `ai_text_daily_limit` calls per user per UTC day,
//! reserved before each call (429 with `resets_at` and `Retry-After` over
//! it); provider 429/5xx/timeouts answer 503 with `Retry-After`.

pub mod adapt;
pub mod config;
pub mod error;
pub mod model;
pub mod prompt;
pub mod request;
pub mod sql;
pub mod variants;

use shared::user_token;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;
use uuid::Uuid;

use crate::config::Config;
use crate::error::Result;

#[http_component]
fn handle(request: Request) -> Response {
    route(&request).unwrap_or_else(|e| e.response())
}

fn route(request: &Request) -> Result<Response> {
    let config = Config::load()?;
    if config.supabase_jwt_secret.is_empty() {
        return Err(shared::Error::Config(
            "variable `supabase_jwt_secret` is empty: adapt needs it to know the user".into(),
        )
        .into());
    }
    let user = user_token::user_id(
        request.header("authorization").and_then(|v| v.as_str()),
        &config.supabase_jwt_secret,
        now_seconds(),
    )?;
    let method = request.method();
    let segments = path_segments(request);
    match (method, segments.as_slice()) {
        (Method::Post, []) => adapt::create(&config, user, request.body()),
        (Method::Get, [id]) => adapt::get(&config, user, parse_id(id)?),
        (Method::Post, [id, "regenerate"]) => {
            adapt::regenerate(&config, user, parse_id(id)?, request.body())
        }
        (_, []) | (_, [_]) | (_, [_, "regenerate"]) => {
            Err(shared::Error::MethodNotAllowed(method.to_string()).into())
        }
        _ => Err(shared::Error::NotFound(format!("no route {}", request.path())).into()),
    }
}

/// The path below `/adapt`, from Spin's `spin-path-info` (else the path).
fn path_segments(request: &Request) -> Vec<&str> {
    let info = request
        .header("spin-path-info")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| request.path().strip_prefix("/adapt").unwrap_or(""));
    info.split('/').filter(|s| !s.is_empty()).collect()
}

fn parse_id(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| adapt::not_found())
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

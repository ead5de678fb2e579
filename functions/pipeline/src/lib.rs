//! `pipeline`: the job tracker of seed 003. A user starts a run, bots report
//! events and upload artifacts (size, type and SHA-256 checked), and the
//! dashboard follows the run by an exact cursor.
//!
//! Users (Supabase access token, `supabase_jwt_secret`):
//! `POST /pipeline/runs {project_spec}`, `GET /pipeline/runs/{run_id}`,
//! `POST /pipeline/runs/{run_id}/cancel`,
//! `GET /pipeline/runs/{run_id}/events?after=&limit=&wait=`,
//! `POST /pipeline/bot-tokens {bot_name?}` (the token is shown once),
//! `GET /pipeline/bot-tokens`, `DELETE /pipeline/bot-tokens/{id}`.
//!
//! Bots (`Authorization: Bearer <bot token>`):
//! `POST /pipeline/runs/{run_id}/events {bot_name, event_type, payload,
//! event_id?}`, `POST /pipeline/runs/{run_id}/artifacts` (the file as the
//! body), `POST /pipeline/runs/{run_id}/artifact-links {url, sha256}`.
//!
//! Job: the cron trigger and `POST /jobs/pipeline` (`job_secret`) check
//! registered links ([`verify`]). Every request is one SQL function of
//! migration 0026, which re-checks ownership itself.

pub mod artifacts;
pub mod auth;
pub mod bots;
pub mod error;
pub mod request;
pub mod runs;
pub mod sql;
pub mod verify;

use serde_json::json;
use shared::db::Database;
use shared::jobs::{self, Trigger};
use shared::{Error, config};
use spin_sdk::http::{IncomingRequest, Method, Response};
use spin_sdk::http_component;
use subtle::ConstantTimeEq;

use crate::error::{PipelineError, Result};
use crate::request::Call;

/// The routes, by path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/pipeline/runs`
    Runs,
    /// `/pipeline/runs/{run_id}`
    Run(&'a str),
    /// `/pipeline/runs/{run_id}/cancel`
    Cancel(&'a str),
    /// `/pipeline/runs/{run_id}/events`
    Events(&'a str),
    /// `/pipeline/runs/{run_id}/artifacts`
    Artifacts(&'a str),
    /// `/pipeline/runs/{run_id}/artifact-links`
    ArtifactLinks(&'a str),
    /// `/pipeline/bot-tokens`
    BotTokens,
    /// `/pipeline/bot-tokens/{id}`
    BotToken(&'a str),
    /// `/jobs/pipeline`
    Job,
}

impl<'a> Route<'a> {
    /// The route of `path`, if any (run ids are `[A-Za-z0-9_.-]{1,100}`).
    pub fn parse(path: &'a str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let run = |id: &'a str| {
            (!id.is_empty()
                && id.len() <= 100
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)))
            .then_some(id)
        };
        Some(match segments.as_slice() {
            ["jobs", "pipeline"] => Route::Job,
            ["pipeline", "runs"] => Route::Runs,
            ["pipeline", "runs", id] => Route::Run(run(id)?),
            ["pipeline", "runs", id, "cancel"] => Route::Cancel(run(id)?),
            ["pipeline", "runs", id, "events"] => Route::Events(run(id)?),
            ["pipeline", "runs", id, "artifacts"] => Route::Artifacts(run(id)?),
            ["pipeline", "runs", id, "artifact-links"] => Route::ArtifactLinks(run(id)?),
            ["pipeline", "bot-tokens"] => Route::BotTokens,
            ["pipeline", "bot-tokens", id] => Route::BotToken(id),
            _ => return None,
        })
    }
}

#[http_component]
fn handle(request: IncomingRequest) -> Response {
    let mut call = Call::new(request);
    on_http(&mut call).unwrap_or_else(|e| e.response())
}

fn on_http(call: &mut Call) -> Result<Response> {
    let path = call.path.clone();
    let route =
        Route::parse(&path).ok_or_else(|| PipelineError::not_found("no such pipeline route"))?;
    let method = call.method.clone();
    let not_allowed = |method: &Method| -> Result<Response> {
        Err(Error::MethodNotAllowed(method.to_string()).into())
    };
    match (&route, &method) {
        (Route::Job, Method::Post) => return job(call),
        (Route::Job, _) => return not_allowed(&method),
        // Bot routes: the bot token is checked by the SQL call.
        (Route::Events(id), Method::Post) => return bots::record_event(call, &db()?, id),
        (Route::Artifacts(id), Method::Post) => return bots::upload_artifact(call, &db()?, id),
        (Route::ArtifactLinks(id), Method::Post) => return bots::register_link(call, &db()?, id),
        _ => {}
    }
    let user = auth::user(call)?;
    match (route, &method) {
        (Route::Runs, Method::Post) => runs::create(call, &db()?, user),
        (Route::Run(id), Method::Get) => runs::show(&db()?, user, id),
        (Route::Cancel(id), Method::Post) => runs::cancel(&db()?, user, id),
        (Route::Events(id), Method::Get) => runs::events(call, &db()?, user, id),
        (Route::BotTokens, Method::Post) => runs::mint_token(call, &db()?, user),
        (Route::BotTokens, Method::Get) => runs::list_tokens(&db()?, user),
        (Route::BotToken(id), Method::Delete) => runs::revoke_token(&db()?, user, id),
        _ => not_allowed(&method),
    }
}

fn db() -> Result<Database> {
    Ok(Database::open(&config::database_url()?)?)
}

/// `POST /jobs/pipeline` with `Authorization: Bearer <job_secret>`.
fn job(call: &Call) -> Result<Response> {
    let secret = config::required("job_secret")?;
    let token = call
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| Error::Unauthorized("Authorization must be `Bearer <job secret>`".into()))?;
    if !bool::from(token.as_bytes().ct_eq(secret.as_bytes())) {
        return Err(Error::Unauthorized("job secret does not match".into()).into());
    }
    let report = jobs::run(verify::WORKER, Trigger::Http, verify::run)?;
    Ok(shared::response::json(
        200,
        &json!({ "job": verify::WORKER, "report": report }),
    ))
}

fn on_cron(timestamp: u64) -> std::result::Result<(), String> {
    jobs::run(verify::WORKER, Trigger::Cron(timestamp), verify::run)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_refuse_odd_run_ids() {
        assert_eq!(Route::parse("/pipeline/runs"), Some(Route::Runs));
        assert_eq!(Route::parse("/pipeline/runs/"), Some(Route::Runs));
        assert_eq!(
            Route::parse("/pipeline/runs/run_1"),
            Some(Route::Run("run_1"))
        );
        assert_eq!(
            Route::parse("/pipeline/runs/run_1/events"),
            Some(Route::Events("run_1"))
        );
        assert_eq!(
            Route::parse("/pipeline/runs/run_1/artifact-links"),
            Some(Route::ArtifactLinks("run_1"))
        );
        assert_eq!(
            Route::parse("/pipeline/bot-tokens/abc"),
            Some(Route::BotToken("abc"))
        );
        assert_eq!(Route::parse("/jobs/pipeline"), Some(Route::Job));
        assert_eq!(Route::parse("/pipeline/runs/a%20b"), None);
        assert_eq!(Route::parse("/pipeline/runs/x/nope"), None);
        assert_eq!(Route::parse("/pipeline"), None);
    }
}

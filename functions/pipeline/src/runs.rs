//! The signed-in user's routes: runs (create, read, cancel, follow) and
//! the bot tokens they give their bots.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use shared::db::Database;
use spin_sdk::http::Response;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::auth;
use crate::error::{PipelineError, Result};
use crate::request::Call;
use crate::sql;

/// The largest project spec accepted.
pub const MAX_SPEC_BYTES: u64 = 1024 * 1024;
/// Events shown with a run; the rest are paged with `/events?after=`.
pub const RUN_EVENT_PAGE: i32 = 100;
/// The longest a follower's request waits for new events.
pub const MAX_WAIT: Duration = Duration::from_secs(25);
/// How often a waiting follower looks again.
const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRun {
    project_spec: Value,
}

/// `POST /pipeline/runs {project_spec}`: 201 with the run (its `run_id`).
pub fn create(call: &mut Call, db: &Database, user: Uuid) -> Result<Response> {
    let body = call.read_body(MAX_SPEC_BYTES)?;
    let new: NewRun = serde_json::from_slice(&body).map_err(|e| {
        PipelineError::bad_request(format!("expected {{\"project_spec\": {{...}}}}: {e}"))
    })?;
    if !new.project_spec.is_object() {
        return Err(PipelineError::bad_request(
            "project_spec must be a JSON object",
        ));
    }
    let answer: Value = db.call(&sql::CREATE_RUN, &[uuid(user), jsonb(&new.project_spec)])?;
    if answer["created"] != json!(true) {
        return Err(PipelineError::Forbidden {
            reason: text(&answer, "reason"),
            message: text(&answer, "message"),
        });
    }
    let run = &answer["run"];
    Ok(shared::response::json(
        201,
        &json!({ "run_id": run["run_id"], "run": run }),
    ))
}

/// `GET /pipeline/runs/{run_id}`: the run, its first events, its artifacts.
pub fn show(db: &Database, user: Uuid, run_id: &str) -> Result<Response> {
    let read = || -> Result<Value> {
        let answer: Value = db.call(
            &sql::RUN_FOR_USER,
            &[
                uuid(user),
                run_id.to_string().into(),
                ParameterValue::Int32(RUN_EVENT_PAGE),
            ],
        )?;
        found(&answer)?;
        Ok(answer)
    };
    let mut answer = read()?;
    let due = answer["artifacts"]
        .as_array()
        .is_some_and(|all| all.iter().any(|a| a["verification"] == "pending"));
    if due {
        // Links the bots registered are checked when their owner looks.
        crate::verify::check_links(db, Some(run_id), crate::verify::ON_READ_BUDGET)?;
        answer = read()?;
    }
    add_download_links(&mut answer);
    Ok(shared::response::json(200, &answer))
}

/// How long an artifact's download link stays valid.
pub const DOWNLOAD_LINK_TTL: Duration = Duration::from_secs(300);

/// Gives each stored artifact a `download_url`: a presigned GET valid five
/// minutes, so the owner's dashboard can fetch it without the store's keys.
/// A store that is not configured leaves the links out.
fn add_download_links(answer: &mut Value) {
    let Ok(config) = shared::object_store::StoreConfig::from_variables() else {
        return;
    };
    let store = shared::object_store::ObjectStore::new(config, Duration::from_secs(10));
    let Some(artifacts) = answer["artifacts"].as_array_mut() else {
        return;
    };
    for artifact in artifacts {
        let (Some(key), Some(bucket)) = (
            artifact["object_key"].as_str().map(str::to_string),
            artifact["meta"]["bucket"].as_str().map(str::to_string),
        ) else {
            continue;
        };
        if let Ok(url) = store.presign_get(&bucket, &key, DOWNLOAD_LINK_TTL) {
            artifact["download_url"] = json!(url);
        }
    }
}

/// `POST /pipeline/runs/{run_id}/cancel`: 200 with the run; 409 once it has
/// completed or failed.
pub fn cancel(db: &Database, user: Uuid, run_id: &str) -> Result<Response> {
    let answer: Value = db.call(&sql::CANCEL_RUN, &[uuid(user), run_id.to_string().into()])?;
    if let Some(refused) = crate::error::refusal(&answer) {
        return Err(refused);
    }
    Ok(shared::response::json(
        200,
        &json!({ "run": answer["run"], "changed": answer["outcome"] == "cancelled" }),
    ))
}

/// `GET /pipeline/runs/{run_id}/events?after=<seq>&limit=<n>&wait=<s>`:
/// events after the cursor in order; with `wait`, holds the request until
/// one arrives or the wait ends (long poll).
pub fn events(call: &Call, db: &Database, user: Uuid, run_id: &str) -> Result<Response> {
    let after: i64 = number(call, "after")?.unwrap_or(0);
    if after < 0 {
        return Err(PipelineError::bad_request("after must be 0 or more"));
    }
    let limit = number(call, "limit")?.unwrap_or(100).clamp(1, 1000);
    let wait = number(call, "wait")?
        .map(|s: u64| Duration::from_secs(s).min(MAX_WAIT))
        .unwrap_or_default();
    let deadline = Instant::now() + wait;
    loop {
        let answer: Value = db.call(
            &sql::RUN_EVENTS,
            &[
                uuid(user),
                run_id.to_string().into(),
                ParameterValue::Int64(after),
                ParameterValue::Int32(limit),
            ],
        )?;
        found(&answer)?;
        let empty = answer["events"].as_array().is_none_or(Vec::is_empty);
        let finished = matches!(
            answer["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        );
        if !empty || finished || Instant::now() + POLL_EVERY > deadline {
            return Ok(shared::response::json(200, &answer));
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewToken {
    bot_name: Option<String>,
}

/// `POST /pipeline/bot-tokens {bot_name?}`: 201 with the token, shown only
/// in this answer. Without `bot_name` the token speaks for any bot of the
/// user (each event names its bot); with it, for that bot only.
pub fn mint_token(call: &mut Call, db: &Database, user: Uuid) -> Result<Response> {
    let body = call.read_body(16 * 1024)?;
    let new: NewToken = if body.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            PipelineError::bad_request(format!("expected {{\"bot_name\": ...}}: {e}"))
        })?
    };
    if let Some(name) = &new.bot_name {
        crate::bots::check_bot_name(name)?;
    }
    let token = auth::new_token()?;
    let answer: Value = db.call(
        &sql::MINT_BOT_TOKEN,
        &[
            uuid(user),
            new.bot_name
                .map_or(ParameterValue::DbNull, ParameterValue::Str),
            auth::hash(&token).into(),
        ],
    )?;
    if answer["created"] != json!(true) {
        return Err(PipelineError::conflict(
            &text(&answer, "reason"),
            text(&answer, "message"),
        ));
    }
    let mut shown = answer["token"].clone();
    shown["token"] = json!(token);
    let mut response = shared::response::json(201, &shown);
    response.set_header("cache-control", "no-store");
    Ok(response)
}

/// `GET /pipeline/bot-tokens`: the user's tokens, without the secrets.
pub fn list_tokens(db: &Database, user: Uuid) -> Result<Response> {
    let answer: Value = db.call(&sql::LIST_BOT_TOKENS, &[uuid(user)])?;
    Ok(shared::response::json(200, &answer))
}

/// `DELETE /pipeline/bot-tokens/{id}`: revokes the token (at once: the
/// next request with it is refused).
pub fn revoke_token(db: &Database, user: Uuid, id: &str) -> Result<Response> {
    let id = Uuid::parse_str(id).map_err(|_| PipelineError::not_found("no such bot token"))?;
    let answer: Value = db.call(&sql::REVOKE_BOT_TOKEN, &[uuid(user), uuid(id)])?;
    if answer["found"] != json!(true) {
        return Err(PipelineError::not_found("no such bot token"));
    }
    Ok(shared::response::json(200, &answer["token"]))
}

fn found(answer: &Value) -> Result<()> {
    if answer["found"] == json!(true) {
        Ok(())
    } else {
        Err(PipelineError::not_found("no such run"))
    }
}

fn number<T: std::str::FromStr>(call: &Call, name: &str) -> Result<Option<T>> {
    call.query(name)
        .map(|v| {
            v.parse()
                .map_err(|_| PipelineError::bad_request(format!("{name} must be a whole number")))
        })
        .transpose()
}

fn text(answer: &Value, key: &str) -> String {
    answer[key].as_str().unwrap_or_default().to_string()
}

/// A uuid parameter.
pub fn uuid(id: Uuid) -> ParameterValue {
    ParameterValue::Uuid(id.to_string())
}

/// A jsonb parameter.
pub fn jsonb(value: &Value) -> ParameterValue {
    ParameterValue::Jsonb(value.to_string().into_bytes())
}

//! The three routes: adapt an idea, regenerate one platform's variant, read
//! an adaptation back. Every model call is reserved in `ai_text_runs`
//! within the daily limit before it is made, settled with its usage tokens
//! after, and logged in `api_logs`. While a request writes an idea, an
//! identical request waits for its answer instead of paying for a second
//! call (`adapt_ideas_in_flight`, migration 0025).

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use shared::db::Database;
use spin_sdk::http::Response;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::config::{Config, ResponseFormat};
use crate::error::{AdaptError, Result};
use crate::model;
use crate::prompt::{self, Brief, Message, RetryReason, Templates, VoiceProfile};
use crate::request::{self, AdaptRequest, Platform};
use crate::sql;
use crate::variants::{self, Variant};

#[derive(Deserialize)]
struct Prepared {
    ok: bool,
    profile: Option<VoiceProfile>,
    #[serde(default)]
    prompts: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Reservation {
    existing: Option<Value>,
    /// An identical request is writing this idea now.
    #[serde(default)]
    in_flight: bool,
    #[serde(default)]
    retry_after_seconds: u64,
    #[serde(default)]
    allowed: bool,
    run_id: Option<Uuid>,
    #[serde(default)]
    used: i64,
    #[serde(default)]
    limit: i64,
    #[serde(default)]
    resets_at: String,
    #[serde(default)]
    resets_in_seconds: u64,
}

#[derive(Deserialize)]
struct Saved {
    ok: bool,
    /// A twin was stored meanwhile; it is the answer.
    #[serde(default)]
    deduplicated: bool,
    adaptation: Option<Value>,
}

#[derive(Deserialize)]
struct Found {
    found: bool,
    adaptation: Option<Value>,
    profile: Option<VoiceProfile>,
    #[serde(default)]
    prompts: HashMap<String, String>,
}

fn uuid_param(id: Uuid) -> ParameterValue {
    ParameterValue::Uuid(id.to_string())
}

fn text_param(text: Option<&str>) -> ParameterValue {
    text.map_or(ParameterValue::DbNull, |t| {
        ParameterValue::Str(t.to_string())
    })
}

fn json_answer(status: u16, row: &Value) -> Response {
    shared::response::json(status, row)
}

/// What one request has done so far, for its answer and its cleanup.
#[derive(Default)]
struct Progress {
    /// Time spent waiting for the model (or for an identical request's
    /// answer).
    waited: Cell<Duration>,
    /// Whether this request marked its idea as being written.
    marked: Cell<bool>,
}

impl Progress {
    fn add_wait(&self, since: Instant) {
        self.waited.set(self.waited.get() + since.elapsed());
    }
}

/// The answer with `Server-Timing: model;dur=<ms>`: the time spent waiting
/// for the model, so a client (and the benchmark) can tell the model's time
/// from this component's own.
fn timed(mut response: Response, progress: &Progress) -> Response {
    response.set_header(
        "server-timing",
        format!(
            "model;dur={:.3}",
            progress.waited.get().as_secs_f64() * 1000.0
        ),
    );
    response
}

/// How long a request's mark on its idea holds at most: two model calls
/// and a margin. An identical request waits no longer than this.
fn in_flight_seconds(config: &Config) -> u64 {
    (config.timeout.as_secs() * 2 + 10).min(900)
}

/// `POST /adapt`: the stored adaptation (201), or the stored twin with the
/// same `idea_hash` (200) unless `force`.
pub fn create(config: &Config, user: Uuid, body: &[u8]) -> Result<Response> {
    let asked = AdaptRequest::parse(body)?;
    let db = Database::open(&config.database_url)?;
    let prepared: Prepared = db.call(
        &sql::ADAPT_PREPARE,
        &[
            uuid_param(user),
            asked
                .voice_profile_id
                .map_or(ParameterValue::DbNull, uuid_param),
        ],
    )?;
    if !prepared.ok {
        return Err(AdaptError::VoiceProfileNotFound(format!(
            "voice profile {} is not one of yours",
            asked
                .voice_profile_id
                .map(|id| id.to_string())
                .unwrap_or_default()
        )));
    }
    let profile = prepared.profile;
    let idea_hash = asked.idea_hash(profile.as_ref().map(|p| p.id));
    let templates = Templates::new(prepared.prompts);
    let brief = Brief {
        idea: &asked.idea,
        platforms: &asked.platforms,
        tone: asked.tone.as_deref(),
        target_audience: asked.target_audience.as_deref(),
        profile: profile.as_ref(),
        schema_in_prompt: config.response_format == ResponseFormat::JsonObject,
    };
    let messages = prompt::messages(&templates, &brief)?;
    let progress = Progress::default();
    let new = NewAdaptation {
        asked: &asked,
        idea_hash: &idea_hash,
        profile_id: profile.as_ref().map(|p| p.id),
    };
    let stored = write_and_store(&db, config, user, &new, &templates, messages, &progress);
    if progress.marked.get() && !matches!(stored, Ok((201, _))) {
        // Gave up, or a twin was stored meanwhile: a request waiting for
        // this idea goes ahead now rather than when the mark expires.
        if let Err(e) = db.call_json(
            &sql::ADAPT_RELEASE_IDEA,
            &[uuid_param(user), ParameterValue::Str(idea_hash)],
        ) {
            eprintln!("adapt: releasing the idea's in-flight mark failed: {e}");
        }
    }
    let (status, row) = stored?;
    Ok(timed(json_answer(status, &row), &progress))
}

/// One `POST /adapt` as [`write_and_store`] needs it.
struct NewAdaptation<'a> {
    asked: &'a AdaptRequest,
    idea_hash: &'a str,
    profile_id: Option<Uuid>,
}

/// The model's variants for a new adaptation, stored: `(201, row)`, or the
/// stored twin `(200, row)`.
fn write_and_store(
    db: &Database,
    config: &Config,
    user: Uuid,
    new: &NewAdaptation<'_>,
    templates: &Templates,
    messages: Vec<Message>,
    progress: &Progress,
) -> Result<(u16, Value)> {
    let asked = new.asked;
    let dedupe = (!asked.force).then_some(new.idea_hash);
    let generated = generate(
        db,
        config,
        user,
        templates,
        messages,
        &asked.platforms,
        dedupe,
        progress,
    )?;
    let variants = match generated {
        Generated::Existing(row) => return Ok((200, row)),
        Generated::Variants(variants) => variants,
    };
    let adaptations: Map<String, Value> = variants
        .iter()
        .map(|v| (v.platform().key().to_string(), v.to_json()))
        .collect();
    let saved: Saved = db.call(
        &sql::ADAPT_SAVE,
        &[
            uuid_param(user),
            ParameterValue::Str(asked.idea.clone()),
            ParameterValue::Str(new.idea_hash.to_string()),
            new.profile_id.map_or(ParameterValue::DbNull, uuid_param),
            text_param(asked.tone.as_deref()),
            text_param(asked.target_audience.as_deref()),
            ParameterValue::Jsonb(Value::Object(adaptations).to_string().into_bytes()),
            ParameterValue::Boolean(asked.force),
        ],
    )?;
    match (saved.ok, saved.adaptation) {
        (true, Some(row)) => Ok((if saved.deduplicated { 200 } else { 201 }, row)),
        // The profile was deleted or moved while the model wrote.
        _ => Err(AdaptError::VoiceProfileNotFound(
            "the voice profile is no longer one of yours".into(),
        )),
    }
}

/// `POST /adapt/{id}/regenerate` `{platform}`: that platform's variant
/// written again, the others kept.
pub fn regenerate(config: &Config, user: Uuid, id: Uuid, body: &[u8]) -> Result<Response> {
    let platform = request::parse_regenerate(body)?;
    let db = Database::open(&config.database_url)?;
    let found: Found = db.call(&sql::ADAPT_CONTEXT, &[uuid_param(id), uuid_param(user)])?;
    let (true, Some(row)) = (found.found, found.adaptation) else {
        return Err(not_found());
    };
    let text = |key: &str| row.get(key).and_then(Value::as_str).map(str::to_string);
    let idea = text("original_idea").unwrap_or_default();
    let (tone, audience) = (text("tone"), text("target_audience"));
    let templates = Templates::new(found.prompts);
    let platforms = [platform];
    let brief = Brief {
        idea: &idea,
        platforms: &platforms,
        tone: tone.as_deref(),
        target_audience: audience.as_deref(),
        profile: found.profile.as_ref(),
        schema_in_prompt: config.response_format == ResponseFormat::JsonObject,
    };
    let messages = prompt::messages(&templates, &brief)?;
    let progress = Progress::default();
    let Generated::Variants(variants) = generate(
        &db, config, user, &templates, messages, &platforms, None, &progress,
    )?
    else {
        return Err(AdaptError::Shared(shared::Error::Database(
            "adapt_reserve_run answered a stored adaptation without an idea hash".into(),
        )));
    };
    let variant = variants
        .into_iter()
        .next()
        .ok_or_else(|| AdaptError::InvalidAnswer("the model wrote no variant".into()))?;
    let saved: Found = db.call(
        &sql::ADAPT_SAVE_PLATFORM,
        &[
            uuid_param(id),
            uuid_param(user),
            ParameterValue::Str(platform.key().to_string()),
            ParameterValue::Jsonb(variant.to_json().to_string().into_bytes()),
        ],
    )?;
    match (saved.found, saved.adaptation) {
        (true, Some(row)) => Ok(timed(json_answer(200, &row), &progress)),
        _ => Err(not_found()),
    }
}

/// `GET /adapt/{id}`: one of the user's adaptations.
pub fn get(config: &Config, user: Uuid, id: Uuid) -> Result<Response> {
    let db = Database::open(&config.database_url)?;
    let found: Found = db.call(&sql::ADAPT_GET, &[uuid_param(id), uuid_param(user)])?;
    match (found.found, found.adaptation) {
        (true, Some(row)) => Ok(json_answer(200, &row)),
        _ => Err(not_found()),
    }
}

/// The one 404 for unknown ids and other users' adaptations alike.
pub fn not_found() -> AdaptError {
    AdaptError::NotFound("no such adaptation".into())
}

enum Generated {
    /// A stored adaptation with the same idea hash.
    Existing(Value),
    /// Fresh variants, one per platform asked, each within its limit.
    Variants(Vec<Variant>),
}

/// Why an answer cannot be stored as it is.
enum Problem {
    /// Not the JSON asked for.
    Invalid(String),
    /// Valid, but these platforms' variants are over their limits; the
    /// others are kept.
    TooLong {
        kept: Vec<Variant>,
        over: Vec<Platform>,
        why: String,
    },
}

fn evaluate(content: &str, platforms: &[Platform]) -> std::result::Result<Vec<Variant>, Problem> {
    let parsed = variants::parse(content, platforms).map_err(Problem::Invalid)?;
    let mut kept = Vec::new();
    let mut over = Vec::new();
    let mut why = Vec::new();
    for variant in parsed {
        let platform = variant.platform();
        match variants::fit(variant) {
            Ok(v) => kept.push(v),
            Err(problem) => {
                over.push(platform);
                why.push(problem);
            }
        }
    }
    if over.is_empty() {
        Ok(kept)
    } else {
        Err(Problem::TooLong {
            kept,
            over,
            why: why.join("; "),
        })
    }
}

/// Asks the model (at most twice: an unusable or over-long answer is asked
/// for once more), each call reserved, settled and logged; `progress` adds
/// up the time waited for the model.
#[allow(clippy::too_many_arguments)] // one call site per route; a struct would only rename them
fn generate(
    db: &Database,
    config: &Config,
    user: Uuid,
    templates: &Templates,
    messages: Vec<Message>,
    platforms: &[Platform],
    dedupe: Option<&str>,
    progress: &Progress,
) -> Result<Generated> {
    let first = match call(db, config, user, &messages, platforms, dedupe, progress)? {
        Called::Existing(row) => return Ok(Generated::Existing(row)),
        Called::Answered(content) => content,
    };
    let (reason, problem, ask, mut kept) = match evaluate(&first, platforms) {
        Ok(variants) => return Ok(Generated::Variants(variants)),
        Err(Problem::Invalid(why)) => (RetryReason::Invalid, why, platforms.to_vec(), Vec::new()),
        Err(Problem::TooLong { kept, over, why }) => (RetryReason::TooLong, why, over, kept),
    };
    let retry = prompt::retry_messages(templates, &messages, &first, reason, &problem, &ask)?;
    let Called::Answered(second) = call(db, config, user, &retry, &ask, None, progress)? else {
        return Err(AdaptError::Shared(shared::Error::Database(
            "adapt_reserve_run answered a stored adaptation without an idea hash".into(),
        )));
    };
    match evaluate(&second, &ask) {
        Ok(fixed) => {
            kept.extend(fixed);
            kept.sort_by_key(Variant::platform);
            Ok(Generated::Variants(kept))
        }
        Err(Problem::Invalid(why)) => Err(AdaptError::InvalidAnswer(format!(
            "the model's answer was unusable twice (first: {problem}; then: {why})"
        ))),
        Err(Problem::TooLong { why, .. }) => Err(AdaptError::TooLong(format!(
            "still over the platform limit after asking again: {why}"
        ))),
    }
}

enum Called {
    Existing(Value),
    Answered(String),
}

/// One model call: reserve (or find the stored twin, waiting while an
/// identical request writes it), call, then settle and log it in one
/// statement.
fn call(
    db: &Database,
    config: &Config,
    user: Uuid,
    messages: &[Message],
    platforms: &[Platform],
    dedupe: Option<&str>,
    progress: &Progress,
) -> Result<Called> {
    let bound = in_flight_seconds(config);
    let waiting = Instant::now();
    let mut pause = Duration::from_millis(100);
    let mut waited = false;
    let reservation: Reservation = loop {
        let reservation: Reservation = db.call(
            &sql::ADAPT_RESERVE_RUN,
            &[
                uuid_param(user),
                ParameterValue::Str(config.provider.clone()),
                ParameterValue::Str(config.model.clone()),
                ParameterValue::Str(prompt::prompt_hash(messages)),
                ParameterValue::Int32(config.daily_limit),
                text_param(dedupe),
                ParameterValue::Int32(i32::try_from(bound).unwrap_or(900)),
            ],
        )?;
        if !reservation.in_flight {
            break reservation;
        }
        // An identical request is writing this idea: its answer, not a
        // second paid call, is this one's.
        if waiting.elapsed() >= Duration::from_secs(bound) {
            progress.add_wait(waiting);
            return Err(AdaptError::StillWriting {
                retry_after: reservation.retry_after_seconds.max(1),
            });
        }
        std::thread::sleep(pause);
        waited = true;
        pause = (pause * 2).min(Duration::from_secs(1));
    };
    if waited {
        progress.add_wait(waiting);
    }
    if let Some(row) = reservation.existing {
        return Ok(Called::Existing(row));
    }
    let (true, Some(run_id)) = (reservation.allowed, reservation.run_id) else {
        return Err(AdaptError::DailyLimit {
            used: reservation.used,
            limit: reservation.limit,
            resets_at: reservation.resets_at,
            retry_after: reservation.resets_in_seconds.max(1),
        });
    };
    if dedupe.is_some() {
        progress.marked.set(true);
    }
    let asked_at = Instant::now();
    let (result, logged) = model::complete(config, messages, platforms, user);
    progress.add_wait(asked_at);
    let answered = logged.status_code.is_some_and(|s| (200..300).contains(&s));
    let (input, output) = result
        .as_ref()
        .map(|c| (c.input_tokens, c.output_tokens))
        .unwrap_or((0, 0));
    db.call_json(
        &sql::ADAPT_SETTLE_RUN,
        &[
            uuid_param(run_id),
            uuid_param(user),
            ParameterValue::Int32(input),
            ParameterValue::Int32(output),
            ParameterValue::Boolean(answered),
            // The api_logs row, in the same round trip (no key, no prompt).
            ParameterValue::Jsonb(logged.to_json().to_string().into_bytes()),
        ],
    )?;
    let completion = result?;
    if let Some(refusal) = completion.refusal {
        let short: String = refusal.chars().take(300).collect();
        return Err(AdaptError::Refused(format!(
            "the model declined to write the posts: {short}"
        )));
    }
    // A cut-off answer (`finish_reason: length`) is unfinished JSON, which
    // parsing refuses: it is re-asked like any unusable answer.
    Ok(Called::Answered(completion.content))
}

//! Pending generations -> Replicate predictions.
//!
//! Each claimed generation (charged once at its first claim, 0017) asks
//! `begin_replicate_creation` for a pool token and a slot of the shared
//! budget, then creates the prediction. A 429 cools that token down for its
//! `Retry-After` and a 401 retires it (the admins are told); either way the
//! generation tries the next token, and when none is left it waits
//! (deferred: no attempt used, no second charge). A refused input fails at
//! once with Replicate's words (refunded); a 5xx or timeout is retried with
//! backoff, refunded if it dies.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use shared::Error;
use spin_sdk::pg4::ParameterValue;

use super::api::{self, Answer, Generation, Lora};
use super::{Context, jsonb, sql};

/// How many pool tokens one generation tries in one go.
const TOKENS_PER_GENERATION: usize = 3;

#[derive(Debug, Deserialize)]
struct Begin {
    ok: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    retry_after_seconds: Option<i64>,
    #[serde(default)]
    token_id: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    lora: Option<Lora>,
}

/// Dispatches due generations until none is due, the run's time is up, or
/// `max_generations` were handled; answers counts by outcome.
pub fn run(ctx: &Context<'_>) -> Result<BTreeMap<&'static str, u32>, Error> {
    let mut counts = BTreeMap::new();
    let mut handled = 0u32;
    while ctx.time_left() {
        let room = ctx
            .settings
            .max_generations
            .map(|max| max.saturating_sub(handled));
        if room == Some(0) {
            break;
        }
        let batch_size = room.map_or(ctx.settings.batch_size, |r| r.min(ctx.settings.batch_size));
        let batch: Vec<Generation> = ctx.db.call(
            &sql::CLAIM_NEXT_GENERATIONS,
            &[
                ctx.worker_id.clone().into(),
                int(ctx.settings.lease_seconds),
                int(batch_size),
            ],
        )?;
        if batch.is_empty() {
            break;
        }
        handled += u32::try_from(batch.len()).unwrap_or(u32::MAX);
        for generation in &batch {
            let outcome = dispatch_one(ctx, generation)?;
            *counts.entry(outcome).or_default() += 1;
        }
    }
    Ok(counts)
}

/// Creates one generation's prediction; answers the outcome's name.
fn dispatch_one(ctx: &Context<'_>, generation: &Generation) -> Result<&'static str, Error> {
    let id = ParameterValue::Uuid(generation.id.clone());
    let lease = ParameterValue::Int64(generation.lease_token);
    for _ in 0..TOKENS_PER_GENERATION {
        let begin: Begin = ctx
            .db
            .call(&sql::BEGIN_REPLICATE_CREATION, &[id.clone(), lease.clone()])?;
        if !begin.ok {
            let reason = begin.reason.as_deref().unwrap_or("unknown");
            return match reason {
                "stale_lease" => Ok("stale"),
                "refused" => {
                    let error = begin.error.unwrap_or_else(|| "refused".into());
                    fail(ctx, generation, &error, true, None, None)?;
                    Ok("refused")
                }
                _ => {
                    let wait = begin.retry_after_seconds.unwrap_or(60).clamp(1, 3600);
                    let why = match reason {
                        "budget" => "Replicate's creation budget (per minute) is used up",
                        "no_token" => {
                            "no Replicate token is available (all cooling down or inactive)"
                        }
                        "lora_training" => "the LoRA is still training",
                        _ => "waiting",
                    };
                    defer(ctx, generation, wait, why)?;
                    Ok(match reason {
                        "budget" => "deferred_budget",
                        "no_token" => "deferred_no_token",
                        _ => "deferred",
                    })
                }
            };
        }
        let (Some(token_id), Some(token)) = (begin.token_id, begin.token) else {
            return Err(Error::Database(
                "begin_replicate_creation answered ok without a token".into(),
            ));
        };
        let creation =
            match api::creation(generation, begin.lora.as_ref(), ctx.webhook_url.as_deref()) {
                Ok(creation) => creation,
                Err(why) => {
                    fail(
                        ctx,
                        generation,
                        &format!("refused: {why}"),
                        true,
                        None,
                        None,
                    )?;
                    return Ok("refused");
                }
            };
        let (reply, call) = ctx.send(
            "POST",
            &creation.path,
            &token,
            Some(&creation.body),
            Some(&generation.user_id),
            Some(&generation.model_id),
        );
        let answer = match &reply {
            Ok(reply) => api::answer(reply.status, reply.retry_after_seconds(), &reply.body),
            Err(e) => Answer::Transient(e.to_string(), None),
        };
        match answer {
            Answer::Prediction(prediction_id) => {
                let done: Value = ctx.db.call(
                    &sql::FINISH_REPLICATE_CREATION,
                    &[
                        id.clone(),
                        lease.clone(),
                        prediction_id.into(),
                        jsonb(&call),
                    ],
                )?;
                return Ok(if done.get("accepted") == Some(&Value::Bool(true)) {
                    "created"
                } else {
                    "created_stale"
                });
            }
            Answer::Throttled(seconds, why) => {
                ctx.log_call(&call)?;
                ctx.db.call_json(
                    &sql::RECORD_REPLICATE_TOKEN_ERROR,
                    &[
                        ParameterValue::Uuid(token_id),
                        why.into(),
                        ParameterValue::Int32(i32::try_from(seconds).unwrap_or(3600)),
                    ],
                )?;
            }
            Answer::OutOfCredit(why) => {
                ctx.log_call(&call)?;
                ctx.db.call_json(
                    &sql::RECORD_REPLICATE_TOKEN_ERROR,
                    &[
                        ParameterValue::Uuid(token_id),
                        why.into(),
                        ParameterValue::Int32(3600),
                    ],
                )?;
            }
            Answer::TokenRefused(why) => {
                ctx.log_call(&call)?;
                ctx.db.call_json(
                    &sql::RETIRE_REPLICATE_TOKEN,
                    &[ParameterValue::Uuid(token_id), why.into()],
                )?;
            }
            Answer::Refused(why) => {
                fail(
                    ctx,
                    generation,
                    &format!("Replicate refused the generation: {why}"),
                    true,
                    None,
                    Some(&call),
                )?;
                return Ok("refused");
            }
            Answer::Transient(why, after) => {
                fail(
                    ctx,
                    generation,
                    &format!("Replicate did not create the prediction: {why}"),
                    false,
                    after,
                    Some(&call),
                )?;
                return Ok("retry");
            }
        }
    }
    defer(
        ctx,
        generation,
        5,
        "every Replicate token tried was throttled or refused",
    )?;
    Ok("deferred_no_token")
}

fn fail(
    ctx: &Context<'_>,
    generation: &Generation,
    error: &str,
    permanent: bool,
    retry_after: Option<u64>,
    call: Option<&Value>,
) -> Result<(), Error> {
    ctx.db.call_json(
        &sql::FAIL_REPLICATE_GENERATION,
        &[
            ParameterValue::Uuid(generation.id.clone()),
            ParameterValue::Int64(generation.lease_token),
            error.to_string().into(),
            ParameterValue::Boolean(permanent),
            retry_after.map_or(ParameterValue::DbNull, |s| {
                ParameterValue::Int32(i32::try_from(s).unwrap_or(3600))
            }),
            call.map_or(ParameterValue::DbNull, jsonb),
        ],
    )?;
    Ok(())
}

fn defer(ctx: &Context<'_>, generation: &Generation, seconds: i64, why: &str) -> Result<(), Error> {
    ctx.db.call_json(
        &sql::DEFER_GENERATION,
        &[
            ParameterValue::Uuid(generation.id.clone()),
            ParameterValue::Int64(generation.lease_token),
            ParameterValue::Int32(i32::try_from(seconds).unwrap_or(3600)),
            why.to_string().into(),
        ],
    )?;
    Ok(())
}

fn int(value: u32) -> ParameterValue {
    ParameterValue::Int32(i32::try_from(value).unwrap_or(i32::MAX))
}

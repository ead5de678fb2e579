//! Replicate's news applied to generations: the webhooks the receiver
//! stored (`ingested_items`, platform `replicate`, one per `webhook-id`)
//! in order of `webhook-timestamp`, then arrival (migration 0023), and polls
//! (`GET /v1/predictions/{id}`, `GET /v1/trainings/{id}`, 0023) of
//! predictions and trainings whose webhook never came.
//!
//! Order does not matter for correctness: `apply_replicate_prediction` is
//! monotonic (a finished generation never changes; `starting` and
//! `processing` change nothing), so repeats, reordering and a poll racing
//! a webhook all end in the same row. On `succeeded` every output file is
//! copied into the `generations` bucket first, at
//! `{user_id}/{generation_id}/{index}.{ext}`, and `output_urls` become our
//! copies. `output_thumbs` stays empty: see [`THUMBNAILS`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shared::Error;
use shared::sql::SqlCall;
use spin_sdk::pg4::ParameterValue;

use super::copy::{self, CopyFailure};
use super::{Context, api, jsonb, sql};

/// The bucket of generation outputs (seed 004: public read).
pub const BUCKET: &str = "generations";

/// Why `output_thumbs` stays empty: the seed added it with video support,
/// for poster frames of video outputs; making one means decoding H.264 or
/// VP9, and resizing an image means an image codec, neither of which this
/// component carries (no codec crate is in the allowed set, and a
/// WebAssembly component cannot run ffmpeg). The client shows the image
/// outputs themselves.
pub const THUMBNAILS: &str = "not made: no image or video codec in the component";

/// How one webhook or poll ended.
enum Applied {
    /// Applied, or nothing to do (repeat, late event): the answer.
    Done(Value),
    /// No generation or LoRA has this id (yet): try again later.
    Unknown(String),
    /// A copy or the store failed for now: try again later.
    Retry(String),
}

#[derive(Debug, Deserialize)]
struct WebhookItem {
    id: String,
    lease_token: i64,
    #[serde(default)]
    payload: Value,
}

#[derive(Debug, Deserialize)]
struct Target {
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    finished: bool,
}

/// Applies stored webhooks until none is pending or time is up.
pub fn run_webhooks(ctx: &Context<'_>) -> Result<BTreeMap<&'static str, u32>, Error> {
    let mut counts = BTreeMap::new();
    while ctx.time_left() {
        let batch: Vec<WebhookItem> = ctx.db.call(
            &sql::CLAIM_REPLICATE_WEBHOOKS,
            &[
                ctx.worker_id.clone().into(),
                ParameterValue::Int32(i32::try_from(ctx.settings.lease_seconds).unwrap_or(120)),
                ParameterValue::Int32(20),
            ],
        )?;
        if batch.is_empty() {
            break;
        }
        for item in &batch {
            let outcome = if item.payload.get("id").and_then(Value::as_str).is_none()
                || item.payload.get("status").and_then(Value::as_str).is_none()
            {
                finish_item(
                    ctx,
                    item,
                    Err((
                        "the webhook is not a Replicate prediction (no id or status)".into(),
                        true,
                    )),
                )?;
                "not_a_prediction"
            } else {
                match apply(ctx, &item.payload)? {
                    Applied::Done(answer) => {
                        let name = if answer.get("applied") == Some(&Value::Bool(true)) {
                            "applied"
                        } else {
                            "no_change"
                        };
                        finish_item(ctx, item, Ok(answer))?;
                        name
                    }
                    Applied::Unknown(why) => {
                        finish_item(ctx, item, Err((why, false)))?;
                        "unknown_prediction"
                    }
                    Applied::Retry(why) => {
                        finish_item(ctx, item, Err((why, false)))?;
                        "retry"
                    }
                }
            };
            *counts.entry(outcome).or_default() += 1;
        }
    }
    Ok(counts)
}

fn finish_item(
    ctx: &Context<'_>,
    item: &WebhookItem,
    result: Result<Value, (String, bool)>,
) -> Result<(), Error> {
    let id = ParameterValue::Uuid(item.id.clone());
    let lease = ParameterValue::Int64(item.lease_token);
    match result {
        // Under "outcome": complete_* reads a top-level "status" as the
        // item's own status.
        Ok(answer) => ctx.db.call_json(
            &sql::COMPLETE_INGESTED_ITEM,
            &[id, lease, jsonb(&json!({ "outcome": answer }))],
        )?,
        Err((why, permanent)) => ctx.db.call_json(
            &sql::FAIL_INGESTED_ITEM,
            &[
                id,
                lease,
                why.into(),
                ParameterValue::Boolean(permanent),
                ParameterValue::DbNull,
            ],
        )?,
    };
    Ok(())
}

/// Applies one prediction (a webhook's body or a poll's answer).
fn apply(ctx: &Context<'_>, prediction: &Value) -> Result<Applied, Error> {
    let prediction_id = prediction
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let status = prediction
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let target: Target = ctx.db.call(
        &sql::REPLICATE_PREDICTION_TARGET,
        &[prediction_id.clone().into()],
    )?;
    match target.kind.as_deref() {
        Some("generation") => {}
        Some("lora") => return apply_training(ctx, prediction, &target),
        Some(other) => {
            return Ok(Applied::Done(json!({
                "applied": false, "reason": format!("unknown kind {other}")
            })));
        }
        None => {
            return Ok(Applied::Unknown(format!(
                "no generation has Replicate prediction {prediction_id} (yet)"
            )));
        }
    }
    if target.finished {
        return Ok(Applied::Done(
            json!({"applied": false, "reason": "already_finished", "id": target.id}),
        ));
    }
    let summary = api::summary(prediction);
    if status != "succeeded" {
        let answer = ctx.db.call_json(
            &sql::APPLY_REPLICATE_PREDICTION,
            &[jsonb(&summary), ParameterValue::DbNull],
        )?;
        return Ok(Applied::Done(answer));
    }
    let (Some(store), Some(store_config)) = (&ctx.store, &ctx.store_config) else {
        return Ok(Applied::Retry(
            "the object store is not configured (media_store_*)".into(),
        ));
    };
    let (Some(generation_id), Some(user_id)) = (&target.id, &target.user_id) else {
        return Err(Error::Database(
            "replicate_prediction_target answered a generation without id or user".into(),
        ));
    };
    let mut urls = Vec::new();
    for (index, source) in api::output_urls(prediction).iter().enumerate() {
        let stem = format!("{user_id}/{generation_id}/{index}");
        match copy::copy(
            store,
            BUCKET,
            &stem,
            source,
            ctx.settings.timeout(),
            Duration::from_secs(ctx.settings.transfer_seconds),
        ) {
            Ok(copied) => urls.push(copy::public_url(store_config, BUCKET, &copied.key)),
            Err(CopyFailure::Retry(why)) => {
                return Ok(Applied::Retry(format!("copying output {index}: {why}")));
            }
            Err(CopyFailure::Gone(why)) => {
                let answer = ctx.db.call_json(
                    &sql::FAIL_REPLICATE_OUTPUTS,
                    &[
                        prediction_id.clone().into(),
                        format!("the outputs could not be copied before Replicate deleted them: output {index}: {why}").into(),
                    ],
                )?;
                return Ok(Applied::Done(answer));
            }
        }
    }
    let copies = json!({ "output_urls": urls, "output_thumbs": [], "thumbnails": THUMBNAILS });
    let answer = ctx.db.call_json(
        &sql::APPLY_REPLICATE_PREDICTION,
        &[jsonb(&summary), jsonb(&copies)],
    )?;
    Ok(Applied::Done(answer))
}

/// A training's webhook: on success the weights are copied into
/// `lora-models/{user_id}/{lora_id}/weights.{ext}` first.
fn apply_training(ctx: &Context<'_>, training: &Value, target: &Target) -> Result<Applied, Error> {
    if target.finished {
        return Ok(Applied::Done(
            json!({"applied": false, "reason": "already_finished", "id": target.id}),
        ));
    }
    let mut summary = api::summary(training);
    summary["model"] = training.get("model").cloned().unwrap_or(Value::Null);
    summary["output"] = json!({ "version": training.pointer("/output/version") });
    let status = training
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut copy_answer = Value::Null;
    if status == "succeeded" {
        let (Some(store), Some(lora_id), Some(user_id)) = (&ctx.store, &target.id, &target.user_id)
        else {
            return Ok(Applied::Retry("the object store is not configured".into()));
        };
        let Some(weights) = training.pointer("/output/weights").and_then(Value::as_str) else {
            return Ok(Applied::Done(
                json!({"applied": false, "reason": "no weights in the training output"}),
            ));
        };
        match copy::copy(
            store,
            super::train::MODELS_BUCKET,
            &format!("{user_id}/{lora_id}/weights"),
            weights,
            ctx.settings.timeout(),
            Duration::from_secs(ctx.settings.transfer_seconds),
        ) {
            Ok(copied) => {
                let url = ctx
                    .store_config
                    .as_ref()
                    .map(|c| copy::public_url(c, super::train::MODELS_BUCKET, &copied.key));
                copy_answer = json!({
                    "storage_path": format!("{}/{}", super::train::MODELS_BUCKET, copied.key),
                    "weights_url": url,
                });
            }
            Err(CopyFailure::Retry(why)) => {
                return Ok(Applied::Retry(format!("copying the weights: {why}")));
            }
            Err(CopyFailure::Gone(why)) => {
                summary["status"] = json!("failed");
                summary["error"] = json!(format!("the trained weights could not be copied: {why}"));
            }
        }
    }
    let answer = ctx.db.call_json(
        &sql::APPLY_REPLICATE_TRAINING,
        &[
            jsonb(&summary),
            if copy_answer.is_null() {
                ParameterValue::DbNull
            } else {
                jsonb(&copy_answer)
            },
        ],
    )?;
    Ok(Applied::Done(answer))
}

#[derive(Debug, Deserialize)]
struct Poll {
    prediction_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    model_id: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TrainingPoll {
    training_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PoolToken {
    token: String,
}

/// Polls predictions with no news for `poll_after_seconds`.
pub fn run_polls(ctx: &Context<'_>) -> Result<BTreeMap<&'static str, u32>, Error> {
    poll_due(
        ctx,
        &sql::CLAIM_REPLICATE_POLLS,
        |p: &Poll| &p.prediction_id,
        |ctx, p| {
            let lose = || {
                let lost = json!({"id": p.prediction_id, "status": "failed",
                                  "error": "Replicate has no such prediction (HTTP 404 when polled)"});
                ctx.db
                    .call_json(
                        &sql::APPLY_REPLICATE_PREDICTION,
                        &[jsonb(&lost), ParameterValue::DbNull],
                    )
                    .map(drop)
            };
            ask(
                ctx,
                &format!("/v1/predictions/{}", p.prediction_id),
                p.token.as_deref(),
                (p.user_id.as_deref(), p.model_id.as_deref()),
                lose,
            )
        },
    )
}

/// Polls running LoRA trainings with no news for `poll_after_seconds`
/// (migration 0023): a lost training webhook never leaves a LoRA
/// `training` forever. Their answers go the way of a webhook's.
pub fn run_training_polls(ctx: &Context<'_>) -> Result<BTreeMap<&'static str, u32>, Error> {
    poll_due(
        ctx,
        &sql::CLAIM_REPLICATE_TRAINING_POLLS,
        |p: &TrainingPoll| &p.training_id,
        |ctx, p| {
            let lose = || {
                ctx.db
                    .call_json(
                        &sql::LOSE_REPLICATE_TRAINING,
                        &[p.training_id.clone().into()],
                    )
                    .map(drop)
            };
            ask(
                ctx,
                &format!("/v1/trainings/{}", p.training_id),
                p.token.as_deref(),
                (p.user_id.as_deref(), None),
                lose,
            )
        },
    )
}

/// Claims what `claim` hands out (`$1` worker, `$2` seconds without news,
/// `$3` max) and polls each once per run (with a short interval an
/// unanswered poll is due again at once); answers counts by outcome.
fn poll_due<T: DeserializeOwned>(
    ctx: &Context<'_>,
    claim: &SqlCall,
    key: impl Fn(&T) -> &str,
    poll: impl Fn(&Context<'_>, &T) -> Result<&'static str, Error>,
) -> Result<BTreeMap<&'static str, u32>, Error> {
    let mut counts = BTreeMap::new();
    let mut asked = BTreeSet::new();
    while ctx.time_left() {
        let batch: Vec<T> = ctx.db.call(
            claim,
            &[
                ctx.worker_id.clone().into(),
                ParameterValue::Int32(
                    i32::try_from(ctx.settings.poll_after_seconds).unwrap_or(300),
                ),
                ParameterValue::Int32(20),
            ],
        )?;
        let fresh: Vec<&T> = batch
            .iter()
            .filter(|item| asked.insert(key(item).to_string()))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for item in fresh {
            *counts.entry(poll(ctx, item)?).or_default() += 1;
        }
    }
    Ok(counts)
}

/// `GET {path}` of one prediction or training, with the token that created
/// it (`own_token`) or, once that one is retired, the pool's next; the
/// answer applied as its webhook would be. A prediction or training
/// belongs to the Replicate account of its token, and another account's
/// token is answered 404 for it: only a 404 to its own token `lose`s it.
fn ask(
    ctx: &Context<'_>,
    path: &str,
    own_token: Option<&str>,
    (user_id, model_id): (Option<&str>, Option<&str>),
    lose: impl FnOnce() -> Result<(), Error>,
) -> Result<&'static str, Error> {
    let token = match own_token {
        Some(token) => token.to_string(),
        None => {
            let pooled: Option<PoolToken> = ctx.db.call(&sql::NEXT_REPLICATE_TOKEN, &[])?;
            match pooled {
                Some(p) => p.token,
                None => return Ok("no_token"),
            }
        }
    };
    let (reply, call) = ctx.send("GET", path, &token, None, user_id, model_id);
    ctx.log_call(&call)?;
    let Ok(reply) = reply else {
        return Ok("unreachable");
    };
    match reply.status {
        200 => {
            let Ok(answer) = reply.json::<Value>() else {
                return Ok("unreadable");
            };
            Ok(match apply(ctx, &answer)? {
                Applied::Done(answer) if answer.get("applied") == Some(&Value::Bool(true)) => {
                    "applied"
                }
                Applied::Done(_) => "no_change",
                Applied::Unknown(_) => "unknown_prediction",
                Applied::Retry(_) => "retry",
            })
        }
        404 if own_token.is_some() => {
            lose()?;
            Ok("lost")
        }
        _ => Ok("not_answered"),
    }
}

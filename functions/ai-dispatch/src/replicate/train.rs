//! LoRA trainings: a pending `user_loras` row -> its owner's
//! `lora_training_images` zipped (each image beside a `.txt` caption, as
//! Replicate's LoRA trainers read them) into the `lora-training-images`
//! bucket -> a presigned URL of the zip as the trainer's `input_images` ->
//! the destination model created (`POST /v1/models`, 409 when it exists)
//! -> `POST /v1/models/{owner}/{name}/versions/{version}/trainings` with our
//! webhook. The training's webhook is applied by [`super::apply`], which
//! copies the weights into `lora-models`; a training whose webhook never
//! comes is polled there, with the token kept here.
//!
//! Variables: `replicate_lora_trainer` (`owner/name:version` of the
//! trainer) and `replicate_lora_owner` (the Replicate account that owns
//! the trained models). Without them trainings wait, and the run says so.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use shared::{Error, config};
use spin_sdk::pg4::ParameterValue;

use super::api::{self, Answer};
use super::{Context, jsonb, sql};

/// The bucket of training images (seed 004: the owner's folder only).
pub const IMAGES_BUCKET: &str = "lora-training-images";

/// The bucket of trained weights.
pub const MODELS_BUCKET: &str = "lora-models";

/// How long Replicate may take to fetch the zip.
const ZIP_URL_TTL: Duration = Duration::from_secs(2 * 3600);

#[derive(Debug, Deserialize)]
struct Training {
    id: String,
    user_id: String,
    #[serde(default)]
    trigger_word: Option<String>,
    #[serde(default)]
    training_params: Value,
    #[serde(default)]
    images: Vec<Image>,
}

#[derive(Debug, Deserialize)]
struct Image {
    storage_path: String,
    #[serde(default)]
    caption: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PoolToken {
    id: String,
    token: String,
}

/// Starts the trainings waiting; answers counts by outcome.
pub fn run(ctx: &Context<'_>) -> Result<BTreeMap<&'static str, u32>, Error> {
    let mut counts = BTreeMap::new();
    let (Some(trainer), Some(owner)) = (
        config::optional("replicate_lora_trainer"),
        config::optional("replicate_lora_owner"),
    ) else {
        counts.insert("not_configured", 1);
        return Ok(counts);
    };
    let Some((trainer_model, trainer_version)) = trainer.split_once(':') else {
        return Err(Error::Config(
            "variable `replicate_lora_trainer` must be owner/name:version".into(),
        ));
    };
    let Some(store) = &ctx.store else {
        counts.insert("no_store", 1);
        return Ok(counts);
    };
    let items: Vec<Training> = ctx.db.call(
        &sql::CLAIM_LORA_TRAININGS,
        &[
            ctx.worker_id.clone().into(),
            ParameterValue::Int32(600),
            ParameterValue::Int32(5),
        ],
    )?;
    for item in &items {
        let outcome = match start(ctx, store, item, &owner, trainer_model, trainer_version) {
            Ok(name) => name,
            Err((why, permanent, call)) => {
                ctx.db.call_json(
                    &sql::FAIL_LORA_TRAINING,
                    &[
                        ParameterValue::Uuid(item.id.clone()),
                        why.into(),
                        ParameterValue::Boolean(permanent),
                        call.as_ref().map_or(ParameterValue::DbNull, jsonb),
                    ],
                )?;
                if permanent { "failed" } else { "retry" }
            }
        };
        *counts.entry(outcome).or_default() += 1;
    }
    Ok(counts)
}

type Failure = (String, bool, Option<Value>);

fn start(
    ctx: &Context<'_>,
    store: &shared::object_store::ObjectStore,
    item: &Training,
    owner: &str,
    trainer_model: &str,
    trainer_version: &str,
) -> Result<&'static str, Failure> {
    if item.images.is_empty() {
        return Err((
            "the LoRA has no training images of its owner".into(),
            true,
            None,
        ));
    }
    let mut files = Vec::new();
    for (i, image) in item.images.iter().enumerate() {
        let reply = store
            .get(IMAGES_BUCKET, &image.storage_path)
            .map_err(|e| (format!("reading {}: {e}", image.storage_path), false, None))?
            .ok_or_else(|| {
                (
                    format!("training image {} is not in the store", image.storage_path),
                    true,
                    None,
                )
            })?;
        let ext = image
            .storage_path
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .filter(|e| e.len() <= 5)
            .unwrap_or_else(|| "jpg".into());
        files.push((format!("{i:03}.{ext}"), reply.body));
        if let Some(caption) = image.caption.as_deref().filter(|c| !c.is_empty()) {
            files.push((format!("{i:03}.txt"), caption.as_bytes().to_vec()));
        }
    }
    let zip = zip_stored(&files);
    let key = format!("{}/{}/training.zip", item.user_id, item.id);
    store
        .put(IMAGES_BUCKET, &key, "application/zip", zip)
        .map_err(|e| (format!("storing the zip: {e}"), false, None))?;
    let zip_url = store
        .presign_get(IMAGES_BUCKET, &key, ZIP_URL_TTL)
        .map_err(|e| (format!("signing the zip's URL: {e}"), false, None))?;

    let token: Option<PoolToken> = ctx
        .db
        .call(&sql::NEXT_REPLICATE_TOKEN, &[])
        .map_err(|e| (e.to_string(), false, None))?;
    let Some(token) = token else {
        return Err(("no Replicate token is available".into(), false, None));
    };
    let name = format!("lora-{}", item.id.replace('-', ""));
    let model = json!({"owner": owner, "name": name, "visibility": "private", "hardware": "cpu",
                       "description": "A LoRA trained for an Outpost user"});
    let (reply, call) = ctx.send(
        "POST",
        "/v1/models",
        &token.token,
        Some(&model),
        Some(&item.user_id),
        None,
    );
    match &reply {
        Ok(r) if r.is_success() || r.status == 409 => {}
        Ok(r) => {
            let why = format!("creating the destination model: HTTP {}", r.status);
            return Err(token_trouble(ctx, &token, r.status, why, call));
        }
        Err(e) => {
            return Err((
                format!("creating the destination model: {e}"),
                false,
                Some(call),
            ));
        }
    }
    ctx.log_call(&call)
        .map_err(|e| (e.to_string(), false, None))?;

    let mut input = match &item.training_params {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    input.insert("input_images".into(), Value::String(zip_url));
    if let Some(word) = item.trigger_word.as_deref().filter(|w| !w.is_empty()) {
        input.insert("trigger_word".into(), Value::String(word.to_string()));
    }
    let mut body = json!({ "destination": format!("{owner}/{name}"), "input": input });
    if let Some(url) = &ctx.webhook_url {
        body["webhook"] = json!(url);
        body["webhook_events_filter"] = json!(["completed"]);
    }
    let path = format!("/v1/models/{trainer_model}/versions/{trainer_version}/trainings");
    let (reply, call) = ctx.send(
        "POST",
        &path,
        &token.token,
        Some(&body),
        Some(&item.user_id),
        Some(trainer_model),
    );
    let reply = reply.map_err(|e| (e.to_string(), false, Some(call.clone())))?;
    match api::answer(reply.status, reply.retry_after_seconds(), &reply.body) {
        Answer::Prediction(training_id) => {
            ctx.db
                .call_json(
                    &sql::START_LORA_TRAINING,
                    &[
                        ParameterValue::Uuid(item.id.clone()),
                        training_id.into(),
                        jsonb(&call),
                        ParameterValue::Uuid(token.id.clone()),
                    ],
                )
                .map_err(|e| (e.to_string(), false, None))?;
            Ok("started")
        }
        Answer::Refused(why) => Err((
            format!("Replicate refused the training: {why}"),
            true,
            Some(call),
        )),
        _ => {
            let why = format!(
                "Replicate did not start the training: HTTP {}",
                reply.status
            );
            Err(token_trouble(ctx, &token, reply.status, why, call))
        }
    }
}

/// A 429/401 on a token is recorded on it; the training waits either way.
fn token_trouble(
    ctx: &Context<'_>,
    token: &PoolToken,
    status: u16,
    why: String,
    call: Value,
) -> Failure {
    let recorded = match status {
        429 => ctx.db.call_json(
            &sql::RECORD_REPLICATE_TOKEN_ERROR,
            &[
                ParameterValue::Uuid(token.id.clone()),
                why.clone().into(),
                ParameterValue::Int32(60),
            ],
        ),
        401 | 403 => ctx.db.call_json(
            &sql::RETIRE_REPLICATE_TOKEN,
            &[ParameterValue::Uuid(token.id.clone()), why.clone().into()],
        ),
        _ => Ok(Value::Null),
    };
    let why = match recorded {
        Ok(_) => why,
        Err(e) => format!("{why}; recording the token's error failed: {e}"),
    };
    (
        why,
        (400..500).contains(&status) && ![401, 402, 403, 409, 429].contains(&status),
        Some(call),
    )
}

/// A zip archive of `files` stored without compression (images are
/// compressed already): local headers, data, central directory, end record.
pub fn zip_stored(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    fn u16le(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32le(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let crc = crc32(data);
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
        // local file header
        u32le(&mut out, 0x0403_4b50);
        for v in [20u16, 0, 0, 0, 0x21] {
            u16le(&mut out, v); // version, flags, method (stored), time, date 1980-01-01
        }
        for v in [crc, size, size] {
            u32le(&mut out, v);
        }
        u16le(&mut out, name_len);
        u16le(&mut out, 0);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        // central directory entry
        u32le(&mut central, 0x0201_4b50);
        for v in [20u16, 20, 0, 0, 0, 0x21] {
            u16le(&mut central, v);
        }
        for v in [crc, size, size] {
            u32le(&mut central, v);
        }
        for v in [name_len, 0, 0, 0, 0] {
            u16le(&mut central, v);
        }
        u32le(&mut central, 0);
        u32le(&mut central, offset);
        central.extend_from_slice(name.as_bytes());
    }
    let central_offset = u32::try_from(out.len()).unwrap_or(u32::MAX);
    let central_size = u32::try_from(central.len()).unwrap_or(u32::MAX);
    let count = u16::try_from(files.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&central);
    u32le(&mut out, 0x0605_4b50);
    for v in [0u16, 0, count, count] {
        u16le(&mut out, v);
    }
    u32le(&mut out, central_size);
    u32le(&mut out, central_offset);
    u16le(&mut out, 0);
    out
}

/// CRC-32 (IEEE, reflected, as zip uses): a checksum, not cryptography;
/// `crc32fast` rather than a hand-written loop (it is also ~10x faster on
/// megabyte images).
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn the_zip_has_its_entries_and_an_end_record() {
        let zip = zip_stored(&[
            ("000.png".into(), b"abc".to_vec()),
            ("000.txt".into(), b"a TOK photo".to_vec()),
        ]);
        assert_eq!(&zip[..4], &[0x50, 0x4b, 0x03, 0x04]);
        let end = zip.len() - 22;
        assert_eq!(&zip[end..end + 4], &[0x50, 0x4b, 0x05, 0x06]);
        assert_eq!(u16::from_le_bytes([zip[end + 10], zip[end + 11]]), 2);
        let text = String::from_utf8_lossy(&zip);
        assert!(text.contains("000.png") && text.contains("a TOK photo"));
    }
}

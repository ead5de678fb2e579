//! Artifact uploads: the body streams through SHA-256 into the object store
//! at `{owner_id}/{run_id}/{sha256}` and is committed only when its digest
//! is the one the bot announced and the database has recorded it.
//!
//! Nothing is stored on a refusal: a body of up to one part (8 MiB) is held
//! in memory and PUT only once checked; a bigger one goes up as a multipart
//! upload whose last part is held back until the whole body is hashed, and
//! an upload that fails the check (or the size limit, or a second look at
//! the token and the run) is aborted, so the store never shows an object.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::config;
use shared::db::Database;
use shared::object_store::{ObjectStore, StoreConfig, StoreFailure};
use spin_sdk::http::Response;
use spin_sdk::pg4::ParameterValue;

use crate::error::{PipelineError, Result, refusal};
use crate::request::Call;
use crate::runs::jsonb;
use crate::sql;

/// The size of a multipart part (S3 wants at least 5 MiB but the last).
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// The default largest artifact: 100 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// The default bucket.
pub const DEFAULT_BUCKET: &str = "artifacts";

/// Where artifacts go and how big they may be.
pub struct Limits {
    /// `pipeline_artifact_max_bytes`.
    pub max_bytes: u64,
    /// `pipeline_artifact_bucket`.
    pub bucket: String,
}

impl Limits {
    /// From the component's variables.
    pub fn from_variables() -> Result<Self> {
        let max_bytes = match config::optional("pipeline_artifact_max_bytes") {
            None => DEFAULT_MAX_BYTES,
            Some(value) => value.trim().parse().map_err(|_| {
                shared::Error::Config(
                    "variable `pipeline_artifact_max_bytes` must be a whole number of bytes".into(),
                )
            })?,
        };
        Ok(Limits {
            max_bytes,
            bucket: config::optional("pipeline_artifact_bucket")
                .unwrap_or_else(|| DEFAULT_BUCKET.into()),
        })
    }
}

/// One upload's request facts.
pub struct Upload {
    /// SHA-256 of the bot token.
    pub token: String,
    /// The run.
    pub run_id: String,
    /// The bot, when named.
    pub bot_name: Option<String>,
    /// The artifact's kind (zip, file, ...).
    pub kind: String,
    /// Its file name, if given.
    pub name: Option<String>,
    /// Its media type.
    pub content_type: String,
    /// The SHA-256 the bot announced (hex).
    pub announced: String,
}

impl Upload {
    fn params(&self, last: ParameterValue) -> Vec<ParameterValue> {
        vec![
            self.token.clone().into(),
            self.run_id.clone().into(),
            self.bot_name
                .clone()
                .map_or(ParameterValue::DbNull, ParameterValue::Str),
            last,
        ]
    }
}

/// Receives, checks, records and stores one artifact: 201 with the
/// artifact; 200 with the stored one when the same bytes were uploaded
/// before; 413 over the limit; 422 on a checksum mismatch.
pub fn upload(call: &mut Call, db: &Database, limits: &Limits, upload: Upload) -> Result<Response> {
    let begun: Value = db.call(
        &sql::BEGIN_ARTIFACT,
        &upload.params(upload.announced.clone().into()),
    )?;
    if let Some(refused) = refusal(&begun) {
        call.discard_body(limits.max_bytes);
        return Err(refused);
    }
    if begun["outcome"] == "duplicate" {
        // Stored already: the bytes are still checked, not stored again.
        let (_, computed) = hash_only(call, limits.max_bytes)?;
        if computed != upload.announced {
            return Err(PipelineError::ChecksumMismatch {
                announced: upload.announced,
                computed,
            });
        }
        return Ok(answer(200, &begun["artifact"], true));
    }
    let owner = begun["owner_id"].as_str().unwrap_or_default().to_string();
    let key = format!("{owner}/{}/{}", upload.run_id, upload.announced);
    let store = ObjectStore::new(StoreConfig::from_variables()?, Duration::from_secs(30));
    let mut target = Target {
        store: &store,
        bucket: &limits.bucket,
        key: &key,
        content_type: &upload.content_type,
        multipart: None,
    };

    let mut body = call.body()?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut pending: Vec<u8> = Vec::with_capacity(64 * 1024);
    let received = (|| -> Result<()> {
        while let Some(chunk) = body.next_chunk()? {
            size += chunk.len() as u64;
            if size > limits.max_bytes {
                return Err(PipelineError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            hasher.update(&chunk);
            pending.extend_from_slice(&chunk);
            // A full part goes up as soon as a byte of the next one exists,
            // so the part held back at the end is never empty.
            while pending.len() > PART_BYTES {
                let rest = pending.split_off(PART_BYTES);
                let part = std::mem::replace(&mut pending, rest);
                target.send_part(part)?;
            }
        }
        Ok(())
    })();
    drop(body);
    if let Err(e) = received {
        target.abandon();
        return Err(e);
    }
    let computed = hex::encode(hasher.finalize());
    if computed != upload.announced {
        target.abandon();
        return Err(PipelineError::ChecksumMismatch {
            announced: upload.announced,
            computed,
        });
    }

    let mut meta = json!({ "checksum_algorithm": "sha-256", "bucket": limits.bucket });
    if let Some(name) = &upload.name {
        meta["name"] = json!(name);
    }
    let artifact = json!({
        "kind": upload.kind,
        "url": object_url(&store_config()?, &limits.bucket, &key),
        "meta": meta,
        "file_size": size,
        "content_type": upload.content_type,
        "checksum": computed,
        "object_key": key,
    });
    let recorded: Value = match db.call(&sql::RECORD_ARTIFACT, &upload.params(jsonb(&artifact))) {
        Ok(recorded) => recorded,
        Err(e) => {
            target.abandon();
            return Err(e.into());
        }
    };
    if let Some(refused) = refusal(&recorded) {
        target.abandon();
        return Err(refused);
    }
    if recorded["outcome"] == "duplicate" {
        // The same bytes arrived twice at once: the first one is stored.
        target.abandon();
        return Ok(answer(200, &recorded["artifact"], true));
    }
    if let Err(e) = target.commit(pending) {
        let id = recorded["artifact"]["id"].as_str().unwrap_or_default();
        // The record must not point at nothing; the failure is what the bot sees.
        drop(db.call_json(
            &sql::FORGET_ARTIFACT,
            &[ParameterValue::Uuid(id.to_string())],
        ));
        return Err(PipelineError::Store(format!(
            "the object store did not take the artifact (try again): {e}"
        )));
    }
    Ok(answer(201, &recorded["artifact"], false))
}

/// Reads the body through SHA-256 only: its size and digest.
fn hash_only(call: &mut Call, max_bytes: u64) -> Result<(u64, String)> {
    let mut body = call.body()?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next_chunk()? {
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(PipelineError::TooLarge { limit: max_bytes });
        }
        hasher.update(&chunk);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

fn answer(status: u16, artifact: &Value, duplicate: bool) -> Response {
    shared::response::json(
        status,
        &json!({ "artifact": artifact, "duplicate": duplicate }),
    )
}

fn store_config() -> Result<StoreConfig> {
    Ok(StoreConfig::from_variables()?)
}

/// The object's address in the store (unsigned: reading it needs the
/// store's credentials or a presigned link).
pub fn object_url(config: &StoreConfig, bucket: &str, key: &str) -> String {
    let endpoint = config.endpoint.as_str().trim_end_matches('/');
    if config.path_style {
        format!("{endpoint}/{bucket}/{key}")
    } else {
        let mut url = config.endpoint.clone();
        let host = format!("{bucket}.{}", url.host_str().unwrap_or_default());
        if url.set_host(Some(&host)).is_err() {
            return format!("{endpoint}/{bucket}/{key}");
        }
        format!("{}/{key}", url.as_str().trim_end_matches('/'))
    }
}

/// Where the bytes go: nothing until a second part exists, then a
/// multipart upload.
struct Target<'a> {
    store: &'a ObjectStore,
    bucket: &'a str,
    key: &'a str,
    content_type: &'a str,
    multipart: Option<(String, Vec<String>)>,
}

impl Target<'_> {
    fn send_part(&mut self, part: Vec<u8>) -> Result<()> {
        if self.multipart.is_none() {
            let id = self
                .store
                .create_multipart(self.bucket, self.key, self.content_type)
                .map_err(store_error)?;
            self.multipart = Some((id, Vec::new()));
        }
        let Some((id, etags)) = self.multipart.as_mut() else {
            return Ok(());
        };
        let number = u16::try_from(etags.len() + 1)
            .map_err(|_| PipelineError::bad_request("the artifact has too many parts"))?;
        let etag = self
            .store
            .upload_part(self.bucket, self.key, id, number, part)
            .map_err(store_error)?;
        etags.push(etag);
        Ok(())
    }

    /// Stores the last (or only) part and makes the object visible.
    fn commit(mut self, last: Vec<u8>) -> std::result::Result<(), StoreFailure> {
        match self.multipart.take() {
            None => self
                .store
                .put(self.bucket, self.key, self.content_type, last),
            Some((id, mut etags)) => {
                let done = (|| {
                    let number = u16::try_from(etags.len() + 1)
                        .map_err(|_| StoreFailure::Invalid("too many parts".into()))?;
                    etags.push(
                        self.store
                            .upload_part(self.bucket, self.key, &id, number, last)?,
                    );
                    self.store
                        .complete_multipart(self.bucket, self.key, &id, &etags)
                })();
                if done.is_err() {
                    self.store.abort_multipart(self.bucket, self.key, &id);
                }
                done
            }
        }
    }

    /// Drops whatever was sent: the object never appears.
    fn abandon(&mut self) {
        if let Some((id, _)) = self.multipart.take() {
            self.store.abort_multipart(self.bucket, self.key, &id);
        }
    }
}

fn store_error(e: StoreFailure) -> PipelineError {
    PipelineError::Store(format!(
        "the object store did not take the artifact (try again): {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path_style: bool) -> StoreConfig {
        StoreConfig {
            endpoint: url::Url::parse("https://s3.example.com").unwrap(),
            region: "us-east-1".into(),
            access_key: "AK".into(),
            secret_key: "SK".into(),
            path_style,
        }
    }

    #[test]
    fn object_urls_follow_the_addressing_style() {
        assert_eq!(
            object_url(&config(true), "artifacts", "u/r/abc"),
            "https://s3.example.com/artifacts/u/r/abc"
        );
        assert_eq!(
            object_url(&config(false), "artifacts", "u/r/abc"),
            "https://artifacts.s3.example.com/u/r/abc"
        );
    }
}

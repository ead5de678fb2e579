//! Publishing to Bluesky exactly once.
//!
//! The record is written with `createRecord` under an `rkey` derived from
//! the scheduled post, so every attempt writes the same key. The intent is
//! recorded before the call; when the answer is lost (500, timeout, broken
//! connection; the reference PDS also answers a duplicate key with 500),
//! `getRecord` settles it: the record is there (done) or not (retry). An
//! attempt that finds an earlier intent asks `getRecord` first.

use shared::object_store::ObjectStore;
use std::collections::HashMap;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use shared::Error;
use shared::bluesky::{POST_COLLECTION, RecordRef, Xrpc, XrpcFailure};
use shared::bluesky_session::{SessionFailure, with_session};
use spin_sdk::pg4::ParameterValue;

use crate::attempt::{Attempt, sha256_hex};
use crate::facets::{self, Feature};
use crate::media::{self, ImageProblem};
use crate::outcome::{Outcome, Published};
use crate::{limits, sql, tid};

/// What `createRecord` costs out of the write budget.
const CREATE_POINTS: i32 = 3;
/// The most distinct handles resolved for one post.
const MAX_MENTIONS: usize = 20;

/// What `getRecord` says about our key.
enum Settled {
    /// Our post is there.
    Found(RecordRef, Value),
    /// Nothing under the key.
    NotFound,
    /// Another text is under the key.
    Foreign(String),
    /// No answer.
    Unknown(String),
}

/// Publishes the attempt's post to its Bluesky account.
pub fn publish(a: &Attempt<'_>) -> Result<Outcome, Error> {
    let text = a.post.text.clone().unwrap_or_default();
    let images = match media::check(&a.post.media) {
        Ok(images) => images,
        Err(problem) => return Ok(Outcome::fail(problem)),
    };
    if text.trim().is_empty() && images.is_empty() && a.post.embed.is_none() {
        return Ok(Outcome::fail("the post has no text"));
    }
    if let Err(problem) = limits::check_bluesky(&text) {
        return Ok(Outcome::fail(problem));
    }
    let langs = a.post.langs.clone().unwrap_or_default();
    if langs.len() > 3 {
        return Ok(Outcome::fail(format!(
            "{} languages; Bluesky allows 3",
            langs.len()
        )));
    }
    if !images.is_empty() && a.post.embed.is_some() {
        return Ok(Outcome::fail(
            "the post has both images and an embed; Bluesky takes one",
        ));
    }
    let did = a
        .account
        .account_did
        .clone()
        .unwrap_or_else(|| a.account.platform_user_id.clone());
    let rkey = tid::for_scheduled_post(a.post.id, a.post.created_at_us);
    let text_hash = sha256_hex(&text);
    let target = Target {
        did: &did,
        rkey: &rkey,
        text: &text,
    };

    // Earlier attempts: recorded as posted, or sent with the answer lost.
    if let Some(part) = a.part(0) {
        if part.is_posted() {
            return Ok(Outcome::Published(target.published_from_part(part)));
        }
        let earlier_hash = part.text_sha256.clone();
        match settle(a, &target, &[&text_hash, &earlier_hash]) {
            Settled::Found(found, value) => {
                return finish(a, &target, found, &value, Some("getRecord"), &[]);
            }
            Settled::NotFound => {}
            Settled::Foreign(problem) => return Ok(Outcome::fail(problem)),
            Settled::Unknown(problem) => {
                return Ok(Outcome::retry(format!(
                    "an earlier attempt's createRecord is unsettled: {problem}"
                )));
            }
        }
    }

    // The account's write budget (5,000 points per hour, 35,000 per day).
    let budget = a.db.call_json(
        &sql::RESERVE_WRITE_POINTS,
        &[
            ParameterValue::Uuid(a.account.id.to_string()),
            "bluesky".to_string().into(),
            ParameterValue::Int32(CREATE_POINTS),
        ],
    )?;
    if budget.get("allowed").and_then(Value::as_bool) != Some(true) {
        let until = budget
            .get("not_before")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc::now() + chrono::TimeDelta::hours(1));
        return Ok(Outcome::Hold {
            until,
            reason: format!(
                "write budget used up ({} of {} points in {} s)",
                budget.get("used").unwrap_or(&Value::Null),
                budget.get("limit").unwrap_or(&Value::Null),
                budget.get("window_seconds").unwrap_or(&Value::Null)
            ),
        });
    }

    // Mentions resolve to DIDs; one that does not resolve loses its facet.
    let detected = facets::detect(&text);
    let mut resolved: HashMap<String, Option<String>> = HashMap::new();
    for facet in &detected {
        if let Feature::Mention { handle } = &facet.feature {
            if resolved.contains_key(handle) || resolved.len() >= MAX_MENTIONS {
                continue;
            }
            let did = a.next_call().and_then(|timeout| {
                Xrpc::new(&a.config.pds_url)
                    .with_timeout(timeout)
                    .resolve_handle(handle)
                    .ok()
                    .flatten()
            });
            resolved.insert(handle.clone(), did);
        }
    }
    let (record_facets, dropped) =
        facets::to_record(&detected, |handle| resolved.get(handle).cloned().flatten());

    // Images: read from storage, uploaded as blobs.
    let mut loaded = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let Some(timeout) = a.next_call() else {
            return Ok(out_of_time("before the images were read"));
        };
        let store = ObjectStore::new(a.config.media_store.clone(), timeout);
        match media::load(&store, image, i + 1) {
            Ok(image) => loaded.push(image),
            Err(ImageProblem::Permanent(problem)) => return Ok(Outcome::fail(problem)),
            Err(ImageProblem::Transient(problem)) => return Ok(Outcome::retry(problem)),
        }
    }
    let mut embed = a.post.embed.clone();
    if !loaded.is_empty() {
        let Some(timeout) = a.next_call() else {
            return Ok(out_of_time("before the images were uploaded"));
        };
        let pds = Xrpc::new(&a.config.pds_url).with_timeout(timeout);
        let uploaded = with_session(a.db, &pds, a.account.id, &a.worker_id, |session| {
            loaded
                .iter()
                .map(|image| pds.upload_blob(session, &image.mime, image.bytes.clone()))
                .collect::<Result<Vec<Value>, XrpcFailure>>()
        });
        let blobs = match uploaded {
            Ok(blobs) => blobs,
            Err(failure) => return session_failure(failure, "uploadBlob"),
        };
        let images: Vec<Value> = loaded
            .iter()
            .zip(blobs)
            .map(|(image, blob)| {
                let mut entry = json!({ "alt": image.reference.alt, "image": blob });
                if let Some((width, height)) = image.reference.size {
                    entry["aspectRatio"] = json!({ "width": width, "height": height });
                }
                entry
            })
            .collect();
        embed = Some(json!({ "$type": "app.bsky.embed.images", "images": images }));
    }

    // The record, under our key, after the intent is on file.
    let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut record = json!({
        "$type": POST_COLLECTION,
        "text": text,
        "createdAt": created_at,
    });
    if !langs.is_empty() {
        record["langs"] = json!(langs);
    }
    if !record_facets.is_empty() {
        record["facets"] = json!(record_facets);
    }
    if let Some(embed) = embed {
        record["embed"] = embed;
    }
    let Some(timeout) = a.next_call() else {
        return Ok(out_of_time("before createRecord"));
    };
    if !a.record_sending(0, &text, Some(&rkey))? {
        return Ok(Outcome::Stale);
    }
    let pds = Xrpc::new(&a.config.pds_url).with_timeout(timeout);
    let created = with_session(a.db, &pds, a.account.id, &a.worker_id, |session| {
        pds.create_record(session, POST_COLLECTION, Some(&rkey), &record)
    });
    match created {
        Ok(found) => finish(a, &target, found, &record, None, &dropped),
        Err(SessionFailure::Call(failure)) if is_ambiguous(&failure) => {
            match settle(a, &target, &[&text_hash]) {
                Settled::Found(found, value) => {
                    finish(a, &target, found, &value, Some("getRecord"), &dropped)
                }
                Settled::NotFound => Ok(Outcome::retry(format!(
                    "createRecord: {failure}; getRecord says the post was not written"
                ))),
                Settled::Foreign(problem) => Ok(Outcome::fail(problem)),
                Settled::Unknown(problem) => Ok(Outcome::retry(format!(
                    "createRecord: {failure}; outcome unknown ({problem}), the next attempt settles it"
                ))),
            }
        }
        Err(failure) => session_failure(failure, "createRecord"),
    }
}

/// Where the post goes.
struct Target<'a> {
    did: &'a str,
    rkey: &'a str,
    text: &'a str,
}

impl Target<'_> {
    fn url(&self) -> String {
        format!("https://bsky.app/profile/{}/post/{}", self.did, self.rkey)
    }

    fn published(
        &self,
        found: &RecordRef,
        created_at: Option<&str>,
        settled_by: Option<&str>,
        extra: Value,
    ) -> Published {
        let mut metadata = json!({
            "uri": found.uri,
            "cid": found.cid,
            "rkey": self.rkey,
            "did": self.did,
        });
        if let (Some(map), Value::Object(more)) = (metadata.as_object_mut(), extra) {
            map.extend(more);
        }
        let published_at = created_at
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        Published {
            platform: "bluesky".into(),
            platform_post_id: found.uri.clone(),
            url: self.url(),
            content: self.text.to_string(),
            metadata,
            archive: vec![json!({
                "platform_post_id": found.uri,
                "text": self.text,
                "content_type": "post",
                "created_at": created_at,
            })],
            settled_by: settled_by.map(str::to_string),
            published_at,
        }
    }

    fn published_from_part(&self, part: &crate::attempt::Part) -> Published {
        let found = RecordRef {
            uri: part.platform_post_id.clone().unwrap_or_default(),
            cid: part
                .detail
                .get("cid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        let created_at = part.detail.get("createdAt").and_then(Value::as_str);
        self.published(&found, created_at, Some("recorded"), json!({}))
    }
}

/// Records the part as posted and builds the success.
fn finish(
    a: &Attempt<'_>,
    target: &Target<'_>,
    found: RecordRef,
    record: &Value,
    settled_by: Option<&str>,
    dropped: &[String],
) -> Result<Outcome, Error> {
    let created_at = record.get("createdAt").and_then(Value::as_str);
    let detail = json!({ "cid": found.cid, "createdAt": created_at });
    a.record_posted(
        0,
        target.text,
        Some(target.rkey),
        &found.uri,
        &target.url(),
        &detail,
    )?;
    let mut extra = json!({});
    if !dropped.is_empty() {
        extra["unresolved_mentions"] = json!(dropped);
    }
    if let Some(images) = record
        .get("embed")
        .and_then(|e| e.get("images"))
        .and_then(Value::as_array)
    {
        extra["images"] = json!(images.len());
    }
    Ok(Outcome::Published(
        target.published(&found, created_at, settled_by, extra),
    ))
}

/// A write whose outcome is unknown: 5xx (including the reference PDS's
/// answer to a duplicate key), or no answer at all.
fn is_ambiguous(failure: &XrpcFailure) -> bool {
    match failure {
        XrpcFailure::Transport(_) | XrpcFailure::Decode(_) => true,
        XrpcFailure::Xrpc(e) => e.status >= 500,
    }
}

/// Asks the PDS what is under our key; `hashes` are the texts that count
/// as ours (this attempt's, and an earlier intent's).
fn settle(a: &Attempt<'_>, target: &Target<'_>, hashes: &[&String]) -> Settled {
    let Some(timeout) = a.next_call() else {
        return Settled::Unknown("no time left in the lease to ask getRecord".into());
    };
    let pds = Xrpc::new(&a.config.pds_url).with_timeout(timeout);
    let answer = pds.query::<Value>(
        "com.atproto.repo.getRecord",
        &[
            ("repo", target.did),
            ("collection", POST_COLLECTION),
            ("rkey", target.rkey),
        ],
        None,
    );
    match answer {
        Ok(found) => {
            let value = found.get("value").cloned().unwrap_or(Value::Null);
            let text = value
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let record = RecordRef {
                uri: found
                    .get("uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                cid: found
                    .get("cid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            };
            if hashes.iter().any(|h| **h == sha256_hex(text)) && !record.uri.is_empty() {
                Settled::Found(record, value)
            } else {
                Settled::Foreign(format!(
                    "record key {} of {} already holds another post",
                    target.rkey, target.did
                ))
            }
        }
        Err(XrpcFailure::Xrpc(e)) if e.error == "RecordNotFound" => Settled::NotFound,
        Err(other) => Settled::Unknown(format!("getRecord: {other}")),
    }
}

fn out_of_time(when: &str) -> Outcome {
    Outcome::retry(format!("the lease ran out {when}; nothing was written"))
}

/// Maps a failed call made with the account's session.
fn session_failure(failure: SessionFailure, call: &str) -> Result<Outcome, Error> {
    Ok(match failure {
        SessionFailure::Wait {
            reason,
            retry_after_seconds,
        } => Outcome::hold_for(retry_after_seconds, reason),
        SessionFailure::Unusable(reason) => Outcome::fail(reason),
        SessionFailure::Database(error) => return Err(error),
        SessionFailure::Call(failure) => match &failure {
            XrpcFailure::Xrpc(e) if e.status == 429 => Outcome::hold_for(
                failure.retry_after().unwrap_or(60),
                format!("{call}: {failure}"),
            ),
            XrpcFailure::Xrpc(e)
                if e.status == 401
                    || matches!(
                        e.error.as_str(),
                        "InvalidToken" | "ExpiredToken" | "AuthMissing"
                    ) =>
            {
                Outcome::Retry {
                    error: format!("{call}: {failure}"),
                    retry_after: Some(60),
                    detail: json!({}),
                }
            }
            XrpcFailure::Xrpc(e) if (400..500).contains(&e.status) => {
                Outcome::fail(format!("{call}: {failure}"))
            }
            _ => Outcome::retry(format!("{call}: {failure}")),
        },
    })
}

//! One run of media-fetch: claim, download, store, settle.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use shared::db::Database;
use shared::object_store::{ObjectStore, StoreConfig, StoreFailure};
use shared::outbound::{Incoming, OutboundRequest, SendFailure, describe_target};
use shared::sql::SqlCall;
use shared::{Error, config};
use spin_sdk::pg4::ParameterValue;

use crate::media::{self, StatusClass};

/// Claims media downloads with their archived post's platform and account
/// (`$1` worker, `$2` lease seconds, `$3` max items).
pub const CLAIM_MEDIA_FETCH: SqlCall = SqlCall {
    name: "claim_media_fetch",
    sql: "select public.claim_media_fetch($1::text, $2::integer, $3::integer) as items",
};

/// Settles one item (`$1` id, `$2` lease token, `$3` outcome, `$4` detail).
pub const FINISH_MEDIA_DOWNLOAD: SqlCall = SqlCall {
    name: "finish_media_download",
    sql: "select public.finish_media_download($1::uuid, $2::bigint, $3::text, $4::jsonb) as answer",
};

/// Job settings (`POST /jobs/media-fetch` body; empty = defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Items claimed at once (1..=20).
    pub batch_size: u32,
    /// The lease of a claim, in seconds (10..=3600): long enough for a
    /// batch of 50 MB transfers, after which another worker may take them.
    pub lease_seconds: u32,
    /// Connect, first-byte and between-bytes timeout, milliseconds
    /// (100..=120000).
    pub call_timeout_ms: u64,
    /// The longest whole transfer of one item, seconds (1..=900).
    pub transfer_seconds: u64,
    /// Stop claiming after this many seconds (1..=600).
    pub run_seconds: u64,
    /// Stop after this many items.
    pub max_items: Option<u32>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 4,
            lease_seconds: 600,
            call_timeout_ms: 15_000,
            transfer_seconds: 120,
            // A cron run every minute: stop claiming well before the next.
            run_seconds: 45,
            max_items: None,
        }
    }
}

impl Settings {
    /// Settings from a job request body (empty = defaults), clamped.
    pub fn from_body(body: &[u8]) -> Result<Self, Error> {
        let mut s: Settings = if body.iter().all(u8::is_ascii_whitespace) {
            Settings::default()
        } else {
            serde_json::from_slice(body)
                .map_err(|e| Error::BadRequest(format!("job settings: {e}")))?
        };
        s.batch_size = s.batch_size.clamp(1, 20);
        s.lease_seconds = s.lease_seconds.clamp(10, 3600);
        s.call_timeout_ms = s.call_timeout_ms.clamp(100, 120_000);
        s.transfer_seconds = s.transfer_seconds.clamp(1, 900);
        s.run_seconds = s.run_seconds.clamp(1, 600);
        Ok(s)
    }
}

#[derive(Debug, Deserialize)]
struct Claimed {
    id: String,
    lease_token: i64,
    user_id: String,
    original_url: String,
    platform: Option<String>,
    /// The Graph media whose `field` carries this URL (Instagram only).
    instagram_media: Option<InstagramMedia>,
    /// The account's sealed access token (Instagram only).
    access_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InstagramMedia {
    id: String,
    field: String,
}

/// What refreshing an expired Instagram CDN link needs.
struct Refresher {
    graph_url: Option<String>,
    token_key: Option<String>,
}

impl Refresher {
    fn load() -> Self {
        Refresher {
            graph_url: config::optional("instagram_graph_url")
                .map(|url| url.trim_end_matches('/').to_string()),
            token_key: config::optional("token_encryption_key"),
        }
    }

    /// A fresh link for the item's media from the Graph API
    /// (`GET /{media-id}?fields=media_url,thumbnail_url`), or why not.
    fn fresh_url(&self, item: &Claimed, timeout: Duration) -> Result<String, Outcome> {
        let refused = |why: String| Outcome::Failed(format!("HTTP 403 (expired link?): {why}"));
        let (Some(graph), Some(key)) = (&self.graph_url, &self.token_key) else {
            return Err(refused(
                "instagram_graph_url or token_encryption_key not set".into(),
            ));
        };
        let (Some(media), Some(sealed)) = (&item.instagram_media, &item.access_token) else {
            return Err(refused("no Graph media id or token for this URL".into()));
        };
        let token = shared::token_cipher::open(sealed, key).map_err(|e| refused(e.to_string()))?;
        let reply = match OutboundRequest::get(&format!("{graph}/{}", media.id))
            .query(&[
                ("fields", "media_url,thumbnail_url"),
                ("access_token", &token),
            ])
            .timeout(timeout)
            .send()
        {
            Ok(reply) => reply,
            Err(e) => return Err(source_failure(e)),
        };
        if reply.status >= 500 || reply.status == 429 {
            return Err(Outcome::Retry(
                format!(
                    "refreshing the link: HTTP {} from {}",
                    reply.status, reply.target
                ),
                None,
            ));
        }
        if !reply.is_success() {
            return Err(refused(format!(
                "the Graph API refused a fresh link: HTTP {}",
                reply.status
            )));
        }
        let body: Value = reply.json().map_err(|e| refused(e.to_string()))?;
        body.get(&media.field)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| refused(format!("the Graph media has no {}", media.field)))
    }
}

/// How one item ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (or already present) at `key`.
    Downloaded {
        /// Object key in the `media` bucket.
        key: String,
        /// Bytes stored (0 when it was already there).
        bytes: u64,
        /// Media type.
        content_type: String,
        /// The object was already in the store: nothing uploaded.
        already_stored: bool,
    },
    /// 404/410: the media is gone.
    Unavailable(String),
    /// Refused for good (type, size, redirects, 401/403).
    Failed(String),
    /// Worth another attempt later (5xx, timeouts, store down).
    Retry(String, Option<u64>),
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Downloaded {
                already_stored: true,
                ..
            } => "already_stored",
            Outcome::Downloaded { .. } => "downloaded",
            Outcome::Unavailable(_) => "unavailable",
            Outcome::Failed(_) => "failed",
            Outcome::Retry(..) => "retry",
        }
    }

    fn to_call(&self) -> (&'static str, Value) {
        match self {
            Outcome::Downloaded {
                key,
                bytes,
                content_type,
                already_stored,
            } => (
                "downloaded",
                json!({"bucket": media::BUCKET, "key": key, "bytes": bytes,
                       "content_type": content_type, "already_stored": already_stored}),
            ),
            Outcome::Unavailable(why) => ("unavailable", json!({ "error": why })),
            Outcome::Failed(why) => ("failed", json!({ "error": why })),
            Outcome::Retry(why, after) => (
                "retry",
                json!({ "error": why, "retry_after_seconds": after }),
            ),
        }
    }
}

/// Claims and fetches until nothing is due or time is up; answers
/// `{"worker_id", "claimed", "outcomes": {...}, "stale", "stopped", "seconds"}`.
pub fn run(db: &Database, settings: &Settings) -> Result<Value, Error> {
    let refresher = Refresher::load();
    let store = ObjectStore::new(
        StoreConfig::from_variables()?,
        Duration::from_millis(settings.call_timeout_ms),
    );
    let worker_id = format!(
        "media-fetch/{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let started = Instant::now();
    let mut claimed = 0u32;
    let mut stale = 0u32;
    let mut outcomes: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut stopped = "nothing due";
    loop {
        if started.elapsed() >= Duration::from_secs(settings.run_seconds) {
            stopped = "run time used up";
            break;
        }
        let room = settings.max_items.map(|max| max.saturating_sub(claimed));
        if room == Some(0) {
            stopped = "max_items reached";
            break;
        }
        let batch_size = room.map_or(settings.batch_size, |r| r.min(settings.batch_size));
        let batch: Vec<Claimed> = db.call(
            &CLAIM_MEDIA_FETCH,
            &[
                worker_id.clone().into(),
                ParameterValue::Int32(i32::try_from(settings.lease_seconds).unwrap_or(600)),
                ParameterValue::Int32(i32::try_from(batch_size).unwrap_or(1)),
            ],
        )?;
        if batch.is_empty() {
            break;
        }
        claimed += u32::try_from(batch.len()).unwrap_or(u32::MAX);
        for item in &batch {
            let outcome = fetch_one(&store, &refresher, item, settings);
            *outcomes.entry(outcome.name()).or_default() += 1;
            let (what, detail) = outcome.to_call();
            let answer: Value = db.call(
                &FINISH_MEDIA_DOWNLOAD,
                &[
                    ParameterValue::Uuid(item.id.clone()),
                    ParameterValue::Int64(item.lease_token),
                    what.to_string().into(),
                    ParameterValue::Jsonb(detail.to_string().into_bytes()),
                ],
            )?;
            if answer.get("accepted") != Some(&Value::Bool(true)) {
                stale += 1;
            }
        }
    }
    Ok(json!({
        "worker_id": worker_id,
        "claimed": claimed,
        "outcomes": outcomes,
        "stale": stale,
        "stopped": stopped,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// Downloads one item into the store.
fn fetch_one(
    store: &ObjectStore,
    refresher: &Refresher,
    item: &Claimed,
    settings: &Settings,
) -> Outcome {
    let timeout = Duration::from_millis(settings.call_timeout_ms);
    let deadline = Instant::now() + Duration::from_secs(settings.transfer_seconds);
    let mut url = item.original_url.clone();
    let mut hops = 0usize;
    let mut refreshed = false;
    let mut answer = loop {
        match url::Url::parse(&url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => return Outcome::Failed(format!("not an http(s) URL: {}", describe_target(&url))),
        }
        let incoming = match OutboundRequest::get(&url).timeout(timeout).open() {
            Ok(incoming) => incoming,
            Err(e) => return source_failure(e),
        };
        match media::classify(incoming.status) {
            StatusClass::Media => break incoming,
            StatusClass::Redirect => {
                let Some(next) = incoming
                    .header("location")
                    .and_then(|location| url::Url::parse(&url).ok()?.join(location).ok())
                else {
                    return Outcome::Failed(format!(
                        "HTTP {} without a usable Location from {}",
                        incoming.status, incoming.target
                    ));
                };
                hops += 1;
                if hops > media::MAX_REDIRECTS {
                    return Outcome::Failed(format!(
                        "more than {} redirects",
                        media::MAX_REDIRECTS
                    ));
                }
                url = next.to_string();
            }
            StatusClass::Gone => {
                return Outcome::Unavailable(format!(
                    "HTTP {} from {}",
                    incoming.status, incoming.target
                ));
            }
            StatusClass::Transient => {
                let after = incoming
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                return Outcome::Retry(
                    format!("HTTP {} from {}", incoming.status, incoming.target),
                    after,
                );
            }
            StatusClass::Refused
                if incoming.status == 403
                    && !refreshed
                    && item.platform.as_deref() == Some("instagram") =>
            {
                // Instagram's CDN links expire: ask the Graph API for the
                // media's current link and try that once.
                refreshed = true;
                match refresher.fresh_url(item, timeout) {
                    Ok(fresh) => url = fresh,
                    Err(outcome) => return outcome,
                }
            }
            StatusClass::Refused => {
                return Outcome::Failed(format!(
                    "HTTP {} from {}",
                    incoming.status, incoming.target
                ));
            }
        }
    };

    let content_type = media::media_type(answer.header("content-type").unwrap_or(""));
    if !media::is_allowed(&content_type) {
        return Outcome::Failed(format!(
            "refused type {:?}: the media bucket takes image/*, video/* and audio/*",
            content_type
        ));
    }
    let length = answer
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = length
        && length > media::MAX_BYTES
    {
        return Outcome::Failed(format!(
            "refused size: {length} bytes, the limit is {} bytes",
            media::MAX_BYTES
        ));
    }
    let platform = item.platform.as_deref().unwrap_or("unknown");
    let key = media::object_key(
        &item.user_id,
        platform,
        &item.original_url,
        &media::extension(&content_type),
    );

    // The same URL is one object: when it is there (whole), stop here.
    match store.head(media::BUCKET, &key) {
        Ok(Some(info)) if length.is_none_or(|l| l == info.size) => {
            return Outcome::Downloaded {
                key,
                bytes: 0,
                content_type,
                already_stored: true,
            };
        }
        Ok(_) => {}
        Err(e) => return store_failure(e),
    }

    // The first bytes, to check against the declared type.
    let mut head = Vec::new();
    while head.len() < 64 {
        match answer.read_chunk(64 * 1024) {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return source_failure(e),
        }
    }
    if let Some(why) = media::contradicts(&content_type, &head) {
        return Outcome::Failed(format!("refused type: {why}"));
    }

    let stored = match length {
        Some(length) => stream_known(
            store,
            &key,
            &content_type,
            length,
            head,
            &mut answer,
            deadline,
        ),
        None => stream_unknown(store, &key, &content_type, head, &mut answer, deadline),
    };
    match stored {
        Ok(bytes) => Outcome::Downloaded {
            key,
            bytes,
            content_type,
            already_stored: false,
        },
        Err(outcome) => outcome,
    }
}

/// Pipes a body of announced length straight into one `PUT`: one chunk in
/// memory at a time.
fn stream_known(
    store: &ObjectStore,
    key: &str,
    content_type: &str,
    length: u64,
    head: Vec<u8>,
    answer: &mut Incoming,
    deadline: Instant,
) -> Result<u64, Outcome> {
    if head.len() as u64 > length {
        return Err(Outcome::Retry(
            "the media host sent more than it announced".into(),
            None,
        ));
    }
    let mut upload = store
        .put_streaming(media::BUCKET, key, content_type, length)
        .map_err(store_failure)?;
    upload.write(&head).map_err(store_failure)?;
    let mut written = head.len() as u64;
    drop(head);
    loop {
        if Instant::now() > deadline {
            return Err(Outcome::Retry(
                "transfer took longer than allowed".into(),
                None,
            ));
        }
        match answer.read_chunk(256 * 1024) {
            Ok(Some(chunk)) => {
                written += chunk.len() as u64;
                if written > length {
                    return Err(Outcome::Retry(
                        "the media host sent more than it announced".into(),
                        None,
                    ));
                }
                upload.write(&chunk).map_err(store_failure)?;
            }
            Ok(None) => break,
            Err(e) => return Err(source_failure(e)),
        }
    }
    if written != length {
        // Dropping the upload aborts the PUT: no short object is stored.
        return Err(Outcome::Retry(
            format!("the media host sent {written} of {length} bytes"),
            None,
        ));
    }
    upload.finish().map_err(store_failure)?;
    Ok(written)
}

/// The part size of multipart uploads (S3's minimum is 5 MiB): the most a
/// body of unknown length holds in memory.
const PART_BYTES: usize = 8 * 1024 * 1024;

/// A body without a length: one `PUT` when it fits one part, else a
/// multipart upload part by part. Over the limit it is refused and the
/// upload abandoned.
fn stream_unknown(
    store: &ObjectStore,
    key: &str,
    content_type: &str,
    head: Vec<u8>,
    answer: &mut Incoming,
    deadline: Instant,
) -> Result<u64, Outcome> {
    let mut part = head;
    let mut total = part.len() as u64;
    let mut upload_id: Option<String> = None;
    let mut etags: Vec<String> = Vec::new();
    let result = (|| -> Result<u64, Outcome> {
        loop {
            if Instant::now() > deadline {
                return Err(Outcome::Retry(
                    "transfer took longer than allowed".into(),
                    None,
                ));
            }
            let chunk = answer.read_chunk(256 * 1024).map_err(source_failure)?;
            let done = chunk.is_none();
            if let Some(chunk) = chunk {
                total += chunk.len() as u64;
                if total > media::MAX_BYTES {
                    return Err(Outcome::Failed(format!(
                        "refused size: more than {} bytes",
                        media::MAX_BYTES
                    )));
                }
                part.extend_from_slice(&chunk);
            }
            if done && upload_id.is_none() {
                store
                    .put(media::BUCKET, key, content_type, std::mem::take(&mut part))
                    .map_err(store_failure)?;
                return Ok(total);
            }
            if part.len() >= PART_BYTES || (done && !part.is_empty()) {
                if upload_id.is_none() {
                    upload_id = Some(
                        store
                            .create_multipart(media::BUCKET, key, content_type)
                            .map_err(store_failure)?,
                    );
                }
                let id = upload_id.as_deref().unwrap_or_default();
                let number = u16::try_from(etags.len() + 1).unwrap_or(u16::MAX);
                let etag = store
                    .upload_part(media::BUCKET, key, id, number, std::mem::take(&mut part))
                    .map_err(store_failure)?;
                etags.push(etag);
            }
            if done {
                let id = upload_id.as_deref().unwrap_or_default();
                store
                    .complete_multipart(media::BUCKET, key, id, &etags)
                    .map_err(store_failure)?;
                return Ok(total);
            }
        }
    })();
    if result.is_err()
        && let Some(id) = &upload_id
    {
        store.abort_multipart(media::BUCKET, key, id);
    }
    result
}

fn source_failure(e: SendFailure) -> Outcome {
    if e.is_transient() {
        Outcome::Retry(e.to_string(), None)
    } else {
        Outcome::Failed(e.to_string())
    }
}

/// Whatever the store says, the media is not lost: an outage or a 5xx is
/// retried; a refusal (bad signature, missing bucket) also retries, since
/// it is our configuration, not the media, that is wrong, and the queue
/// dead-letters it after its last attempt.
fn store_failure(e: StoreFailure) -> Outcome {
    Outcome::Retry(e.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_clamp() {
        let d = Settings::from_body(b"").unwrap();
        assert_eq!((d.batch_size, d.lease_seconds), (4, 600));
        let s = Settings::from_body(br#"{"batch_size": 99, "call_timeout_ms": 1}"#).unwrap();
        assert_eq!((s.batch_size, s.call_timeout_ms), (20, 100));
        assert!(Settings::from_body(br#"{"batch": 3}"#).is_err());
    }

    #[test]
    fn outcomes_map_to_the_sql_outcomes() {
        assert_eq!(Outcome::Unavailable("x".into()).to_call().0, "unavailable");
        assert_eq!(
            Outcome::Retry("x".into(), Some(3)).to_call().1["retry_after_seconds"],
            3
        );
        assert_eq!(
            store_failure(StoreFailure::Invalid("x".into())).name(),
            "retry"
        );
        assert_eq!(
            source_failure(SendFailure::Timeout("t".into())).name(),
            "retry"
        );
        assert_eq!(
            source_failure(SendFailure::Denied("t".into())).name(),
            "failed"
        );
    }
}

//! `media-fetch`: downloads the media that ingest queued in
//! `media_downloads` (photos and videos of archived posts, seed 001) into
//! the object store's `media` bucket, before the platforms' links expire.
//!
//! Each run claims items with a lease and fencing token (the queue
//! contract, `claim_media_fetch` of migration 0019), downloads each within
//! limits (50 MB, `image/*`, `video/*`, `audio/*` checked against the
//! bytes' magic, 5 redirects, timeouts), streams it into
//! `media/{user_id}/{platform}/{sha256(original_url)}.{ext}` and settles the
//! item with `finish_media_download`, which also counts it in the account's
//! `sync_logs`. Every run writes its `worker_heartbeats` row.
//!
//! Triggers: cron, and `POST /jobs/media-fetch` with `Authorization: Bearer
//! <job_secret>` and an optional JSON body of settings (`batch_size`,
//! `lease_seconds`, `call_timeout_ms`, `run_seconds`, `max_items`; see
//! [`fetch::Settings`]). Variables: `database_url`, `job_secret` and the
//! store's `media_store_*` (`shared::object_store`).
//!
//! `GET /media/{media_download_id}` with the user's Supabase access token
//! (`supabase_jwt_secret`) answers a 302 to a presigned URL of the user's
//! own downloaded object, valid 5 minutes ([`read`]).

pub mod fetch;
pub mod media;
pub mod read;

use serde_json::json;
use shared::jobs::{self, Trigger};
use shared::{Error, config, response};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

use crate::fetch::Settings;

/// The worker id of this job in `worker_heartbeats`.
const WORKER: &str = "media-fetch";

#[http_component]
fn handle(request: Request) -> Response {
    response::from_result(on_http(&request))
}

fn on_http(request: &Request) -> Result<Response, Error> {
    if request.path().starts_with("/media/") {
        return read::media(request);
    }
    if *request.method() != Method::Post {
        return Err(Error::MethodNotAllowed(request.method().to_string()));
    }
    jobs::authorize(request, &config::required("job_secret")?)?;
    let settings = Settings::from_body(request.body())?;
    let report = jobs::run(WORKER, Trigger::Http, |db| fetch::run(db, &settings))?;
    Ok(response::json(
        200,
        &json!({ "job": WORKER, "report": report }),
    ))
}

fn on_cron(timestamp: u64) -> Result<(), String> {
    jobs::run(WORKER, Trigger::Cron(timestamp), |db| {
        fetch::run(db, &Settings::default())
    })
    .map(|_| ())
    .map_err(|e| e.to_string())
}

shared::cron_component!(on_cron);

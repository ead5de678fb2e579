//! `GET /media/{media_download_id}` with the user's Supabase access token:
//! a 302 to a short-lived presigned URL of the user's own downloaded
//! object. Anyone else's media, media not downloaded yet and unknown ids
//! all answer the same 404, so ids cannot be probed.

use std::time::Duration;

use serde::Deserialize;
use shared::db::Database;
use shared::object_store::{ObjectStore, StoreConfig};
use shared::sql::SqlCall;
use shared::{Error, config, user_token};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::pg4::ParameterValue;

/// Where a user's own downloaded media is (`$1` media download id, `$2` user id).
pub const MEDIA_OBJECT_FOR_USER: SqlCall = SqlCall {
    name: "media_object_for_user",
    sql: "select public.media_object_for_user($1::uuid, $2::uuid) as object",
};

/// How long a presigned read stays valid: enough to start a download or a
/// video player, short enough that a shared link soon stops working.
pub const PRESIGNED_READ_TTL: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
struct Located {
    found: bool,
    bucket: Option<String>,
    key: Option<String>,
}

/// Answers the route.
pub fn media(request: &Request) -> Result<Response, Error> {
    if *request.method() != Method::Get {
        return Err(Error::MethodNotAllowed(request.method().to_string()));
    }
    let secret = config::maybe_empty("supabase_jwt_secret")?;
    if secret.is_empty() {
        return Err(Error::Config(
            "variable `supabase_jwt_secret` is empty: media reads need it".into(),
        ));
    }
    let user = user_token::user_id(
        request.header("authorization").and_then(|v| v.as_str()),
        &secret,
        chrono_now(),
    )?;
    let not_found = || Error::NotFound("no such media".into());
    let id = media_id(request).ok_or_else(not_found)?;
    let db = Database::open(&config::database_url()?)?;
    let located: Located = db.call(
        &MEDIA_OBJECT_FOR_USER,
        &[
            ParameterValue::Uuid(id.to_string()),
            ParameterValue::Uuid(user.to_string()),
        ],
    )?;
    let (true, Some(bucket), Some(key)) = (located.found, located.bucket, located.key) else {
        return Err(not_found());
    };
    let store = ObjectStore::new(StoreConfig::from_variables()?, Duration::from_secs(10));
    let url = store
        .presign_get(&bucket, &key, PRESIGNED_READ_TTL)
        .map_err(|e| Error::Config(e.to_string()))?;
    Ok(Response::builder()
        .status(302)
        .header("location", url)
        .header("cache-control", "private, no-store")
        .body(Vec::new())
        .build())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The id from Spin's route match header, else from the path.
fn media_id(request: &Request) -> Option<uuid::Uuid> {
    let raw = request
        .header("spin-path-match-media-download-id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| {
            let mut segments = request.path().trim_matches('/').split('/');
            match (segments.next(), segments.next(), segments.next()) {
                (Some("media"), Some(id), None) => Some(id.to_string()),
                _ => None,
            }
        })?;
    uuid::Uuid::parse_str(&raw).ok()
}

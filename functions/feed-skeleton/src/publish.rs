//! `POST /feeds/{id}/publish`: writes the feed's `app.bsky.feed.generator`
//! record to its owner's repo with `putRecord`, through the owner's cached
//! Bluesky session, and stores where it lives.
//!
//! Which account: `feeds.publish_account_id` when the owner set it (one of
//! their Bluesky accounts), else the account that published the feed before
//! (same `publisher_did`), else the owner's oldest active Bluesky account.
//! The record key is the slug when it is a valid rkey (else a sanitized slug
//! plus part of the feed id), and stays the same on every republish to the
//! same repo, as does `createdAt`, so republishing unchanged is a no-op.

use serde::Deserialize;
use serde_json::{Value, json};
use shared::bluesky::{FEED_GENERATOR_COLLECTION, Xrpc};
use shared::bluesky_session::{self, SessionFailure};
use shared::db::Database;
use shared::response;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::pg4::ParameterValue;
use unicode_segmentation::UnicodeSegmentation;
use uuid::Uuid;

use crate::config::Config;
use crate::error::FeedError;
use crate::sql;
use shared::user_token;

/// This component's worker id in `bluesky_sessions` leases.
const WORKER: &str = "feed-skeleton";
/// Lexicon limits of `app.bsky.feed.generator`.
const DISPLAY_NAME_GRAPHEMES: usize = 24;
const DISPLAY_NAME_BYTES: usize = 240;
const DESCRIPTION_GRAPHEMES: usize = 300;
const DESCRIPTION_BYTES: usize = 3000;

#[derive(Debug, Deserialize)]
struct Target {
    found: bool,
    feed: Option<FeedRow>,
    account: Option<AccountRow>,
}

#[derive(Debug, Deserialize)]
struct FeedRow {
    id: Uuid,
    slug: String,
    title: Option<String>,
    display_name: Option<String>,
    description: Option<String>,
    published_rkey: Option<String>,
    publisher_did: Option<String>,
    published_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AccountRow {
    id: Uuid,
    did: String,
}

#[derive(Debug, Deserialize)]
struct Stored {
    stored: bool,
    reason: Option<String>,
    published_at: Option<String>,
}

/// The feed id of `/feeds/{id}/publish`: Spin's `spin-path-match-feed-id`
/// header, else the path itself.
fn feed_id(request: &Request) -> Result<Uuid, FeedError> {
    let from_header = request
        .header("spin-path-match-feed-id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let raw = from_header.or_else(|| {
        let mut segments = request.path().trim_matches('/').split('/');
        match (segments.next(), segments.next(), segments.next()) {
            (Some("feeds"), Some(id), Some("publish")) => Some(id.to_string()),
            _ => None,
        }
    });
    raw.and_then(|id| Uuid::parse_str(&id).ok())
        .ok_or_else(|| FeedError::NotFound("no such feed".into()))
}

/// Handles the route.
pub fn publish(request: &Request, config: &Config) -> Result<Response, FeedError> {
    if *request.method() != Method::Post {
        return Err(FeedError::MethodNotAllowed(request.method().to_string()));
    }
    if config.supabase_jwt_secret.is_empty() {
        return Err(FeedError::Shared(shared::Error::Config(
            "variable `supabase_jwt_secret` is empty: publishing needs it".into(),
        )));
    }
    let feed_id = feed_id(request)?;
    let user_id = user_token::user_id(
        request.header("authorization").and_then(|v| v.as_str()),
        &config.supabase_jwt_secret,
        chrono::Utc::now().timestamp(),
    )?;

    let db = Database::open(&config.database_url)?;
    let target: Target = db.call(
        &sql::FEED_PUBLISH_TARGET,
        &[
            ParameterValue::Uuid(feed_id.to_string()),
            ParameterValue::Uuid(user_id.to_string()),
        ],
    )?;
    let (true, Some(feed)) = (target.found, target.feed) else {
        // Someone else's feed answers exactly like a missing one.
        return Err(FeedError::NotFound("no such feed".into()));
    };
    let account = target.account.ok_or_else(|| {
        FeedError::Conflict("connect an active Bluesky account before publishing a feed".into())
    })?;

    let same_repo = feed.publisher_did.as_deref() == Some(account.did.as_str());
    let rkey = match (&feed.published_rkey, same_repo) {
        (Some(rkey), true) => rkey.clone(),
        _ => record_key(&feed.slug, feed.id),
    };
    let created_at = match (&feed.published_at, same_repo) {
        (Some(at), true) => at.clone(),
        _ => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let record = generator_record(&feed, &config.service_did, &created_at)?;

    if config.pds_url.is_empty() {
        return Err(FeedError::Shared(shared::Error::Config(
            "variable `bluesky_pds_url` is empty".into(),
        )));
    }
    let pds = Xrpc::new(&config.pds_url);
    let written = bluesky_session::with_session(&db, &pds, account.id, WORKER, |session| {
        pds.put_record(session, FEED_GENERATOR_COLLECTION, &rkey, &record)
    })
    .map_err(session_failure)?;

    // The repo is the session's DID; read it back from the uri written.
    let publisher_did = written
        .uri
        .strip_prefix("at://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or(&account.did)
        .to_string();
    let stored: Stored = db.call(
        &sql::RECORD_FEED_PUBLISHED,
        &[
            ParameterValue::Uuid(feed.id.to_string()),
            ParameterValue::Uuid(user_id.to_string()),
            written.uri.clone().into(),
            rkey.clone().into(),
            publisher_did.clone().into(),
            created_at.clone().into(),
        ],
    )?;
    if !stored.stored {
        return Err(match stored.reason.as_deref() {
            Some("conflict") => FeedError::Conflict(format!(
                "another feed is already published at {}",
                written.uri
            )),
            _ => FeedError::NotFound("no such feed".into()),
        });
    }
    Ok(response::json(
        200,
        &json!({
            "feed_id": feed.id,
            "uri": written.uri,
            "cid": written.cid,
            "rkey": rkey,
            "publisher_did": publisher_did,
            "published_at": stored.published_at,
        }),
    ))
}

fn session_failure(failure: SessionFailure) -> FeedError {
    match failure {
        SessionFailure::Database(e) => FeedError::Shared(e),
        SessionFailure::Unusable(why) => {
            FeedError::Conflict(format!("Bluesky account cannot log in: {why}"))
        }
        other if other.is_transient() => FeedError::UpstreamBusy {
            retry_after: other.retry_after().unwrap_or(30),
            message: format!("Bluesky is not available now: {other}"),
        },
        other => FeedError::Upstream(format!("Bluesky refused the feed record: {other}")),
    }
}

/// The `app.bsky.feed.generator` record of `feed`, within the lexicon's
/// limits (refused with the count, not cut).
fn generator_record(
    feed: &FeedRow,
    service_did: &str,
    created_at: &str,
) -> Result<Value, FeedError> {
    let display_name = [&feed.display_name, &feed.title]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .unwrap_or(feed.slug.trim());
    let graphemes = display_name.graphemes(true).count();
    if graphemes > DISPLAY_NAME_GRAPHEMES || display_name.len() > DISPLAY_NAME_BYTES {
        return Err(FeedError::InvalidFeed(format!(
            "the display name has {graphemes} graphemes; Bluesky allows {DISPLAY_NAME_GRAPHEMES}"
        )));
    }
    let mut record = json!({
        "$type": FEED_GENERATOR_COLLECTION,
        "did": service_did,
        "displayName": display_name,
        "createdAt": created_at,
    });
    if let Some(description) = feed
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let graphemes = description.graphemes(true).count();
        if graphemes > DESCRIPTION_GRAPHEMES || description.len() > DESCRIPTION_BYTES {
            return Err(FeedError::InvalidFeed(format!(
                "the description has {graphemes} graphemes; Bluesky allows {DESCRIPTION_GRAPHEMES}"
            )));
        }
        record["description"] = json!(description);
    }
    Ok(record)
}

/// A record key for the feed: its slug when that is a valid rkey (1-512 of
/// `A-Za-z0-9 . - _ : ~`, not `.` or `..`), else the slug's safe characters
/// plus the start of the feed id, so two sanitized slugs cannot collide.
fn record_key(slug: &str, feed_id: Uuid) -> String {
    let valid = |s: &str| {
        (1..=512).contains(&s.len())
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:~".contains(&b))
    };
    if valid(slug) {
        return slug.to_string();
    }
    let safe: String = slug
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let short: String = feed_id.simple().to_string().chars().take(8).collect();
    let base: String = safe.chars().take(64).collect();
    if base.is_empty() {
        format!("feed-{short}")
    } else {
        format!("{base}-{short}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(display_name: Option<&str>, description: Option<&str>) -> FeedRow {
        FeedRow {
            id: Uuid::nil(),
            slug: "news".into(),
            title: Some("Title".into()),
            display_name: display_name.map(str::to_string),
            description: description.map(str::to_string),
            published_rkey: None,
            publisher_did: None,
            published_at: None,
        }
    }

    #[test]
    fn record_has_the_lexicon_fields() {
        let record = generator_record(
            &feed(Some("Café ☕ news"), Some("Daily")),
            "did:web:x",
            "2026-01-01T00:00:00.000Z",
        )
        .unwrap();
        assert_eq!(record["$type"], "app.bsky.feed.generator");
        assert_eq!(record["did"], "did:web:x");
        assert_eq!(record["displayName"], "Café ☕ news");
        assert_eq!(record["description"], "Daily");
        assert_eq!(record["createdAt"], "2026-01-01T00:00:00.000Z");
        let titled = generator_record(&feed(None, None), "did:web:x", "t").unwrap();
        assert_eq!(titled["displayName"], "Title");
        assert!(titled.get("description").is_none());
    }

    #[test]
    fn limits_count_graphemes() {
        // Ten family emoji are ten graphemes (fine) in 180 bytes (fine);
        // fourteen are within 24 graphemes but over the 240-byte limit.
        let family = "👨‍👩‍👧";
        assert!(generator_record(&feed(Some(&family.repeat(10)), None), "d", "t").is_ok());
        assert!(family.repeat(14).len() > DISPLAY_NAME_BYTES);
        assert!(generator_record(&feed(Some(&family.repeat(14)), None), "d", "t").is_err());
        let ok = "é".repeat(24);
        assert!(generator_record(&feed(Some(&ok), None), "d", "t").is_ok());
        let long = "é".repeat(25);
        match generator_record(&feed(Some(&long), None), "d", "t") {
            Err(FeedError::InvalidFeed(m)) => assert!(m.contains("25 graphemes"), "{m}"),
            other => panic!("{other:?}"),
        }
        let description = "x".repeat(301);
        assert!(generator_record(&feed(None, Some(&description)), "d", "t").is_err());
    }

    #[test]
    fn record_keys_are_valid_and_stable() {
        let id = Uuid::parse_str("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(record_key("news", id), "news");
        assert_eq!(record_key("my.feed_1~x", id), "my.feed_1~x");
        assert_eq!(record_key("Café News!", id), "caf-news-01234567");
        assert_eq!(record_key("..", id), "feed-01234567");
        assert_eq!(record_key("ñ", id), "feed-01234567");
    }
}

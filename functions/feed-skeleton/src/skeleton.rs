//! The feed generator's read routes: `getFeedSkeleton` (one SQL call per
//! request, verified or not), `describeFeedGenerator` and
//! `/.well-known/did.json`.

use serde::Deserialize;
use serde_json::{Value, json};
use shared::db::Database;
use shared::response;
use spin_sdk::http::{Request, Response};
use spin_sdk::pg4::ParameterValue;

use crate::config::Config;
use crate::cursor::Cursor;
use crate::error::FeedError;
use crate::service_jwt::{self, GET_FEED_SKELETON};
use crate::signing_keys::{self, CachedKey};
use crate::sql;

/// The collection of feed generator records.
const GENERATOR_COLLECTION: &str = "app.bsky.feed.generator";

/// The parameters of one getFeedSkeleton request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkeletonParams {
    /// The feed's at-uri, as sent.
    pub feed: String,
    /// Its publisher DID and rkey, when the uri names a generator record by DID.
    pub publisher: Option<(String, String)>,
    /// 1..=100, default 50.
    pub limit: i32,
    /// Where the previous page ended.
    pub cursor: Option<Cursor>,
}

impl SkeletonParams {
    /// Reads the query string; every fault is `InvalidRequest`.
    pub fn parse(query: &str) -> Result<Self, FeedError> {
        let mut feed = None;
        let mut limit = None;
        let mut cursor = None;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "feed" if feed.is_none() => feed = Some(value.into_owned()),
                "limit" if limit.is_none() => limit = Some(value.into_owned()),
                "cursor" if cursor.is_none() => cursor = Some(value.into_owned()),
                _ => {}
            }
        }
        let feed = feed.ok_or_else(|| {
            FeedError::InvalidRequest("Error: Params must have the property \"feed\"".into())
        })?;
        let publisher = parse_feed_uri(&feed)?;
        let limit = match limit {
            None => 50,
            Some(text) => match text.parse::<i32>() {
                Ok(n) if (1..=100).contains(&n) => n,
                Ok(n) if n < 1 => {
                    return Err(FeedError::InvalidRequest(
                        "Error: limit can not be less than 1".into(),
                    ));
                }
                Ok(_) => {
                    return Err(FeedError::InvalidRequest(
                        "Error: limit can not be greater than 100".into(),
                    ));
                }
                Err(_) => {
                    return Err(FeedError::InvalidRequest(
                        "Error: limit must be an integer".into(),
                    ));
                }
            },
        };
        let cursor = match cursor.as_deref() {
            None | Some("") => None,
            Some(text) => Some(Cursor::decode(text).map_err(FeedError::InvalidRequest)?),
        };
        Ok(SkeletonParams {
            feed,
            publisher,
            limit,
            cursor,
        })
    }
}

/// Checks `feed` is an at-uri and, when it names a generator record by DID
/// (`at://<did>/app.bsky.feed.generator/<rkey>`), returns that DID and rkey.
fn parse_feed_uri(feed: &str) -> Result<Option<(String, String)>, FeedError> {
    let rest = feed
        .strip_prefix("at://")
        .ok_or_else(|| FeedError::InvalidRequest("Error: feed must be a valid at-uri".into()))?;
    if rest.is_empty() || feed.len() > 8192 {
        return Err(FeedError::InvalidRequest(
            "Error: feed must be a valid at-uri".into(),
        ));
    }
    let mut parts = rest.split('/');
    Ok(
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(authority), Some(GENERATOR_COLLECTION), Some(rkey), None)
                if service_jwt::is_did(authority) && !rkey.is_empty() =>
            {
                Some((authority.to_string(), rkey.to_string()))
            }
            _ => None,
        },
    )
}

/// What `feed_skeleton` answers.
#[derive(Debug, Deserialize)]
struct SkeletonAnswer {
    found: bool,
    #[serde(default)]
    posts: Vec<String>,
    #[serde(default)]
    cursor: Option<NextCursor>,
    #[serde(default)]
    signing_key: Option<CachedKey>,
}

#[derive(Debug, Deserialize)]
struct NextCursor {
    created_at_micros: i64,
    uri: String,
}

fn text_or_null(value: Option<String>) -> ParameterValue {
    value.map_or(ParameterValue::DbNull, ParameterValue::Str)
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `GET /xrpc/app.bsky.feed.getFeedSkeleton`.
pub fn get_feed_skeleton(request: &Request, config: &Config) -> Result<Response, FeedError> {
    let params = SkeletonParams::parse(request.query())?;
    // Claims are checked before any database work; the signature needs the
    // issuer's key, which comes back with the page.
    let viewer = if config.verify_jwt {
        let authorization = request.header("authorization").and_then(|v| v.as_str());
        let token = service_jwt::bearer_token(authorization)?;
        Some(service_jwt::check_claims(
            token,
            &config.service_did,
            GET_FEED_SKELETON,
            now_seconds(),
        )?)
    } else {
        None
    };

    let db = Database::open(&config.database_url)?;
    let (publisher_did, rkey) = params.publisher.clone().unzip();
    let (cursor_at, cursor_uri) = params
        .cursor
        .as_ref()
        .map(|c| (c.created_at_rfc3339(), c.uri.clone()))
        .unzip();
    let answer: SkeletonAnswer = db.call(
        &sql::FEED_SKELETON,
        &[
            params.feed.clone().into(),
            text_or_null(publisher_did),
            text_or_null(rkey),
            ParameterValue::Int32(params.limit),
            text_or_null(cursor_at),
            text_or_null(cursor_uri),
            text_or_null(viewer.as_ref().map(|jwt| jwt.issuer_did.clone())),
        ],
    )?;
    if let Some(jwt) = &viewer {
        signing_keys::verify_issuer(&db, config, jwt, answer.signing_key)?;
    }
    if !answer.found {
        return Err(FeedError::UnknownFeed(format!(
            "Unknown feed: {}",
            params.feed
        )));
    }
    let feed: Vec<Value> = answer
        .posts
        .into_iter()
        .map(|uri| json!({ "post": uri }))
        .collect();
    let mut body = json!({ "feed": feed });
    if let Some(next) = answer.cursor {
        body["cursor"] = json!(
            Cursor {
                created_at_micros: next.created_at_micros,
                uri: next.uri,
            }
            .encode()
        );
    }
    Ok(response::json(200, &body))
}

/// `GET /xrpc/app.bsky.feed.describeFeedGenerator`.
pub fn describe_feed_generator(config: &Config) -> Result<Response, FeedError> {
    let db = Database::open(&config.database_url)?;
    let mut body = db.call_json(&sql::DESCRIBE_FEED_GENERATOR, &[])?;
    body["did"] = json!(config.service_did);
    Ok(response::json(200, &body))
}

/// `GET /.well-known/did.json`: the `did:web` document of this host, or 404
/// when the service DID is not `did:web:<feed_hostname>`.
pub fn did_document(config: &Config) -> Result<Response, FeedError> {
    let expected = format!("did:web:{}", config.hostname);
    if config.service_did != expected {
        return Err(FeedError::NotFound(format!(
            "this feed generator's DID is not {expected}"
        )));
    }
    Ok(response::json(
        200,
        &json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": expected,
            "service": [{
                "id": "#bsky_fg",
                "type": "BskyFeedGenerator",
                "serviceEndpoint": format!("https://{}", config.hostname),
            }],
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(query: &str) -> String {
        match SkeletonParams::parse(query) {
            Err(FeedError::InvalidRequest(m)) => m,
            other => panic!("{query}: expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn parses_feed_limit_and_cursor() {
        let feed = "at://did:plc:owner/app.bsky.feed.generator/news";
        let cursor = Cursor {
            created_at_micros: 1_700_000_000_123_456,
            uri: "at://did:plc:a/app.bsky.feed.post/1".into(),
        };
        let query = format!(
            "feed={}&limit=7&cursor={}",
            url::form_urlencoded::byte_serialize(feed.as_bytes()).collect::<String>(),
            cursor.encode()
        );
        let params = SkeletonParams::parse(&query).unwrap();
        assert_eq!(params.feed, feed);
        assert_eq!(
            params.publisher,
            Some(("did:plc:owner".to_string(), "news".to_string()))
        );
        assert_eq!(params.limit, 7);
        assert_eq!(params.cursor, Some(cursor));

        let params = SkeletonParams::parse(&format!("feed={feed}")).unwrap();
        assert_eq!((params.limit, params.cursor), (50, None));
        // A handle authority is fine (matched on the stored uri only).
        let params =
            SkeletonParams::parse("feed=at://alice.example/app.bsky.feed.generator/x").unwrap();
        assert_eq!(params.publisher, None);
    }

    #[test]
    fn refuses_bad_parameters() {
        let feed = "feed=at://did:plc:owner/app.bsky.feed.generator/news";
        assert!(invalid("limit=5").contains("feed"));
        assert!(invalid("feed=https://example.com").contains("at-uri"));
        for limit in ["0", "-1", "101", "abc", "1.5", ""] {
            invalid(&format!("{feed}&limit={limit}"));
        }
        for limit in ["1", "100"] {
            assert!(SkeletonParams::parse(&format!("{feed}&limit={limit}")).is_ok());
        }
        assert!(invalid(&format!("{feed}&cursor=garbage")).contains("cursor"));
    }
}

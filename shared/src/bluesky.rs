//! A client for the Bluesky XRPC methods Outpost calls, on a PDS (sessions,
//! records, blobs, handles) or the AppView (author feeds, posts), following
//! the wire facts in `PLATFORMS.md`: errors are `{error, message}` with the
//! HTTP status, rate limits come as 429 with `ratelimit-*` headers and
//! `Retry-After`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::outbound::{OutboundRequest, Reply, SendFailure};

/// The collection of Bluesky posts.
pub const POST_COLLECTION: &str = "app.bsky.feed.post";

/// The collection of feed generator declarations.
pub const FEED_GENERATOR_COLLECTION: &str = "app.bsky.feed.generator";

/// An XRPC error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XrpcError {
    /// HTTP status.
    pub status: u16,
    /// The XRPC error name (`InvalidRequest`, `ExpiredToken`, ...).
    pub error: String,
    /// The server's message.
    pub message: String,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<u64>,
    /// `ratelimit-reset` (Unix seconds), when given.
    pub rate_limit_reset: Option<i64>,
}

/// Why an XRPC call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XrpcFailure {
    /// No answer (timeout, connection, denied host).
    #[error("{0}")]
    Transport(SendFailure),
    /// The server answered with an XRPC error.
    #[error("{} {}: {}", .0.status, .0.error, .0.message)]
    Xrpc(XrpcError),
    /// A 2xx answer that did not have the documented shape.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

impl XrpcFailure {
    /// Whether a later retry can succeed: transport trouble, 5xx, 429.
    /// A 500 after a write is ambiguous (the reference PDS answers a
    /// duplicate rkey that way) and callers settle it with `getRecord`.
    pub fn is_transient(&self) -> bool {
        match self {
            XrpcFailure::Transport(failure) => failure.is_transient(),
            XrpcFailure::Xrpc(e) => e.status >= 500 || e.status == 429,
            XrpcFailure::Decode(_) => false,
        }
    }

    /// Seconds the server asked us to wait (from `Retry-After`, else from
    /// `ratelimit-reset`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            XrpcFailure::Xrpc(e) => e.retry_after.or_else(|| {
                e.rate_limit_reset
                    .map(|reset| u64::try_from(reset - chrono::Utc::now().timestamp()).unwrap_or(0))
            }),
            _ => None,
        }
    }

    /// The XRPC error name, when the server gave one.
    pub fn error_name(&self) -> Option<&str> {
        match self {
            XrpcFailure::Xrpc(e) => Some(e.error.as_str()),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            XrpcFailure::Xrpc(e) => Some(e.status),
            _ => None,
        }
    }
}

/// A PDS session (`createSession` / `refreshSession`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The account's DID.
    pub did: String,
    /// The account's handle.
    pub handle: String,
    /// The access token.
    #[serde(rename = "accessJwt")]
    pub access_jwt: String,
    /// The refresh token.
    #[serde(rename = "refreshJwt")]
    pub refresh_jwt: String,
}

// Tokens never reach logs through Debug.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("did", &self.did)
            .field("handle", &self.handle)
            .field("access_jwt", &"<redacted>")
            .field("refresh_jwt", &"<redacted>")
            .finish()
    }
}

/// Where a record lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordRef {
    /// `at://did/collection/rkey`.
    pub uri: String,
    /// The record's CID.
    pub cid: String,
}

/// A post's author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Author {
    /// DID.
    pub did: String,
    /// Handle.
    #[serde(default)]
    pub handle: String,
    /// Display name.
    #[serde(default, rename = "displayName")]
    pub display_name: Option<String>,
}

/// `app.bsky.feed.defs#postView`, the fields Outpost reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostView {
    /// The post's at-uri.
    pub uri: String,
    /// The post's CID.
    pub cid: String,
    /// Who wrote it.
    pub author: Author,
    /// The `app.bsky.feed.post` record (`text`, `createdAt`, `langs`,
    /// `facets`, `embed`, `reply`).
    pub record: Value,
    /// The hydrated embed view (image URLs), when any.
    #[serde(default)]
    pub embed: Option<Value>,
    /// When the AppView indexed it.
    #[serde(default, rename = "indexedAt")]
    pub indexed_at: Option<String>,
    /// Likes.
    #[serde(default, rename = "likeCount")]
    pub like_count: i64,
    /// Reposts.
    #[serde(default, rename = "repostCount")]
    pub repost_count: i64,
    /// Replies.
    #[serde(default, rename = "replyCount")]
    pub reply_count: i64,
    /// Quotes.
    #[serde(default, rename = "quoteCount")]
    pub quote_count: i64,
}

impl PostView {
    /// The record's text (empty when absent).
    pub fn text(&self) -> &str {
        self.record
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The record's `createdAt` as written by the author's client.
    pub fn created_at(&self) -> Option<&str> {
        self.record.get("createdAt").and_then(Value::as_str)
    }

    /// The record's `langs`.
    pub fn langs(&self) -> Vec<String> {
        self.record
            .get("langs")
            .and_then(Value::as_array)
            .map(|langs| {
                langs
                    .iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The record key (last path segment of the uri).
    pub fn rkey(&self) -> &str {
        self.uri.rsplit('/').next().unwrap_or("")
    }
}

/// `app.bsky.feed.defs#feedViewPost`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedViewPost {
    /// The post.
    pub post: PostView,
    /// Why it is in the feed (a repost by the author), when not authored.
    #[serde(default)]
    pub reason: Option<Value>,
}

/// One page of `app.bsky.feed.getAuthorFeed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthorFeedPage {
    /// Newest first.
    pub feed: Vec<FeedViewPost>,
    /// The next page's cursor; absent on the last page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// An XRPC service (a PDS or the AppView) at a base URL.
#[derive(Debug, Clone)]
pub struct Xrpc {
    base: String,
    timeout: Duration,
}

impl Xrpc {
    /// The service at `base_url` (`https://bsky.social`, no trailing slash
    /// needed).
    pub fn new(base_url: &str) -> Self {
        Xrpc {
            base: base_url.trim_end_matches('/').to_string(),
            timeout: crate::outbound::DEFAULT_TIMEOUT,
        }
    }

    /// The same service with another request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, nsid: &str) -> String {
        format!("{}/xrpc/{nsid}", self.base)
    }

    /// A query (`GET`) with parameters; repeated names are allowed.
    pub fn query<T: DeserializeOwned>(
        &self,
        nsid: &str,
        params: &[(&str, &str)],
        bearer: Option<&str>,
    ) -> Result<T, XrpcFailure> {
        let mut request = OutboundRequest::get(&self.url(nsid))
            .query(params)
            .timeout(self.timeout);
        if let Some(token) = bearer {
            request = request.bearer(token);
        }
        decode(send(request)?)
    }

    /// A procedure (`POST` with a JSON body).
    pub fn procedure<T: DeserializeOwned>(
        &self,
        nsid: &str,
        body: &Value,
        bearer: Option<&str>,
    ) -> Result<T, XrpcFailure> {
        let mut request = OutboundRequest::post(&self.url(nsid))
            .json(body)
            .timeout(self.timeout);
        if let Some(token) = bearer {
            request = request.bearer(token);
        }
        decode(send(request)?)
    }

    /// `app.bsky.feed.getAuthorFeed` (AppView): one page, newest first.
    pub fn get_author_feed(
        &self,
        actor: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<AuthorFeedPage, XrpcFailure> {
        let limit = limit.clamp(1, 100).to_string();
        let mut params = vec![("actor", actor), ("limit", limit.as_str())];
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor));
        }
        self.query("app.bsky.feed.getAuthorFeed", &params, None)
    }

    /// `app.bsky.feed.getPosts` (AppView) for up to 25 uris.
    pub fn get_posts(&self, uris: &[&str]) -> Result<Vec<PostView>, XrpcFailure> {
        #[derive(Deserialize)]
        struct Posts {
            posts: Vec<PostView>,
        }
        if uris.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<(&str, &str)> = uris.iter().take(25).map(|uri| ("uris", *uri)).collect();
        let posts: Posts = self.query("app.bsky.feed.getPosts", &params, None)?;
        Ok(posts.posts)
    }

    /// `com.atproto.identity.resolveHandle`: the DID, or `None` when the
    /// handle does not exist (`HandleNotFound`, or the older
    /// `InvalidRequest` "Unable to resolve handle").
    pub fn resolve_handle(&self, handle: &str) -> Result<Option<String>, XrpcFailure> {
        #[derive(Deserialize)]
        struct Resolved {
            did: String,
        }
        match self.query::<Resolved>(
            "com.atproto.identity.resolveHandle",
            &[("handle", handle)],
            None,
        ) {
            Ok(resolved) => Ok(Some(resolved.did)),
            Err(XrpcFailure::Xrpc(e))
                if e.status == 400
                    && (e.error == "HandleNotFound"
                        || (e.error == "InvalidRequest" && e.message.contains("resolve"))) =>
            {
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// `com.atproto.server.createSession` with an app password.
    pub fn create_session(&self, identifier: &str, password: &str) -> Result<Session, XrpcFailure> {
        self.procedure(
            "com.atproto.server.createSession",
            &json!({ "identifier": identifier, "password": password }),
            None,
        )
    }

    /// `com.atproto.server.refreshSession` with the refresh token.
    pub fn refresh_session(&self, refresh_jwt: &str) -> Result<Session, XrpcFailure> {
        // No input: the reference server refuses a body where none is expected.
        let request = OutboundRequest::post(&self.url("com.atproto.server.refreshSession"))
            .bearer(refresh_jwt)
            .timeout(self.timeout);
        decode(send(request)?)
    }

    /// `com.atproto.repo.createRecord` in the session's repo.
    pub fn create_record(
        &self,
        session: &Session,
        collection: &str,
        rkey: Option<&str>,
        record: &Value,
    ) -> Result<RecordRef, XrpcFailure> {
        let mut body = json!({ "repo": session.did, "collection": collection, "record": record });
        if let Some(rkey) = rkey {
            body["rkey"] = json!(rkey);
        }
        self.procedure(
            "com.atproto.repo.createRecord",
            &body,
            Some(&session.access_jwt),
        )
    }

    /// `com.atproto.repo.putRecord` (create or replace) in the session's repo.
    pub fn put_record(
        &self,
        session: &Session,
        collection: &str,
        rkey: &str,
        record: &Value,
    ) -> Result<RecordRef, XrpcFailure> {
        self.procedure(
            "com.atproto.repo.putRecord",
            &json!({ "repo": session.did, "collection": collection, "rkey": rkey, "record": record }),
            Some(&session.access_jwt),
        )
    }

    /// `com.atproto.repo.getRecord`: `None` when the record does not exist
    /// (`RecordNotFound`), which is how an ambiguous write is settled.
    pub fn get_record(
        &self,
        repo: &str,
        collection: &str,
        rkey: &str,
    ) -> Result<Option<RecordRef>, XrpcFailure> {
        match self.query::<RecordRef>(
            "com.atproto.repo.getRecord",
            &[("repo", repo), ("collection", collection), ("rkey", rkey)],
            None,
        ) {
            Ok(found) => Ok(Some(found)),
            Err(XrpcFailure::Xrpc(e)) if e.error == "RecordNotFound" => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// `com.atproto.repo.uploadBlob`: the `blob` object to embed.
    pub fn upload_blob(
        &self,
        session: &Session,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, XrpcFailure> {
        #[derive(Deserialize)]
        struct Uploaded {
            blob: Value,
        }
        let request = OutboundRequest::post(&self.url("com.atproto.repo.uploadBlob"))
            .body(content_type, bytes)
            .bearer(&session.access_jwt)
            .timeout(self.timeout);
        let uploaded: Uploaded = decode(send(request)?)?;
        Ok(uploaded.blob)
    }
}

fn send(request: OutboundRequest) -> Result<Reply, XrpcFailure> {
    request.send().map_err(XrpcFailure::Transport)
}

/// Decodes a 2xx answer into `T`, or the XRPC error of any other status.
fn decode<T: DeserializeOwned>(reply: Reply) -> Result<T, XrpcFailure> {
    if reply.is_success() {
        // Procedures without output answer an empty body.
        let body: &[u8] = if reply.body.is_empty() {
            b"null"
        } else {
            &reply.body
        };
        return serde_json::from_slice(body)
            .map_err(|e| XrpcFailure::Decode(format!("{}: {e}", reply.target)));
    }
    Err(XrpcFailure::Xrpc(xrpc_error(&reply)))
}

/// Reads an XRPC error from a non-2xx answer; a body without the shape
/// still yields the status and a generic name.
pub fn xrpc_error(reply: &Reply) -> XrpcError {
    #[derive(Deserialize)]
    struct Body {
        error: Option<String>,
        message: Option<String>,
    }
    let body: Option<Body> = serde_json::from_slice(&reply.body).ok();
    let (error, message) = match body {
        Some(Body { error, message }) => (error, message),
        None => (None, None),
    };
    XrpcError {
        status: reply.status,
        error: error.unwrap_or_else(|| format!("HTTP{}", reply.status)),
        message: message.unwrap_or_default(),
        retry_after: reply.retry_after_seconds(),
        rate_limit_reset: reply
            .header("ratelimit-reset")
            .and_then(|v| v.trim().parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        Reply::new(status, headers, body, "http://pds/xrpc/x")
    }

    #[test]
    fn xrpc_errors_keep_name_message_and_limits() {
        let failure = decode::<Value>(reply(
            429,
            &[("retry-after", "30"), ("ratelimit-reset", "1700000000")],
            r#"{"error":"RateLimitExceeded","message":"Rate Limit Exceeded"}"#,
        ))
        .unwrap_err();
        assert!(failure.is_transient());
        assert_eq!(failure.retry_after(), Some(30));
        assert_eq!(failure.error_name(), Some("RateLimitExceeded"));

        let failure = decode::<Value>(reply(
            400,
            &[],
            r#"{"error":"InvalidRequest","message":"Invalid record key"}"#,
        ))
        .unwrap_err();
        assert!(!failure.is_transient());
        assert_eq!(
            failure.to_string(),
            "400 InvalidRequest: Invalid record key"
        );

        let failure = decode::<Value>(reply(502, &[], "<html>bad gateway</html>")).unwrap_err();
        assert_eq!(failure.error_name(), Some("HTTP502"));
        assert!(failure.is_transient());
    }

    #[test]
    fn sessions_never_print_tokens() {
        let session = Session {
            did: "did:plc:abc".into(),
            handle: "a.test".into(),
            access_jwt: "ACCESS".into(),
            refresh_jwt: "REFRESH".into(),
        };
        let text = format!("{session:?}");
        assert!(
            !text.contains("ACCESS") && !text.contains("REFRESH"),
            "{text}"
        );
    }

    #[test]
    fn post_views_decode_with_defaults() {
        let view: PostView = serde_json::from_value(json!({
            "uri": "at://did:plc:a/app.bsky.feed.post/3kabc",
            "cid": "bafy",
            "author": {"did": "did:plc:a", "handle": "a.test"},
            "record": {"text": "hi", "createdAt": "2026-01-01T00:00:00.123456Z", "langs": ["en"]},
            "likeCount": 3
        }))
        .unwrap();
        assert_eq!(view.text(), "hi");
        assert_eq!(view.rkey(), "3kabc");
        assert_eq!(view.langs(), vec!["en".to_string()]);
        assert_eq!(view.like_count, 3);
        assert_eq!(view.reply_count, 0);
    }
}

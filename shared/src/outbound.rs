//! Outbound HTTP to the outside platforms: a small blocking client over
//! `wasi:http/outgoing-handler@0.2.0`, the interface Spin gives components.
//!
//! It exists (rather than `spin_sdk::http::send`) for one reason: timeouts.
//! The SDK's `send` passes no request options, so a platform that hangs holds
//! the component until the host's own limit (600 s in wasmtime and Spin) and
//! past any lease. Here every request carries connect, first-byte and
//! between-bytes timeouts, and the whole body is read with a deadline.
//!
//! Errors never carry the query string or credentials of the URL: platforms
//! such as the Graph API take `access_token` in the query.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use wasi::http::outgoing_handler::{self, FutureIncomingResponse};
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// The default time to wait for the first byte and between bytes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer body read into memory (platform answers are JSON pages
/// and media up to a few MB; anything bigger is refused, not buffered).
pub const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// The host refused the destination (`allowed_outbound_hosts`).
    #[error("request to {0} denied: the host is not in allowed_outbound_hosts")]
    Denied(String),
    /// No answer within the timeout.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The connection could not be made or broke.
    #[error("connection to {0} failed: {1}")]
    Connection(String, String),
    /// The answer was not what was expected (bad JSON, too large).
    #[error("unexpected answer from {0}: {1}")]
    Decode(String, String),
    /// The request could not be built (bad URL, bad header).
    #[error("bad request to {0}: {1}")]
    Invalid(String, String),
}

impl SendFailure {
    /// Whether trying again later can succeed (timeouts and broken
    /// connections can; a denied host or a malformed request cannot).
    pub fn is_transient(&self) -> bool {
        matches!(self, SendFailure::Timeout(_) | SendFailure::Connection(..))
    }
}

/// An answer: status, headers (names lower-cased) and the whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers, names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// Where the request went, without query or credentials (for messages).
    pub target: String,
}

impl Reply {
    /// An answer made by hand (for tests of code that reads answers).
    pub fn new(status: u16, headers: &[(&str, &str)], body: &str, target: &str) -> Self {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            target: target.to_string(),
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body decoded as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, SendFailure> {
        serde_json::from_slice(&self.body).map_err(|e| {
            SendFailure::Decode(
                self.target.clone(),
                format!("status {}: invalid JSON: {e}", self.status),
            )
        })
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Retry-After` in seconds (delta-seconds form; an HTTP date is read
    /// relative to now).
    pub fn retry_after_seconds(&self) -> Option<u64> {
        let value = self.header("retry-after")?.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(seconds);
        }
        let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let delta = when.timestamp() - chrono::Utc::now().timestamp();
        Some(u64::try_from(delta).unwrap_or(0))
    }
}

/// One outbound request, built up and then sent with [`OutboundRequest::send`].
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    method: String,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

impl OutboundRequest {
    /// A request with `method` (GET, POST, ...) to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        OutboundRequest {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `GET url`.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// `POST url`.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// `PUT url`.
    pub fn put(url: &str) -> Self {
        Self::new("PUT", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// A JSON body (and its content type).
    pub fn json(self, body: &serde_json::Value) -> Self {
        self.body("application/json", body.to_string().into_bytes())
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.body("application/x-www-form-urlencoded", encoded.into_bytes())
    }

    /// A raw body with its content type.
    pub fn body(mut self, content_type: &str, bytes: Vec<u8>) -> Self {
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        self.headers
            .push(("content-type".into(), content_type.to_string()));
        self.body = bytes;
        self
    }

    /// Appends query parameters (percent-encoded here).
    pub fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        self.query
            .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// The time to wait for the connection, the first byte and between
    /// bytes; the whole body must also arrive within four times this.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL without query string or user info, for messages.
    pub fn target(&self) -> String {
        describe_target(&self.url)
    }

    /// Sends the request and reads the whole answer. Any status is an
    /// answer; only a missing answer is a [`SendFailure`].
    pub fn send(self) -> Result<Reply, SendFailure> {
        // The whole body must arrive by a deadline too: a peer that trickles
        // a byte just inside each between-bytes timeout would hold us forever.
        let read_for = self.timeout.saturating_mul(4);
        let mut incoming = self.open()?;
        let body = incoming.read_all(MAX_REPLY_BYTES, Some(Instant::now() + read_for))?;
        Ok(Reply {
            status: incoming.status,
            headers: std::mem::take(&mut incoming.headers),
            body,
            target: std::mem::take(&mut incoming.target),
        })
    }

    /// Sends the request (its small body, if any) and returns the answer's
    /// status and headers with the body left unread, for answers too big to
    /// hold in memory: the caller reads it chunk by chunk with
    /// [`Incoming::read_chunk`].
    pub fn open(self) -> Result<Incoming, SendFailure> {
        let (future, body, target) = self.dispatch(None)?;
        if let Some(body) = body {
            write_body(&body, &self.body, &target)?;
            OutgoingBody::finish(body, None).map_err(|code| map_error_code(&target, code))?;
        }
        Incoming::wait(&future, target)
    }

    /// Starts the request with a body of exactly `length` bytes that the
    /// caller writes with [`Upload::write`] (for bodies too big to hold in
    /// memory); [`Upload::finish`] returns the whole (small) answer.
    pub fn upload(self, length: u64) -> Result<Upload, SendFailure> {
        let (future, body, target) = self.dispatch(Some(length))?;
        let body = body.ok_or_else(|| SendFailure::Invalid(target.clone(), "no body".into()))?;
        let stream = body
            .write()
            .map_err(|()| SendFailure::Invalid(target.clone(), "body stream".into()))?;
        Ok(Upload {
            stream: Some(stream),
            body: Some(body),
            future,
            target,
            expected: length,
            written: 0,
        })
    }

    /// Builds the request and hands it to the host; the body is returned
    /// unwritten.
    fn dispatch(
        &self,
        streamed_length: Option<u64>,
    ) -> Result<(FutureIncomingResponse, Option<OutgoingBody>, String), SendFailure> {
        let target = self.target();
        let mut full = url::Url::parse(&self.url)
            .map_err(|e| SendFailure::Invalid(target.clone(), e.to_string()))?;
        if !self.query.is_empty() {
            full.query_pairs_mut().extend_pairs(&self.query);
        }
        let length = streamed_length.unwrap_or(self.body.len() as u64);
        let request = self.build(&full, &target, length)?;
        let options = RequestOptions::new();
        let nanos = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        options.set_connect_timeout(Some(nanos)).ok();
        options.set_first_byte_timeout(Some(nanos)).ok();
        options.set_between_bytes_timeout(Some(nanos)).ok();
        let body = request
            .body()
            .map_err(|()| SendFailure::Invalid(target.clone(), "body already taken".into()))?;
        let future = outgoing_handler::handle(request, Some(options))
            .map_err(|code| map_error_code(&target, code))?;
        Ok((future, Some(body), target))
    }

    fn build(
        &self,
        url: &url::Url,
        target: &str,
        length: u64,
    ) -> Result<OutgoingRequest, SendFailure> {
        let invalid = |what: &str| SendFailure::Invalid(target.to_string(), what.to_string());
        let mut entries: Vec<(String, Vec<u8>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
            .collect();
        if length > 0 || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") {
            entries.push(("content-length".into(), length.to_string().into_bytes()));
        }
        let fields = Fields::from_list(&entries).map_err(|e| invalid(&format!("header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            other => Method::Other(other.to_string()),
        };
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_string()),
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        let host = url.host_str().ok_or_else(|| invalid("no host"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        request
            .set_authority(Some(&authority))
            .map_err(|()| invalid("authority"))?;
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        };
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid("path"))?;
        Ok(request)
    }
}

/// An answer whose body is read piece by piece ([`OutboundRequest::open`]).
///
/// Fields drop in declaration order: the stream before its body, the body
/// before its response, as wasi:http requires of child resources.
pub struct Incoming {
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
    _response: IncomingResponse,
    /// HTTP status.
    pub status: u16,
    /// Headers, names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Where the request went, without query or credentials (for messages).
    pub target: String,
}

impl Incoming {
    fn wait(future: &FutureIncomingResponse, target: String) -> Result<Self, SendFailure> {
        future.subscribe().block();
        let response = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(map_error_code(&target, code)),
            Some(Err(())) | None => {
                return Err(SendFailure::Connection(
                    target,
                    "response future failed".into(),
                ));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let body = response
            .consume()
            .map_err(|()| SendFailure::Connection(target.clone(), "body unavailable".into()))?;
        let stream = body
            .stream()
            .map_err(|()| SendFailure::Connection(target.clone(), "body stream".into()))?;
        Ok(Incoming {
            stream: Some(stream),
            body: Some(body),
            _response: response,
            status,
            headers,
            target,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next piece of the body, at most `max` bytes; `None` at its end.
    /// A peer that stops sending fails with the request's between-bytes
    /// timeout.
    pub fn read_chunk(&mut self, max: u64) -> Result<Option<Vec<u8>>, SendFailure> {
        let Some(stream) = self.stream.as_ref() else {
            return Ok(None);
        };
        loop {
            match stream.blocking_read(max) {
                // A zero-length read is not the end: the stream was not ready.
                Ok(chunk) if chunk.is_empty() => continue,
                Ok(chunk) => return Ok(Some(chunk)),
                Err(StreamError::Closed) => {
                    self.stream = None;
                    return Ok(None);
                }
                Err(e) => return Err(stream_failure(&self.target, e)),
            }
        }
    }

    /// Reads the rest of the body, refusing more than `limit` bytes (for
    /// small answers such as error documents).
    pub fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, SendFailure> {
        self.read_all(limit, None)
    }

    /// Reads the rest of the body, refusing more than `limit` bytes and
    /// giving up once `deadline` has passed.
    fn read_all(
        &mut self,
        limit: usize,
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, SendFailure> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.read_chunk(64 * 1024)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > limit {
                return Err(SendFailure::Decode(
                    self.target.clone(),
                    format!("answer larger than {limit} bytes"),
                ));
            }
            if deadline.is_some_and(|d| Instant::now() > d) {
                return Err(SendFailure::Timeout(self.target.clone()));
            }
        }
        Ok(bytes)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            drop(IncomingBody::finish(body));
        }
    }
}

/// A request whose body is written piece by piece ([`OutboundRequest::upload`]).
pub struct Upload {
    stream: Option<OutputStream>,
    body: Option<OutgoingBody>,
    future: FutureIncomingResponse,
    target: String,
    expected: u64,
    written: u64,
}

impl Upload {
    /// Writes the next piece of the body (never more than the announced
    /// length in total).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SendFailure> {
        if self.written + bytes.len() as u64 > self.expected {
            return Err(SendFailure::Invalid(
                self.target.clone(),
                format!("body longer than the announced {} bytes", self.expected),
            ));
        }
        let stream = self
            .stream
            .as_ref()
            .ok_or_else(|| SendFailure::Invalid(self.target.clone(), "body finished".into()))?;
        write_all(stream, bytes, &self.target)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Ends the body (it must have the announced length) and reads the whole
    /// answer (at most [`MAX_REPLY_BYTES`]).
    pub fn finish(mut self) -> Result<Reply, SendFailure> {
        if self.written != self.expected {
            return Err(SendFailure::Invalid(
                self.target.clone(),
                format!(
                    "body of {} bytes, {} announced",
                    self.written, self.expected
                ),
            ));
        }
        drop(self.stream.take());
        if let Some(body) = self.body.take() {
            OutgoingBody::finish(body, None).map_err(|code| map_error_code(&self.target, code))?;
        }
        let mut incoming = Incoming::wait(&self.future, self.target.clone())?;
        let body = incoming.read_to_end(MAX_REPLY_BYTES)?;
        Ok(Reply {
            status: incoming.status,
            headers: std::mem::take(&mut incoming.headers),
            body,
            target: self.target.clone(),
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        drop(self.stream.take());
        drop(self.body.take());
    }
}

fn write_body(body: &OutgoingBody, bytes: &[u8], target: &str) -> Result<(), SendFailure> {
    if bytes.is_empty() {
        return Ok(());
    }
    let stream = body
        .write()
        .map_err(|()| SendFailure::Invalid(target.to_string(), "body stream".into()))?;
    write_all(&stream, bytes, target)
}

/// Writes all of `bytes` to `stream` and flushes it.
///
/// Each write is as large as the stream accepts at that moment
/// (`check-write`; wasmtime and Spin allow 1 MiB per write), waiting only
/// while it accepts nothing, and the stream is flushed once at the end
/// (which waits until the host can take more, so memory stays bounded).
/// `blocking-write-and-flush` takes at most 4096 bytes per call and waits for
/// each flush: one host call and one hop to the connection task per 4 KiB.
fn write_all(stream: &OutputStream, mut bytes: &[u8], target: &str) -> Result<(), SendFailure> {
    if bytes.is_empty() {
        return Ok(());
    }
    {
        // A child of the stream: dropped (end of this block) before it.
        let writable = stream.subscribe();
        while !bytes.is_empty() {
            let permitted = stream
                .check_write()
                .map_err(|e| stream_failure(target, e))?;
            if permitted == 0 {
                writable.block();
                continue;
            }
            let take = usize::try_from(permitted).map_or(bytes.len(), |p| p.min(bytes.len()));
            let (chunk, rest) = bytes.split_at(take);
            stream.write(chunk).map_err(|e| stream_failure(target, e))?;
            bytes = rest;
        }
    }
    // Closed once every byte was taken is no failure: the host closes the
    // body when it has the announced length (wasmtime's own
    // blocking-write-and-flush ignores it the same way); a request that
    // really broke fails when its answer is awaited.
    match stream.blocking_flush() {
        Ok(()) | Err(StreamError::Closed) => Ok(()),
        Err(e) => Err(stream_failure(target, e)),
    }
}

fn stream_failure(target: &str, error: StreamError) -> SendFailure {
    match error {
        StreamError::Closed => SendFailure::Connection(target.to_string(), "stream closed".into()),
        StreamError::LastOperationFailed(e) => {
            let text = e.to_debug_string();
            if text.to_ascii_lowercase().contains("timeout") {
                SendFailure::Timeout(target.to_string())
            } else {
                SendFailure::Connection(target.to_string(), text)
            }
        }
    }
}

fn map_error_code(target: &str, code: ErrorCode) -> SendFailure {
    let target = target.to_string();
    match code {
        ErrorCode::HttpRequestDenied => SendFailure::Denied(target),
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::DnsTimeout => SendFailure::Timeout(target),
        ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpProtocolError => {
            SendFailure::Invalid(target, format!("{code:?}"))
        }
        other => SendFailure::Connection(target, format!("{other:?}")),
    }
}

/// `scheme://host[:port]/path` of `url`: no user info, no query, no
/// fragment, so messages never carry credentials or tokens.
pub fn describe_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or("?");
            match parsed.port() {
                Some(port) => format!("{}://{host}:{port}{}", parsed.scheme(), parsed.path()),
                None => format!("{}://{host}{}", parsed.scheme(), parsed.path()),
            }
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_carry_credentials_or_queries() {
        assert_eq!(
            describe_target("https://user:pw@graph.example:8443/me/media?access_token=SECRET#x"),
            "https://graph.example:8443/me/media"
        );
        assert_eq!(describe_target("not a url"), "<invalid url>");
    }

    #[test]
    fn retry_after_reads_seconds() {
        let reply = Reply {
            status: 429,
            headers: vec![("retry-after".into(), "17".into())],
            body: vec![],
            target: "x".into(),
        };
        assert_eq!(reply.retry_after_seconds(), Some(17));
        assert_eq!(reply.header("Retry-After"), Some("17"));
    }

    #[test]
    fn transient_failures_are_timeouts_and_connections() {
        assert!(SendFailure::Timeout("t".into()).is_transient());
        assert!(SendFailure::Connection("t".into(), "reset".into()).is_transient());
        assert!(!SendFailure::Denied("t".into()).is_transient());
    }
}

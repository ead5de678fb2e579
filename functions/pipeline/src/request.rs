//! The incoming request as the routes need it: method, path, query,
//! headers, and a body read either whole (small JSON bodies, with a limit)
//! or chunk by chunk (artifact uploads, never held whole in memory).

use spin_sdk::http::{IncomingRequest, Method};
use spin_sdk::wit::wasi::http0_2_0::types::IncomingBody;
use wasi::io::streams::{InputStream, StreamError};

use crate::error::{PipelineError, Result};

/// How many bytes one read of the body asks for.
const READ_SIZE: u64 = 1024 * 1024;

/// One request.
pub struct Call {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    request: Option<IncomingRequest>,
}

impl Call {
    /// Reads method, path, query and headers; the body stays unread.
    pub fn new(request: IncomingRequest) -> Self {
        let method = request.method();
        let path_and_query = request.path_with_query().unwrap_or_else(|| "/".into());
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path.to_string(), query.to_string()),
            None => (path_and_query, String::new()),
        };
        let query = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let headers = request
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
        Call {
            method,
            path,
            query,
            headers,
            request: Some(request),
        }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The announced `Content-Length`, if any (a malformed one is refused).
    pub fn content_length(&self) -> Result<Option<u64>> {
        match self.header("content-length") {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| PipelineError::bad_request("Content-Length is not a number")),
        }
    }

    /// The body, read chunk by chunk.
    pub fn body(&mut self) -> Result<Body> {
        let request = self
            .request
            .take()
            .ok_or_else(|| PipelineError::bad_request("the body was already read"))?;
        let body = request
            .consume()
            .map_err(|()| PipelineError::bad_request("the body cannot be read"))?;
        let stream = body
            .stream()
            .map_err(|()| PipelineError::bad_request("the body cannot be read"))?;
        Ok(Body {
            stream: Some(stream),
            _body: Some(body),
            _request: request,
        })
    }

    /// The whole body, refusing more than `limit` bytes (by Content-Length
    /// first, then while reading).
    pub fn read_body(&mut self, limit: u64) -> Result<Vec<u8>> {
        if self.content_length()?.is_some_and(|n| n > limit) {
            return Err(PipelineError::TooLarge { limit });
        }
        let mut body = self.body()?;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next_chunk()? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(PipelineError::TooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

impl Call {
    /// Reads and drops up to `limit` bytes of an unread body, so a client
    /// still sending gets the early answer instead of a broken connection.
    pub fn discard_body(&mut self, limit: u64) {
        if self.request.is_none() {
            return;
        }
        let Ok(mut body) = self.body() else {
            return;
        };
        let mut read: u64 = 0;
        while let Ok(Some(chunk)) = body.next_chunk() {
            read += chunk.len() as u64;
            if read > limit {
                return;
            }
        }
    }
}

/// A request body being read. Fields drop in order: the stream before its
/// body, the body before its request, as wasi:http requires.
pub struct Body {
    stream: Option<InputStream>,
    _body: Option<IncomingBody>,
    _request: IncomingRequest,
}

impl Body {
    /// The next piece of the body; `None` at its end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(stream) = self.stream.as_ref() else {
            return Ok(None);
        };
        loop {
            match stream.blocking_read(READ_SIZE) {
                // Not ready yet: not the end.
                Ok(chunk) if chunk.is_empty() => continue,
                Ok(chunk) => return Ok(Some(chunk)),
                Err(StreamError::Closed) => {
                    self.stream = None;
                    return Ok(None);
                }
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(PipelineError::bad_request(format!(
                        "the body broke off: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
}

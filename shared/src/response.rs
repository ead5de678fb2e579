//! Building HTTP answers: JSON bodies and errors in the one shape every
//! component uses.

use spin_sdk::http::Response;

use crate::error::Error;

/// A JSON response with `status`.
pub fn json(status: u16, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

/// The response for `error`: its status and `{"error", "message"}` body.
/// A database outage also carries `Retry-After`, so senders come back soon.
pub fn error(error: &Error) -> Response {
    let mut response = json(error.status(), &error.body());
    if matches!(error, Error::DatabaseUnavailable(_)) {
        response.set_header("retry-after", "1");
    }
    response
}

/// Maps a handler's result to a response.
pub fn from_result(result: Result<Response, Error>) -> Response {
    result.unwrap_or_else(|e| error(&e))
}

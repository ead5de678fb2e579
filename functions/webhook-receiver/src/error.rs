//! The one error type of this crate: every way a webhook request can be
//! refused, each with its own stable code, mapped to an HTTP status and the
//! `{"error": code, "message": why}` body in one place. Database and
//! configuration failures are the shared crate's errors, carried unchanged
//! (so an unreachable database stays a 503 with `Retry-After`).

use serde_json::json;
use spin_sdk::http::Response;

/// Why a webhook request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The body is over the size limit (413 `payload_too_large`).
    #[error("the body is over the {limit} byte limit")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A header the signature scheme needs is absent or empty (401).
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// A signature header is present but not in its scheme's form (401).
    #[error("{0}")]
    BadEncoding(String),
    /// The timestamp header is not integer Unix seconds (401).
    #[error("the webhook-timestamp header is not integer Unix seconds")]
    BadTimestamp,
    /// The timestamp is more than the tolerance away from now (401).
    #[error("the webhook-timestamp is {skew} s away from now; at most {tolerance} s is accepted")]
    StaleTimestamp {
        /// Seconds between the timestamp and now (either sign).
        skew: i64,
        /// The accepted distance in seconds.
        tolerance: i64,
    },
    /// No signature matches the body (401).
    #[error("{0}")]
    SignatureMismatch(&'static str),
    /// A Strava event whose `subscription_id` is not ours (401).
    #[error("the event's subscription_id is not this application's subscription")]
    UnknownSubscription,
    /// An unsigned (Strava) body that is not JSON cannot be authenticated (400).
    #[error("the body is not JSON: {0}")]
    BadJson(String),
    /// A subscription handshake with a verify token that is not ours (403).
    #[error("hub.verify_token does not match")]
    VerifyTokenMismatch,
    /// A subscription handshake whose `hub.mode` is not `subscribe` (400).
    #[error("hub.mode must be `subscribe`")]
    UnsupportedMode,
    /// A subscription handshake without a required parameter (400).
    #[error("the {0} query parameter is missing")]
    MissingParameter(&'static str),
    /// A platform this receiver does not serve (404).
    #[error("no webhook receiver at {0}")]
    NotFound(String),
    /// A method the route does not answer (405).
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The request body could not be read (400).
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    /// Database, configuration and other shared failures (5xx).
    #[error(transparent)]
    Shared(#[from] shared::Error),
}

impl WebhookError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::PayloadTooLarge { .. } => 413,
            WebhookError::MissingHeader(_)
            | WebhookError::BadEncoding(_)
            | WebhookError::BadTimestamp
            | WebhookError::StaleTimestamp { .. }
            | WebhookError::SignatureMismatch(_)
            | WebhookError::UnknownSubscription => 401,
            WebhookError::BadJson(_)
            | WebhookError::UnsupportedMode
            | WebhookError::MissingParameter(_)
            | WebhookError::UnreadableBody(_) => 400,
            WebhookError::VerifyTokenMismatch => 403,
            WebhookError::NotFound(_) => 404,
            WebhookError::MethodNotAllowed(_) => 405,
            WebhookError::Shared(e) => e.status(),
        }
    }

    /// The stable machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::PayloadTooLarge { .. } => "payload_too_large",
            WebhookError::MissingHeader(_) => "missing_header",
            WebhookError::BadEncoding(_) => "bad_encoding",
            WebhookError::BadTimestamp => "bad_timestamp",
            WebhookError::StaleTimestamp { .. } => "stale_timestamp",
            WebhookError::SignatureMismatch(_) => "signature_mismatch",
            WebhookError::UnknownSubscription => "unknown_subscription",
            WebhookError::BadJson(_) => "bad_json",
            WebhookError::VerifyTokenMismatch => "verify_token_mismatch",
            WebhookError::UnsupportedMode => "unsupported_mode",
            WebhookError::MissingParameter(_) => "missing_parameter",
            WebhookError::NotFound(_) => "not_found",
            WebhookError::MethodNotAllowed(_) => "method_not_allowed",
            WebhookError::UnreadableBody(_) => "unreadable_body",
            WebhookError::Shared(e) => e.code(),
        }
    }

    /// The JSON body: `{"error": "<code>", "message": "<why>"}`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": self.code(), "message": self.to_string() })
    }

    /// The response: shared errors answer as every component does (a
    /// database outage with `Retry-After`), the rest with their own code.
    pub fn response(&self) -> Response {
        match self {
            WebhookError::Shared(e) => shared::response::error(e),
            other => shared::response::json(other.status(), &other.body()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_are_mapped_in_one_place() {
        let cases = [
            (
                WebhookError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                WebhookError::MissingHeader("webhook-id"),
                401,
                "missing_header",
            ),
            (WebhookError::BadEncoding("x".into()), 401, "bad_encoding"),
            (WebhookError::BadTimestamp, 401, "bad_timestamp"),
            (
                WebhookError::StaleTimestamp {
                    skew: 301,
                    tolerance: 300,
                },
                401,
                "stale_timestamp",
            ),
            (
                WebhookError::SignatureMismatch("x"),
                401,
                "signature_mismatch",
            ),
            (
                WebhookError::UnknownSubscription,
                401,
                "unknown_subscription",
            ),
            (WebhookError::BadJson("x".into()), 400, "bad_json"),
            (
                WebhookError::VerifyTokenMismatch,
                403,
                "verify_token_mismatch",
            ),
            (WebhookError::UnsupportedMode, 400, "unsupported_mode"),
            (
                WebhookError::MissingParameter("hub.challenge"),
                400,
                "missing_parameter",
            ),
            (WebhookError::NotFound("/x".into()), 404, "not_found"),
            (
                WebhookError::MethodNotAllowed("PUT".into()),
                405,
                "method_not_allowed",
            ),
            (
                WebhookError::Shared(shared::Error::DatabaseUnavailable("x".into())),
                503,
                "database_unavailable",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status(), status, "{error:?}");
            assert_eq!(error.body()["error"], code, "{error:?}");
            assert!(!error.to_string().is_empty());
        }
    }
}

//! The pipeline's one error type, mapped to an HTTP status and a JSON body
//! in one place. Refused moves are 409s with a machine-readable `reason`.

use serde_json::{Value, json};
use spin_sdk::http::Response;

/// Everything a pipeline request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Database, configuration, credentials, bad input, unknown routes: the
    /// shared errors and their statuses.
    #[error(transparent)]
    Shared(#[from] shared::Error),
    /// The token is valid but may not do this (a bot token used under
    /// another bot's name).
    #[error("{message}")]
    Forbidden {
        /// Machine-readable reason.
        reason: String,
        /// Why, in words.
        message: String,
    },
    /// A move the state machine does not allow, an event id used twice for
    /// different events, a cap reached: nothing was changed.
    #[error("{message}")]
    Conflict {
        /// Machine-readable reason (`run_completed`, `event_id_reused`, ...).
        reason: String,
        /// Why, in words.
        message: String,
        /// The run's status when refused, if about a run.
        status: Option<String>,
    },
    /// The body is larger than the limit: nothing was stored.
    #[error("the body is larger than the limit of {limit} bytes; nothing was stored")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The bytes do not have the SHA-256 the bot announced: nothing stored.
    #[error("the body's SHA-256 is {computed}, not the announced {announced}; nothing was stored")]
    ChecksumMismatch {
        /// What the bot sent (hex).
        announced: String,
        /// What arrived (hex).
        computed: String,
    },
    /// The object store could not take the artifact (nothing recorded).
    #[error("{0}")]
    Store(String),
}

impl PipelineError {
    /// A 409 refusal.
    pub fn conflict(reason: &str, message: impl Into<String>) -> Self {
        PipelineError::Conflict {
            reason: reason.into(),
            message: message.into(),
            status: None,
        }
    }

    /// A 400 refusal.
    pub fn bad_request(message: impl Into<String>) -> Self {
        PipelineError::Shared(shared::Error::BadRequest(message.into()))
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        PipelineError::Shared(shared::Error::NotFound(message.into()))
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            PipelineError::Shared(e) => e.status(),
            PipelineError::Forbidden { .. } => 403,
            PipelineError::Conflict { .. } => 409,
            PipelineError::TooLarge { .. } => 413,
            PipelineError::ChecksumMismatch { .. } => 422,
            PipelineError::Store(_) => 503,
        }
    }

    /// The JSON body: `{"error", "message"}` plus `reason` (and `status`)
    /// for refusals.
    pub fn body(&self) -> Value {
        match self {
            PipelineError::Shared(e) => e.body(),
            PipelineError::Forbidden { reason, message } => {
                json!({ "error": "forbidden", "reason": reason, "message": message })
            }
            PipelineError::Conflict {
                reason,
                message,
                status,
            } => {
                let mut body = json!({ "error": "conflict", "reason": reason, "message": message });
                if let Some(status) = status {
                    body["status"] = json!(status);
                }
                body
            }
            PipelineError::TooLarge { limit } => json!({
                "error": "payload_too_large", "limit_bytes": limit, "message": self.to_string()
            }),
            PipelineError::ChecksumMismatch { .. } => json!({
                "error": "checksum_mismatch", "message": self.to_string()
            }),
            PipelineError::Store(_) => json!({
                "error": "store_unavailable", "message": self.to_string()
            }),
        }
    }

    /// The response for this error.
    pub fn response(&self) -> Response {
        if let PipelineError::Shared(e) = self {
            return shared::response::error(e);
        }
        let mut response = shared::response::json(self.status(), &self.body());
        if matches!(self, PipelineError::Store(_)) {
            response.set_header("retry-after", "5");
        }
        response
    }
}

/// Result with [`PipelineError`].
pub type Result<T> = std::result::Result<T, PipelineError>;

/// Turns a refusal answered by a SQL function (`{"outcome": ..., "reason",
/// "message", "status"}`) into its error; `None` when the outcome is not a
/// refusal.
pub fn refusal(answer: &Value) -> Option<PipelineError> {
    let text = |key: &str| answer.get(key).and_then(Value::as_str).map(str::to_string);
    let reason = text("reason").unwrap_or_default();
    let message = text("message").unwrap_or_else(|| reason.clone());
    match answer.get("outcome").and_then(Value::as_str)? {
        "unauthorized" => Some(PipelineError::Shared(shared::Error::Unauthorized(message))),
        "forbidden" => Some(PipelineError::Forbidden { reason, message }),
        "bad_request" => Some(PipelineError::bad_request(message)),
        "not_found" => Some(PipelineError::not_found("no such run")),
        "refused" => Some(PipelineError::Conflict {
            reason,
            message,
            status: text("status"),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_from_sql_map_to_their_statuses() {
        let cases = [
            (
                json!({"outcome": "unauthorized", "message": "revoked"}),
                401,
            ),
            (
                json!({"outcome": "forbidden", "reason": "bot_name_mismatch"}),
                403,
            ),
            (
                json!({"outcome": "bad_request", "message": "bot_name"}),
                400,
            ),
            (json!({"outcome": "not_found"}), 404),
            (
                json!({"outcome": "refused", "reason": "run_completed", "status": "completed"}),
                409,
            ),
        ];
        for (answer, status) in cases {
            assert_eq!(
                refusal(&answer).map(|e| e.status()),
                Some(status),
                "{answer}"
            );
        }
        assert!(refusal(&json!({"outcome": "accepted"})).is_none());
        let conflict = refusal(&json!({"outcome": "refused", "reason": "run_cancelled", "status": "cancelled", "message": "m"})).unwrap();
        assert_eq!(conflict.body()["reason"], "run_cancelled");
        assert_eq!(conflict.body()["status"], "cancelled");
    }

    #[test]
    fn size_and_checksum_refusals_say_nothing_was_stored() {
        assert_eq!(PipelineError::TooLarge { limit: 10 }.status(), 413);
        let mismatch = PipelineError::ChecksumMismatch {
            announced: "a".into(),
            computed: "b".into(),
        };
        assert_eq!(mismatch.status(), 422);
        assert!(mismatch.to_string().contains("nothing was stored"));
    }
}

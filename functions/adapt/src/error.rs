//! The crate's one error type, mapped to an HTTP status, a code and a JSON
//! body `{"error": "<code>", "message": "<why>"}` in one place. Everything
//! `shared` raises (database, configuration, bad token, bad request) keeps
//! its own status and code. No message carries the API key or prompt text.

use serde_json::json;
use shared::response;
use spin_sdk::http::Response;

/// Everything that can go wrong while adapting.
#[derive(Debug, thiserror::Error)]
pub enum AdaptError {
    /// Raised by `shared` (database, configuration, access token, input).
    #[error(transparent)]
    Shared(#[from] shared::Error),
    /// The voice profile named is not one of the user's (404; unknown ids
    /// and other users' answer alike).
    #[error("{0}")]
    VoiceProfileNotFound(String),
    /// No such adaptation of the user's (404).
    #[error("{0}")]
    NotFound(String),
    /// The user's model calls for today are used up (429 with when the
    /// limit resets, and `Retry-After`).
    #[error(
        "daily limit of {limit} AI text runs reached ({used} used today); it resets at {resets_at}"
    )]
    DailyLimit {
        /// Runs used today.
        used: i64,
        /// The limit.
        limit: i64,
        /// RFC 3339 time of the reset (next UTC midnight).
        resets_at: String,
        /// Seconds until then.
        retry_after: u64,
    },
    /// The model API is rate limited, failing or unreachable for now (503
    /// with `Retry-After`).
    #[error("{message}")]
    ModelUnavailable {
        /// Why, without key or prompt.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The model API refused the call for good (bad key, bad model, bad
    /// request: 502).
    #[error("{0}")]
    ModelApi(String),
    /// The model's answer was not the JSON asked for, twice (502).
    #[error("{0}")]
    InvalidAnswer(String),
    /// A variant was still over its platform's limit after re-asking (502).
    #[error("{0}")]
    TooLong(String),
    /// The model declined to write the posts (422).
    #[error("{0}")]
    Refused(String),
    /// An identical request has been writing this idea for longer than its
    /// model calls may take (409 with `Retry-After`).
    #[error("an identical request is still writing this idea; ask again in {retry_after} s")]
    StillWriting {
        /// Seconds until that request's mark expires at the latest.
        retry_after: u64,
    },
}

impl AdaptError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AdaptError::Shared(e) => e.status(),
            AdaptError::VoiceProfileNotFound(_) | AdaptError::NotFound(_) => 404,
            AdaptError::DailyLimit { .. } => 429,
            AdaptError::ModelUnavailable { .. } => 503,
            AdaptError::ModelApi(_) | AdaptError::InvalidAnswer(_) | AdaptError::TooLong(_) => 502,
            AdaptError::Refused(_) => 422,
            AdaptError::StillWriting { .. } => 409,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AdaptError::Shared(e) => e.code(),
            AdaptError::VoiceProfileNotFound(_) => "voice_profile_not_found",
            AdaptError::NotFound(_) => "not_found",
            AdaptError::DailyLimit { .. } => "daily_limit_reached",
            AdaptError::ModelUnavailable { .. } => "model_unavailable",
            AdaptError::ModelApi(_) => "model_api_error",
            AdaptError::InvalidAnswer(_) => "invalid_model_answer",
            AdaptError::TooLong(_) => "variant_too_long",
            AdaptError::Refused(_) => "model_refused",
            AdaptError::StillWriting { .. } => "idea_in_progress",
        }
    }

    /// Seconds the client should wait, for the answers that carry `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AdaptError::Shared(shared::Error::DatabaseUnavailable(_)) => Some(1),
            AdaptError::DailyLimit { retry_after, .. }
            | AdaptError::ModelUnavailable { retry_after, .. }
            | AdaptError::StillWriting { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        if let AdaptError::DailyLimit {
            used,
            limit,
            resets_at,
            ..
        } = self
        {
            body["used"] = json!(used);
            body["limit"] = json!(limit);
            body["resets_at"] = json!(resets_at);
        }
        body
    }

    /// The answer.
    pub fn response(&self) -> Response {
        let mut answer = response::json(self.status(), &self.body());
        if let Some(seconds) = self.retry_after() {
            answer.set_header("retry-after", seconds.to_string());
        }
        answer
    }
}

/// Result with [`AdaptError`].
pub type Result<T> = std::result::Result<T, AdaptError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_codes_and_retry_after_are_mapped_in_one_place() {
        let limit = AdaptError::DailyLimit {
            used: 5,
            limit: 5,
            resets_at: "2026-12-07T00:00:00Z".into(),
            retry_after: 600,
        };
        assert_eq!((limit.status(), limit.code()), (429, "daily_limit_reached"));
        assert_eq!(limit.retry_after(), Some(600));
        assert_eq!(limit.body()["resets_at"], "2026-12-07T00:00:00Z");
        let busy = AdaptError::ModelUnavailable {
            message: "x".into(),
            retry_after: 7,
        };
        assert_eq!((busy.status(), busy.retry_after()), (503, Some(7)));
        assert_eq!(AdaptError::InvalidAnswer("x".into()).status(), 502);
        assert_eq!(AdaptError::Refused("x".into()).status(), 422);
        assert_eq!(AdaptError::VoiceProfileNotFound("x".into()).status(), 404);
        let writing = AdaptError::StillWriting { retry_after: 30 };
        assert_eq!(
            (writing.status(), writing.code(), writing.retry_after()),
            (409, "idea_in_progress", Some(30))
        );
        let bad = AdaptError::from(shared::Error::BadRequest("x".into()));
        assert_eq!((bad.status(), bad.code()), (400, "bad_request"));
        assert_eq!(bad.retry_after(), None);
    }
}

//! The crate's one error type, mapped to an HTTP status and a
//! `{"error", "message"}` body in one place. Messages name what went wrong
//! and never carry a token, code, verifier, password or key.

use serde_json::json;
use shared::response;
use spin_sdk::http::Response;

/// Everything that can go wrong answering a connect route (outcomes of the
/// OAuth callback are redirects, see `flow::Outcome`, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Malformed input (400 `bad_request`).
    #[error("{0}")]
    BadRequest(String),
    /// The return URL is not on the allow-list (400 `return_url_not_allowed`).
    #[error("{0}")]
    ReturnUrl(String),
    /// The callback's `state` is missing, malformed, tampered with or names
    /// no started connect (400 `state_invalid`): nowhere trusted to
    /// redirect to.
    #[error("{0}")]
    State(String),
    /// No such platform, account or route (404 `not_found`).
    #[error("{0}")]
    NotFound(String),
    /// Bluesky refused the login (422 `login_refused`), with the PDS's reason.
    #[error("{0}")]
    LoginRefused(String),
    /// The identity is verified by another user (409 `identity_taken`).
    #[error("{0}")]
    IdentityTaken(String),
    /// The platform failed (502 `platform_error`).
    #[error("{0}")]
    Platform(String),
    /// The platform is busy or down for now (503 `platform_unavailable`).
    #[error("{0}")]
    PlatformUnavailable(String),
    /// Database, configuration, authentication: as `shared` answers them.
    #[error(transparent)]
    Shared(#[from] shared::Error),
}

impl ConnectError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ConnectError::BadRequest(_) | ConnectError::ReturnUrl(_) | ConnectError::State(_) => {
                400
            }
            ConnectError::NotFound(_) => 404,
            ConnectError::IdentityTaken(_) => 409,
            ConnectError::LoginRefused(_) => 422,
            ConnectError::Platform(_) => 502,
            ConnectError::PlatformUnavailable(_) => 503,
            ConnectError::Shared(e) => e.status(),
        }
    }

    /// The `error` field of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::BadRequest(_) => "bad_request",
            ConnectError::ReturnUrl(_) => "return_url_not_allowed",
            ConnectError::State(_) => "state_invalid",
            ConnectError::NotFound(_) => "not_found",
            ConnectError::LoginRefused(_) => "login_refused",
            ConnectError::IdentityTaken(_) => "identity_taken",
            ConnectError::Platform(_) => "platform_error",
            ConnectError::PlatformUnavailable(_) => "platform_unavailable",
            ConnectError::Shared(e) => e.code(),
        }
    }

    /// The response.
    pub fn response(&self) -> Response {
        if let ConnectError::Shared(e) = self {
            return response::error(e);
        }
        let mut answer = response::json(
            self.status(),
            &json!({ "error": self.code(), "message": self.to_string() }),
        );
        if matches!(self, ConnectError::PlatformUnavailable(_)) {
            answer.set_header("retry-after", "30");
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_are_mapped_in_one_place() {
        let cases = [
            (ConnectError::BadRequest("x".into()), 400, "bad_request"),
            (
                ConnectError::ReturnUrl("x".into()),
                400,
                "return_url_not_allowed",
            ),
            (ConnectError::State("x".into()), 400, "state_invalid"),
            (ConnectError::NotFound("x".into()), 404, "not_found"),
            (
                ConnectError::IdentityTaken("x".into()),
                409,
                "identity_taken",
            ),
            (ConnectError::LoginRefused("x".into()), 422, "login_refused"),
            (ConnectError::Platform("x".into()), 502, "platform_error"),
            (
                ConnectError::PlatformUnavailable("x".into()),
                503,
                "platform_unavailable",
            ),
            (
                ConnectError::Shared(shared::Error::Unauthorized("x".into())),
                401,
                "unauthorized",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
        }
    }
}

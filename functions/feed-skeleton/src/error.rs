//! The crate's one error type. The feed routes answer in XRPC's shape,
//! `{"error": "<XRPC name>", "message": "..."}`, with the names the AppView
//! and the reference feed generator use (`UnknownFeed`, `InvalidRequest`,
//! `BadJwtSignature`, ...); those are not `shared::Error` codes, so they
//! live here, mapped to a status in one place. Everything `shared` raises
//! (database, configuration) keeps its own status and code.

use serde_json::json;
use shared::response;
use spin_sdk::http::Response;

/// Why a service JWT was refused (all 401), named as the reference feed
/// generator names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header at all.
    AuthenticationRequired,
    /// Not three base64url parts, or parts that are not the expected JSON.
    BadJwt,
    /// A token of another kind (`at+jwt`, `refresh+jwt`, `dpop+jwt`).
    BadJwtType,
    /// `exp` is in the past.
    JwtExpired,
    /// `aud` is not this feed generator's DID.
    BadJwtAudience,
    /// `lxm` is missing or names another method.
    BadJwtLexiconMethod,
    /// The signature does not verify against the issuer's `#atproto` key.
    BadJwtSignature,
}

impl AuthFailure {
    /// The XRPC error name.
    pub fn name(self) -> &'static str {
        match self {
            AuthFailure::AuthenticationRequired => "AuthenticationRequired",
            AuthFailure::BadJwt => "BadJwt",
            AuthFailure::BadJwtType => "BadJwtType",
            AuthFailure::JwtExpired => "JwtExpired",
            AuthFailure::BadJwtAudience => "BadJwtAudience",
            AuthFailure::BadJwtLexiconMethod => "BadJwtLexiconMethod",
            AuthFailure::BadJwtSignature => "BadJwtSignature",
        }
    }
}

/// Everything that can go wrong in this component.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The `feed` parameter names no published, enabled feed (400 `UnknownFeed`).
    #[error("{0}")]
    UnknownFeed(String),
    /// A bad parameter: limit, cursor, feed uri (400 `InvalidRequest`).
    #[error("{0}")]
    InvalidRequest(String),
    /// The service JWT was refused (401, named by [`AuthFailure`]).
    #[error("{message}")]
    Auth {
        /// Which check failed.
        failure: AuthFailure,
        /// Why, without the token.
        message: String,
    },
    /// An outside service (PLC directory, PDS) failed for good (502
    /// `UpstreamFailure`).
    #[error("{0}")]
    Upstream(String),
    /// An outside service is busy or down for now (503 with `Retry-After`).
    #[error("{message}")]
    UpstreamBusy {
        /// Why.
        message: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The route exists for no such thing here (404 `NotFound`).
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the state forbids it (409 `conflict`), e.g.
    /// no Bluesky account to publish with.
    #[error("{0}")]
    Conflict(String),
    /// The feed cannot become a valid generator record (400 `invalid_feed`).
    #[error("{0}")]
    InvalidFeed(String),
    /// Wrong method on a known route (405).
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// Database or configuration trouble, answered as `shared` answers it.
    #[error(transparent)]
    Shared(#[from] shared::Error),
}

impl FeedError {
    /// A refused service JWT.
    pub fn auth(failure: AuthFailure, message: impl Into<String>) -> Self {
        FeedError::Auth {
            failure,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            FeedError::UnknownFeed(_)
            | FeedError::InvalidRequest(_)
            | FeedError::InvalidFeed(_) => 400,
            FeedError::Auth { .. } => 401,
            FeedError::NotFound(_) => 404,
            FeedError::MethodNotAllowed(_) => 405,
            FeedError::Conflict(_) => 409,
            FeedError::Upstream(_) => 502,
            FeedError::UpstreamBusy { .. } => 503,
            FeedError::Shared(e) => e.status(),
        }
    }

    /// The `error` field of the body.
    pub fn code(&self) -> &'static str {
        match self {
            FeedError::UnknownFeed(_) => "UnknownFeed",
            FeedError::InvalidRequest(_) => "InvalidRequest",
            FeedError::Auth { failure, .. } => failure.name(),
            FeedError::Upstream(_) => "UpstreamFailure",
            FeedError::UpstreamBusy { .. } => "UpstreamUnavailable",
            FeedError::NotFound(_) => "NotFound",
            FeedError::Conflict(_) => "conflict",
            FeedError::InvalidFeed(_) => "invalid_feed",
            FeedError::MethodNotAllowed(_) => "method_not_allowed",
            FeedError::Shared(e) => e.code(),
        }
    }

    /// The response: status, `{error, message}`, and `Retry-After` when the
    /// caller should come back.
    pub fn response(&self) -> Response {
        if let FeedError::Shared(e) = self {
            return response::error(e);
        }
        let mut answer = response::json(
            self.status(),
            &json!({ "error": self.code(), "message": self.to_string() }),
        );
        if let FeedError::UpstreamBusy { retry_after, .. } = self {
            answer.set_header("retry-after", retry_after.to_string());
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_names_are_mapped_in_one_place() {
        let cases = [
            (FeedError::UnknownFeed("x".into()), 400, "UnknownFeed"),
            (FeedError::InvalidRequest("x".into()), 400, "InvalidRequest"),
            (
                FeedError::auth(AuthFailure::BadJwtSignature, "x"),
                401,
                "BadJwtSignature",
            ),
            (
                FeedError::auth(AuthFailure::AuthenticationRequired, "x"),
                401,
                "AuthenticationRequired",
            ),
            (FeedError::Upstream("x".into()), 502, "UpstreamFailure"),
            (FeedError::NotFound("x".into()), 404, "NotFound"),
            (
                FeedError::Shared(shared::Error::Unauthorized("x".into())),
                401,
                "unauthorized",
            ),
            (FeedError::Conflict("x".into()), 409, "conflict"),
            (
                FeedError::Shared(shared::Error::DatabaseUnavailable("x".into())),
                503,
                "database_unavailable",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
        }
    }
}

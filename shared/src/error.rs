//! The one error type of the shared crate and of the components built on it,
//! mapped to an HTTP status and a JSON body in one place.

use serde_json::json;

/// Everything that can go wrong while a component answers a request or runs
/// a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached (connection refused, pool failure,
    /// host not allowed).
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    /// The database answered with an error, or with something other than the
    /// one `jsonb` value every call must return.
    #[error("database error: {0}")]
    Database(String),
    /// A required configuration variable is missing or malformed.
    #[error("configuration error: {0}")]
    Config(String),
    /// The request lacks valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The capability exists in the manifest but is not built yet.
    #[error("{0}")]
    NotImplemented(String),
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Error::DatabaseUnavailable(_) => 503,
            Error::Database(_) | Error::Config(_) => 500,
            Error::Unauthorized(_) => 401,
            Error::BadRequest(_) => 400,
            Error::NotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::NotImplemented(_) => 501,
        }
    }

    /// The stable machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::DatabaseUnavailable(_) => "database_unavailable",
            Error::Database(_) => "database_error",
            Error::Config(_) => "configuration_error",
            Error::Unauthorized(_) => "unauthorized",
            Error::BadRequest(_) => "bad_request",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::NotImplemented(_) => "not_implemented",
        }
    }

    /// The JSON body: `{"error": "<code>", "message": "<why>"}`.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": self.code(), "message": self.to_string() })
    }
}

/// Result with the shared [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_are_mapped_in_one_place() {
        let cases = [
            (
                Error::DatabaseUnavailable("x".into()),
                503,
                "database_unavailable",
            ),
            (Error::Database("x".into()), 500, "database_error"),
            (Error::Config("x".into()), 500, "configuration_error"),
            (Error::Unauthorized("x".into()), 401, "unauthorized"),
            (Error::BadRequest("x".into()), 400, "bad_request"),
            (Error::NotFound("x".into()), 404, "not_found"),
            (
                Error::MethodNotAllowed("PUT".into()),
                405,
                "method_not_allowed",
            ),
            (Error::NotImplemented("x".into()), 501, "not_implemented"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status(), status, "{error:?}");
            assert_eq!(error.body()["error"], code);
        }
    }
}

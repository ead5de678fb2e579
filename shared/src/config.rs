//! Reading a component's Spin variables.

use crate::error::{Error, Result};

/// Reads the component variable `name`; a missing or empty value is an error
/// naming the variable (never its value).
pub fn required(name: &str) -> Result<String> {
    match spin_sdk::variables::get(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => Err(Error::Config(format!("variable `{name}` is empty"))),
        Err(e) => Err(Error::Config(format!(
            "variable `{name}` is not available: {e}"
        ))),
    }
}

/// Reads variable `name`, which may be empty; only a variable the
/// component does not map is an error.
pub fn maybe_empty(name: &str) -> Result<String> {
    spin_sdk::variables::get(name)
        .map_err(|e| Error::Config(format!("variable `{name}` is not available: {e}")))
}

/// Reads variable `name`; unmapped or empty (blank) is `None`, never an error.
pub fn optional(name: &str) -> Option<String> {
    spin_sdk::variables::get(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Reads the required base-URL variable `name` without a trailing slash, so
/// callers can append paths.
pub fn base_url(name: &str) -> Result<String> {
    Ok(required(name)?.trim_end_matches('/').to_string())
}

/// The database connection string every component reads.
pub fn database_url() -> Result<String> {
    required("database_url")
}

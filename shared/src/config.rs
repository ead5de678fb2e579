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

/// The database connection string every component reads.
pub fn database_url() -> Result<String> {
    required("database_url")
}

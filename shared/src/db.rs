//! The database as components see it: named SQL functions that each answer
//! with exactly one row holding one `jsonb` value (the house rule that keeps
//! components clear of real Spin's Postgres traps, see `SPIN.md` §0).

use serde::de::DeserializeOwned;
use spin_sdk::pg4::{self, Connection, DbValue, ParameterValue, PgError, QueryError};

use crate::error::{Error, Result};
use crate::sql::SqlCall;

/// An open connection through Spin's outbound Postgres interface.
pub struct Database {
    connection: Connection,
}

impl Database {
    /// Opens a connection to `url`. A failure is [`Error::DatabaseUnavailable`]
    /// with a message that never contains the connection string.
    pub fn open(url: &str) -> Result<Self> {
        Connection::open(url)
            .map(|connection| Database { connection })
            .map_err(|e| unavailable(describe(&e), url))
    }

    /// Runs `call` and decodes its one `jsonb` value into `T`.
    pub fn call<T: DeserializeOwned>(
        &self,
        call: &SqlCall,
        params: &[ParameterValue],
    ) -> Result<T> {
        let value = self.call_json(call, params)?;
        serde_json::from_value(value)
            .map_err(|e| Error::Database(format!("{}: unexpected answer shape: {e}", call.name)))
    }

    /// Runs `call` and returns its one `jsonb` value.
    pub fn call_json(
        &self,
        call: &SqlCall,
        params: &[ParameterValue],
    ) -> Result<serde_json::Value> {
        let rows = self
            .connection
            .query(call.sql, params)
            .map_err(|e| classify(call, &e))?;
        single_jsonb(call, &rows)
    }
}

/// Checks the one-row-one-jsonb rule and decodes the value.
fn single_jsonb(call: &SqlCall, rows: &pg4::RowSet) -> Result<serde_json::Value> {
    let [row] = rows.rows.as_slice() else {
        return Err(Error::Database(format!(
            "{} returned {} rows; every call must return exactly one",
            call.name,
            rows.rows.len()
        )));
    };
    match row.as_slice() {
        [DbValue::Jsonb(bytes)] => serde_json::from_slice(bytes)
            .map_err(|e| Error::Database(format!("{}: invalid jsonb: {e}", call.name))),
        [DbValue::DbNull] => Ok(serde_json::Value::Null),
        other => Err(Error::Database(format!(
            "{} returned {} columns of other types; every call must return one jsonb value",
            call.name,
            other.len()
        ))),
    }
}

/// Separates "cannot reach the database" from "the database said no".
fn classify(call: &SqlCall, error: &PgError) -> Error {
    match error {
        PgError::ConnectionFailed(message) => Error::DatabaseUnavailable(redact(message)),
        PgError::QueryFailed(QueryError::DbError(db)) => Error::Database(format!(
            "{}: {} (SQLSTATE {})",
            call.name, db.message, db.code
        )),
        other => {
            let text = describe(other);
            if looks_like_lost_connection(&text) {
                Error::DatabaseUnavailable(redact(&text))
            } else {
                Error::Database(format!("{}: {}", call.name, redact(&text)))
            }
        }
    }
}

fn describe(error: &PgError) -> String {
    match error {
        PgError::ConnectionFailed(m)
        | PgError::BadParameter(m)
        | PgError::ValueConversionFailed(m)
        | PgError::Other(m) => m.clone(),
        PgError::QueryFailed(QueryError::Text(m)) => m.clone(),
        PgError::QueryFailed(QueryError::DbError(db)) => db.message.clone(),
    }
}

/// A query on a pooled connection whose server went away fails as a query
/// error, not a connection error; it still means "unavailable".
fn looks_like_lost_connection(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "connection closed",
        "connection refused",
        "broken pipe",
        "connection reset",
        "error connecting",
        "terminating connection",
        "kind: closed",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn unavailable(message: String, url: &str) -> Error {
    let message = message.replace(url, "<database_url>");
    Error::DatabaseUnavailable(redact(&message))
}

/// Removes anything that looks like credentials from a driver message, so a
/// password in a connection string never reaches a response or a log, and
/// drops a host backtrace (hosts append one when `RUST_BACKTRACE` is set).
pub fn redact(message: &str) -> String {
    let message = message
        .split("Stack backtrace:")
        .next()
        .unwrap_or(message)
        .trim_end();
    message
        .split_whitespace()
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            if lower.contains("password=") {
                "password=<redacted>".to_string()
            } else if let Some(scheme_end) = word.find("://") {
                match word[scheme_end + 3..].find('@') {
                    Some(at) => format!(
                        "{}://<redacted>@{}",
                        &word[..scheme_end],
                        &word[scheme_end + 3 + at + 1..]
                    ),
                    None => word.to_string(),
                }
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_passwords_from_urls_and_keyword_strings() {
        let message = "error connecting to postgres://outpost:hunter2@db.example:5432/app and host=x password=hunter2";
        let redacted = redact(message);
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(redacted.contains("postgres://<redacted>@db.example:5432/app"));
    }

    #[test]
    fn lost_connection_texts_count_as_unavailable() {
        assert!(looks_like_lost_connection(
            "Error { kind: Closed, cause: None } connection closed"
        ));
        assert!(looks_like_lost_connection(
            "Error { kind: Closed, cause: None }"
        ));
        assert!(!looks_like_lost_connection(
            "column \"nope\" does not exist"
        ));
    }

    #[test]
    fn redact_drops_host_backtraces() {
        let redacted = redact("connection refused\n\nStack backtrace:\n   0: wasmtime::x");
        assert_eq!(redacted, "connection refused");
    }
}

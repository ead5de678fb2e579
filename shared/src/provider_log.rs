//! What workers write about their calls to outside providers: one `api_logs`
//! row per call ([`record`]) and `notifications` rows that tell users what
//! happened to their work ([`notify`]). Both are SQL functions of migration
//! 0020, which also strip query strings so a token passed in a URL never
//! reaches the log.

use serde::Serialize;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::db::Database;
use crate::error::Result;
use crate::sql::SqlCall;

/// Records one provider call (`$1` the call as jsonb).
pub const RECORD_PROVIDER_CALL: SqlCall = SqlCall {
    name: "record_provider_call",
    sql: "select public.record_provider_call($1::jsonb) as call",
};

/// Writes one notification (`$1` user, `$2` type, `$3` title, `$4` message,
/// `$5` data jsonb, `$6` link or null).
pub const NOTIFY_USER: SqlCall = SqlCall {
    name: "notify_user",
    sql: "select public.notify_user($1::uuid, $2::text, $3::text, $4::text, $5::jsonb, $6::text) as notification",
};

/// One call to an outside provider, as `api_logs` keeps it. Holds no token
/// and no prompt: `path` is the request path without its query string.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProviderCall {
    /// Who was called: `replicate`, `venice`, `openai`, `x`, ...
    pub provider: String,
    /// HTTP method.
    pub method: String,
    /// Request path, without query string.
    pub path: String,
    /// HTTP status of the answer; `None` when no answer came (timeout,
    /// connection refused).
    pub status_code: Option<u16>,
    /// Wall time of the call in milliseconds.
    pub duration_ms: u64,
    /// The user the call was made for, if any.
    pub user_id: Option<Uuid>,
    /// The model asked, if the provider has models.
    pub model: Option<String>,
    /// What went wrong, in words that carry no secret.
    pub error: Option<String>,
}

impl ProviderCall {
    /// The call as the jsonb `record_provider_call` takes, with any query
    /// string cut from the path.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(path) = value.get_mut("path") {
            *path = serde_json::Value::String(path_without_query(&self.path).to_owned());
        }
        value
    }
}

/// `path` up to its first `?`.
fn path_without_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(before, _)| before)
}

/// Writes one `api_logs` row for `call`.
pub fn record(db: &Database, call: &ProviderCall) -> Result<()> {
    db.call_json(
        &RECORD_PROVIDER_CALL,
        &[ParameterValue::Jsonb(
            call.to_json().to_string().into_bytes(),
        )],
    )?;
    Ok(())
}

/// Writes one notification for `user`: `kind` is the notification type
/// (`generation_succeeded`, `account_reconnect`, ...), `title` and `message`
/// what the user reads, `data` ids the client can follow, `link` a path in
/// the app.
pub fn notify(
    db: &Database,
    user: Uuid,
    kind: &str,
    title: &str,
    message: &str,
    data: &serde_json::Value,
    link: Option<&str>,
) -> Result<()> {
    db.call_json(
        &NOTIFY_USER,
        &[
            ParameterValue::Uuid(user.to_string()),
            ParameterValue::Str(kind.to_owned()),
            ParameterValue::Str(title.to_owned()),
            ParameterValue::Str(message.to_owned()),
            ParameterValue::Jsonb(data.to_string().into_bytes()),
            link.map_or(ParameterValue::DbNull, |l| {
                ParameterValue::Str(l.to_owned())
            }),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(path: &str) -> ProviderCall {
        ProviderCall {
            provider: "replicate".into(),
            method: "POST".into(),
            path: path.into(),
            status_code: Some(201),
            duration_ms: 12,
            user_id: None,
            model: Some("owner/model".into()),
            error: None,
        }
    }

    #[test]
    fn a_query_string_never_reaches_the_log() {
        let json = call("/v1/predictions?access_token=secret").to_json();
        assert_eq!(json["path"], "/v1/predictions");
        assert!(!json.to_string().contains("secret"));
    }

    #[test]
    fn the_call_keeps_its_fields() {
        let json = call("/v1/predictions").to_json();
        assert_eq!(json["status_code"], 201);
        assert_eq!(json["duration_ms"], 12);
        assert_eq!(json["provider"], "replicate");
        assert_eq!(json["model"], "owner/model");
        assert!(json["user_id"].is_null());
    }
}

//! Bluesky PDS sessions per account, shared by every component instance
//! through `bluesky_sessions` (migration 0011): created once from the app
//! password in Vault, reused, refreshed when the PDS says `ExpiredToken`,
//! and never created more often than Outpost's budget (25 per 5 minutes,
//! 250 per day; the PDS allows 30 and 300).

use serde::Deserialize;
use serde_json::json;
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::bluesky::{Session, Xrpc, XrpcFailure};
use crate::db::Database;
use crate::error::Error;
use crate::sql::SqlCall;

const SESSION_FOR: SqlCall = SqlCall {
    name: "bluesky_session_for",
    sql: "select public.bluesky_session_for($1::uuid, $2::text)",
};
const SAVE_SESSION: SqlCall = SqlCall {
    name: "save_bluesky_session",
    sql: "select public.save_bluesky_session($1::uuid, $2::jsonb, $3::text)",
};
const FORGET_SESSION: SqlCall = SqlCall {
    name: "forget_bluesky_session",
    sql: "select public.forget_bluesky_session($1::uuid, $2::text)",
};
const LOGIN_FAILURE: SqlCall = SqlCall {
    name: "record_bluesky_login_failure",
    sql: "select public.record_bluesky_login_failure($1::uuid, $2::text, $3::boolean, $4::int)",
};

/// Why no session (or no result with it) could be had.
#[derive(Debug, thiserror::Error)]
pub enum SessionFailure {
    /// Try again later: createSession budget, another worker creating the
    /// session, PDS rate limits, 5xx or transport trouble.
    #[error("Bluesky session not available yet: {reason}")]
    Wait {
        /// Why.
        reason: String,
        /// Seconds to wait before trying again.
        retry_after_seconds: u64,
    },
    /// The account cannot log in (wrong or revoked app password, inactive
    /// or missing account); the account has been marked when it applies.
    #[error("Bluesky account cannot log in: {0}")]
    Unusable(String),
    /// The call made with the session failed (not an auth problem).
    #[error("{0}")]
    Call(XrpcFailure),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] Error),
}

impl SessionFailure {
    /// Whether a later retry can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SessionFailure::Wait { .. } => true,
            SessionFailure::Unusable(_) => false,
            SessionFailure::Call(failure) => failure.is_transient(),
            SessionFailure::Database(Error::DatabaseUnavailable(_)) => true,
            SessionFailure::Database(_) => false,
        }
    }

    /// Seconds to wait, when known.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            SessionFailure::Wait {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            SessionFailure::Call(failure) => failure.retry_after(),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
enum SessionState {
    Ready {
        session: Session,
    },
    Create {
        identifier: String,
        password: String,
    },
    Wait {
        reason: String,
        retry_after_seconds: u64,
    },
    Unusable {
        reason: String,
    },
}

/// Whether an XRPC failure means "this access token is no longer good".
fn is_expired_token(failure: &XrpcFailure) -> bool {
    matches!(failure.error_name(), Some("ExpiredToken"))
}

/// Whether createSession failed because the app password is wrong or revoked.
fn is_bad_password(failure: &XrpcFailure) -> bool {
    matches!(failure.status(), Some(401))
        || matches!(
            failure.error_name(),
            Some("AuthenticationRequired" | "AccountTakedown" | "InvalidToken")
        )
}

/// The stored session of `account_id`, creating one from the app password
/// when there is none (within the budget, one creator at a time).
pub fn session_for_account(
    db: &Database,
    pds: &Xrpc,
    account_id: Uuid,
    worker_id: &str,
) -> Result<Session, SessionFailure> {
    let state: SessionState = db.call(
        &SESSION_FOR,
        &[
            ParameterValue::Uuid(account_id.to_string()),
            worker_id.to_string().into(),
        ],
    )?;
    match state {
        SessionState::Ready { session } => Ok(session),
        SessionState::Wait {
            reason,
            retry_after_seconds,
        } => Err(SessionFailure::Wait {
            reason,
            retry_after_seconds,
        }),
        SessionState::Unusable { reason } => Err(SessionFailure::Unusable(reason)),
        SessionState::Create {
            identifier,
            password,
        } => match pds.create_session(&identifier, &password) {
            Ok(session) => {
                save(db, account_id, &session, "created")?;
                Ok(session)
            }
            Err(failure) => Err(login_failed(db, account_id, failure)?),
        },
    }
}

/// Runs `call` with the account's session; when the PDS answers
/// `ExpiredToken`, refreshes the session (or creates a new one when the
/// refresh token is dead too) and runs `call` once more.
pub fn with_session<T>(
    db: &Database,
    pds: &Xrpc,
    account_id: Uuid,
    worker_id: &str,
    call: impl Fn(&Session) -> Result<T, XrpcFailure>,
) -> Result<T, SessionFailure> {
    let session = session_for_account(db, pds, account_id, worker_id)?;
    match call(&session) {
        Err(failure) if is_expired_token(&failure) => {
            let fresh = renew(db, pds, account_id, worker_id, &session)?;
            call(&fresh).map_err(SessionFailure::Call)
        }
        other => other.map_err(SessionFailure::Call),
    }
}

/// Refreshes `stale`; when its refresh token is rejected, forgets it and
/// logs in again.
fn renew(
    db: &Database,
    pds: &Xrpc,
    account_id: Uuid,
    worker_id: &str,
    stale: &Session,
) -> Result<Session, SessionFailure> {
    match pds.refresh_session(&stale.refresh_jwt) {
        Ok(session) => {
            save(db, account_id, &session, "refreshed")?;
            Ok(session)
        }
        Err(failure) if failure.is_transient() => Err(SessionFailure::Wait {
            reason: format!("refreshSession: {failure}"),
            retry_after_seconds: failure.retry_after().unwrap_or(5),
        }),
        Err(_) => {
            db.call_json(
                &FORGET_SESSION,
                &[
                    ParameterValue::Uuid(account_id.to_string()),
                    stale.access_jwt.clone().into(),
                ],
            )?;
            session_for_account(db, pds, account_id, worker_id)
        }
    }
}

/// What `save_bluesky_session` answers: a session whose DID is not the
/// account's is refused (migration 0017), and the first one created with
/// the account's own app password verifies the account.
#[derive(Deserialize)]
struct Saved {
    saved: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Stores `session`; a refused one (the app password logs in as another
/// DID, or the identity is verified by another user) leaves nothing stored
/// and is [`SessionFailure::Unusable`] with the reason (the account has
/// been stopped with it).
fn save(
    db: &Database,
    account_id: Uuid,
    session: &Session,
    how: &str,
) -> Result<(), SessionFailure> {
    let body = json!({
        "did": session.did,
        "handle": session.handle,
        "accessJwt": session.access_jwt,
        "refreshJwt": session.refresh_jwt,
    });
    let saved: Saved = db.call(
        &SAVE_SESSION,
        &[
            ParameterValue::Uuid(account_id.to_string()),
            ParameterValue::Jsonb(body.to_string().into_bytes()),
            how.to_string().into(),
        ],
    )?;
    if saved.saved {
        return Ok(());
    }
    Err(SessionFailure::Unusable(format!(
        "{} ({})",
        saved
            .message
            .unwrap_or_else(|| "the session was refused".to_string()),
        saved.reason.unwrap_or_else(|| "refused".to_string())
    )))
}

/// Records a failed createSession and turns it into the caller's failure.
fn login_failed(
    db: &Database,
    account_id: Uuid,
    failure: XrpcFailure,
) -> Result<SessionFailure, Error> {
    let permanent = !failure.is_transient() && is_bad_password(&failure);
    let retry_after = failure.retry_after();
    let message = format!("createSession: {failure}");
    db.call_json(
        &LOGIN_FAILURE,
        &[
            ParameterValue::Uuid(account_id.to_string()),
            message.clone().into(),
            permanent.into(),
            retry_after
                .and_then(|s| i32::try_from(s).ok())
                .map_or(ParameterValue::DbNull, ParameterValue::Int32),
        ],
    )?;
    Ok(if permanent {
        SessionFailure::Unusable(message)
    } else if failure.is_transient() {
        SessionFailure::Wait {
            reason: message,
            retry_after_seconds: retry_after.unwrap_or(5),
        }
    } else {
        SessionFailure::Call(failure)
    })
}

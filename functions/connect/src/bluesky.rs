//! `POST /connect/bluesky` `{"identifier", "app_password"}` with the user's
//! Supabase access token: the handle is resolved to a DID
//! (`com.atproto.identity.resolveHandle` on `bluesky_appview_url`; a DID is
//! taken as given), the DID document is read (`did:plc` from
//! `plc_directory_url`, `did:web` from `https://<host>/.well-known/did.json`)
//! for the account's own PDS (`#atproto_pds` service), and
//! `com.atproto.server.createSession` is called there. Only when the PDS
//! says yes, and for the same DID, is anything stored: the app password in
//! Vault, the session in `bluesky_sessions`, the DID and handle from the
//! PDS's answer, verified (one SQL call). A refused login is 422
//! `login_refused` with the PDS's reason; nothing is stored.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use shared::bluesky::{Xrpc, XrpcFailure};
use shared::db::Database;
use shared::outbound::OutboundRequest;
use shared::{config, response};
use spin_sdk::http::{Request, Response};
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::error::ConnectError;
use crate::flow::user_of;
use crate::settings::Settings;
use crate::sql;

const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
struct Body {
    identifier: String,
    app_password: String,
}

#[derive(Deserialize)]
struct Stored {
    ok: bool,
    account_id: Option<Uuid>,
    message: Option<String>,
}

fn xrpc_error(what: &str, failure: XrpcFailure) -> ConnectError {
    let message = format!("Bluesky {what} failed: {failure}");
    if failure.is_transient() {
        ConnectError::PlatformUnavailable(message)
    } else {
        ConnectError::Platform(message)
    }
}

/// The PDS endpoint named by a DID document.
pub fn pds_endpoint(document: &Value) -> Option<String> {
    document
        .get("service")?
        .as_array()?
        .iter()
        .find(|s| {
            s.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id == "#atproto_pds" || id.ends_with("#atproto_pds"))
                && s.get("type").and_then(Value::as_str) == Some("AtprotoPersonalDataServer")
        })?
        .get("serviceEndpoint")?
        .as_str()
        .map(|s| s.trim_end_matches('/').to_string())
}

/// Where a DID's document is.
pub fn did_document_url(did: &str, plc_directory: &str) -> Option<String> {
    if did.starts_with("did:plc:") {
        Some(format!("{plc_directory}/{did}"))
    } else {
        let host = did.strip_prefix("did:web:")?;
        // did:web with a path (colons) is not used for accounts.
        (!host.is_empty() && !host.contains(':') && !host.contains('/'))
            .then(|| format!("https://{host}/.well-known/did.json"))
    }
}

/// The account's own PDS, from its DID document.
pub fn resolve_pds(did: &str) -> Result<String, ConnectError> {
    let plc = config::base_url("plc_directory_url")?;
    let url = did_document_url(did, &plc)
        .ok_or_else(|| ConnectError::BadRequest(format!("{did} is not a did:plc or did:web")))?;
    let reply = OutboundRequest::get(&url)
        .timeout(CALL_TIMEOUT)
        .send()
        .map_err(|e| {
            let message = format!("reading the DID document of {did} failed: {e}");
            if e.is_transient() {
                ConnectError::PlatformUnavailable(message)
            } else {
                ConnectError::Platform(message)
            }
        })?;
    if reply.status == 404 {
        return Err(ConnectError::NotFound(format!("no DID document for {did}")));
    }
    if !reply.is_success() {
        return Err(ConnectError::PlatformUnavailable(format!(
            "the DID document of {did} answered {}",
            reply.status
        )));
    }
    let document: Value = serde_json::from_slice(&reply.body)
        .map_err(|_| ConnectError::Platform(format!("the DID document of {did} is not JSON")))?;
    if document.get("id").and_then(Value::as_str) != Some(did) {
        return Err(ConnectError::Platform(format!(
            "the DID document answered for {did} is another DID's"
        )));
    }
    pds_endpoint(&document)
        .ok_or_else(|| ConnectError::Platform(format!("the DID document of {did} names no PDS")))
}

/// `POST /connect/bluesky`.
pub fn connect(request: &Request, settings: &Settings) -> Result<Response, ConnectError> {
    let user = user_of(request, settings)?;
    let body: Body = serde_json::from_slice(request.body()).map_err(|_| {
        ConnectError::BadRequest("body must be JSON {\"identifier\", \"app_password\"}".into())
    })?;
    let identifier = body.identifier.trim().trim_start_matches('@').to_string();
    if identifier.is_empty() || body.app_password.is_empty() {
        return Err(ConnectError::BadRequest(
            "identifier and app_password are required".into(),
        ));
    }
    let did = if identifier.starts_with("did:") {
        identifier.clone()
    } else {
        Xrpc::new(&config::base_url("bluesky_appview_url")?)
            .with_timeout(CALL_TIMEOUT)
            .resolve_handle(&identifier)
            .map_err(|e| xrpc_error("handle resolution", e))?
            .ok_or_else(|| {
                ConnectError::NotFound(format!("the handle {identifier} does not resolve"))
            })?
    };
    let pds = resolve_pds(&did)?;
    let session = match Xrpc::new(&pds)
        .with_timeout(CALL_TIMEOUT)
        .create_session(&did, &body.app_password)
    {
        Ok(session) => session,
        Err(XrpcFailure::Xrpc(e)) if (400..500).contains(&e.status) && e.status != 429 => {
            return Err(ConnectError::LoginRefused(format!(
                "the PDS refused the login: {} ({})",
                e.message, e.error
            )));
        }
        Err(other) => return Err(xrpc_error("createSession", other)),
    };
    if session.did != did {
        return Err(ConnectError::Platform(format!(
            "the PDS answered for {} instead of {did}",
            session.did
        )));
    }
    let account = json!({
        "platform_user_id": session.did,
        "username": session.handle,
        "app_password": body.app_password,
        "session": session,
        "profile_data": {"connected_via": "app_password", "pds": pds},
    });
    let db = Database::open(&settings.database_url)?;
    let stored: Stored = db.call(
        &sql::STORE_CONNECTED_ACCOUNT,
        &[
            ParameterValue::Uuid(user.to_string()),
            ParameterValue::Str("bluesky".into()),
            ParameterValue::Jsonb(account.to_string().into_bytes()),
        ],
    )?;
    match (stored.ok, stored.account_id) {
        (true, Some(id)) => Ok(response::json(
            200,
            &json!({
                "connected": "bluesky",
                "account_id": id,
                "did": session.did,
                "handle": session.handle,
            }),
        )),
        _ => Err(ConnectError::IdentityTaken(stored.message.unwrap_or_else(
            || "this Bluesky account is connected and verified by another user".into(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_pds_comes_from_the_did_document() {
        let doc = json!({"id": "did:plc:abc", "service": [
            {"id": "#bsky_fg", "type": "BskyFeedGenerator", "serviceEndpoint": "https://fg.example"},
            {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example/"}
        ]});
        assert_eq!(pds_endpoint(&doc).unwrap(), "https://pds.example");
        assert_eq!(pds_endpoint(&json!({"service": []})), None);
    }

    #[test]
    fn did_documents_are_found_by_method() {
        assert_eq!(
            did_document_url("did:plc:abc", "https://plc.directory").unwrap(),
            "https://plc.directory/did:plc:abc"
        );
        assert_eq!(
            did_document_url("did:web:alice.example", "x").unwrap(),
            "https://alice.example/.well-known/did.json"
        );
        assert_eq!(did_document_url("did:key:z6", "x"), None);
        assert_eq!(did_document_url("did:web:a.example:path", "x"), None);
    }
}

//! `POST /connect/{platform}/disconnect` `{"account_id"}` with the owner's
//! Supabase access token (POST rather than DELETE: it revokes at the
//! platform and keeps the account row, so it is an action, not a deletion).
//!
//! The grant is revoked where the platform has an endpoint for it (X
//! `POST /2/oauth2/revoke` for the refresh and access tokens, Strava
//! `POST /oauth/deauthorize`, Bluesky `com.atproto.server.deleteSession`
//! on the account's PDS); Instagram (deauthorize callback only) and
//! LinkedIn (no member revocation) are only dropped. Then, whatever the
//! revocation's outcome, the tokens (or Bluesky session and Vault app
//! password) are dropped, the account is `disconnected` and unverified, and
//! its data stays. The answer says whether the platform revoked:
//! `{"disconnected": true, "account_id", "platform", "revoked": true |
//! false | null (no endpoint), "revoke_error"?}`.

use serde::Deserialize;
use serde_json::json;
use shared::bluesky::Xrpc;
use shared::db::Database;
use shared::oauth::Platform;
use shared::outbound::OutboundRequest;
use shared::response;
use spin_sdk::http::{Request, Response};
use spin_sdk::pg4::ParameterValue;
use uuid::Uuid;

use crate::bluesky::resolve_pds;
use crate::error::ConnectError;
use crate::flow::user_of;
use crate::platforms;
use crate::settings::{PlatformConfig, Settings};
use crate::sql;

#[derive(Deserialize)]
struct Body {
    account_id: Uuid,
}

#[derive(Deserialize)]
struct Account {
    found: bool,
    platform: Option<String>,
    platform_user_id: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
    bluesky_refresh_jwt: Option<String>,
}

/// `POST /connect/{platform}/disconnect` (`platform` is a `platform_enum`
/// name: the four OAuth platforms or `bluesky`).
pub fn disconnect(
    request: &Request,
    platform: &str,
    settings: &Settings,
) -> Result<Response, ConnectError> {
    let user = user_of(request, settings)?;
    let body: Body = serde_json::from_slice(request.body()).map_err(|_| {
        ConnectError::BadRequest("body must be JSON {\"account_id\": \"<uuid>\"}".into())
    })?;
    let db = Database::open(&settings.database_url)?;
    let account: Account = db.call(
        &sql::ACCOUNT_FOR_DISCONNECT,
        &[
            ParameterValue::Uuid(user.to_string()),
            ParameterValue::Uuid(body.account_id.to_string()),
        ],
    )?;
    // Another user's account is not found, exactly like a missing one.
    if !account.found || account.platform.as_deref() != Some(platform) {
        return Err(ConnectError::NotFound(format!(
            "you have no {platform} account {}",
            body.account_id
        )));
    }
    let open = |sealed: &Option<String>| {
        sealed
            .as_deref()
            .and_then(|s| settings.keyring.open(s).ok())
    };
    let revocation: Option<Result<(), ConnectError>> = match Platform::from_name(platform) {
        Some(oauth) if platforms::can_revoke(oauth) => {
            let access = open(&account.access_token);
            let refresh = open(&account.refresh_token);
            if access.is_none() && refresh.is_none() {
                None
            } else {
                Some(PlatformConfig::load(oauth).and_then(|config| {
                    platforms::revoke(&config, access.as_deref(), refresh.as_deref())
                }))
            }
        }
        Some(_) => None,
        None => match (&account.bluesky_refresh_jwt, &account.platform_user_id) {
            (Some(refresh_jwt), Some(did)) => Some(delete_bluesky_session(did, refresh_jwt)),
            _ => None,
        },
    };
    let result: serde_json::Value = db.call_json(
        &sql::DISCONNECT_ACCOUNT,
        &[
            ParameterValue::Uuid(user.to_string()),
            ParameterValue::Uuid(body.account_id.to_string()),
        ],
    )?;
    let mut answer = json!({
        "disconnected": result.get("disconnected").cloned().unwrap_or(json!(false)),
        "account_id": body.account_id,
        "platform": platform,
        "revoked": revocation.as_ref().map(Result::is_ok),
    });
    if let Some(Err(e)) = &revocation {
        answer["revoke_error"] = json!(e.to_string());
    }
    Ok(response::json(200, &answer))
}

/// `com.atproto.server.deleteSession` with the refresh token on the
/// account's own PDS.
fn delete_bluesky_session(did: &str, refresh_jwt: &str) -> Result<(), ConnectError> {
    let pds = resolve_pds(did)?;
    let xrpc = Xrpc::new(&pds);
    let url = format!("{}/xrpc/com.atproto.server.deleteSession", xrpc.base_url());
    let reply = OutboundRequest::post(&url)
        .bearer(refresh_jwt)
        .send()
        .map_err(|e| {
            ConnectError::PlatformUnavailable(format!("Bluesky deleteSession failed: {e}"))
        })?;
    if reply.is_success() {
        Ok(())
    } else {
        Err(ConnectError::Platform(format!(
            "Bluesky deleteSession answered {}",
            reply.status
        )))
    }
}

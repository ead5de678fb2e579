//! `connect`: accounts connected through the platform itself.
//!
//! A component of its own because it holds what nothing else needs: the
//! OAuth client secrets of four platforms, the state-signing key, the
//! return-URL allow-list, and outbound access to the platforms' OAuth and
//! identity hosts and to any Bluesky PDS. Keeping them here keeps every other
//! component's `allowed_outbound_hosts` and variables small.
//!
//! Routes (all but the callback take the user's Supabase access token):
//! - `POST /connect/{strava|instagram|x|linkedin}/start` -> the authorize URL (`flow.rs`).
//! - `GET /connect/{platform}/callback?code&state` -> 303 to the return URL (`flow.rs`).
//! - `POST /connect/bluesky` `{identifier, app_password}` (`bluesky.rs`).
//! - `POST /connect/{platform}/disconnect` `{account_id}` (`disconnect.rs`).

mod bluesky;
mod disconnect;
mod error;
mod flow;
mod platforms;
mod return_url;
mod settings;
mod sql;
mod state;

use shared::oauth::Platform;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

use crate::error::ConnectError;
use crate::settings::Settings;

#[http_component]
fn handle(request: Request) -> Response {
    route(&request).unwrap_or_else(|e| e.response())
}

fn route(request: &Request) -> Result<Response, ConnectError> {
    let path = request.path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method();
    let not_allowed = || ConnectError::Shared(shared::Error::MethodNotAllowed(method.to_string()));
    let oauth = |name: &str| {
        Platform::from_name(name)
            .ok_or_else(|| ConnectError::NotFound(format!("no OAuth connect for `{name}`")))
    };
    match segments.as_slice() {
        ["connect", "bluesky"] => {
            if *method != Method::Post {
                return Err(not_allowed());
            }
            bluesky::connect(request, &Settings::load()?)
        }
        ["connect", platform, "start"] => {
            let platform = oauth(platform)?;
            if *method != Method::Post {
                return Err(not_allowed());
            }
            flow::start(request, platform, &Settings::load()?)
        }
        ["connect", platform, "callback"] => {
            let platform = oauth(platform)?;
            if *method != Method::Get {
                return Err(not_allowed());
            }
            flow::callback(request, platform, &Settings::load()?)
        }
        ["connect", platform, "disconnect"] => {
            if *platform != "bluesky" {
                oauth(platform)?;
            }
            if *method != Method::Post {
                return Err(not_allowed());
            }
            disconnect::disconnect(request, platform, &Settings::load()?)
        }
        _ => Err(ConnectError::NotFound(format!("no route {path}"))),
    }
}

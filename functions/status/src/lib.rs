//! `status`: `GET /status` answers with database reachability, the latest
//! applied migration, each queue's depth by state (queued, leased, dead) and
//! the `worker_heartbeats` rows with their age, all from one SQL function.
//! An unreachable database is a 503 with the reason and `Retry-After`.

use shared::db::Database;
use shared::{Error, config, response, sql};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

/// Generations at Replicate, webhooks waiting, pool and budget (counts only).
const REPLICATE_STATUS: sql::SqlCall = sql::SqlCall {
    name: "replicate_status",
    sql: "select public.replicate_status() as replicate",
};

#[http_component]
fn handle(request: Request) -> Response {
    response::from_result(status(&request))
}

fn status(request: &Request) -> Result<Response, Error> {
    if *request.method() != Method::Get {
        return Err(Error::MethodNotAllowed(request.method().to_string()));
    }
    let db = Database::open(&config::database_url()?)?;
    let mut report = db.call_json(&sql::OUTPOST_STATUS, &[])?;
    // Replicate's side of the studio queue (migration 0023): generations
    // at Replicate, stored webhooks, the token pool's counts, the budget.
    report["replicate"] = db.call_json(&REPLICATE_STATUS, &[])?;
    Ok(response::json(200, &report))
}

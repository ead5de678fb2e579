//! `probe`: a test-only Spin component that exercises the test host's Spin
//! interfaces (routes and headers, `spin:postgres@4.0.0`, variables,
//! outbound HTTP and service chaining, traps) and the cron world. It is
//! built like the product components (spin-sdk 5.2, `wasm32-wasip2`) and is
//! never deployed.

use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;
use spin_sdk::pg4::{Connection, DbValue, ParameterValue};

mod cron;
mod roundtrip;

#[http_component]
async fn handle(req: Request) -> Response {
    let query = parse_query(req.query());
    match req.path() {
        "/probe/ok" => Response::new(200, "ok"),
        "/probe/pg-roundtrip" => roundtrip::run(),
        "/probe/pg-query" => pg_call(&query, false),
        "/probe/pg-execute" => pg_call(&query, true),
        "/probe/variable" => variable(&query),
        "/probe/outbound" => outbound(query_value(&query, "url").unwrap_or_default()).await,
        "/probe/outbound-shared" => outbound_shared(&query),
        "/probe/bluesky-post" => bluesky_post(&query),
        "/probe/chain" => {
            let url = query_value(&query, "url")
                .unwrap_or_else(|| "http://probe-private.spin.internal/chained/path?x=1".into());
            outbound(url).await
        }
        "/probe/panic" => panic!("the probe was asked to panic"),
        "/probe/trap" => trap(),
        _ => headers(&req),
    }
}

/// Echoes every request header (and the method and URI) as JSON.
fn headers(req: &Request) -> Response {
    let mut map = serde_json::Map::new();
    for (name, value) in req.headers() {
        map.insert(
            name.to_string(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    json_response(
        200,
        json!({ "headers": map, "uri": req.uri(), "path": req.path(), "query": req.query() }),
    )
}

fn json_response(status: u16, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

#[cfg(target_arch = "wasm32")]
fn trap() -> Response {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> Response {
    panic!("trap")
}

/// Runs `sql` (with optional `text` parameters `p1`, `p2`, ...) on the
/// database of variable `database_url` and reports the result or the error.
fn pg_call(query: &[(String, String)], execute: bool) -> Response {
    let Some(sql) = query_value(query, "sql") else {
        return json_response(400, json!({ "error": "missing sql" }));
    };
    let url = query_value(query, "db").or_else(|| spin_sdk::variables::get("database_url").ok());
    let Some(url) = url else {
        return json_response(400, json!({ "error": "no database_url" }));
    };
    let params: Vec<ParameterValue> = (1..)
        .map_while(|i| query_value(query, &format!("p{i}")))
        .map(ParameterValue::Str)
        .collect();
    let conn = match Connection::open(&url) {
        Ok(c) => c,
        Err(e) => return json_response(200, json!({ "error": format!("{e:?}") })),
    };
    if execute {
        return match conn.execute(&sql, &params) {
            Ok(n) => json_response(200, json!({ "rows_affected": n })),
            Err(e) => json_response(200, json!({ "error": format!("{e:?}") })),
        };
    }
    match conn.query(&sql, &params) {
        Ok(rs) => {
            let columns: Vec<Value> = rs
                .columns
                .iter()
                .map(|c| json!([c.name, plain(format!("{:?}", c.data_type))]))
                .collect();
            let rows: Vec<Value> = rs
                .rows
                .iter()
                .map(|r| Value::Array(r.iter().map(|v| Value::String(show(v))).collect()))
                .collect();
            json_response(200, json!({ "columns": columns, "rows": rows }))
        }
        Err(e) => json_response(200, json!({ "error": format!("{e:?}") })),
    }
}

/// A readable form of a value: jsonb and unsupported bytes as text.
pub(crate) fn show(v: &DbValue) -> String {
    match v {
        DbValue::Jsonb(b) => format!("Jsonb({})", String::from_utf8_lossy(b)),
        DbValue::Unsupported(b) => format!("Unsupported({})", String::from_utf8_lossy(b)),
        other => plain(format!("{other:?}")),
    }
}

/// Debug output without wit-bindgen's `Type::` prefix.
pub(crate) fn plain(s: String) -> String {
    s.strip_prefix("DbValue::")
        .or_else(|| s.strip_prefix("DbDataType::"))
        .map(str::to_string)
        .unwrap_or(s)
}

fn variable(query: &[(String, String)]) -> Response {
    let name = query_value(query, "name").unwrap_or_default();
    match spin_sdk::variables::get(&name) {
        Ok(v) => json_response(200, json!({ "value": v })),
        Err(e) => json_response(200, json!({ "error": format!("{e:?}") })),
    }
}

async fn outbound(url: String) -> Response {
    let request = Request::get(url.as_str()).build();
    let result: Result<Response, _> = spin_sdk::http::send(request).await;
    match result {
        Ok(r) => json_response(
            200,
            json!({
                "status": r.status(),
                "body": String::from_utf8_lossy(r.body()),
            }),
        ),
        Err(e) => json_response(200, json!({ "error": format!("{e:?}") })),
    }
}

/// Sends one request through `shared::outbound` (the client the product
/// components use) and reports what came back, or the failure and its kind.
fn outbound_shared(query: &[(String, String)]) -> Response {
    use shared::outbound::{OutboundRequest, SendFailure};
    let url = query_value(query, "url").unwrap_or_default();
    let method = query_value(query, "method").unwrap_or_else(|| "GET".into());
    let timeout_ms: u64 = query_value(query, "timeout_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut request = OutboundRequest::new(&method, &url)
        .timeout(std::time::Duration::from_millis(timeout_ms))
        .header("x-probe", "1");
    if let Some(body) = query_value(query, "json") {
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        request = request.json(&value);
    }
    if let Some(q) = query_value(query, "q") {
        request = request.query(&[("q", q.as_str()), ("access_token", "probe-secret")]);
    }
    let started = std::time::Instant::now();
    let result = request.send();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(reply) => json_response(
            200,
            json!({
                "status": reply.status,
                "content_type": reply.header("Content-Type"),
                "body_len": reply.body.len(),
                "body_head": String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]),
                "elapsed_ms": elapsed_ms,
            }),
        ),
        Err(failure) => {
            let kind = match &failure {
                SendFailure::Denied(_) => "denied",
                SendFailure::Timeout(_) => "timeout",
                SendFailure::Connection(..) => "connection",
                SendFailure::Decode(..) => "decode",
                SendFailure::Invalid(..) => "invalid",
            };
            json_response(
                200,
                json!({ "error": failure.to_string(), "kind": kind, "transient": failure.is_transient(), "elapsed_ms": elapsed_ms }),
            )
        }
    }
}

/// Posts `text` to account `account_id` through the cached session of
/// `shared::bluesky_session` (create, reuse, refresh on `ExpiredToken`),
/// as the product's publish and feed components do.
fn bluesky_post(query: &[(String, String)]) -> Response {
    use shared::bluesky::{POST_COLLECTION, Xrpc};
    use shared::bluesky_session::{SessionFailure, with_session};
    let pds = Xrpc::new(&query_value(query, "pds").unwrap_or_default());
    let Some(account_id) = query_value(query, "account_id").and_then(|v| v.parse().ok()) else {
        return json_response(400, json!({ "error": "account_id must be a uuid" }));
    };
    let worker = query_value(query, "worker").unwrap_or_else(|| "probe".into());
    let text = query_value(query, "text").unwrap_or_else(|| "hello".into());
    let url = match spin_sdk::variables::get("database_url") {
        Ok(url) => url,
        Err(e) => return json_response(500, json!({ "error": format!("{e:?}") })),
    };
    let db = match shared::db::Database::open(&url) {
        Ok(db) => db,
        Err(e) => return json_response(503, json!({ "error": e.to_string() })),
    };
    let record = json!({
        "$type": POST_COLLECTION,
        "text": text,
        "createdAt": "2026-11-23T12:00:00.000Z",
    });
    match with_session(&db, &pds, account_id, &worker, |session| {
        pds.create_record(session, POST_COLLECTION, None, &record)
    }) {
        Ok(created) => json_response(200, json!({ "uri": created.uri })),
        Err(failure) => {
            let kind = match &failure {
                SessionFailure::Wait { .. } => "wait",
                SessionFailure::Unusable(_) => "unusable",
                SessionFailure::Call(_) => "call",
                SessionFailure::Database(_) => "database",
            };
            json_response(
                200,
                json!({
                    "error": failure.to_string(),
                    "kind": kind,
                    "transient": failure.is_transient(),
                    "retry_after": failure.retry_after(),
                }),
            )
        }
    }
}

fn query_value(query: &[(String, String)], key: &str) -> Option<String> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! The `webhook-receiver` component through the host over real Postgres:
//! the Strava and Meta handshakes; Strava's subscription check, Meta's
//! `X-Hub-Signature-256` and Replicate's Standard Webhooks, each accepted
//! and refused case with its exact status and `error` code; the 1 MiB limit
//! at its boundary (announced, counted and chunked); redeliveries stored
//! once; authenticated non-JSON stored `failed`; refusals leave no row in
//! any table; and every acknowledged webhook survives a Postgres restart
//! under load, the others answered 5xx.
//!
//! Build first: `cargo build --target wasm32-wasip2 --release -p webhook-receiver`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use outpost_host::pg_cluster::PgCluster;
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm, workspace_root};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

type HmacSha256 = Hmac<Sha256>;
/// Request headers as the tests send them.
type Headers = Vec<(&'static str, String)>;

const STRAVA_VERIFY_TOKEN: &str = "strava-verify-token-for-tests";
const STRAVA_SUBSCRIPTION_ID: &str = "120475";
const INSTAGRAM_VERIFY_TOKEN: &str = "instagram-verify-token-for-tests";
const INSTAGRAM_APP_SECRET: &str = "instagram-app-secret-for-tests";
/// The Replicate signing key (the secret is `whsec_` + its base64).
const REPLICATE_KEY: &[u8] = b"replicate signing key, 32 bytes!";
const MIB: usize = 1024 * 1024;

fn replicate_secret() -> String {
    format!("whsec_{}", STANDARD.encode(REPLICATE_KEY))
}

fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("strava_verify_token", STRAVA_VERIFY_TOKEN.into()),
        ("strava_subscription_id", STRAVA_SUBSCRIPTION_ID.into()),
        ("instagram_verify_token", INSTAGRAM_VERIFY_TOKEN.into()),
        ("instagram_app_secret", INSTAGRAM_APP_SECRET.into()),
        ("replicate_webhook_secret", replicate_secret()),
    ]
}

async fn receiver(db: &TestDb) -> TestApp {
    require_wasm("webhook-receiver").unwrap();
    TestApp::builder(product_manifest())
        .database(db)
        .components(&["webhook-receiver"])
        .variables(secrets())
        .start()
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// `(status, error code)`, for refusals.
    fn refusal(&self) -> (u16, String) {
        let v = self.json();
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "every refusal says why: {v}"
        );
        (
            self.status,
            v["error"].as_str().unwrap_or_default().to_string(),
        )
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

async fn get(app: &TestApp, path: &str, query: &[(&str, &str)]) -> Answer {
    answer(
        client()
            .get(format!("{}{path}", app.url()))
            .query(query)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn post(app: &TestApp, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Answer {
    let mut request = client().post(format!("{}{path}", app.url())).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    answer(request.send().await.unwrap()).await
}

fn meta_signature(body: &[u8], secret: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn standard_signature(id: &str, timestamp: &str, body: &[u8], key: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn replicate_headers(id: &str, timestamp: &str, signature: &str) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature.to_string()),
    ]
}

fn prediction(id: &str) -> Vec<u8> {
    json!({
        "id": id, "status": "succeeded", "model": "owner/model", "version": "v1",
        "input": {"prompt": "a lighthouse"}, "output": ["https://replicate.delivery/x.png"],
        "metrics": {"predict_time": 1.5}
    })
    .to_string()
    .into_bytes()
}

/// A correctly signed Replicate webhook sent now with `id`.
async fn replicate(app: &TestApp, id: &str, body: Vec<u8>) -> Answer {
    let ts = now_seconds().to_string();
    let signature = standard_signature(id, &ts, &body, REPLICATE_KEY);
    post(
        app,
        "/webhooks/replicate",
        &replicate_headers(id, &ts, &signature),
        body,
    )
    .await
}

/// A Replicate webhook signed for `now + offset` seconds. The check happens
/// on the component's clock, so a run in which the second ticked over
/// between sending and answering is repeated (with a fresh id).
/// Sends a Replicate webhook stamped `offset` seconds from now, again if the
/// clock ticked over mid-request (the boundary would be off by one). Answers
/// the attempt that kept its second, its id, and the ids of the discarded
/// attempts the receiver accepted anyway: those are stored too.
async fn replicate_at_offset(app: &TestApp, offset: i64) -> (Answer, String, Vec<String>) {
    let mut accepted_on_a_tick = Vec::new();
    for _ in 0..10 {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let body = prediction(&id);
        let before = now_seconds();
        let ts = (before + offset).to_string();
        let signature = standard_signature(&id, &ts, &body, REPLICATE_KEY);
        let a = post(
            app,
            "/webhooks/replicate",
            &replicate_headers(&id, &ts, &signature),
            body,
        )
        .await;
        if now_seconds() == before {
            return (a, id, accepted_on_a_tick);
        }
        if a.status == 200 {
            accepted_on_a_tick.push(id);
        }
    }
    panic!("the clock ticked over during every attempt");
}

fn strava_event(object_id: u64, aspect: &str, subscription: Value) -> Vec<u8> {
    json!({
        "aspect_type": aspect,
        "event_time": 1_716_000_000 + object_id % 1000,
        "object_id": object_id,
        "object_type": "activity",
        "owner_id": 134_815,
        "subscription_id": subscription,
        "updates": {}
    })
    .to_string()
    .into_bytes()
}

fn instagram_event(media_id: &str) -> Vec<u8> {
    json!({
        "object": "instagram",
        "entry": [{"id": "17841400000000000", "time": 1_716_000_000,
                   "changes": [{"field": "media", "value": {"media_id": media_id}}]}]
    })
    .to_string()
    .into_bytes()
}

/// A valid Instagram event body of exactly `len` bytes.
fn instagram_event_of_len(len: usize) -> Vec<u8> {
    let head = br#"{"object":"instagram","entry":[],"pad":""#;
    let tail = br#""}"#;
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(head);
    body.resize(len - tail.len(), b'x');
    body.extend_from_slice(tail);
    assert_eq!(body.len(), len);
    serde_json::from_slice::<Value>(&body).unwrap();
    body
}

/// Row counts of every table in every schema the application owns: what a
/// refused request must leave unchanged.
async fn table_counts(client: &Client) -> BTreeMap<String, i64> {
    let tables = client
        .query(
            "select format('%I.%I', table_schema, table_name) from information_schema.tables
              where table_type = 'BASE TABLE'
                and table_schema not in ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .unwrap();
    let mut counts = BTreeMap::new();
    for row in tables {
        let table: String = row.get(0);
        let n: i64 = client
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap()
            .get(0);
        counts.insert(table, n);
    }
    assert!(counts.contains_key("public.ingested_items"), "{counts:?}");
    counts
}

async fn items(client: &Client) -> Vec<Value> {
    client
        .query_one(
            "select coalesce(jsonb_agg(to_jsonb(i) order by i.received_at, i.id), '[]')
               from public.ingested_items i",
            &[],
        )
        .await
        .unwrap()
        .get::<_, Value>(0)
        .as_array()
        .cloned()
        .unwrap()
}

// ---------------------------------------------------------------- handshakes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strava_handshake_echoes_the_challenge_inside_json() {
    let db = TestDb::new().await.unwrap();
    let app = receiver(&db).await;
    let challenge = r#"15f7d1a91c1f40f8a748fd134752feb3 "quoted" \ back</slash> é"#;
    let a = get(
        &app,
        "/webhooks/strava",
        &[
            ("hub.mode", "subscribe"),
            ("hub.challenge", challenge),
            ("hub.verify_token", STRAVA_VERIFY_TOKEN),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(
        a.json(),
        json!({ "hub.challenge": challenge }),
        "escaped: {}",
        a.body
    );

    for (query, expected) in [
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.challenge", "x"),
                ("hub.verify_token", "wrong"),
            ],
            (403, "verify_token_mismatch"),
        ),
        (
            vec![("hub.mode", "subscribe"), ("hub.challenge", "x")],
            (403, "verify_token_mismatch"),
        ),
        (
            vec![
                ("hub.mode", "unsubscribe"),
                ("hub.challenge", "x"),
                ("hub.verify_token", STRAVA_VERIFY_TOKEN),
            ],
            (400, "unsupported_mode"),
        ),
        (
            vec![
                ("hub.challenge", "x"),
                ("hub.verify_token", STRAVA_VERIFY_TOKEN),
            ],
            (400, "unsupported_mode"),
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.verify_token", STRAVA_VERIFY_TOKEN),
            ],
            (400, "missing_parameter"),
        ),
    ] {
        let a = get(&app, "/webhooks/strava", &query).await;
        assert_eq!(
            a.refusal(),
            (expected.0, expected.1.to_string()),
            "{query:?}"
        );
        assert!(
            !a.body.contains(STRAVA_VERIFY_TOKEN),
            "no secret in answers: {}",
            a.body
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instagram_handshake_echoes_the_challenge_as_plain_text() {
    let db = TestDb::new().await.unwrap();
    let app = receiver(&db).await;
    let challenge = "1158201444 \"and\" <more> é";
    let a = get(
        &app,
        "/webhooks/instagram",
        &[
            ("hub.mode", "subscribe"),
            ("hub.challenge", challenge),
            ("hub.verify_token", INSTAGRAM_VERIFY_TOKEN),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(a.body, challenge);

    let wrong = get(
        &app,
        "/webhooks/instagram",
        &[
            ("hub.mode", "subscribe"),
            ("hub.challenge", "x"),
            ("hub.verify_token", STRAVA_VERIFY_TOKEN),
        ],
    )
    .await;
    assert_eq!(wrong.refusal(), (403, "verify_token_mismatch".into()));
    let mode = get(
        &app,
        "/webhooks/instagram",
        &[
            ("hub.mode", "subscribe-ish"),
            ("hub.challenge", "x"),
            ("hub.verify_token", INSTAGRAM_VERIFY_TOKEN),
        ],
    )
    .await;
    assert_eq!(mode.refusal(), (400, "unsupported_mode".into()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_platforms_are_404_and_other_methods_405() {
    let db = TestDb::new().await.unwrap();
    let app = receiver(&db).await;
    let http = client();
    let a = post(&app, "/webhooks/twitter", &[], b"{}".to_vec()).await;
    assert_eq!(a.refusal(), (404, "not_found".into()));
    let a = get(&app, "/webhooks/replicate", &[]).await;
    assert_eq!(a.refusal(), (405, "method_not_allowed".into()));
    let a = answer(
        http.put(format!("{}/webhooks/strava", app.url()))
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.refusal(), (405, "method_not_allowed".into()));
    app.stop().await;
}

// ---------------------------------------------------------------- Strava

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strava_events_of_our_subscription_are_stored_once_with_their_account() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let user = uuid::Uuid::new_v4();
    pg.execute(
        "insert into auth.users (id, email) values ($1, $2)",
        &[&user, &format!("{user}@example.test")],
    )
    .await
    .unwrap();
    let account: uuid::Uuid = pg
        .query_one(
            "insert into public.connected_accounts (user_id, platform, platform_user_id, username, verified_at)
             values ($1, 'strava', '134815', 'runner', now()) returning id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let app = receiver(&db).await;

    let body = strava_event(1_360_128_428, "create", json!(120_475));
    let a = post(&app, "/webhooks/strava", &[], body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["duplicate"], false);
    let again = post(&app, "/webhooks/strava", &[], body.clone()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["duplicate"], true);

    // The same event as a string subscription id (decimal text compare).
    let update = strava_event(1_360_128_428, "update", json!("120475"));
    assert_eq!(
        post(&app, "/webhooks/strava", &[], update).await.status,
        200
    );

    let rows = items(&pg).await;
    assert_eq!(rows.len(), 2, "redelivery stored once: {rows:#?}");
    let created = &rows[0];
    assert_eq!(created["platform"], "strava");
    assert_eq!(created["source"], "webhook");
    assert_eq!(created["status"], "pending");
    assert_eq!(created["event_type"], "strava.activity.create");
    assert_eq!(
        created["external_id"],
        format!("activity:1360128428:create:{}", 1_716_000_000 + 428)
    );
    assert_eq!(
        created["payload"],
        serde_json::from_slice::<Value>(&body).unwrap(),
        "raw payload kept"
    );
    assert_eq!(created["account_id"], account.to_string());
    assert_eq!(created["user_id"], user.to_string());
    assert_eq!(rows[1]["event_type"], "strava.activity.update");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strava_refusals_are_exact_and_store_nothing() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let app = receiver(&db).await;
    let before = table_counts(&pg).await;
    let cases: Vec<(Vec<u8>, (u16, &str))> = vec![
        (
            b"aspect_type=create&object_id=1".to_vec(),
            (400, "bad_json"),
        ),
        (b"".to_vec(), (400, "bad_json")),
        (b"{\"subscription_id\": 120475".to_vec(), (400, "bad_json")),
        (
            strava_event(1, "create", json!(999)),
            (401, "unknown_subscription"),
        ),
        (
            strava_event(1, "create", json!("0120475")),
            (401, "unknown_subscription"),
        ),
        (
            strava_event(1, "create", json!(120_475.0)),
            (401, "unknown_subscription"),
        ),
        (
            strava_event(1, "create", Value::Null),
            (401, "unknown_subscription"),
        ),
        (b"[120475]".to_vec(), (401, "unknown_subscription")),
    ];
    for (body, (status, code)) in cases {
        let a = post(&app, "/webhooks/strava", &[], body.clone()).await;
        assert_eq!(
            a.refusal(),
            (status, code.to_string()),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(table_counts(&pg).await, before, "refusals store nothing");
    app.stop().await;
}

// ---------------------------------------------------------------- Instagram

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instagram_signatures_accept_exactly_the_signed_body() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let app = receiver(&db).await;
    let body = instagram_event("17895695668004550");
    let signature = meta_signature(&body, INSTAGRAM_APP_SECRET);

    let before = table_counts(&pg).await;
    let mut tampered = body.clone();
    tampered.pop();
    tampered.extend_from_slice(b" }");
    let refusals: Vec<(Headers, Vec<u8>, &str)> = vec![
        (vec![], body.clone(), "missing_header"),
        (
            vec![("x-hub-signature-256", String::new())],
            body.clone(),
            "missing_header",
        ),
        (
            vec![("x-hub-signature", signature.replace("sha256=", "sha1="))],
            body.clone(),
            "missing_header",
        ),
        (
            vec![("x-hub-signature-256", signature.replace("sha256=", ""))],
            body.clone(),
            "bad_encoding",
        ),
        (
            vec![("x-hub-signature-256", format!("{}zz", &signature[..69]))],
            body.clone(),
            "bad_encoding",
        ),
        (
            vec![("x-hub-signature-256", format!("{signature}00"))],
            body.clone(),
            "bad_encoding",
        ),
        (
            vec![(
                "x-hub-signature-256",
                meta_signature(&body, "another-app-secret"),
            )],
            body.clone(),
            "signature_mismatch",
        ),
        (
            vec![("x-hub-signature-256", signature.clone())],
            tampered,
            "signature_mismatch",
        ),
    ];
    for (headers, body, code) in refusals {
        let a = post(&app, "/webhooks/instagram", &headers, body).await;
        assert_eq!(a.refusal(), (401, code.to_string()), "{headers:?}");
    }
    assert_eq!(table_counts(&pg).await, before, "refusals store nothing");

    let headers = [("x-hub-signature-256", signature.clone())];
    let a = post(&app, "/webhooks/instagram", &headers, body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let upper = format!("sha256={}", signature[7..].to_uppercase());
    let again = post(
        &app,
        "/webhooks/instagram",
        &[("x-hub-signature-256", upper)],
        body.clone(),
    )
    .await;
    assert_eq!(
        (again.status, again.json()["duplicate"].clone()),
        (200, json!(true)),
        "Meta's resend of the same bytes: {}",
        again.body
    );
    let rows = items(&pg).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["platform"], "instagram");
    assert_eq!(rows[0]["event_type"], "instagram.changes");
    assert_eq!(rows[0]["external_id"], hex::encode(Sha256::digest(&body)));
    assert_eq!(
        rows[0]["payload"],
        serde_json::from_slice::<Value>(&body).unwrap()
    );
    assert_eq!(rows[0]["status"], "pending");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_non_json_is_stored_failed_and_answered_200() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let app = receiver(&db).await;
    let body = b"object=instagram&entry=oops".to_vec();
    let a = post(
        &app,
        "/webhooks/instagram",
        &[(
            "x-hub-signature-256",
            meta_signature(&body, INSTAGRAM_APP_SECRET),
        )],
        body.clone(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);

    let id = "msg_not_json";
    let text = b"<html>not json</html>".to_vec();
    assert_eq!(replicate(&app, id, text).await.status, 200);
    let rows = items(&pg).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for (row, stored) in rows
        .iter()
        .zip(["object=instagram&entry=oops", "<html>not json</html>"])
    {
        assert_eq!(row["payload"], json!(stored), "its text as a JSON string");
        assert_eq!(row["status"], "failed", "{row}");
        let error = row["error_message"].as_str().unwrap_or_default();
        assert!(error.starts_with("payload is not JSON"), "{row}");
    }
    assert_eq!(rows[1]["platform"], "replicate");
    assert_eq!(rows[1]["external_id"], id);
    app.stop().await;
}

// ---------------------------------------------------------------- Replicate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_webhooks_are_verified_and_stored_once_by_webhook_id() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let app = receiver(&db).await;
    let id = "msg_2Lh9ZqKc3Xyz";
    let body = prediction("p_1");
    let a = replicate(&app, id, body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["duplicate"], false);
    // Replicate retries with the same webhook-id (and a new timestamp).
    let again = replicate(&app, id, body.clone()).await;
    assert_eq!(again.json()["duplicate"], true, "{}", again.body);

    let rows = items(&pg).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["platform"], "replicate");
    assert_eq!(rows[0]["external_id"], id);
    assert_eq!(rows[0]["event_type"], "replicate.prediction");
    assert_eq!(rows[0]["payload"]["id"], "p_1");
    assert_eq!(rows[0]["account_id"], Value::Null);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_refusals_have_their_precise_codes_and_store_nothing() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let app = receiver(&db).await;
    let before = table_counts(&pg).await;
    let id = "msg_refused";
    let body = prediction("p_2");
    let ts = now_seconds().to_string();
    let good = standard_signature(id, &ts, &body, REPLICATE_KEY);
    let headers = replicate_headers(id, &ts, &good);
    let without = |name: &str| -> Vec<(&'static str, String)> {
        headers
            .iter()
            .filter(|(n, _)| *n != name)
            .cloned()
            .collect()
    };
    let with = |name: &str, value: &str| -> Vec<(&'static str, String)> {
        headers
            .iter()
            .map(|(n, v)| {
                if *n == name {
                    (*n, value.to_string())
                } else {
                    (*n, v.clone())
                }
            })
            .collect()
    };
    let raw_secret_signature = standard_signature(id, &ts, &body, replicate_secret().as_bytes());
    let undecoded_signature = standard_signature(
        id,
        &ts,
        &body,
        replicate_secret().trim_start_matches("whsec_").as_bytes(),
    );
    let cases: Vec<(Vec<(&'static str, String)>, &str)> = vec![
        (without("webhook-id"), "missing_header"),
        (without("webhook-timestamp"), "missing_header"),
        (without("webhook-signature"), "missing_header"),
        (with("webhook-signature", ""), "missing_header"),
        (
            with("webhook-signature", &good.replace("v1,", "v1,\u{00e9}")),
            "bad_encoding",
        ),
        (with("webhook-timestamp", "soon"), "bad_timestamp"),
        (
            with("webhook-timestamp", &format!("{ts}.5")),
            "bad_timestamp",
        ),
        (with("webhook-timestamp", "-1"), "bad_timestamp"),
        (
            with("webhook-timestamp", &(now_seconds() - 3600).to_string()),
            "stale_timestamp",
        ),
        (
            with("webhook-timestamp", &(now_seconds() + 3600).to_string()),
            "stale_timestamp",
        ),
        (with("webhook-id", "msg_other"), "signature_mismatch"),
        (
            with("webhook-signature", &good.replace("v1,", "v2,")),
            "signature_mismatch",
        ),
        (
            with("webhook-signature", "v1,not-base64!! v1,"),
            "signature_mismatch",
        ),
        // The secret is used decoded: signing with its text (with or
        // without the whsec_ prefix) does not verify.
        (
            with("webhook-signature", &raw_secret_signature),
            "signature_mismatch",
        ),
        (
            with("webhook-signature", &undecoded_signature),
            "signature_mismatch",
        ),
    ];
    for (headers, code) in cases {
        let header_bytes: Vec<(&str, String)> = headers.clone();
        let request = {
            let mut r = client()
                .post(format!("{}/webhooks/replicate", app.url()))
                .body(body.clone());
            for (n, v) in &header_bytes {
                // Non-ASCII values go out as raw bytes.
                r = r.header(
                    *n,
                    reqwest::header::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
                );
            }
            r
        };
        let a = answer(request.send().await.unwrap()).await;
        assert_eq!(a.refusal(), (401, code.to_string()), "{headers:?}");
    }
    // A body other than the signed one.
    let a = post(&app, "/webhooks/replicate", &headers, prediction("p_3")).await;
    assert_eq!(a.refusal(), (401, "signature_mismatch".into()));
    assert_eq!(table_counts(&pg).await, before, "refusals store nothing");

    // The untouched request is accepted.
    assert_eq!(
        post(&app, "/webhooks/replicate", &headers, body)
            .await
            .status,
        200
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_timestamps_300_seconds_away_pass_and_301_are_stale_both_sides() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let app = receiver(&db).await;
    let mut accepted = HashSet::new();
    for offset in [-300, 300] {
        let (a, id, also_stored) = replicate_at_offset(&app, offset).await;
        assert_eq!(a.status, 200, "offset {offset}: {}", a.body);
        accepted.insert(id);
        accepted.extend(also_stored);
    }
    for offset in [-301, 301] {
        let (a, _, also_stored) = replicate_at_offset(&app, offset).await;
        accepted.extend(also_stored);
        assert_eq!(
            a.refusal(),
            (401, "stale_timestamp".into()),
            "offset {offset}"
        );
    }
    let stored: HashSet<String> = items(&pg)
        .await
        .iter()
        .map(|r| r["external_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, accepted);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_valid_v1_entry_among_several_is_enough() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let app = receiver(&db).await;
    let id = "msg_rotating_secret";
    let body = prediction("p_4");
    let ts = now_seconds().to_string();
    let good = standard_signature(id, &ts, &body, REPLICATE_KEY);
    let old = standard_signature(id, &ts, &body, b"the previous signing key........");
    let header = format!("v1,%%%not-base64 v1a,AAAA {old} v2,{} {good}", &good[3..]);
    let a = post(
        &app,
        "/webhooks/replicate",
        &replicate_headers(id, &ts, &header),
        body,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(items(&pg).await.len(), 1);
    app.stop().await;
}

// ---------------------------------------------------------------- sizes

/// Sends a raw HTTP/1.1 request (head, then body chunks; the head says
/// `connection: close`) and returns the status and body, writing
/// concurrently so an answer sent before the body is complete is seen.
async fn raw_request(app: &TestApp, head: String, chunks: Vec<Vec<u8>>) -> (u16, String) {
    let addr = app.url().trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for chunk in chunks {
            writer.write_all(&chunk).await?;
        }
        writer.flush().await?;
        // Keep the write half open: the server decides when it is done.
        tokio::time::sleep(Duration::from_secs(20)).await;
        Ok::<_, std::io::Error>(writer)
    });
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Read until the server closes (a reset after the answer counts too).
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf))
            .await
            .expect("answer in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    writing.abort();
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {:?}", String::from_utf8_lossy(&received)));
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = received[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut decoded = Vec::new();
        let mut rest = body.as_slice();
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .unwrap();
            if size == 0 {
                break;
            }
            let start = line_end + 2;
            decoded.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
        body = decoded;
    }
    (status, String::from_utf8_lossy(&body).to_string())
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_exactly_one_mib_pass_and_one_byte_more_is_413() {
    let db = TestDb::new().await.unwrap();
    let pg = db.connect().await.unwrap();
    let app = receiver(&db).await;
    let signed = |body: &[u8]| {
        vec![(
            "x-hub-signature-256",
            meta_signature(body, INSTAGRAM_APP_SECRET),
        )]
    };

    let exact = instagram_event_of_len(MIB);
    let a = post(&app, "/webhooks/instagram", &signed(&exact), exact.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);

    let before = table_counts(&pg).await;
    let over = instagram_event_of_len(MIB + 1);
    let a = post(&app, "/webhooks/instagram", &signed(&over), over.clone()).await;
    assert_eq!(a.refusal(), (413, "payload_too_large".into()));
    // Size comes before authenticity: unsigned, unknown subscription or
    // not JSON, an oversized body is a 413 on every route.
    for path in [
        "/webhooks/instagram",
        "/webhooks/strava",
        "/webhooks/replicate",
    ] {
        let a = post(&app, path, &[], vec![b'x'; MIB + 1]).await;
        assert_eq!(a.refusal(), (413, "payload_too_large".into()), "{path}");
    }

    // Chunked (no Content-Length): counted while read, refused at the limit.
    let host = app.url().trim_start_matches("http://").to_string();
    let chunked = |body: &[u8]| -> (String, Vec<Vec<u8>>) {
        let head = format!(
            "POST /webhooks/instagram HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\n\
             x-hub-signature-256: {}\r\nconnection: close\r\n\r\n",
            meta_signature(body, INSTAGRAM_APP_SECRET)
        );
        let mut chunks: Vec<Vec<u8>> = body
            .chunks(100_000)
            .map(|c| {
                let mut framed = format!("{:x}\r\n", c.len()).into_bytes();
                framed.extend_from_slice(c);
                framed.extend_from_slice(b"\r\n");
                framed
            })
            .collect();
        chunks.push(b"0\r\n\r\n".to_vec());
        (head, chunks)
    };
    let (head, chunks) = chunked(&over);
    let (status, body) = raw_request(&app, head, chunks).await;
    assert_eq!((status, code_of(&body)), (413, "payload_too_large".into()));

    // Announced over the limit: refused before the body is sent at all.
    let head = format!(
        "POST /webhooks/replicate HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        64 * MIB
    );
    let started = Instant::now();
    let (status, body) = raw_request(&app, head, vec![b"{".to_vec()]).await;
    assert_eq!((status, code_of(&body)), (413, "payload_too_large".into()));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(table_counts(&pg).await, before, "refusals store nothing");

    let exact_chunked = instagram_event_of_len(MIB);
    let mut different = exact_chunked.clone();
    different[MIB - 3] = b'y';
    let (head, chunks) = chunked(&different);
    let (status, body) = raw_request(&app, head, chunks).await;
    assert_eq!(status, 200, "a chunked body of exactly 1 MiB: {body}");
    assert_eq!(items(&pg).await.len(), 2);
    app.stop().await;
}

// ---------------------------------------------------------------- durability

#[derive(Debug, Clone)]
struct Outcome {
    id: String,
    status: u16,
    retry_after: bool,
    elapsed: Duration,
}

/// 400 signed Replicate webhooks from 16 clients while Postgres is stopped
/// and started again: requests in flight at the stop, requests while it is
/// down, during start-up and after. Every 200 is in `ingested_items`, every
/// other answer is a 5xx (503 with `Retry-After` when the database is
/// unreachable), and each answer comes inside Strava's 2 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_webhook_survives_a_postgres_restart() {
    const TOTAL: usize = 400;
    const CLIENTS: usize = 16;
    require_wasm("webhook-receiver").unwrap();
    let mut cluster = tokio::task::spawn_blocking(|| PgCluster::start_new(None))
        .await
        .unwrap()
        .unwrap();
    let (admin, conn) = tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    admin
        .batch_execute("create database outpost")
        .await
        .unwrap();
    drop(admin);
    driver.await.ok();
    let url = cluster.url("outpost");
    outpost_host::migrate::run(&url, &workspace_root().join("migrations"))
        .await
        .unwrap();
    let app = Arc::new(
        TestApp::builder(product_manifest())
            .variable("database_url", url.clone())
            .variable("database_address", cluster.address())
            .variables(secrets())
            .components(&["webhook-receiver"])
            .start()
            .await
            .unwrap(),
    );

    let next = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let run = format!("{}", uuid::Uuid::new_v4().simple());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (app, next, released, done, run) = (
            app.clone(),
            next.clone(),
            released.clone(),
            done.clone(),
            run.clone(),
        );
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    return outcomes;
                }
                while released.load(Ordering::SeqCst) <= i {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let id = format!("msg_{run}_{i:04}");
                let body = prediction(&id);
                let ts = now_seconds().to_string();
                let signature = standard_signature(&id, &ts, &body, REPLICATE_KEY);
                let started = Instant::now();
                let response = http
                    .post(format!("{}/webhooks/replicate", app.url()))
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", &ts)
                    .header("webhook-signature", &signature)
                    .body(body)
                    .send()
                    .await
                    .expect("every request is answered");
                outcomes.push(Outcome {
                    id,
                    status: response.status().as_u16(),
                    retry_after: response.headers().contains_key("retry-after"),
                    elapsed: started.elapsed(),
                });
                response.bytes().await.ok();
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let wait_done = |n: usize| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "requests stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };

    // Up, then stopped while requests are in flight.
    released.store(150, Ordering::SeqCst);
    wait_done(100).await;
    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.stop().unwrap();
        cluster
    })
    .await
    .unwrap();
    // Down.
    released.store(250, Ordering::SeqCst);
    wait_done(250).await;
    // Starting up, then up again.
    let starting = tokio::task::spawn_blocking(move || {
        cluster.start().unwrap();
        cluster
    });
    released.store(320, Ordering::SeqCst);
    let cluster = starting.await.unwrap();
    released.store(TOTAL, Ordering::SeqCst);
    wait_done(TOTAL).await;

    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    assert_eq!(outcomes.len(), TOTAL);
    let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let stored: HashSet<String> = pg
        .query(
            "select external_id from public.ingested_items where platform = 'replicate'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut acknowledged = 0;
    let mut failed = 0;
    let mut acknowledged_after_restart = 0;
    for o in &outcomes {
        assert!(
            o.elapsed < Duration::from_secs(2),
            "answered inside 2 s: {o:?}"
        );
        match o.status {
            200 => {
                acknowledged += 1;
                assert!(stored.contains(&o.id), "acknowledged but lost: {o:?}");
                let i: usize = o.id.rsplit('_').next().unwrap().parse().unwrap();
                if i >= 320 {
                    acknowledged_after_restart += 1;
                }
            }
            500..=599 => {
                failed += 1;
                if o.status == 503 {
                    assert!(o.retry_after, "503 carries Retry-After: {o:?}");
                }
            }
            other => panic!("only 200 or 5xx, got {other}: {o:?}"),
        }
    }
    println!(
        "durability: {acknowledged} acknowledged (all stored), {failed} answered 5xx, \
         {} rows stored, {acknowledged_after_restart} acknowledged after the restart",
        stored.len()
    );
    assert!(acknowledged >= 100, "the load ran before the stop");
    assert!(failed >= 100, "requests while down were answered 5xx");
    assert!(
        acknowledged_after_restart > 0,
        "the receiver recovered after the restart"
    );
    drop(pg);
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("clients still hold the app"),
    }
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}

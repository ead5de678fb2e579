//! Job components through the host over real Postgres: the cron trigger and
//! `POST /jobs/{name}` both run the job and write its `worker_heartbeats`
//! row, which `GET /status` then shows with its age; the bearer secret is
//! required; a job that cannot do its work (its configuration is missing)
//! says so on both triggers and still leaves its heartbeat.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use outpost_host::cron::CronFailure;
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::Value;

async fn status(app: &TestApp) -> Value {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/status", app.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn heartbeat<'a>(status: &'a Value, worker: &str) -> Option<&'a Value> {
    status["heartbeats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["worker_id"] == worker)
}

async fn post_job(app: &TestApp, name: &str, bearer: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client.post(format!("{}/jobs/{name}", app.url()));
    if let Some(secret) = bearer {
        request = request.bearer_auth(secret);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_runs_on_cron_and_http_and_its_heartbeat_shows_in_status() {
    require_wasm("maintenance").unwrap();
    require_wasm("status").unwrap();
    let db = TestDb::new().await.unwrap();
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["maintenance", "status"])
        .start()
        .await
        .unwrap();

    assert!(
        heartbeat(&status(&app).await, "maintenance").is_none(),
        "no heartbeat before the first run"
    );
    app.fire_cron("maintenance").await.unwrap();
    let after_cron = status(&app).await;
    let beat = heartbeat(&after_cron, "maintenance").expect("the cron run wrote its heartbeat");
    assert_eq!(beat["detail"]["trigger"], "cron", "{beat}");
    assert_eq!(beat["detail"]["outcome"], "ok", "{beat}");
    assert_eq!(
        beat["detail"]["report"]["admin_stats_refreshed"], true,
        "{beat}"
    );
    let age = beat["age_seconds"].as_f64().expect("age in seconds");
    assert!((0.0..60.0).contains(&age), "{beat}");

    let (code, body) = post_job(&app, "maintenance", None).await;
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (code, body) = post_job(&app, "maintenance", Some("wrong-secret")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (401, Some("job secret does not match")),
        "{body}"
    );
    let (code, body) = post_job(&app, "maintenance", Some(TestApp::JOB_SECRET)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["job"], "maintenance");
    let beat = heartbeat(&status(&app).await, "maintenance")
        .cloned()
        .unwrap();
    assert_eq!(
        beat["detail"]["trigger"], "http",
        "the HTTP run replaced the heartbeat: {beat}"
    );
    app.stop().await;
}

// Every job component is built now (token-rotation was the last 501 stub),
// so what this guarded, that a job which cannot do its work says so on both
// triggers and still leaves its heartbeat, is checked with a job that lacks
// its configuration: token-rotation without `token_encryption_key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_cannot_work_says_so_on_both_triggers_and_still_beats() {
    require_wasm("token-rotation").unwrap();
    require_wasm("status").unwrap();
    let db = TestDb::new().await.unwrap();
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["token-rotation", "status"])
        .variable("token_encryption_key", "")
        .start()
        .await
        .unwrap();

    match app.fire_cron("token-rotation").await {
        Err(CronFailure::Guest(message)) => {
            assert!(message.contains("token_encryption_key"), "{message}")
        }
        other => panic!("the cron run must fail honestly, got {other:?}"),
    }
    let beat = heartbeat(&status(&app).await, "token-rotation")
        .cloned()
        .expect("the failed cron run wrote its heartbeat");
    assert_eq!(beat["detail"]["trigger"], "cron", "{beat}");
    assert_eq!(beat["detail"]["outcome"], "configuration_error", "{beat}");
    let (code, body) = post_job(&app, "token-rotation", Some(TestApp::JOB_SECRET)).await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(body["error"], "configuration_error");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("token_encryption_key"),
        "{body}"
    );
    let beat = heartbeat(&status(&app).await, "token-rotation")
        .cloned()
        .expect("heartbeat written");
    assert_eq!(beat["detail"]["trigger"], "http", "{beat}");
    assert_eq!(beat["detail"]["outcome"], "configuration_error", "{beat}");
    app.stop().await;
}

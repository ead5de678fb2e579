//! End-to-end tests of `shared::outbound`, the blocking HTTP client every
//! product component uses to reach the platforms, run inside the `probe`
//! component in the test host: answers of any status are answers, bodies
//! and queries travel intact, a hanging server is cut off at the timeout
//! (not at the host's 600 s), a denied host never sees a packet, and no
//! failure message carries the query string (tokens travel there).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use outpost_test_kit::{FakeServer, TestApp, TestDb, probe_manifest, require_wasm};
use serde_json::Value;

type Res = anyhow::Result<()>;

async fn probe(app: &TestApp, query: &[(&str, &str)]) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let answer = client
        .get(format!("{}/probe/outbound-shared", app.url()))
        .query(query)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    assert_eq!(answer.status(), 200);
    Ok(answer.json().await?)
}

async fn app_allowing_loopback(db: &TestDb) -> anyhow::Result<TestApp> {
    require_wasm("probe")?;
    Ok(TestApp::builder(probe_manifest())
        .database(db)
        .variable("outbound_allowed", "http://127.0.0.1:*")
        .start()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_of_every_status_come_back_whole_with_body_query_and_headers() -> Res {
    let db = TestDb::empty().await?;
    let fake = FakeServer::start(|request| {
        let status = if request.uri.path() == "/missing" {
            404
        } else {
            201
        };
        let body = if request.uri.path() == "/big" {
            Bytes::from(vec![b'x'; 3 * 1024 * 1024])
        } else {
            Bytes::from(format!(
                "{} {} {} {}",
                request.method,
                request.uri,
                request
                    .headers
                    .get("x-probe")
                    .map(|v| v.to_str().unwrap_or(""))
                    .unwrap_or("-"),
                request.text()
            ))
        };
        let mut response = http::Response::new(body);
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        response
            .headers_mut()
            .insert("content-type", "text/plain".parse().unwrap());
        response
    })
    .await?;
    let app = app_allowing_loopback(&db).await?;

    let v = probe(
        &app,
        &[
            ("url", &format!("{}/echo", fake.url())),
            ("method", "POST"),
            ("json", r#"{"a":"é"}"#),
            ("q", "a b&c"),
        ],
    )
    .await?;
    assert_eq!(v["status"], 201, "{v}");
    assert_eq!(v["content_type"], "text/plain", "{v}");
    let head = v["body_head"].as_str().unwrap();
    assert!(
        head.starts_with("POST /echo?q=a+b%26c&access_token=probe-secret 1 "),
        "{head}"
    );
    assert!(head.ends_with(r#"{"a":"é"}"#), "{head}");
    let seen = fake.requests();
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert_eq!(
        seen[0].headers["content-length"],
        seen[0].body.len().to_string().as_str()
    );

    let v = probe(&app, &[("url", &format!("{}/missing", fake.url()))]).await?;
    assert_eq!(v["status"], 404, "a 404 is an answer, not a failure: {v}");

    let v = probe(&app, &[("url", &format!("{}/big", fake.url()))]).await?;
    assert_eq!(v["body_len"], 3 * 1024 * 1024, "the whole body is read");
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_cut_off_at_the_timeout() -> Res {
    let db = TestDb::empty().await?;
    // Accepts connections and never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let app = app_allowing_loopback(&db).await?;
    let started = Instant::now();
    let v = probe(
        &app,
        &[
            (
                "url",
                &format!("http://{addr}/hang?access_token=hang-secret"),
            ),
            ("timeout_ms", "700"),
            ("q", "x"),
        ],
    )
    .await?;
    let took = started.elapsed();
    assert_eq!(v["kind"], "timeout", "{v}");
    assert_eq!(v["transient"], true, "{v}");
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    assert!(v["elapsed_ms"].as_u64().unwrap() >= 600, "{v}");
    let message = v["error"].as_str().unwrap();
    assert!(
        !message.contains("secret") && !message.contains('?'),
        "{message}"
    );
    holder.abort();
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_and_refused_hosts_fail_with_their_kind_and_no_token() -> Res {
    let db = TestDb::empty().await?;
    let app = app_allowing_loopback(&db).await?;
    let v = probe(
        &app,
        &[("url", "http://denied.example:8080/x?access_token=tok-123")],
    )
    .await?;
    assert_eq!(v["kind"], "denied", "{v}");
    assert_eq!(v["transient"], false, "{v}");
    assert!(!v["error"].as_str().unwrap().contains("tok-123"), "{v}");

    // A loopback port nobody listens on: allowed, but refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let v = probe(
        &app,
        &[("url", &format!("http://{closed}/x?access_token=tok-456"))],
    )
    .await?;
    assert_eq!(v["kind"], "connection", "{v}");
    assert_eq!(v["transient"], true, "{v}");
    assert!(!v["error"].as_str().unwrap().contains("tok-456"), "{v}");
    app.stop().await;
    Ok(())
}

//! The host's request path under its speed work (issue 18): what must stay
//! true however the host is tuned. A refused oversize webhook reaches a
//! sender that does not use `Expect: 100-continue` as a 413, not a reset;
//! and no session state a component can leave on a pooled Postgres
//! connection (settings, temp tables, prepared statements, cursors,
//! advisory locks, open or failed transactions, LISTEN, the session role)
//! is visible to the next request that gets the same connection.
//!
//! Build first: `cargo build --target wasm32-wasip2 --release -p webhook-receiver`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use outpost_test_kit::{TestApp, TestDb, probe_manifest, product_manifest, require_wasm};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

async fn receiver(db: &TestDb) -> TestApp {
    require_wasm("webhook-receiver").unwrap();
    TestApp::builder(product_manifest())
        .database(db)
        .components(&["webhook-receiver"])
        .variable(
            "replicate_webhook_secret",
            format!(
                "whsec_{}",
                STANDARD.encode(b"replicate signing key, 32 bytes!")
            ),
        )
        .start()
        .await
        .unwrap()
}

/// Sends `head` and then the whole body (`chunks`), and only then reads the
/// answer, the way a simple sender without `Expect: 100-continue` does.
/// Returns the whole answer, or what the sender saw instead (a reset while
/// writing or reading).
async fn send_then_read(addr: &str, head: String, chunks: Vec<Vec<u8>>) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut write_error = None;
    if let Err(e) = stream.write_all(head.as_bytes()).await {
        write_error = Some(e.to_string());
    }
    for chunk in &chunks {
        if write_error.is_some() {
            break;
        }
        if let Err(e) = stream.write_all(chunk).await {
            write_error = Some(e.to_string());
        }
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if complete(&answer) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no answer within 30 s".to_string())?;
    // A write that fails is what the sender reports (most clients stop
    // there: "connection reset by peer" while sending), even when the
    // answer was in its receive buffer.
    match (read, answer.is_empty()) {
        (Ok(()), false) if write_error.is_none() => {
            Ok(String::from_utf8_lossy(&answer).into_owned())
        }
        (read, _) => Err(format!(
            "write: {write_error:?}, read: {read:?} after {} bytes of answer",
            answer.len()
        )),
    }
}

/// Whether `answer` holds a whole response: headers and a body of its
/// `Content-Length`, or a chunked body up to its last chunk.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return body.ends_with("0\r\n\r\n");
    }
    header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_webhook_sent_without_expect_gets_its_413_not_a_reset() {
    let db = TestDb::new().await.unwrap();
    let app = receiver(&db).await;
    let addr = app.url().trim_start_matches("http://").to_string();
    // 8 MiB is far more than the loopback socket buffers hold, so the
    // sender is still writing when the receiver refuses on Content-Length.
    let body_len = 8 * MIB;
    let piece = vec![b'x'; 64 * 1024];
    let mut outcomes = Vec::new();
    for round in 0..4 {
        let head = format!(
            "POST /webhooks/replicate HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {body_len}\r\nwebhook-id: msg_{round}\r\n\r\n"
        );
        let chunks = vec![piece.clone(); body_len / piece.len()];
        outcomes.push(send_then_read(&addr, head, chunks).await);
    }
    // Chunked, refused while counting past 1 MiB.
    for _ in 0..2 {
        let head = format!(
            "POST /webhooks/replicate HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let mut chunks = Vec::new();
        for _ in 0..(body_len / piece.len()) {
            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
            framed.extend_from_slice(&piece);
            framed.extend_from_slice(b"\r\n");
            chunks.push(framed);
        }
        chunks.push(b"0\r\n\r\n".to_vec());
        outcomes.push(send_then_read(&addr, head, chunks).await);
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(answer) => {
                assert!(
                    answer.starts_with("HTTP/1.1 413"),
                    "sender {i} got: {answer}"
                );
                assert!(answer.contains("payload_too_large"), "sender {i}: {answer}");
            }
            Err(e) => panic!("sender {i} saw {e} instead of the 413 (all: {outcomes:?})"),
        }
    }
    app.stop().await;
}

// ------------------------------------------------- session state isolation

/// One probe call: `execute` or `query` of `sql` on the probe's database.
async fn probe(app: &TestApp, route: &str, sql: &str) -> Value {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/probe/{route}", app.url()))
        .query(&[("sql", sql)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Everything of a session a statement can observe and a previous request
/// could have changed, as one text, with the backend's pid first so the
/// test knows the same pooled connection served both requests. A
/// transaction left open by an earlier request shows as a `now()` (its
/// start) older than 100 ms, as the test waits 300 ms before checking;
/// `pg_cursors` always lists the checking statement's own portal.
const SESSION_STATE: &str = "select concat_ws('|', pg_backend_pid(), \
     current_setting('application_name'), current_setting('work_mem'), \
     current_setting('search_path'), current_user = session_user, \
     to_regclass('pg_temp.leak_t') is null, \
     (select count(*) from pg_prepared_statements where from_sql), \
     (select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()), \
     clock_timestamp() - now() < interval '100 ms', \
     (select count(*) from pg_listening_channels()), \
     (select count(*) from pg_cursors), \
     current_setting('transaction_isolation')) as state";

async fn session_state(app: &TestApp) -> String {
    let answer = probe(app, "pg-query", SESSION_STATE).await;
    answer["rows"][0][0]
        .as_str()
        .unwrap_or_else(|| panic!("no state: {answer}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_state_leaks_into_the_next_request_on_a_pooled_connection() {
    let db = TestDb::new().await.unwrap();
    require_wasm("probe").unwrap();
    let app = TestApp::builder(probe_manifest())
        .database(&db)
        .strict_single_jsonb(false)
        .start()
        .await
        .unwrap();
    // Requests one after another share one pooled connection.
    let clean = session_state(&app).await;
    assert_eq!(session_state(&app).await, clean, "the same state twice");
    let (pid, _) = clean.split_once('|').unwrap();
    let pid = pid.to_string();

    // Each is one request (the probe sends one statement per request) that
    // leaves something behind in its session.
    let dirty: &[(&str, &str)] = &[
        ("pg-execute", "set application_name = 'leaked'"),
        ("pg-query", "select set_config('work_mem', '77kB', false)"),
        ("pg-execute", "set search_path = pg_catalog"),
        ("pg-execute", "set role pg_monitor"),
        ("pg-execute", "set session authorization pg_monitor"),
        ("pg-execute", "create temp table leak_t (x int)"),
        ("pg-execute", "prepare leak_p as select 1"),
        (
            "pg-execute",
            "do $$ begin execute 'prepare leak_q as select 2'; end $$",
        ),
        ("pg-query", "select pg_advisory_lock(4242)"),
        ("pg-execute", "listen leak_channel"),
        ("pg-execute", "begin"),
        ("pg-execute", "begin isolation level serializable"),
        ("pg-execute", "declare leak_c cursor with hold for select 1"),
        (
            "pg-execute",
            "set default_transaction_isolation = 'serializable'",
        ),
        // A statement of the host's cache dropped under it.
        ("pg-execute", "deallocate all"),
        ("pg-execute", "discard all"),
    ];
    for (route, sql) in dirty {
        let answer = probe(&app, route, sql).await;
        assert!(
            answer.get("error").is_none(),
            "{sql} should have run: {answer}"
        );
        // A transaction begun here would be older than this by the check.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = session_state(&app).await;
        assert!(
            after.starts_with(&format!("{pid}|")),
            "{sql}: the check ran on another connection ({after}), so it proves nothing"
        );
        assert_eq!(
            after, clean,
            "state left by {sql:?} leaked into the next request"
        );
    }

    // A transaction left failed: the next request still works.
    probe(&app, "pg-execute", "begin").await;
    let failed = probe(&app, "pg-query", "select 1 / 0").await;
    assert!(failed.get("error").is_some(), "{failed}");
    assert_eq!(session_state(&app).await, clean);

    // Cached statements keep answering after their tables change.
    probe(&app, "pg-execute", "create table cached_t (a int)").await;
    probe(&app, "pg-execute", "insert into cached_t values (1)").await;
    let first = probe(&app, "pg-query", "select * from cached_t").await;
    assert_eq!(first["rows"][0][0], "Int32(1)", "{first}");
    probe(
        &app,
        "pg-execute",
        "alter table cached_t add column b text default 'x'",
    )
    .await;
    let second = probe(&app, "pg-query", "select * from cached_t").await;
    assert_eq!(second["rows"][0][1], "Str(\"x\")", "{second}");
    app.stop().await;
}

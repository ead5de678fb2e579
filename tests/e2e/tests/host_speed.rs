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
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
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

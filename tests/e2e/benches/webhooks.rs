//! Webhook benchmark: verified-and-stored webhooks per second and p50/p99
//! latency through the `webhook-receiver` wasm component (signed Replicate
//! webhooks, Standard Webhooks HMAC, unique `webhook-id`s, each committed in
//! `ingested_items` before its 200) with 32 keep-alive connections, beside a
//! bare `INSERT` of the same rows through 32 Postgres connections (a pool of
//! the same size, every connection busy) in the same run, with the ratio.
//! Target: at least 0.5x the bare-insert rate and p99 < 50 ms. For scale it
//! also prints the same SQL call made natively the way Spin's Postgres path
//! makes it (deadpool's `Clean` recycling on each checkout, the statement
//! unprepared), a `GET` handshake (host and component, no database) and the
//! per-request instantiation time.
//!
//! Run: `cargo build --target wasm32-wasip2 --release -p webhook-receiver &&
//! cargo bench -p outpost-e2e --bench webhooks`. `OUTPOST_BENCH_SECS` sets
//! the measured seconds per target (default 3), `OUTPOST_TEST_DATABASE_URL`
//! an existing PostgreSQL (else a private one).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use outpost_e2e::bench::{SPIN_CHECKOUT_RESET, Stats};
use outpost_e2e::native_baseline::{self, Handler, NativeServer, process_cpu};
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use sha2::Sha256;

const KEY: &[u8] = b"replicate signing key, 32 bytes!";

/// A Replicate `completed` prediction of a realistic size (about 1 KB).
fn prediction(id: &str) -> String {
    serde_json::json!({
        "id": id, "status": "succeeded", "model": "black-forest-labs/flux-schnell",
        "version": "dp-4d0bcc010b3049749a251855f12800be",
        "input": {"prompt": "a lighthouse on a cliff at dusk, volumetric light", "num_outputs": 1,
                  "aspect_ratio": "1:1", "output_format": "webp", "output_quality": 80},
        "output": ["https://replicate.delivery/xezq/abcdefghijklmnopqrstuvwxyz/out-0.webp"],
        "logs": "Using seed: 12345\n0it [00:00, ?it/s]\n1it [00:00, 3.52it/s]\n2it [00:00, 3.60it/s]\n4it [00:01, 3.61it/s]\n",
        "error": null, "data_removed": false,
        "metrics": {"predict_time": 1.24, "total_time": 1.31, "image_count": 1},
        "created_at": "2026-08-01T12:00:00.000Z", "started_at": "2026-08-01T12:00:00.050Z",
        "completed_at": "2026-08-01T12:00:01.310Z",
        "urls": {"get": "https://api.replicate.com/v1/predictions/abc",
                 "cancel": "https://api.replicate.com/v1/predictions/abc/cancel"}
    })
    .to_string()
}

fn sign(id: &str, ts: &str, body: &str) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY)?;
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

fn now_seconds() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

/// `CONNECTIONS` keep-alive connections posting signed webhooks with ids
/// `{run}_{connection}_{n}` for `duration`.
async fn load_receiver(addr: SocketAddr, run: &str, duration: Duration) -> anyhow::Result<Stats> {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections() {
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut ok, mut errors) = (Vec::new(), 0usize, 0usize);
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("{run}_{c}_{n}");
                n += 1;
                let body = prediction(&id);
                let ts = now_seconds();
                let request = hyper::Request::post("/webhooks/replicate")
                    .header("host", addr.to_string())
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", &ts)
                    .header("webhook-signature", sign(&id, &ts, &body)?)
                    .body(Full::new(Bytes::from(body)))?;
                let t = Instant::now();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let success = response.status() == 200;
                response.into_body().collect().await?;
                lat.push(t.elapsed().as_micros() as u64);
                if success {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            drop(sender);
            driver.await.ok();
            Ok::<_, anyhow::Error>((lat, ok, errors))
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    Ok(Stats::merge(parts, start.elapsed()))
}

/// `GET` handshakes through the same host and component, which touch no
/// database: the host's and the component's own share of each request.
async fn load_handshake(addr: SocketAddr, duration: Duration) -> anyhow::Result<Stats> {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections() {
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut ok, mut errors) = (Vec::new(), 0usize, 0usize);
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            while Instant::now() < deadline {
                let request = hyper::Request::get(
                    "/webhooks/strava?hub.mode=subscribe&hub.challenge=c&hub.verify_token=bench-token",
                )
                .header("host", addr.to_string())
                .body(Full::new(Bytes::new()))?;
                let t = Instant::now();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let success = response.status() == 200;
                response.into_body().collect().await?;
                lat.push(t.elapsed().as_micros() as u64);
                if success {
                    ok += 1;
                } else {
                    errors += 1;
                }
            }
            drop(sender);
            driver.await.ok();
            Ok::<_, anyhow::Error>((lat, ok, errors))
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    Ok(Stats::merge(parts, start.elapsed()))
}

/// The receiver's request written natively (the native baseline): the
/// same Standard Webhooks check (HMAC-SHA256 over `id.timestamp.body`,
/// constant-time compare), the body parsed as JSON as the component does,
/// and the same `store_webhook_event` call through a pool like the host's.
fn native_receiver() -> Handler {
    std::sync::Arc::new(|parts, body, pool| {
        Box::pin(async move {
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (Some(id), Some(ts), Some(signature)) = (
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
            ) else {
                return native_baseline::status(401, "missing_header");
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(KEY) else {
                return native_baseline::status(500, "key");
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(ts.as_bytes());
            mac.update(b".");
            mac.update(&body);
            let matched = signature
                .split(' ')
                .filter_map(|e| e.split_once(','))
                .filter(|(v, _)| *v == "v1")
                .filter_map(|(_, b)| STANDARD.decode(b).ok())
                .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
            if !matched {
                return native_baseline::status(401, "signature_mismatch");
            }
            let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return native_baseline::status(400, "bad_json");
            };
            let none: Option<String> = None;
            match native_baseline::call_jsonb(
                &pool,
                "select public.store_webhook_event($1::text, $2::text, $3::text, $4::jsonb, $5::text, $6::text) as stored",
                &[&"replicate", &"replicate.prediction", &id, &payload, &none, &none],
            )
            .await
            {
                Ok(stored) => native_baseline::json(
                    200,
                    &serde_json::json!({"received": true, "duplicate": stored["duplicate"]}),
                ),
                Err(_) => native_baseline::status(503, "database_unavailable"),
            }
        })
    })
}

/// The receiver's own SQL call made natively the way Spin's Postgres path
/// makes it (a recycled checkout, then the statement unprepared), through
/// `CONNECTIONS` connections: the ceiling any component calling it can reach.
async fn load_spin_path(db: &TestDb, run: &str, duration: Duration) -> anyhow::Result<Stats> {
    let mut clients = Vec::new();
    for _ in 0..connections() {
        clients.push(db.connect().await?);
    }
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut ok) = (Vec::new(), 0usize);
            let mut n = 0u64;
            let none: Option<String> = None;
            while Instant::now() < deadline {
                let id = format!("{run}_{c}_{n}");
                n += 1;
                let body = prediction(&id);
                let t = Instant::now();
                client.batch_execute(SPIN_CHECKOUT_RESET).await?;
                client
                    .query(
                        "select public.store_webhook_event($1::text, $2::text, $3::text, $4::text::jsonb, $5::text, $6::text) as stored",
                        &[&"replicate", &"replicate.prediction", &id, &body, &none, &none],
                    )
                    .await?;
                lat.push(t.elapsed().as_micros() as u64);
                ok += 1;
            }
            Ok::<_, anyhow::Error>((lat, ok, 0usize))
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    Ok(Stats::merge(parts, start.elapsed()))
}

/// The same rows inserted directly: one autocommitted `INSERT` per row
/// through `CONNECTIONS` connections, each always busy.
async fn load_bare_insert(db: &TestDb, run: &str, duration: Duration) -> anyhow::Result<Stats> {
    let mut clients = Vec::new();
    for _ in 0..connections() {
        clients.push(db.connect().await?);
    }
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let statement = client
                .prepare(
                    "insert into public.ingested_items (source, platform, event_type, external_id, payload)
                     values ('webhook', 'replicate', 'replicate.prediction', $1, $2::text::jsonb)",
                )
                .await?;
            let (mut lat, mut ok) = (Vec::new(), 0usize);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let id = format!("{run}_{c}_{n}");
                n += 1;
                let body = prediction(&id);
                let t = Instant::now();
                client.execute(&statement, &[&id, &body]).await?;
                lat.push(t.elapsed().as_micros() as u64);
                ok += 1;
            }
            Ok::<_, anyhow::Error>((lat, ok, 0usize))
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    Ok(Stats::merge(parts, start.elapsed()))
}

/// Connections per target: `OUTPOST_BENCH_CONNECTIONS`, else 32.
fn connections() -> usize {
    std::env::var("OUTPOST_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(outpost_e2e::bench::CONNECTIONS)
}

/// Rounds each target's measured time is split into.
const ROUNDS: u32 = 3;

/// One target's rounds as one run, with its CPU per request.
fn combine(parts: Vec<(Stats, Duration)>) -> (Stats, Duration) {
    let elapsed = parts.iter().map(|(s, _)| s.elapsed).sum();
    let cpu: Duration = parts.iter().map(|(_, c)| *c).sum();
    let stats = Stats::merge(
        parts
            .into_iter()
            .map(|(s, _)| (s.latencies_us, s.requests, s.errors))
            .collect(),
        elapsed,
    );
    let per_request = cpu / (stats.requests + stats.errors).max(1) as u32;
    (stats, per_request)
}

fn row(name: &str, (s, cpu): &(Stats, Duration)) {
    println!(
        "{name:<44} {:>8.0} stored/s   p50 {:>7.3} ms   p99 {:>7.3} ms   cpu {:>5.0} µs/req   ok {:>6}   errors {:>4}",
        s.rate(),
        s.percentile(0.50),
        s.percentile(0.99),
        cpu.as_secs_f64() * 1e6,
        s.requests,
        s.errors
    );
}

async fn stored(db: &TestDb, run: &str) -> anyhow::Result<i64> {
    let client = db.connect().await?;
    let row = client
        .query_one(
            "select count(*) from public.ingested_items where external_id like $1",
            &[&format!("{run}\\_%")],
        )
        .await?;
    Ok(row.get(0))
}

async fn run() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("OUTPOST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(secs);
    require_wasm("webhook-receiver")?;
    let db = TestDb::new().await?;
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["webhook-receiver"])
        .variable(
            "replicate_webhook_secret",
            format!("whsec_{}", STANDARD.encode(KEY)),
        )
        .variable("strava_verify_token", "bench-token")
        .start()
        .await?;
    let addr: SocketAddr = app.url().trim_start_matches("http://").parse()?;
    let native = NativeServer::start(&db.url(), native_receiver())
        .await
        .map_err(|e| anyhow::anyhow!("native baseline: {e}"))?;

    // Warm up every path (instances, pools, caches).
    load_receiver(addr, "warm_receiver", Duration::from_millis(500)).await?;
    load_receiver(native.addr(), "warm_native", Duration::from_millis(500)).await?;
    load_bare_insert(&db, "warm_insert", Duration::from_millis(500)).await?;

    println!(
        "webhook benchmark: {} connections, {secs} s per target, loopback, {} cores",
        connections(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    // The targets take turns in short slices, so a burst of other work on a
    // shared machine falls on all of them alike.
    let rounds = ROUNDS.min(secs.max(1) as u32);
    // `OUTPOST_BENCH_ONLY=0..4` runs one target alone (for a profiler).
    let only: Option<usize> = std::env::var("OUTPOST_BENCH_ONLY")
        .ok()
        .and_then(|v| v.parse().ok());
    let slice = duration / rounds;
    let mut runs: Vec<Vec<(Stats, Duration)>> = vec![Vec::new(); 5];
    for round in 0..rounds {
        for (target, runs) in runs.iter_mut().enumerate() {
            if only.is_some_and(|only| only != target) {
                continue;
            }
            let cpu = process_cpu();
            let stats = match target {
                0 => load_receiver(addr, &format!("receiver_r{round}"), slice).await?,
                1 => load_receiver(native.addr(), &format!("native_r{round}"), slice).await?,
                2 => load_bare_insert(&db, &format!("insert_r{round}"), slice).await?,
                3 => load_spin_path(&db, &format!("spinpath_r{round}"), slice).await?,
                _ => load_handshake(addr, slice).await?,
            };
            runs.push((stats, process_cpu() - cpu));
        }
    }
    let [receiver, native_run, bare, spin_path, handshake] = runs
        .into_iter()
        .map(combine)
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| anyhow::anyhow!("five targets"))?;
    println!(
        "(cpu: this process's CPU per request: host + component + load generator; Postgres not counted)"
    );
    row("bare INSERT (32 Postgres connections)", &bare);
    row("POST /webhooks/replicate (verify + store)", &receiver);
    row("  native baseline: same request, hyper+pg", &native_run);
    row("  for scale: same SQL call, Spin's pool path", &spin_path);
    row("  for scale: GET handshake (no database)", &handshake);
    let iterations = 1000;
    let instantiation = app
        .app()
        .measure_instantiation("webhook-receiver", iterations)
        .await?;
    println!(
        "  for scale: instantiating the component: {:.1} µs per request (over {iterations})",
        instantiation.as_secs_f64() * 1e6
    );

    let in_table = stored(&db, "receiver").await?;
    let ratio = receiver.0.rate() / bare.0.rate();
    let native_ratio = receiver.0.rate() / native_run.0.rate();
    println!(
        "component/native: {native_ratio:.2}x (target >= 0.70x: {}); native/bare INSERT: {:.2}x",
        outpost_e2e::bench::verdict(native_ratio >= 0.7),
        native_run.0.rate() / bare.0.rate()
    );
    println!(
        "the receiver reaches {:.0}% of the rate its SQL call allows through Spin's pool path",
        100.0 * receiver.0.rate() / spin_path.0.rate()
    );
    println!(
        "ratio: {ratio:.2}x the bare-insert rate (target >= 0.50x: {}); p99 {:.3} ms (target < 50 ms: {}); \
         {in_table} rows stored for {} acknowledged",
        if ratio >= 0.5 { "met" } else { "NOT met" },
        receiver.0.percentile(0.99),
        if receiver.0.percentile(0.99) < 50.0 {
            "met"
        } else {
            "NOT met"
        },
        receiver.0.requests
    );
    anyhow::ensure!(
        in_table >= receiver.0.requests as i64,
        "every acknowledged webhook must be stored: {in_table} rows for {} acknowledged",
        receiver.0.requests
    );
    native.stop();
    app.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

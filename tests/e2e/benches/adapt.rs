//! adapt benchmark (issue 16): adaptations per second through the real
//! `adapt` component in the test host (`POST /adapt`, all four platforms,
//! a default voice profile, a fresh idea each time) against an instant
//! OpenAI-compatible fake (`FakeOpenAi::start_instant`: one precomputed
//! answer, no parsing), printed beside the same completions requested
//! straight from the fake in the same run: the very request body adapt
//! sent, with the same key, over as many keep-alive connections.
//!
//! The component's own overhead per request is its latency minus the time
//! it waited for the model, which it reports in `Server-Timing:
//! model;dur=<ms>`; the p50 and p99 of that difference are printed at 32
//! connections and at 1 (no queueing), beside the direct completion's.
//! Each adaptation costs four SQL calls (prepare, reserve the run, settle
//! the run with its api_logs row, save) and one model call; the floor of
//! any request (instantiate, check the token, one SQL call) is measured as
//! `GET /adapt/{id}`.
//!
//! Run: `cargo build --target wasm32-wasip2 --release -p adapt && cargo
//! bench -p outpost-e2e --bench adapt`. `OUTPOST_BENCH_SECS` sets the
//! measured seconds per target (default 5), `OUTPOST_TEST_DATABASE_URL` an
//! existing PostgreSQL (else a private one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use outpost_e2e::bench::{CONNECTIONS, Stats, addr_of};
use outpost_test_kit::fakes::openai::{COMPLETIONS_PATH, FakeOpenAi};
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::json;
use uuid::Uuid;

const JWT_SECRET: &str = "adapt-bench-jwt-secret-with-at-least-32-characters";
const API_KEY: &str = "sk-adapt-bench";

/// What one load target sends: a path (`GET <path>` for a GET, else a
/// POST), headers and a body per request.
type MakeRequest = dyn Fn(usize, usize) -> (String, Vec<(String, String)>, Bytes) + Send + Sync;

/// Latencies plus, per request, latency minus the `Server-Timing` model
/// wait (microseconds, sorted).
struct Measured {
    stats: Stats,
    overhead_us: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn model_wait_us(headers: &http::HeaderMap) -> Option<u64> {
    let value = headers.get("server-timing")?.to_str().ok()?;
    let ms: f64 = value
        .split("dur=")
        .nth(1)?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some((ms * 1000.0) as u64)
}

/// Drives `connections` keep-alive HTTP/1.1 connections at `addr` for `duration`.
async fn drive(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    make: Arc<MakeRequest>,
) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut overhead = Vec::new();
            let mut errors = 0usize;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            let mut i = 0;
            while Instant::now() < deadline {
                let (path, headers, body) = make(c, i);
                i += 1;
                let (method, path) = match path.strip_prefix("GET ") {
                    Some(path) => (http::Method::GET, path.to_string()),
                    None => (http::Method::POST, path),
                };
                let mut req = hyper::Request::builder()
                    .method(method)
                    .uri(path.as_str())
                    .header("host", addr.to_string())
                    .header("content-type", "application/json");
                for (name, value) in &headers {
                    req = req.header(name.as_str(), value.as_str());
                }
                let req = req.body(Full::new(body))?;
                let t = Instant::now();
                sender.ready().await?;
                let res = sender.send_request(req).await?;
                let ok = res.status().is_success();
                let wait = model_wait_us(res.headers());
                res.into_body().collect().await?;
                let us = t.elapsed().as_micros() as u64;
                lat.push(us);
                if let Some(wait) = wait {
                    overhead.push(us.saturating_sub(wait));
                }
                if !ok {
                    errors += 1;
                }
            }
            drop(sender);
            driver.await.ok();
            Ok::<_, anyhow::Error>((lat, errors, overhead))
        }));
    }
    let mut latencies = Vec::new();
    let mut overhead_us = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e, o) = t.await??;
        latencies.extend(lat);
        overhead_us.extend(o);
        errors += e;
    }
    overhead_us.sort_unstable();
    Ok(Measured {
        stats: Stats::from_latencies(latencies, errors, start.elapsed()),
        overhead_us,
    })
}

fn token(user: Uuid) -> anyhow::Result<String> {
    Ok(outpost_test_kit::supabase_access_token(
        JWT_SECRET, user, 7200,
    ))
}

fn row(name: &str, m: &Measured, base: Option<&Measured>) {
    let ratio = base
        .map(|b| format!("{:.3}x the direct rate", m.stats.rate() / b.stats.rate()))
        .unwrap_or_else(|| "baseline".into());
    println!(
        "{name:<46} {:>8.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   errors {:>3}   {ratio}",
        m.stats.rate(),
        m.stats.percentile(0.50),
        m.stats.percentile(0.99),
        m.stats.errors
    );
}

async fn run() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("OUTPOST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(secs);
    require_wasm("adapt")?;
    let db = TestDb::new().await?;
    let sql = db.connect().await?;
    let model = FakeOpenAi::start_instant(API_KEY).await?;
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["adapt"])
        .variable("supabase_jwt_secret", JWT_SECRET)
        .variable("adapt_api_url", model.url())
        .variable("adapt_api_base_path", "/v1")
        .variable("adapt_api_key", API_KEY)
        .variable("adapt_model", "bench-model")
        .variable("ai_text_daily_limit", "1000000000")
        .start()
        .await?;

    // One user per connection (the daily limit's lock is per user), each
    // with a default voice profile.
    let mut tokens = Vec::new();
    let mut users = Vec::new();
    for _ in 0..CONNECTIONS {
        let user = Uuid::new_v4();
        users.push(user);
        sql.execute(
            "insert into auth.users (id, email) values ($1, $2)",
            &[&user, &format!("{user}@bench.test")],
        )
        .await?;
        sql.execute(
            "insert into public.voice_profiles (user_id, name, characteristics, sample_posts)
             values ($1, 'Founder', $2, $3)",
            &[
                &user,
                &json!({"tone": ["candid", "warm"], "style": "concise", "formality_level": 4,
                        "common_phrases": ["Here's the thing"], "avoid_words": ["synergy"]}),
                &vec![
                    "We shipped the importer today. Tiny, boring, and it works.".to_string(),
                    "Three things I learned running a two-person company this year.".to_string(),
                ],
            ],
        )
        .await?;
        tokens.push(token(user)?);
    }
    let tokens = Arc::new(tokens);
    let tokens_for_get = tokens.clone();
    // A fresh idea every request (a repeat would be a dedupe hit, no model call).
    let run_tag = Uuid::new_v4().simple().to_string();
    let next_idea = Arc::new(AtomicU64::new(0));
    let adapt_request: Arc<MakeRequest> = Arc::new(move |c, _| {
        let n = next_idea.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "idea": format!("Small releases beat big launches ({run_tag} {n}): ship one thing a week, learn, repeat"),
            "platforms": ["linkedin", "x", "bluesky", "substack"],
            "tone": "casual",
            "target_audience": "indie founders",
        });
        (
            "/adapt".to_string(),
            vec![("authorization".into(), format!("Bearer {}", tokens[c]))],
            Bytes::from(body.to_string()),
        )
    });

    // Warm up adapt, then take the very request body it sent the model.
    let adapt_addr = addr_of(app.url())?;
    let warm = drive(
        adapt_addr,
        CONNECTIONS,
        Duration::from_millis(500),
        adapt_request.clone(),
    )
    .await?;
    anyhow::ensure!(
        warm.stats.errors == 0,
        "adapt failed {} warm-up requests",
        warm.stats.errors
    );
    let sent = model
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.uri.path() == COMPLETIONS_PATH)
        .ok_or_else(|| anyhow::anyhow!("adapt never called the model"))?;
    let completion_body = sent.body.clone();
    let direct_request: Arc<MakeRequest> = Arc::new(move |_, _| {
        (
            COMPLETIONS_PATH.to_string(),
            vec![("authorization".into(), format!("Bearer {API_KEY}"))],
            completion_body.clone(),
        )
    });
    let model_addr = addr_of(&model.url())?;
    drive(
        model_addr,
        CONNECTIONS,
        Duration::from_millis(500),
        direct_request.clone(),
    )
    .await?;

    println!(
        "adapt benchmark: POST /adapt with 4 platforms and a default voice profile, fresh idea each time, instant fake model \
         ({} byte completion request), {secs} s per target, loopback, {} cores",
        sent.body.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let direct = drive(model_addr, CONNECTIONS, duration, direct_request.clone()).await?;
    let adapt = drive(adapt_addr, CONNECTIONS, duration, adapt_request.clone()).await?;
    // The floor of any request to the component: instantiate, check the
    // token, open the database, one SQL call.
    let stored_id: Uuid = sql
        .query_one(
            "select id from public.content_adaptations where user_id = $1 limit 1",
            &[&users[0]],
        )
        .await?
        .get(0);
    let first_user_token = tokens_for_get[0].clone();
    let read_request: Arc<MakeRequest> = Arc::new(move |_, _| {
        (
            format!("GET /adapt/{stored_id}"),
            vec![("authorization".into(), format!("Bearer {first_user_token}"))],
            Bytes::new(),
        )
    });
    let read_1 = drive(adapt_addr, 1, duration, read_request).await?;
    let direct_1 = drive(model_addr, 1, duration, direct_request).await?;
    let adapt_1 = drive(adapt_addr, 1, duration, adapt_request).await?;
    row(
        &format!("direct completions, {CONNECTIONS} connections"),
        &direct,
        None,
    );
    row(
        &format!("adapt POST /adapt, {CONNECTIONS} connections"),
        &adapt,
        Some(&direct),
    );
    row("direct completions, 1 connection", &direct_1, None);
    row("adapt POST /adapt, 1 connection", &adapt_1, Some(&direct_1));
    row(
        "adapt GET /adapt/{id} (one SQL call), 1 conn.",
        &read_1,
        None,
    );
    for (label, m, d) in [
        (format!("{CONNECTIONS} connections"), &adapt, &direct),
        ("1 connection".to_string(), &adapt_1, &direct_1),
    ] {
        println!(
            "component's own overhead per request ({label}): p50 {:.3} ms, p99 {:.3} ms over {} requests \
             (latency minus its Server-Timing model wait; a direct completion takes p50 {:.3} ms, p99 {:.3} ms)",
            percentile(&m.overhead_us, 0.50),
            percentile(&m.overhead_us, 0.99),
            m.overhead_us.len(),
            d.stats.percentile(0.50),
            d.stats.percentile(0.99),
        );
    }

    // Every counted adaptation is stored once with one run and one log row.
    let counts = sql
        .query_one(
            "select (select count(*) from public.content_adaptations),
                    (select count(*) from public.ai_text_runs),
                    (select count(*) from public.api_logs where path = '/v1/chat/completions')",
            &[],
        )
        .await?;
    let made = warm.stats.requests + adapt.stats.requests + adapt_1.stats.requests
        - warm.stats.errors
        - adapt.stats.errors
        - adapt_1.stats.errors;
    let stored = (
        counts.get::<_, i64>(0),
        counts.get::<_, i64>(1),
        counts.get::<_, i64>(2),
    );
    println!(
        "stored: {} adaptations, {} ai_text_runs, {} api_logs rows for {made} successful requests",
        stored.0, stored.1, stored.2
    );
    let made = made as i64;
    anyhow::ensure!(
        stored == (made, made, made),
        "every adaptation must be stored once with one run and one log row"
    );
    app.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

//! Host benchmark: requests per second and p50/p99 latency with 32
//! concurrent keep-alive connections on loopback, for `GET /status` (the
//! real status component over real PostgreSQL), for `GET /probe/ok` (a plain
//! 200 through the host), and for a plain hyper "hello" server measured in
//! the same run, with the ratio to it; plus the per-request instantiation
//! time (store creation + `InstancePre::instantiate_async`).
//!
//! Run: `cargo bench -p outpost-e2e --bench host` (after building the
//! components: `cargo build --target wasm32-wasip2 --release -p probe -p status`).
//! `OUTPOST_BENCH_SECS` sets the measured seconds per target (default 5),
//! `OUTPOST_TEST_DATABASE_URL` an existing PostgreSQL (else a private one).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use outpost_e2e::bench::{CONNECTIONS, Stats, addr_of};
use outpost_test_kit::{TestApp, TestDb, probe_manifest, product_manifest, require_wasm};

/// Drives `CONNECTIONS` keep-alive connections at `addr` for `duration`.
async fn load(addr: SocketAddr, path: &str, duration: Duration) -> anyhow::Result<Stats> {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            while Instant::now() < deadline {
                let req = hyper::Request::get(path.as_str())
                    .header("host", addr.to_string())
                    .body(Empty::<Bytes>::new())?;
                let t = Instant::now();
                sender.ready().await?;
                let res = sender.send_request(req).await?;
                let ok = res.status().is_success();
                res.into_body().collect().await?;
                lat.push(t.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
            }
            drop(sender);
            driver.await.ok();
            Ok::<_, anyhow::Error>((lat, errors))
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        let (lat, errors) = t.await??;
        let requests = lat.len();
        parts.push((lat, requests, errors));
    }
    Ok(Stats::merge(parts, start.elapsed()))
}

/// A plain hyper HTTP/1.1 server answering "hello".
async fn hello_server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).ok();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"hello",
                    ))))
                });
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                    .ok();
            });
        }
    });
    Ok(addr)
}

fn row(name: &str, s: &Stats, hello: Option<&Stats>) {
    let ratio = hello
        .map(|h| {
            format!(
                "{:>6.2}x slower ({:.1}% of hello's req/s)",
                h.rate() / s.rate(),
                100.0 * s.rate() / h.rate()
            )
        })
        .unwrap_or_else(|| "baseline".into());
    println!(
        "{name:<34} {:>10.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   errors {:>4}   {ratio}",
        s.rate(),
        s.percentile(0.50),
        s.percentile(0.99),
        s.errors
    );
}

async fn run() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("OUTPOST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(secs);
    require_wasm("probe")?;
    require_wasm("status")?;
    let db = TestDb::new().await?;
    let status = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["status"])
        .start()
        .await?;
    let probe = TestApp::builder(probe_manifest())
        .database(&db)
        .start()
        .await?;
    let hello = hello_server().await?;

    // Warm up every path (pools, caches).
    for (addr, path) in [
        (hello, "/"),
        (addr_of(probe.url())?, "/probe/ok"),
        (addr_of(status.url())?, "/status"),
    ] {
        load(addr, path, Duration::from_millis(500)).await?;
    }

    println!(
        "host benchmark: {CONNECTIONS} connections, {secs} s per target, loopback, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let hello_stats = load(hello, "/", duration).await?;
    let ok_stats = load(addr_of(probe.url())?, "/probe/ok", duration).await?;
    let status_stats = load(addr_of(status.url())?, "/status", duration).await?;
    row("plain hyper hello", &hello_stats, None);
    row(
        "host GET /probe/ok (plain 200)",
        &ok_stats,
        Some(&hello_stats),
    );
    row(
        "host GET /status (Postgres)",
        &status_stats,
        Some(&hello_stats),
    );

    let iterations = 2000;
    for (app, component) in [(&probe, "probe"), (&status, "status")] {
        let per = app
            .app()
            .measure_instantiation(component, iterations)
            .await?;
        println!(
            "instantiation ({component}): {:.1} µs/request (target < 1 ms) over {iterations} runs",
            per.as_secs_f64() * 1e6
        );
    }
    status.stop().await;
    probe.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

//! Pipeline benchmark (issue 17), two figures each beside a baseline
//! measured in the same run:
//!
//! 1. Bot events accepted per second through `pipeline` (`POST
//!    /pipeline/runs/{run}/events` with a bot token and an event id, over
//!    HTTP, the token checked and the run locked in SQL), beside bare
//!    `INSERT`s into `job_events` over direct PostgreSQL connections, with
//!    the same number of concurrent writers; once with one run per writer
//!    and once with every writer on one run (where the run's row lock, which
//!    gives the exact paging order, serialises them).
//! 2. Artifact MB/s uploaded through `pipeline` (hashed while streaming,
//!    checked, recorded, stored in s3s-fs), beside a plain presigned PUT of
//!    the same files to the same store, sequentially in both.
//!
//! Run: `scripts/setup && cargo build --target wasm32-wasip2 --release -p
//! pipeline && cargo bench -p outpost-e2e --bench pipeline`.
//! `OUTPOST_TEST_DATABASE_URL` names an existing PostgreSQL (else a private one).

use std::time::{Duration, Instant};

use outpost_e2e::bench::Stats;
use outpost_test_kit::{REGION, S3Server, TestApp, TestDb, product_manifest, require_wasm};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const WRITERS: usize = 16;
const EVENTS_EACH: usize = 250;
const JWT_SECRET: &str = "pipeline-bench-jwt-secret-with-at-least-32-characters";

fn user_token(user: Uuid) -> anyhow::Result<String> {
    Ok(outpost_test_kit::supabase_access_token(
        JWT_SECRET, user, 3600,
    ))
}

/// Bare inserts: one direct connection per writer, `runs[w]` for writer `w`.
async fn bare_inserts(db: &TestDb, runs: &[String], owner: Uuid) -> anyhow::Result<Stats> {
    let mut clients = Vec::new();
    for _ in 0..WRITERS {
        clients.push(db.connect().await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, client) in clients.into_iter().enumerate() {
        let run = runs[w % runs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let statement = client
                .prepare(
                    "insert into public.job_events (run_id, bot_name, event_type, payload, owner_id, event_id)
                     values ($1, $2, 'progress', $3, $4, $5)",
                )
                .await?;
            let mut latencies = Vec::with_capacity(EVENTS_EACH);
            for n in 0..EVENTS_EACH {
                let t = Instant::now();
                client
                    .execute(
                        &statement,
                        &[
                            &run,
                            &format!("bot-{w}"),
                            &json!({"step": n}),
                            &owner,
                            &format!("bare-{w}-{n}"),
                        ],
                    )
                    .await?;
                latencies.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut parts = Vec::new();
    for task in tasks {
        let latencies = task.await??;
        let n = latencies.len();
        parts.push((latencies, n, 0));
    }
    Ok(Stats::merge(parts, started.elapsed()))
}

/// Events through the component: `WRITERS` concurrent bots.
async fn through_pipeline(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    runs: &[String],
    tag: &str,
) -> anyhow::Result<Stats> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let url = format!("{base}/pipeline/runs/{}/events", runs[w % runs.len()]);
        let (client, token, tag) = (client.clone(), token.to_string(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::with_capacity(EVENTS_EACH), 0);
            for n in 0..EVENTS_EACH {
                let t = Instant::now();
                let status = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(
                        &json!({"bot_name": format!("bot-{w}"), "event_type": "progress",
                                  "payload": {"step": n}, "event_id": format!("{tag}-{w}-{n}")}),
                    )
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if status == 201 {
                    latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut parts = Vec::new();
    for task in tasks {
        let (latencies, errors) = task.await?;
        let n = latencies.len();
        parts.push((latencies, n, errors));
    }
    Ok(Stats::merge(parts, started.elapsed()))
}

fn file(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

async fn run() -> anyhow::Result<()> {
    require_wasm("pipeline")?;
    let db = TestDb::new().await?;
    let sql = db.connect().await?;
    let s3 = S3Server::start().await?;
    std::fs::create_dir_all(s3.object_file("artifacts", ""))?;
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["pipeline"])
        .variable("supabase_jwt_secret", JWT_SECRET)
        .variable("media_store_url", s3.url())
        .variable("media_store_access_key", s3.access_key())
        .variable("media_store_secret_key", s3.secret_key())
        .start()
        .await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(WRITERS)
        .build()?;
    let user = Uuid::new_v4();
    sql.execute(
        "insert into auth.users (id, email) values ($1, $2)",
        &[&user, &format!("{user}@example.test")],
    )
    .await?;
    let new_run = || {
        let client = client.clone();
        let url = format!("{}/pipeline/runs", app.url());
        async move {
            let answer: Value = client
                .post(url)
                .bearer_auth(user_token(user)?)
                .json(&json!({"project_spec": {"bench": true}}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::Ok(answer["run_id"].as_str().unwrap_or_default().to_string())
        }
    };
    let token: Value = client
        .post(format!("{}/pipeline/bot-tokens", app.url()))
        .bearer_auth(user_token(user)?)
        .json(&json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = token["token"].as_str().unwrap_or_default().to_string();

    let total = WRITERS * EVENTS_EACH;
    println!("events: {WRITERS} concurrent writers x {EVENTS_EACH} events each ({total})");
    for (label, shared_run) in [
        ("one run per writer", false),
        ("all writers on one run", true),
    ] {
        let count = if shared_run { 1 } else { WRITERS };
        let (mut bare_runs, mut api_runs) = (Vec::new(), Vec::new());
        for _ in 0..count {
            bare_runs.push(new_run().await?);
            api_runs.push(new_run().await?);
        }
        // Warm the component's instances and connections.
        through_pipeline(&client, app.url(), &token, &api_runs, "warm").await?;
        let bare = bare_inserts(&db, &bare_runs, user).await?;
        let api = through_pipeline(&client, app.url(), &token, &api_runs, "bench").await?;
        println!("  {label}:");
        println!(
            "    bare INSERT into job_events: {:>8.0} events/s (p50 {:.2} ms, p99 {:.2} ms)",
            bare.rate(),
            bare.percentile(0.5),
            bare.percentile(0.99)
        );
        println!(
            "    through pipeline (HTTP):     {:>8.0} events/s (p50 {:.2} ms, p99 {:.2} ms), {} errors; = {:.2}x of bare inserts",
            api.rate(),
            api.percentile(0.5),
            api.percentile(0.99),
            api.errors,
            api.rate() / bare.rate()
        );
    }

    // Artifacts: the same files through the pipeline and by plain PUT.
    let sizes: Vec<usize> = (0..24)
        .map(|i| {
            if i % 6 == 5 {
                20 * 1024 * 1024
            } else {
                256 * 1024 + i * 300_000
            }
        })
        .collect();
    let files: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| file(*n, i as u8))
        .collect();
    let bytes: usize = sizes.iter().sum();
    let run_id = new_run().await?;
    let bucket = Bucket::new(s3.url().parse()?, UrlStyle::Path, "artifacts", REGION)?;
    let credentials = Credentials::new(s3.access_key(), s3.secret_key());
    let started = Instant::now();
    for (i, body) in files.iter().enumerate() {
        let url = bucket
            .put_object(Some(&credentials), &format!("baseline/{i}"))
            .sign(Duration::from_secs(600));
        client
            .put(url)
            .header("content-type", "application/zip")
            .body(body.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    let plain = started.elapsed();
    let started = Instant::now();
    for body in &files {
        client
            .post(format!(
                "{}/pipeline/runs/{run_id}/artifacts?bot_name=packager",
                app.url()
            ))
            .bearer_auth(&token)
            .header("content-type", "application/zip")
            .header("x-checksum-sha256", hex::encode(Sha256::digest(body)))
            .body(body.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    let piped = started.elapsed();
    let mb = bytes as f64 / 1e6;
    println!(
        "artifacts: {} files, {mb:.1} MB (256 KB to 20 MB; the 20 MB ones as multipart)",
        files.len()
    );
    println!(
        "  plain presigned PUT to the store: {:>7.1} MB/s ({plain:.2?})",
        mb / plain.as_secs_f64()
    );
    println!(
        "  through pipeline (hash, check, record, store): {:>7.1} MB/s ({piped:.2?}); = {:.2}x of plain PUT",
        mb / piped.as_secs_f64(),
        plain.as_secs_f64() / piped.as_secs_f64()
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

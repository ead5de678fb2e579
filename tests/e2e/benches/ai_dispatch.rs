//! ai-dispatch benchmark (issue 15), two figures, each beside a baseline
//! measured in the same run:
//!
//! 1. Predictions created per second through ai-dispatch (claim, charge,
//!    token and budget, `POST` to the fake, prediction id stored, api_logs
//!    row) by 4 concurrent job runs against an instant fake Replicate,
//!    beside the same creations sent straight to the fake by 4 reqwest
//!    loops.
//! 2. Webhooks applied per second: the fake's signed webhooks (one `start`
//!    and one `completed` with one 16 KB output per prediction) stored by
//!    the real `/webhooks/replicate`, then applied by 4 concurrent runs
//!    (copy into s3s-fs, result, credits, notification), beside a bare
//!    version of the same work per `completed` webhook: reqwest GET of the
//!    output, a presigned PUT to the same store and one UPDATE of the
//!    generation.
//!
//! The 600-per-minute budget is raised for the run (it would otherwise be
//! the figure). Run: `scripts/setup && cargo build --target wasm32-wasip2
//! --release -p ai-dispatch -p webhook-receiver && cargo bench -p
//! outpost-e2e --bench ai_dispatch`. `OUTPOST_BENCH_COUNT` sets the
//! predictions (default 400).

use std::time::{Duration, Instant};

use outpost_test_kit::fakes::replicate::{FakeReplicate, OutputFile, TokenAnswer};
use outpost_test_kit::{REGION, S3Server, TestApp, TestDb, product_manifest, require_wasm};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{Value, json};
use uuid::Uuid;

const WORKERS: usize = 4;
const TOKENS: [&str; 4] = ["r8_bench_a", "r8_bench_b", "r8_bench_c", "r8_bench_d"];

async fn job(client: &reqwest::Client, base: &str, settings: Value) -> anyhow::Result<Value> {
    let body: Value = client
        .post(format!("{base}/jobs/ai-dispatch"))
        .bearer_auth(TestApp::JOB_SECRET)
        .body(json!({ "replicate": settings }).to_string())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["report"]["replicate"].clone())
}

/// Runs `WORKERS` concurrent jobs until `done` says the work is finished.
async fn drive(
    client: &reqwest::Client,
    base: &str,
    settings: Value,
    sql: &tokio_postgres::Client,
    done: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let runs: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (client, base, settings) = (client.clone(), base.to_string(), settings.clone());
                tokio::spawn(async move { job(&client, &base, settings).await })
            })
            .collect();
        for run in runs {
            run.await??;
        }
        let left: i64 = sql.query_one(done, &[]).await?.get(0);
        if left == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("not finished after 10 minutes ({left} left)");
        }
    }
}

async fn run() -> anyhow::Result<()> {
    require_wasm("ai-dispatch")?;
    require_wasm("webhook-receiver")?;
    let count: usize = std::env::var("OUTPOST_BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let db = TestDb::new().await?;
    let sql = db.connect().await?;
    let s3 = S3Server::start().await?;
    let fake = FakeReplicate::start().await?;
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["ai-dispatch", "webhook-receiver"])
        .variable("replicate_api_url", fake.url())
        .variable("replicate_files_url", fake.url())
        .variable(
            "replicate_webhook_url",
            "https://outpost.example.test/webhooks/replicate",
        )
        .variable("replicate_webhook_secret", fake.webhook_secret())
        .variable("media_store_url", s3.url())
        .variable("media_store_access_key", s3.access_key())
        .variable("media_store_secret_key", s3.secret_key())
        .start()
        .await?;
    fake.route_webhooks_to(app.url());
    for token in TOKENS {
        fake.set_token(token, TokenAnswer::Valid);
        sql.execute(
            "insert into public.replicate_tokens (token) values ($1)",
            &[&token],
        )
        .await?;
    }
    sql.execute(
        "update public.replicate_creation_budget set per_minute = 1000000",
        &[],
    )
    .await?;
    let user = Uuid::new_v4();
    sql.execute(
        "insert into auth.users (id, email) values ($1, 'bench@example.test')",
        &[&user],
    )
    .await?;
    sql.execute(
        "update public.users set credits = 1000000 where id = $1",
        &[&user],
    )
    .await?;
    let client = reqwest::Client::builder().no_proxy().build()?;

    // 1a. Baseline: the same creations straight to the fake, 4 loops.
    let per_worker = count / WORKERS;
    let started = Instant::now();
    let loops: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (client, url) = (client.clone(), fake.url());
            tokio::spawn(async move {
                for i in 0..per_worker {
                    client
                        .post(format!("{url}/v1/predictions"))
                        .bearer_auth(TOKENS[w])
                        .json(
                            &json!({"version": "v1", "input": {"prompt": format!("p{i}")},
                                      "webhook": "https://outpost.example.test/webhooks/replicate",
                                      "webhook_events_filter": ["start", "completed"]}),
                        )
                        .send()
                        .await?
                        .error_for_status()?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for l in loops {
        l.await??;
    }
    let direct = started.elapsed();
    let direct_count = per_worker * WORKERS;

    // 1b. Through ai-dispatch.
    sql.execute(
        "insert into public.generations (user_id, model_id, prompt)
         select $1, 'owner/model:v1', 'p' || i from generate_series(1, $2::int) i",
        &[&user, &(count as i32)],
    )
    .await?;
    let dispatched = drive(
        &client,
        app.url(),
        json!({"only": ["dispatch"], "batch_size": 20, "run_seconds": 600}),
        &sql,
        "select count(*) from public.generations where status <> 'processing'",
    )
    .await?;
    let rate = count as f64 / dispatched.as_secs_f64();
    let base_rate = direct_count as f64 / direct.as_secs_f64();
    println!(
        "creations:  {count} predictions through ai-dispatch in {dispatched:.2?}: {rate:.0}/s"
    );
    println!(
        "baseline:   {direct_count} creations straight to the fake in {direct:.2?}: {base_rate:.0}/s; ai-dispatch = {:.3}x of it",
        rate / base_rate
    );

    // 2. Webhooks: start + completed for every prediction, stored by the receiver.
    let predictions: Vec<(Uuid, String)> = sql
        .query(
            "select id, replicate_prediction_id from public.generations where status = 'processing'",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (_, p) in &predictions {
        fake.start_prediction(p).await;
        fake.succeed(p, vec![OutputFile::png("out-0.png", 16 * 1024, 5)], 1.5)
            .await;
    }
    let stored: i64 = sql
        .query_one(
            "select count(*) from public.ingested_items where platform = 'replicate' and status = 'pending'",
            &[],
        )
        .await?
        .get(0);
    let applied = drive(
        &client,
        app.url(),
        json!({"only": ["webhooks"], "run_seconds": 600}),
        &sql,
        "select count(*) from public.ingested_items where platform = 'replicate' and status <> 'completed'",
    )
    .await?;
    let succeeded: i64 = sql
        .query_one(
            "select count(*) from public.generations where status = 'succeeded'",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        succeeded as usize == predictions.len(),
        "only {succeeded} succeeded"
    );
    let hook_rate = stored as f64 / applied.as_secs_f64();

    // Baseline: per completed webhook, GET the output, PUT it, one UPDATE.
    let bucket = Bucket::new(s3.url().parse()?, UrlStyle::Path, "generations", REGION)?;
    let credentials = Credentials::new(s3.access_key(), s3.secret_key());
    let started = Instant::now();
    let chunks: Vec<Vec<(Uuid, String)>> = predictions
        .chunks(predictions.len().div_ceil(WORKERS).max(1))
        .map(<[_]>::to_vec)
        .collect();
    let loops: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (client, url, db_url) = (client.clone(), fake.url(), db.url());
            let urls: Vec<String> = chunk
                .iter()
                .map(|(id, _)| {
                    bucket
                        .put_object(Some(&credentials), &format!("baseline/{id}/0.png"))
                        .sign(Duration::from_secs(600))
                        .to_string()
                })
                .collect();
            tokio::spawn(async move {
                let (pg, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                for ((id, p), put) in chunk.iter().zip(urls) {
                    let bytes = client
                        .get(format!("{url}/files/{p}/out-0.png"))
                        .send()
                        .await?
                        .error_for_status()?
                        .bytes()
                        .await?;
                    client.put(put).body(bytes).send().await?.error_for_status()?;
                    pg.execute(
                        "update public.generations set output_urls = array[$2::text], cost_usd = 0.001 where id = $1",
                        &[id, &format!("baseline/{id}/0.png")],
                    )
                    .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for l in loops {
        l.await??;
    }
    let bare = started.elapsed();
    let bare_rate = predictions.len() as f64 / bare.as_secs_f64();
    println!(
        "webhooks:   {stored} stored webhooks ({} completed with one 16 KB output each) applied in {applied:.2?}: {hook_rate:.0}/s ({:.0} completed/s)",
        predictions.len(),
        predictions.len() as f64 / applied.as_secs_f64()
    );
    println!(
        "baseline:   {} bare copies (GET + presigned PUT + one UPDATE) in {bare:.2?}: {bare_rate:.0}/s; ai-dispatch completed/s = {:.3}x of it",
        predictions.len(),
        (predictions.len() as f64 / applied.as_secs_f64()) / bare_rate
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

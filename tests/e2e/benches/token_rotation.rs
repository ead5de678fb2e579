//! Token-rotation benchmark: accounts refreshed per second by
//! `token-rotation` over 10,000 due Strava accounts against the instant
//! Strava fake (no rate limits, nothing sleeps), printed beside the same
//! number of bare `POST /oauth/token` refresh requests sent to that fake in
//! the same run by reqwest, with the same concurrency (eight), and the
//! ratio. The baseline refreshes a second set of 10,000 athletes, so both
//! sides spend each refresh token once.
//!
//! What the component adds per account over a bare request: the claim (in
//! batches of ten), opening and sealing the tokens (AES-256-GCM) and the
//! one `finish_token_rotation` call that stores them and releases the lease.
//!
//! Run: `cargo build --target wasm32-wasip2 --release -p token-rotation &&
//! cargo bench -p outpost-e2e --bench token_rotation`.
//! `OUTPOST_TEST_DATABASE_URL` names an existing PostgreSQL (else a private one).

use std::time::Instant;

use chrono::{Duration, Utc};
use outpost_test_kit::fakes::strava::FakeStrava;
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::Value;
use uuid::Uuid;

/// Due accounts (`TOKEN_ROTATION_ACCOUNTS` overrides, for quick runs).
fn accounts() -> u64 {
    std::env::var("TOKEN_ROTATION_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Concurrent runs (`TOKEN_ROTATION_RUNS` overrides).
fn concurrency() -> u64 {
    std::env::var("TOKEN_ROTATION_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn run() -> anyhow::Result<()> {
    require_wasm("token-rotation")?;
    let (accounts, concurrency) = (accounts(), concurrency());
    let strava = FakeStrava::start().await?;
    strava.instant();
    let db = TestDb::new().await?;
    let sql = db.connect().await?;
    let user = Uuid::new_v4();
    sql.execute(
        "insert into auth.users (id, email) values ($1, $2)",
        &[&user, &format!("{user}@example.test")],
    )
    .await?;

    // 10,000 due accounts (tokens end in 20 minutes) and 10,000 athletes
    // for the baseline.
    let expires = Utc::now() + Duration::minutes(20);
    let (mut ids, mut access, mut refresh) = (Vec::new(), Vec::new(), Vec::new());
    for id in 1..=accounts {
        let tokens = strava.add_athlete_expiring(id, expires.timestamp());
        ids.push(id.to_string());
        access.push(shared::token_cipher::seal(&tokens.access_token, KEY, "k1")?);
        refresh.push(shared::token_cipher::seal(
            &tokens.refresh_token,
            KEY,
            "k1",
        )?);
    }
    sql.execute(
        "insert into public.connected_accounts
           (user_id, platform, platform_user_id, username, access_token, refresh_token,
            token_key_id, token_expires_at, verified_at)
         select $1, 'strava', u.id, 'athlete' || u.id, u.access, u.refresh, 'k1',
                $5::text::timestamptz, now()
           from unnest($2::text[], $3::text[], $4::text[]) as u(id, access, refresh)",
        &[&user, &ids, &access, &refresh, &expires.to_rfc3339()],
    )
    .await?;
    let baseline_tokens: Vec<String> = (1..=accounts)
        .map(|i| {
            strava
                .add_athlete_expiring(1_000_000 + i, expires.timestamp())
                .refresh_token
        })
        .collect();
    let client = reqwest::Client::builder().no_proxy().build()?;

    // Baseline: bare refresh requests, eight at a time.
    let url = format!("{}/oauth/token", strava.url());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for chunk in baseline_tokens.chunks(accounts.div_ceil(concurrency) as usize) {
        let (client, url, chunk) = (client.clone(), url.clone(), chunk.to_vec());
        workers.spawn(async move {
            let mut ok = 0u64;
            for token in chunk {
                let answer = client
                    .post(&url)
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", token.as_str()),
                    ])
                    .send()
                    .await?;
                if answer.status().is_success() {
                    answer.json::<Value>().await?;
                    ok += 1;
                }
            }
            anyhow::Ok(ok)
        });
    }
    let mut bare_ok = 0;
    while let Some(done) = workers.join_next().await {
        bare_ok += done??;
    }
    let bare = started.elapsed();
    anyhow::ensure!(bare_ok == accounts, "baseline: {bare_ok} refreshes");

    // token-rotation: eight runs at once, again until nothing is due.
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["token-rotation"])
        .variable("token_encryption_key", KEY)
        .variable("strava_api_url", strava.url())
        .start()
        .await?;
    let job = format!("{}/jobs/token-rotation", app.url());
    let started = Instant::now();
    let mut refreshed = 0u64;
    loop {
        let mut runs = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, job) = (client.clone(), job.clone());
            runs.spawn(async move {
                let answer = client
                    .post(job)
                    .bearer_auth(TestApp::JOB_SECRET)
                    .send()
                    .await?;
                let status = answer.status();
                let body = answer.json::<Value>().await?;
                anyhow::ensure!(
                    status.is_success(),
                    "token-rotation answered {status}: {body}"
                );
                anyhow::Ok(body)
            });
        }
        let mut handled = 0;
        while let Some(report) = runs.join_next().await {
            let report = report??;
            let platform = &report["report"]["platforms"]["strava"];
            refreshed += platform["refreshed"].as_u64().unwrap_or(0);
            handled += report["report"]["handled"].as_u64().unwrap_or(0);
            let failed = platform["failed_transiently"].as_u64().unwrap_or(0)
                + platform["expired"].as_u64().unwrap_or(0);
            anyhow::ensure!(failed == 0, "token-rotation failed: {report}");
        }
        if handled == 0 {
            break;
        }
    }
    let rotated = started.elapsed();
    anyhow::ensure!(
        refreshed == accounts,
        "token-rotation refreshed {refreshed} of {accounts}"
    );

    let rate = accounts as f64 / rotated.as_secs_f64();
    let bare_rate = accounts as f64 / bare.as_secs_f64();
    println!(
        "token-rotation: {accounts} due accounts refreshed in {rotated:.2?} by {concurrency} concurrent runs: {rate:.0} accounts/s"
    );
    println!(
        "baseline:       {accounts} bare refresh requests to the same fake, {concurrency} at a time, in {bare:.2?}: {bare_rate:.0} requests/s; token-rotation = {:.2}x of it",
        rate / bare_rate
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

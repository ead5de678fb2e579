//! Media benchmark: MB/s of `media-fetch` moving 200 files of mixed sizes
//! (images of 40 KB to 1 MB, clips of 2 to 12 MB) from a loopback media host
//! into the local S3 server (`s3s-fs`, SigV4 on), printed beside a plain
//! copy of the same files in the same run (reqwest downloads each file and
//! PUTs it to the same store with a presigned URL, sequentially, as one
//! media-fetch run does), with the ratio. Then the peak memory the process
//! (host, component and the bench itself; the store is its own process)
//! gains while one 50 MB file goes through, against the file's size.
//!
//! Run: `scripts/setup && cargo build --target wasm32-wasip2 --release -p
//! media-fetch && cargo bench -p outpost-e2e --bench media`.
//! `OUTPOST_TEST_DATABASE_URL` names an existing PostgreSQL (else a private one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use outpost_e2e::bench::verdict;
use outpost_test_kit::{
    FakeServer, REGION, S3Server, TestApp, TestDb, product_manifest, require_wasm,
};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{Value, json};
use uuid::Uuid;

const FILES: usize = 200;

/// Sizes of the 200 files: 170 images, 30 clips, deterministic.
fn sizes() -> Vec<(String, &'static str, usize)> {
    (0..FILES)
        .map(|i| {
            if i % 20 < 17 {
                (
                    format!("/img/{i}.jpg"),
                    "image/jpeg",
                    40_000 + (i * 7_919) % 960_000,
                )
            } else {
                (
                    format!("/clip/{i}.mp4"),
                    "video/mp4",
                    2_000_000 + (i * 104_729) % 10_000_000,
                )
            }
        })
        .collect()
}

fn body(content_type: &str, len: usize, seed: usize) -> Bytes {
    let mut bytes: Vec<u8> = (0..len).map(|i| ((i + seed) % 251) as u8).collect();
    if content_type == "image/jpeg" {
        bytes[..4].copy_from_slice(b"\xFF\xD8\xFF\xE0");
    } else {
        bytes[..12].copy_from_slice(b"\x00\x00\x00\x18ftypmp42");
    }
    Bytes::from(bytes)
}

/// Peak and current resident memory of this process, bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn run() -> anyhow::Result<()> {
    require_wasm("media-fetch")?;
    let db = TestDb::new().await?;
    let sql = db.connect().await?;
    let s3 = S3Server::start().await?;
    let files = sizes();
    let mut served: HashMap<String, (&'static str, Bytes)> = HashMap::new();
    for (i, (path, content_type, len)) in files.iter().enumerate() {
        served.insert(path.clone(), (content_type, body(content_type, *len, i)));
    }
    served.insert(
        "/big/50mb.mp4".into(),
        ("video/mp4", body("video/mp4", 50 * 1024 * 1024, 7)),
    );
    let total: usize = files.iter().map(|(_, _, len)| len).sum();
    let served = Arc::new(served);
    let map = served.clone();
    let host = FakeServer::start(move |request| {
        let Some((content_type, bytes)) = map.get(request.uri.path()) else {
            let mut missing = http::Response::new(Bytes::new());
            *missing.status_mut() = http::StatusCode::NOT_FOUND;
            return missing;
        };
        let mut response = http::Response::new(bytes.clone());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        response
    })
    .await?;

    // Baseline: a plain copy of every file, one after the other.
    let client = reqwest::Client::builder().no_proxy().build()?;
    let bucket = Bucket::new(s3.url().parse()?, UrlStyle::Path, "media", REGION)?;
    let credentials = Credentials::new(s3.access_key(), s3.secret_key());
    let started = Instant::now();
    for (path, content_type, _) in &files {
        let bytes = client
            .get(format!("{}{path}", host.url()))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let url = bucket
            .put_object(Some(&credentials), &format!("baseline{path}"))
            .sign(Duration::from_secs(600));
        client
            .put(url)
            .header("content-type", *content_type)
            .body(bytes)
            .send()
            .await?
            .error_for_status()?;
    }
    let baseline = started.elapsed();

    // media-fetch: the same files queued for one user, one run at a time.
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["media-fetch"])
        .variable("media_store_url", s3.url())
        .variable("media_store_access_key", s3.access_key())
        .variable("media_store_secret_key", s3.secret_key())
        .start()
        .await?;
    let user = Uuid::new_v4();
    sql.execute(
        "insert into auth.users (id, email) values ($1, $2)",
        &[&user, &format!("{user}@example.test")],
    )
    .await?;
    let account: Uuid = sql
        .query_one(
            "insert into public.connected_accounts (user_id, platform, platform_user_id, username, verified_at)
             values ($1, 'instagram', 'bench', 'bench', now()) returning id",
            &[&user],
        )
        .await?
        .get(0);
    let post: Uuid = sql
        .query_one(
            "insert into public.ingested_posts (platform, account_id, user_id, platform_post_id, post_data, status)
             values ('instagram', $1, $2, 'bench-post', '{}', 'completed') returning id",
            &[&account, &user],
        )
        .await?
        .get(0);
    for (path, _, _) in &files {
        sql.execute(
            "insert into public.media_downloads (ingested_post_id, user_id, original_url) values ($1, $2, $3)",
            &[&post, &user, &format!("{}{path}", host.url())],
        )
        .await?;
    }
    let job = |settings: Value| {
        let client = client.clone();
        let url = format!("{}/jobs/media-fetch", app.url());
        async move {
            client
                .post(url)
                .bearer_auth(TestApp::JOB_SECRET)
                .body(settings.to_string())
                .send()
                .await?
                .error_for_status()?
                .json::<Value>()
                .await
        }
    };
    let started = Instant::now();
    let mut downloaded = 0u64;
    while downloaded < FILES as u64 {
        let report = job(json!({"batch_size": 20, "run_seconds": 600})).await?;
        let got = report["report"]["outcomes"]["downloaded"]
            .as_u64()
            .unwrap_or(0);
        if got == 0 {
            anyhow::bail!("media-fetch stopped downloading: {report}");
        }
        downloaded += got;
    }
    let fetched = started.elapsed();

    let mb = total as f64 / 1e6;
    let rate = mb / fetched.as_secs_f64();
    let base_rate = mb / baseline.as_secs_f64();
    println!("media-fetch: {FILES} files, {mb:.1} MB in {fetched:.2?}: {rate:.1} MB/s");
    println!(
        "baseline:    the same files downloaded and PUT by reqwest in {baseline:.2?}: {base_rate:.1} MB/s; media-fetch = {:.2}x of it",
        rate / base_rate
    );

    // Peak memory while one 50 MB file goes through.
    sql.execute(
        "insert into public.media_downloads (ingested_post_id, user_id, original_url) values ($1, $2, $3)",
        &[&post, &user, &format!("{}/big/50mb.mp4", host.url())],
    )
    .await?;
    // Clearing the peak (Linux: 5 > clear_refs) so it measures this transfer only.
    std::fs::write("/proc/self/clear_refs", "5").ok();
    let (_, before) = memory();
    let report = job(json!({"transfer_seconds": 300})).await?;
    let (peak, _) = memory();
    let grown = peak.saturating_sub(before) as f64 / 1e6;
    println!(
        "memory:      one 50 MB file ({}): resident peak +{grown:.1} MB over {:.1} MB before; bounded (< 25 MB, half the file): {}",
        report["report"]["outcomes"],
        before as f64 / 1e6,
        verdict(grown < 25.0)
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

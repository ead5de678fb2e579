//! Publishing benchmark.
//!
//! 1. Claims per second on one `scheduled_posts` table, one item per call
//!    as a worker takes them, with 1, 4 and 16 concurrent workers (one
//!    connection each): the contract's `claim_next_scheduled_posts`, the
//!    publishing claim `claim_due_scheduled_posts` (one post per account in
//!    flight, account holds), and, measured in the same run on the same
//!    table, a bare `UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
//!    LOCKED LIMIT 1) RETURNING` loop; the functions' rates as a share of
//!    the bare rate (target: >= 80 %). Also the bare loop plus the
//!    `claimed` event the contract requires, to show what that costs.
//! 2. Published posts per second end to end: `schedule-claim`
//!    in the test host, 4 runs at once, against the fake PDS answering at
//!    once; beside it, the same posts written straight to the same fake by
//!    a native client (createRecord with 4 concurrent writers).
//!
//! Run: `cargo bench -p outpost-e2e --bench publish` (after
//! `cargo build --target wasm32-wasip2 --release -p schedule-claim`).
//! `OUTPOST_BENCH_SECS` sets the seconds per claim target (default 5),
//! `OUTPOST_TEST_DATABASE_URL` an existing PostgreSQL (else a private one).

use std::time::{Duration, Instant};

use outpost_test_kit::fakes::bluesky::{FakeBluesky, POST};
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

/// Due posts in the claim table (enough for 16 workers for the whole time).
const CLAIM_POSTS: i64 = 60_000;
/// Rounds per claim target (the best one is printed).
const ROUNDS: usize = 2;
/// End to end: accounts x posts each.
const E2E_ACCOUNTS: usize = 50;
const E2E_PER_ACCOUNT: usize = 20;
const E2E_RUNS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Claimer {
    Bare,
    BareWithEvent,
    Contract,
    Publishing,
}

impl Claimer {
    fn sql(self) -> &'static str {
        match self {
            Claimer::Bare => {
                "update public.scheduled_posts t
                    set status = 'posting', attempt_count = t.attempt_count + 1, locked_at = now(),
                        locked_by = $1, lease_expires_at = now() + interval '300 seconds',
                        lease_token = nextval('public.queue_lease_token_seq')
                  where t.id in (select q.id from public.scheduled_posts q
                                  where q.status = 'queued' and q.run_at <= now()
                                  order by q.run_at, q.id
                                  limit 1
                                  for update skip locked)
                 returning t.id, t.lease_token"
            }
            Claimer::BareWithEvent => {
                "with locked as (select q.id from public.scheduled_posts q
                                  where q.status = 'queued' and q.run_at <= now()
                                  order by q.run_at, q.id limit 1 for update skip locked),
                      claimed as (update public.scheduled_posts t
                                     set status = 'posting', attempt_count = t.attempt_count + 1,
                                         locked_at = now(), locked_by = $1,
                                         lease_expires_at = now() + interval '300 seconds',
                                         lease_token = nextval('public.queue_lease_token_seq')
                                    from locked where t.id = locked.id
                                  returning t.id, t.attempt_count, t.lease_token),
                      events as (insert into public.post_events (scheduled_post_id, type, detail)
                                 select c.id, 'claimed', jsonb_build_object('attempt', c.attempt_count,
                                        'lease_token', c.lease_token, 'worker_id', $1::text)
                                   from claimed c)
                 select id, lease_token from claimed"
            }
            Claimer::Contract => "select public.claim_next_scheduled_posts($1, 300, 1)",
            Claimer::Publishing => "select public.claim_due_scheduled_posts($1, 300, 1)",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Claimer::Bare => "bare UPDATE ... SKIP LOCKED",
            Claimer::BareWithEvent => "bare + claimed event",
            Claimer::Contract => "claim_next_scheduled_posts",
            Claimer::Publishing => "claim_due_scheduled_posts",
        }
    }
}

/// Claims with `workers` connections for `duration`; claims per second.
async fn claim_rate(
    clients: &[std::sync::Arc<Client>],
    claimer: Claimer,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (n, client) in clients.iter().take(workers).enumerate() {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("bench-{n}");
            let statement = client.prepare(claimer.sql()).await?;
            let mut claimed = 0u64;
            while Instant::now() < deadline {
                let rows = client.query(&statement, &[&worker]).await?;
                let got = match claimer {
                    Claimer::Bare | Claimer::BareWithEvent => rows.len(),
                    _ => rows
                        .first()
                        .map(|r| r.get::<_, Value>(0).as_array().map_or(0, Vec::len))
                        .unwrap_or(0),
                };
                if got == 0 {
                    break; // the table ran dry
                }
                claimed += got as u64;
            }
            Ok::<_, anyhow::Error>(claimed)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let elapsed = start.elapsed().min(duration.max(Duration::from_millis(1)));
    Ok((total as f64 / elapsed.as_secs_f64(), total))
}

/// Every post back to due and unclaimed, events cleared, table vacuumed,
/// so each target starts from the same table.
async fn reset(client: &Client) -> anyhow::Result<()> {
    client
        .batch_execute(
            "update public.scheduled_posts
                set status = 'queued', attempt_count = 0, locked_at = null, locked_by = null,
                    lease_expires_at = null, lease_token = null
              where status <> 'queued' or attempt_count <> 0;
             truncate public.post_events;",
        )
        .await?;
    // One statement each: several in one batch would be one transaction.
    client
        .batch_execute("vacuum analyze public.scheduled_posts")
        .await?;
    client
        .batch_execute("vacuum analyze public.post_events")
        .await?;
    Ok(())
}

async fn claims(duration: Duration) -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let setup = db.connect().await?;
    let user = Uuid::new_v4();
    setup
        .execute(
            "insert into auth.users (id, email) values ($1, 'bench@example.test')",
            &[&user],
        )
        .await?;
    setup
        .execute(
            "insert into public.scheduled_posts (user_id, content, run_at)
             select $1, 'post ' || n, now() - interval '1 hour' + n * interval '1 ms'
               from generate_series(1, $2::bigint) as n",
            &[&user, &CLAIM_POSTS],
        )
        .await?;
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(std::sync::Arc::new(db.connect().await?));
    }
    println!(
        "claims per second: {CLAIM_POSTS} due posts, one item per call, best of {ROUNDS} rounds of {} s per target, {} cores",
        duration.as_secs(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let all = [
        Claimer::Bare,
        Claimer::BareWithEvent,
        Claimer::Contract,
        Claimer::Publishing,
    ];
    println!(
        "{:>7}  {:>27}  {:>29}  {:>33}  {:>32}",
        "workers",
        all[0].name(),
        format!("{} (ratio)", all[1].name()),
        format!("{} (ratio)", all[2].name()),
        format!("{} (ratio)", all[3].name()),
    );
    for workers in [1usize, 4, 16] {
        // Interleaved rounds, best of each: the machine is shared, and the
        // best round is the one least disturbed by others.
        let mut rates = [0f64; 4];
        for _round in 0..ROUNDS {
            for (i, claimer) in all.into_iter().enumerate() {
                reset(&setup).await?;
                // Warm the plan caches and the connection.
                claim_rate(&clients, claimer, workers, Duration::from_millis(200)).await?;
                reset(&setup).await?;
                let (rate, total) = claim_rate(&clients, claimer, workers, duration).await?;
                if total as i64 >= CLAIM_POSTS {
                    println!(
                        "  ({} ran out of posts; its rate is a lower bound)",
                        claimer.name()
                    );
                }
                rates[i] = rates[i].max(rate);
            }
        }
        let ratio = |i: usize| format!("{:.0} /s ({:.0}%)", rates[i], 100.0 * rates[i] / rates[0]);
        println!(
            "{workers:>7}  {:>25.0} /s  {:>29}  {:>33}  {:>32}",
            rates[0],
            ratio(1),
            ratio(2),
            ratio(3),
        );
    }
    Ok(())
}

async fn run_job(client: &reqwest::Client, app: &TestApp) -> anyhow::Result<Value> {
    Ok(client
        .post(format!("{}/jobs/schedule-claim", app.url()))
        .bearer_auth(TestApp::JOB_SECRET)
        .json(&json!({ "metrics": false, "run_seconds": 120 }))
        .timeout(Duration::from_secs(300))
        .send()
        .await?
        .json()
        .await?)
}

async fn end_to_end() -> anyhow::Result<()> {
    require_wasm("schedule-claim")?;
    let db = TestDb::new().await?;
    let sql = db.connect().await?;
    let pds = FakeBluesky::start().await?;
    let user = Uuid::new_v4();
    sql.execute(
        "insert into auth.users (id, email) values ($1, 'e2e@example.test')",
        &[&user],
    )
    .await?;
    let mut accounts = Vec::new();
    for a in 0..E2E_ACCOUNTS {
        let handle = format!("bench{a:03}.test");
        let fake = pds.add_account(&handle, "bench-app-pass");
        let secret: Uuid = sql
            .query_one(
                "select vault.create_secret('bench-app-pass', $1, '')",
                &[&handle],
            )
            .await?
            .get(0);
        let id: Uuid = sql
            .query_one(
                "insert into public.connected_accounts
                   (user_id, platform, platform_user_id, username, handle, vault_secret_id, verified_at)
                 values ($1, 'bluesky', $2, $3, $3, $4, now()) returning id",
                &[&user, &fake.did, &handle, &secret],
            )
            .await?
            .get(0);
        accounts.push((id, fake));
    }
    for (id, fake) in &accounts {
        sql.execute(
            "insert into public.scheduled_posts (user_id, account_id, account_did, content, run_at)
             select $1, $2, $3, 'bench post ' || n, now() - interval '1 hour' + n * interval '1 second'
               from generate_series(1, $4::int) n",
            &[&user, id, &fake.did, &(E2E_PER_ACCOUNT as i32)],
        )
        .await?;
    }
    let total = E2E_ACCOUNTS * E2E_PER_ACCOUNT;
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["schedule-claim"])
        .variable("bluesky_pds_url", pds.url())
        .variable("bluesky_appview_url", pds.url())
        .start()
        .await?;
    let client = reqwest::Client::builder().no_proxy().build()?;

    let start = Instant::now();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut runs = Vec::new();
        for _ in 0..E2E_RUNS {
            let client = client.clone();
            let url = app.url().to_string();
            runs.push(tokio::spawn(async move {
                client
                    .post(format!("{url}/jobs/schedule-claim"))
                    .bearer_auth(TestApp::JOB_SECRET)
                    .json(&json!({ "metrics": false, "run_seconds": 120 }))
                    .timeout(Duration::from_secs(300))
                    .send()
                    .await
                    .map(|_| ())
            }));
        }
        for r in runs {
            r.await??;
        }
        let left: i64 = sql
            .query_one(
                "select count(*) from public.scheduled_posts where status <> 'posted'",
                &[],
            )
            .await?
            .get(0);
        if left == 0 || rounds >= 5 {
            break;
        }
    }
    let pipeline = start.elapsed();
    let written: usize = accounts
        .iter()
        .map(|(_, fake)| pds.records(&fake.did, POST).len())
        .sum();
    // A last run finds nothing: the check is that nothing is left.
    run_job(&client, &app).await?;
    app.stop().await;

    // Baseline: the same number of records written straight to the same
    // fake, 4 writers, one session per account.
    let direct = FakeBluesky::start().await?;
    let mut sessions = Vec::new();
    for a in 0..E2E_ACCOUNTS {
        let fake = direct.add_account(&format!("direct{a:03}.test"), "pw-direct");
        let session: Value = client
            .post(format!(
                "{}/xrpc/com.atproto.server.createSession",
                direct.url()
            ))
            .json(&json!({ "identifier": fake.handle, "password": "pw-direct" }))
            .send()
            .await?
            .json()
            .await?;
        sessions.push((
            fake.did,
            session["accessJwt"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
    }
    let start = Instant::now();
    let mut writers = Vec::new();
    for w in 0..E2E_RUNS {
        let client = client.clone();
        let base = direct.url();
        let mine: Vec<(String, String)> = sessions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % E2E_RUNS == w)
            .map(|(_, s)| s.clone())
            .collect();
        writers.push(tokio::spawn(async move {
            for (did, jwt) in mine {
                for n in 0..E2E_PER_ACCOUNT {
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    client
                        .post(format!("{base}/xrpc/com.atproto.repo.createRecord"))
                        .bearer_auth(&jwt)
                        .json(&json!({
                            "repo": did, "collection": POST,
                            "record": { "$type": POST, "text": format!("direct post {n}"), "createdAt": now },
                        }))
                        .send()
                        .await?
                        .error_for_status()?;
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let baseline = start.elapsed();

    let rate = written as f64 / pipeline.as_secs_f64();
    let base_rate = total as f64 / baseline.as_secs_f64();
    println!(
        "end to end: {written} of {total} posts on {E2E_ACCOUNTS} accounts published by {E2E_RUNS} concurrent \
         schedule-claim runs in {:.2?}: {rate:.0} posts/s",
        pipeline
    );
    println!(
        "baseline:   {total} createRecord calls straight to the same fake PDS, {E2E_RUNS} writers, in {:.2?}: \
         {base_rate:.0} posts/s; pipeline = {:.1}% of it",
        baseline,
        100.0 * rate / base_rate
    );
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("OUTPOST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    claims(Duration::from_secs(secs)).await?;
    end_to_end().await
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

//! `schedule-claim` (with the `publishing` library) end to end: the built components in the
//! test host over real Postgres, against loopback fakes of a Bluesky PDS,
//! X and LinkedIn. Exactly once under concurrency and faults (the PDS
//! commits then answers 500, hangs past the lease, a worker's lease runs
//! out mid-publish), rate limits and write budgets that delay and do not
//! fail, facets with byte offsets, the grapheme limit, images, X threads,
//! LinkedIn, failure answers, metrics; the `post_events` tell each story.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use outpost_test_kit::fakes::bluesky::{self, FakeAccount, FakeBluesky, Fault};
use outpost_test_kit::fakes::linkedin::{self, FakeLinkedIn};
use outpost_test_kit::fakes::x::{self, FakeX};
use outpost_test_kit::{REGION, S3Server, TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

const APP_PASSWORD: &str = "abcd-efgh-ijkl-mnop";
const CREATE_RECORD: &str = "com.atproto.repo.createRecord";
const GET_RECORD: &str = "com.atproto.repo.getRecord";

fn token_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// A PNG-ish image the fake store serves.
fn kite_bytes() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(std::iter::repeat_n(42u8, 2048));
    bytes
}

struct World {
    _db: TestDb,
    sql: Client,
    bsky: FakeBluesky,
    x: FakeX,
    li: FakeLinkedIn,
    _store: S3Server,
    app: TestApp,
}

async fn world() -> World {
    require_wasm("schedule-claim").unwrap();
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let bsky = FakeBluesky::start().await.unwrap();
    let x = FakeX::start().await.unwrap();
    let li = FakeLinkedIn::start().await.unwrap();
    // Post images live in the real S3 server and are read with signed
    // requests, as in production.
    let store = S3Server::start().await.unwrap();
    let bucket = rusty_s3::Bucket::new(
        store.url().parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        "media",
        REGION,
    )
    .unwrap();
    let credentials = rusty_s3::Credentials::new(store.access_key(), store.secret_key());
    let put = rusty_s3::S3Action::sign(
        &bucket.put_object(Some(&credentials), "u1/kite.png"),
        std::time::Duration::from_secs(60),
    );
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .put(put)
        .header("content-type", "image/png")
        .body(kite_bytes())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["schedule-claim"])
        .variable("bluesky_pds_url", bsky.url())
        .variable("bluesky_appview_url", bsky.url())
        .variable("x_api_url", x.url())
        .variable("linkedin_api_url", li.url())
        .variable("media_store_url", store.url())
        .variable("media_store_access_key", store.access_key())
        .variable("media_store_secret_key", store.secret_key())
        .variable("token_encryption_key", token_key())
        .start()
        .await
        .unwrap();
    World {
        _db: db,
        sql,
        bsky,
        x,
        li,
        _store: store,
        app,
    }
}

impl World {
    async fn user(&self) -> Uuid {
        outpost_test_kit::create_user(&self.sql).await.unwrap()
    }

    /// A Bluesky account on the fake PDS and in `connected_accounts`, its
    /// app password in Vault.
    async fn bluesky_account(&self, user: Uuid, handle: &str) -> (Uuid, FakeAccount) {
        let fake = self.bsky.add_account(handle, APP_PASSWORD);
        let secret: Uuid = self
            .sql
            .query_one(
                "select vault.create_secret($1, $2, '')",
                &[&APP_PASSWORD, &format!("bsky-{handle}")],
            )
            .await
            .unwrap()
            .get(0);
        let id: Uuid = self
            .sql
            .query_one(
                "insert into public.connected_accounts
                   (user_id, platform, platform_user_id, username, handle, vault_secret_id, verified_at)
                 values ($1, 'bluesky', $2, $3, $3, $4, now()) returning id",
                &[&user, &fake.did, &handle, &secret],
            )
            .await
            .unwrap()
            .get(0);
        (id, fake)
    }

    /// An X or LinkedIn account with a sealed OAuth token.
    async fn oauth_account(
        &self,
        user: Uuid,
        platform: &str,
        platform_user_id: &str,
        username: &str,
        token: &str,
    ) -> Uuid {
        let sealed = shared::token_cipher::seal(token, &token_key(), "k1").unwrap();
        self.sql
            .query_one(
                "insert into public.connected_accounts
                   (user_id, platform, platform_user_id, username, access_token, token_key_id, token_expires_at,
                    verified_at)
                 values ($1, $2::text::public.platform_enum, $3, $4, $5, 'k1', now() + interval '2 hours', now())
                 returning id",
                &[&user, &platform, &platform_user_id, &username, &sealed],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// A seed-000 post: a draft scheduled on a Bluesky account, due
    /// `seconds_ago` seconds ago.
    async fn schedule_draft(
        &self,
        user: Uuid,
        account: Uuid,
        did: &str,
        text: &str,
        seconds_ago: f64,
    ) -> Uuid {
        let draft: Uuid = self
            .sql
            .query_one(
                "insert into public.drafts (user_id, text) values ($1, $2) returning id",
                &[&user, &text],
            )
            .await
            .unwrap()
            .get(0);
        self.sql
            .query_one(
                "insert into public.scheduled_posts (user_id, draft_id, account_id, account_did, run_at)
                 values ($1, $2, $3, $4, now() - make_interval(secs => $5)) returning id",
                &[&user, &draft, &account, &did, &seconds_ago],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// A seed-002 post through its own view: adaptation snapshot + connection.
    async fn schedule_nexus(
        &self,
        user: Uuid,
        connection: Uuid,
        platform: &str,
        content: &str,
    ) -> Uuid {
        self.sql
            .query_one(
                "insert into public.nexus_scheduled_posts
                   (user_id, content, platform_connection_id, platform, scheduled_for)
                 values ($1, $2, $3, $4, now() - interval '1 second') returning id",
                &[&user, &content, &connection, &platform],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// `POST /jobs/schedule-claim` with `settings`; the run's report.
    async fn run(&self, settings: Value) -> Value {
        self.app
            .run_job("schedule-claim", Some(&settings))
            .await
            .unwrap()["report"]
            .clone()
    }

    async fn post_row(&self, id: Uuid) -> Value {
        self.sql
            .query_one(
                "select to_jsonb(sp) from public.scheduled_posts sp where id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// The post's events in order (events of one transaction share a time:
    /// a release comes before the claim that follows it).
    async fn events(&self, id: Uuid) -> Vec<(String, Value)> {
        self.sql
            .query(
                "select type, detail from public.post_events where scheduled_post_id = $1
                  order by created_at,
                           case type when 'lease_expired' then 0 when 'claimed' then 1 else 2 end",
                &[&id],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }

    async fn event_types(&self, id: Uuid) -> Vec<String> {
        self.events(id).await.into_iter().map(|(t, _)| t).collect()
    }

    async fn make_due(&self, id: Uuid) {
        self.sql
            .execute(
                "update public.scheduled_posts set run_at = now() where id = $1",
                &[&id],
            )
            .await
            .unwrap();
    }
}

fn token_of(detail: &Value) -> i64 {
    detail["lease_token"].as_i64().unwrap()
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_posts_on_twenty_accounts_go_out_exactly_once_in_run_at_order() {
    const ACCOUNTS: usize = 20;
    const PER_ACCOUNT: usize = 25;
    let w = world().await;
    let user = w.user().await;
    let mut accounts = Vec::new();
    for a in 0..ACCOUNTS {
        accounts.push(w.bluesky_account(user, &format!("writer{a:02}.test")).await);
    }
    // Interleaved run_at: account a's n-th post is due at -1h + (n*20 + a) s.
    let mut ids = Vec::new();
    for n in 0..PER_ACCOUNT {
        for (a, (account, fake)) in accounts.iter().enumerate() {
            let seconds_ago = 3600.0 - (n * ACCOUNTS + a) as f64;
            let text = format!("writer {a:02} post {n:02}");
            ids.push(
                w.schedule_draft(user, *account, &fake.did, &text, seconds_ago)
                    .await,
            );
        }
    }
    // Never claimed: a cancelled post and one due tomorrow.
    let (first_account, first_fake) = &accounts[0];
    let cancelled = w
        .schedule_draft(user, *first_account, &first_fake.did, "cancelled", 7200.0)
        .await;
    w.sql
        .execute(
            "update public.scheduled_posts set status = 'cancelled' where id = $1",
            &[&cancelled],
        )
        .await
        .unwrap();
    let future = w
        .schedule_draft(user, *first_account, &first_fake.did, "tomorrow", -86_400.0)
        .await;

    // Four claim runs at once: two cron ticks, two HTTP runs.
    let started = Instant::now();
    let (c1, c2, h1, h2) = tokio::join!(
        w.app.fire_cron("schedule-claim"),
        w.app.fire_cron("schedule-claim"),
        w.run(json!({})),
        w.run(json!({})),
    );
    c1.unwrap();
    c2.unwrap();
    let mut published = h1["outcomes"]["published"].as_u64().unwrap_or(0)
        + h2["outcomes"]["published"].as_u64().unwrap_or(0);
    // A run that found every due account busy stops early; finish the rest.
    for _ in 0..5 {
        let left: i64 = w
            .sql
            .query_one(
                "select count(*) from public.scheduled_posts where status in ('queued', 'posting') and run_at <= now()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            break;
        }
        published += w.run(json!({})).await["outcomes"]["published"]
            .as_u64()
            .unwrap_or(0);
    }
    let elapsed = started.elapsed();
    println!("500 posts published in {elapsed:.2?} (HTTP runs reported {published})");

    for (a, (_, fake)) in accounts.iter().enumerate() {
        let records = w.bsky.records(&fake.did, bluesky::POST);
        let texts: Vec<String> = records
            .iter()
            .map(|r| r.value["text"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..PER_ACCOUNT)
            .map(|n| format!("writer {a:02} post {n:02}"))
            .collect();
        assert_eq!(
            texts, expected,
            "account {a}: each post once, in run_at order"
        );
        for r in &records {
            assert!(bluesky::is_tid(&r.rkey), "{}", r.rkey);
        }
    }
    let row = w
        .sql
        .query_one(
            "select count(*) filter (where status = 'posted' and published_post_id is not null),
                    (select count(*) from public.published_posts where status = 'published'),
                    (select count(*) from public.posts where platform = 'bluesky'),
                    (select count(*) from public.post_events where type = 'success'),
                    (select count(*) from public.post_events where type = 'stale_result')
               from public.scheduled_posts",
            &[],
        )
        .await
        .unwrap();
    let counts: (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(counts, (500, 500, 500, 500, 0));
    assert_eq!(w.post_row(cancelled).await["status"], "cancelled");
    assert_eq!(w.post_row(future).await["status"], "queued");
    assert_eq!(w.event_types(cancelled).await, Vec::<String>::new());
    assert_eq!(w.event_types(ids[0]).await, ["claimed", "success"]);
    assert_eq!(
        w.bsky.calls("com.atproto.server.createSession"),
        ACCOUNTS,
        "one login per account, then the stored session"
    );
    let beat: Value = w
        .sql
        .query_one(
            "select detail from public.worker_heartbeats where worker_id = 'schedule-claim'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(beat["outcome"], "ok", "{beat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pds_that_commits_then_answers_500_is_settled_with_get_record() {
    let w = world().await;
    let user = w.user().await;
    let (account, fake) = w.bluesky_account(user, "alice.test").await;
    let post = w
        .schedule_draft(user, account, &fake.did, "hello once", 1.0)
        .await;
    w.bsky.inject(CREATE_RECORD, Fault::CommitThen500);

    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"], json!({ "published": 1 }), "{report}");
    assert_eq!(w.bsky.records(&fake.did, bluesky::POST).len(), 1);
    assert_eq!(w.bsky.calls(CREATE_RECORD), 1);
    assert_eq!(w.bsky.calls(GET_RECORD), 1);
    let events = w.events(post).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["claimed", "success"]);
    assert_eq!(
        events[1].1["result"]["settled_by"], "getRecord",
        "{:?}",
        events[1]
    );
    let row = w.post_row(post).await;
    assert_eq!(row["status"], "posted");
    let published: Value = w
        .sql
        .query_one(
            "select to_jsonb(p) from public.published_posts p where id = $1::text::uuid",
            &[&row["published_post_id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    let record = &w.bsky.records(&fake.did, bluesky::POST)[0];
    assert_eq!(published["platform_post_id"], record.uri);
    assert_eq!(published["metadata"]["cid"], record.cid);
    assert_eq!(published["metadata"]["rkey"], record.rkey);
    assert_eq!(
        published["metadata"]["url"],
        format!("https://bsky.app/profile/{}/post/{}", fake.did, record.rkey)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pds_that_hangs_past_the_lease_still_ends_with_one_record() {
    let w = world().await;
    let user = w.user().await;
    let short = json!({ "batch_size": 1, "lease_seconds": 5 });

    // 1. The PDS stores the record at once but holds the answer past the
    //    lease: the call is given up in time and getRecord finds the post.
    let (a1, f1) = w.bluesky_account(user, "hang1.test").await;
    let p1 = w
        .schedule_draft(user, a1, &f1.did, "stored, answer hung", 1.0)
        .await;
    w.bsky
        .inject(CREATE_RECORD, Fault::Hang(Duration::from_secs(8)));
    let started = Instant::now();
    let report = w.run(short.clone()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the attempt ended inside its lease"
    );
    assert_eq!(report["outcomes"], json!({ "published": 1 }), "{report}");
    assert_eq!(w.event_types(p1).await, ["claimed", "success"]);
    assert_eq!(w.events(p1).await[1].1["result"]["settled_by"], "getRecord");

    // 2. The PDS holds the request and stores it only after the lease: the
    //    attempt gives up, getRecord says "not written", the post retries;
    //    the next attempt finds the late record instead of writing again.
    let (a2, f2) = w.bluesky_account(user, "hang2.test").await;
    let p2 = w
        .schedule_draft(user, a2, &f2.did, "stored late", 1.0)
        .await;
    w.bsky
        .inject(CREATE_RECORD, Fault::HangThenCommit(Duration::from_secs(7)));
    let creates_before = w.bsky.calls(CREATE_RECORD);
    let report = w.run(short.clone()).await;
    assert_eq!(report["outcomes"], json!({ "retry": 1 }), "{report}");
    let row = w.post_row(p2).await;
    assert_eq!(row["status"], "queued");
    assert!(
        row["last_error"].as_str().unwrap().contains("not written"),
        "{row}"
    );
    let bsky = w.bsky.clone();
    let did = f2.did.clone();
    wait_for("the late record", Duration::from_secs(15), move || {
        bsky.records(&did, bluesky::POST).len() == 1
    })
    .await;
    w.make_due(p2).await; // the backoff has passed
    let report = w.run(short).await;
    assert_eq!(report["outcomes"], json!({ "published": 1 }), "{report}");
    assert_eq!(w.bsky.records(&f2.did, bluesky::POST).len(), 1);
    assert_eq!(
        w.bsky.calls(CREATE_RECORD) - creates_before,
        1,
        "never written twice"
    );
    let events = w.events(p2).await;
    let story: Vec<(&str, i64)> = events
        .iter()
        .map(|(t, d)| (t.as_str(), token_of(d)))
        .collect();
    let (t1, t2) = (story[0].1, story[2].1);
    assert_eq!(
        story,
        [
            ("claimed", t1),
            ("retry", t1),
            ("claimed", t2),
            ("success", t2)
        ]
    );
    assert!(t2 > t1);
    assert_eq!(events[3].1["result"]["settled_by"], "getRecord");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_whose_lease_runs_out_mid_publish_is_refused_and_the_next_one_finishes() {
    let w = Arc::new(world().await);
    let user = w.user().await;
    let (account, fake) = w.bluesky_account(user, "stall.test").await;
    let post = w
        .schedule_draft(user, account, &fake.did, "one record only", 1.0)
        .await;
    // Worker A's createRecord is held 5 s before the PDS stores it.
    w.bsky
        .inject(CREATE_RECORD, Fault::HangThenCommit(Duration::from_secs(5)));
    let settings = json!({ "batch_size": 1, "lease_seconds": 30 });
    let worker_a = {
        let w = w.clone();
        let settings = settings.clone();
        tokio::spawn(async move { w.run(settings).await })
    };
    let bsky = w.bsky.clone();
    wait_for(
        "worker A's createRecord",
        Duration::from_secs(10),
        move || bsky.calls(CREATE_RECORD) == 1,
    )
    .await;
    // A stalls past its lease (as if paused): the lease runs out.
    w.sql
        .execute(
            "update public.scheduled_posts set lease_expires_at = now() - interval '1 second' where id = $1",
            &[&post],
        )
        .await
        .unwrap();
    // Worker B takes the post over and publishes it.
    let report_b = w.run(settings).await;
    assert_eq!(
        report_b["outcomes"],
        json!({ "published": 1 }),
        "{report_b}"
    );
    // A's write lands late (the PDS refuses the duplicate key), A settles
    // it, and its completion is refused.
    let report_a = worker_a.await.unwrap();
    assert_eq!(report_a["outcomes"], json!({ "stale": 1 }), "{report_a}");

    assert_eq!(
        w.bsky.records(&fake.did, bluesky::POST).len(),
        1,
        "exactly one record"
    );
    let row = w.post_row(post).await;
    assert_eq!(row["status"], "posted");
    let events = w.events(post).await;
    let story: Vec<(&str, i64)> = events
        .iter()
        .map(|(t, d)| (t.as_str(), token_of(d)))
        .collect();
    let (ta, tb) = (story[0].1, story[2].1);
    assert_eq!(
        story,
        [
            ("claimed", ta),
            ("lease_expired", ta),
            ("claimed", tb),
            ("success", tb),
            ("stale_result", ta),
            ("stale_result", ta),
        ],
        "{events:?}"
    );
    assert_eq!(events[4].1["stage"], "part_posted");
    assert_eq!(events[5].1["stage"], "complete");
    assert_eq!(events[5].1["current_lease_token"], tb);
    assert_eq!(row["lease_token"], tb);
    let published: i64 = w
        .sql
        .query_one("select count(*) from public.published_posts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_an_exhausted_write_budget_delay_the_post_and_do_not_fail_it() {
    let w = world().await;
    let user = w.user().await;

    // 429 with Retry-After: the account is held, the post keeps its place.
    let (account, fake) = w.bluesky_account(user, "limited.test").await;
    let post = w
        .schedule_draft(user, account, &fake.did, "after the limit", 30.0)
        .await;
    let run_at_before = w.post_row(post).await["run_at"].clone();
    w.bsky.inject(
        CREATE_RECORD,
        Fault::RateLimited {
            retry_after_secs: 2,
        },
    );
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"], json!({ "deferred": 1 }), "{report}");
    let row = w.post_row(post).await;
    assert_eq!(row["status"], "queued");
    assert_eq!(row["attempt_count"], 0, "the attempt was given back");
    assert_eq!(row["run_at"], run_at_before, "its place is kept");
    assert_eq!(row["dead_lettered_at"], Value::Null);
    let events = w.events(post).await;
    assert_eq!(events[1].0, "deferred");
    assert_eq!(events[1].1["account_hold"], true);
    assert!(
        events[1].1["reason"]
            .as_str()
            .unwrap()
            .contains("RateLimitExceeded"),
        "{:?}",
        events[1]
    );
    assert_eq!(
        w.run(json!({})).await["claimed"],
        0,
        "the account is on hold"
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        w.run(json!({})).await["outcomes"],
        json!({ "published": 1 })
    );
    assert_eq!(
        w.event_types(post).await,
        ["claimed", "deferred", "claimed", "success"]
    );

    // The write budget (5,000 points an hour) is used up: no call at all.
    let (account, fake) = w.bluesky_account(user, "budget.test").await;
    let post = w
        .schedule_draft(user, account, &fake.did, "over budget", 1.0)
        .await;
    w.sql
        .execute(
            "insert into public.publish_write_budgets (account_id, window_seconds, window_start, points)
             values ($1, 3600, to_timestamp(floor(extract(epoch from now()) / 3600) * 3600), 4999)",
            &[&account],
        )
        .await
        .unwrap();
    let creates = w.bsky.calls(CREATE_RECORD);
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"], json!({ "deferred": 1 }), "{report}");
    assert_eq!(w.bsky.calls(CREATE_RECORD), creates, "nothing was sent");
    let row = w.post_row(post).await;
    assert_eq!(
        (row["status"].as_str(), row["attempt_count"].as_i64()),
        (Some("queued"), Some(0))
    );
    let hold: Value = w
        .sql
        .query_one(
            "select jsonb_build_object('reason', reason,
                    'next_hour', not_before = to_timestamp(floor(extract(epoch from now()) / 3600) * 3600 + 3600))
               from public.publish_account_holds where account_id = $1",
            &[&account],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        hold["reason"]
            .as_str()
            .unwrap()
            .starts_with("write budget used up"),
        "{hold}"
    );
    assert_eq!(
        hold["next_hour"], true,
        "held until the window ends: {hold}"
    );
    // The next window: the post goes out.
    w.sql
        .execute(
            "delete from public.publish_account_holds where account_id = $1",
            &[&account],
        )
        .await
        .unwrap();
    w.sql
        .execute(
            "delete from public.publish_write_budgets where account_id = $1",
            &[&account],
        )
        .await
        .unwrap();
    assert_eq!(
        w.run(json!({})).await["outcomes"],
        json!({ "published": 1 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facets_carry_utf8_byte_offsets_with_emoji_cjk_and_combining_marks() {
    let w = world().await;
    let user = w.user().await;
    let (account, fake) = w.bluesky_account(user, "rich.test").await;
    let bob = w.bsky.add_account("bob.test", "other-pass");
    let text = "👋🏽 こんにちは @bob.test e\u{301}te\u{301} #café https://例え.jp/x and @nobody.test example.com.";
    let post = w.schedule_draft(user, account, &fake.did, text, 1.0).await;
    w.sql
        .execute(
            "update public.scheduled_posts set langs = array['ja', 'en'] where id = $1",
            &[&post],
        )
        .await
        .unwrap();
    assert_eq!(
        w.run(json!({})).await["outcomes"],
        json!({ "published": 1 })
    );

    let record = &w.bsky.records(&fake.did, bluesky::POST)[0];
    assert_eq!(record.value["text"], text);
    assert_eq!(record.value["langs"], json!(["ja", "en"]));
    let bytes = text.as_bytes();
    let mut found: Vec<(String, Value)> = record.value["facets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let start = f["index"]["byteStart"].as_u64().unwrap() as usize;
            let end = f["index"]["byteEnd"].as_u64().unwrap() as usize;
            let covered = String::from_utf8(bytes[start..end].to_vec()).unwrap();
            (covered, f["features"][0].clone())
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (
            "@bob.test".to_string(),
            json!({ "$type": "app.bsky.richtext.facet#mention", "did": bob.did }),
        ),
        (
            "#café".to_string(),
            json!({ "$type": "app.bsky.richtext.facet#tag", "tag": "café" }),
        ),
        (
            "https://例え.jp/x".to_string(),
            json!({ "$type": "app.bsky.richtext.facet#link", "uri": "https://例え.jp/x" }),
        ),
        (
            "example.com".to_string(),
            json!({ "$type": "app.bsky.richtext.facet#link", "uri": "https://example.com" }),
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(found, expected, "the unresolved @nobody.test has no facet");
    // The mention starts after 8 + 1 + 15 + 1 bytes.
    let mention = record.value["facets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["features"][0]["did"] == bob.did)
        .unwrap();
    assert_eq!(mention["index"], json!({ "byteStart": 25, "byteEnd": 34 }));
    let metadata: Value = w
        .sql
        .query_one("select metadata from public.published_posts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(metadata["unresolved_mentions"], json!(["nobody.test"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_over_300_graphemes_and_images_without_alt_are_refused_before_any_call() {
    let w = world().await;
    let user = w.user().await;
    let (account, fake) = w.bluesky_account(user, "long.test").await;
    let long = w
        .schedule_draft(user, account, &fake.did, &"a".repeat(317), 2.0)
        .await;
    let (account2, fake2) = w.bluesky_account(user, "noalt.test").await;
    let no_alt = w
        .schedule_draft(user, account2, &fake2.did, "a kite", 1.0)
        .await;
    w.sql
        .execute(
            r#"update public.scheduled_posts set media = '[{"bucket": "media", "path": "u1/kite.png"}]' where id = $1"#,
            &[&no_alt],
        )
        .await
        .unwrap();
    // 300 graphemes of 2 code points each are fine.
    let (account3, fake3) = w.bluesky_account(user, "marks.test").await;
    let marks = w
        .schedule_draft(user, account3, &fake3.did, &"e\u{301}".repeat(300), 0.5)
        .await;

    let report = w.run(json!({})).await;
    assert_eq!(
        report["outcomes"],
        json!({ "failed": 2, "published": 1 }),
        "{report}"
    );
    let row = w.post_row(long).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["last_error"], "317 graphemes; Bluesky allows 300");
    let events = w.events(long).await;
    assert_eq!(events[1].0, "failure");
    assert_eq!(events[1].1["permanent"], true);
    assert_eq!(
        w.post_row(no_alt).await["last_error"],
        "image 1 has no alt text; every image needs a description"
    );
    assert_eq!(w.post_row(marks).await["status"], "posted");
    assert_eq!(
        w.bsky.calls("com.atproto.server.createSession"),
        1,
        "only the valid post logged in"
    );
    assert_eq!(w.bsky.calls(CREATE_RECORD), 1);
    assert_eq!(w.bsky.calls("com.atproto.repo.uploadBlob"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_with_alt_text_are_uploaded_as_blobs_and_embedded() {
    let w = world().await;
    let user = w.user().await;
    let (account, fake) = w.bluesky_account(user, "pics.test").await;
    let post = w
        .schedule_draft(user, account, &fake.did, "look at this kite", 1.0)
        .await;
    w.sql
        .execute(
            r#"update public.scheduled_posts
                  set media = '[{"bucket": "media", "path": "u1/kite.png", "alt": "A red kite over a hill",
                                 "width": 1200, "height": 800}]'
                where id = $1"#,
            &[&post],
        )
        .await
        .unwrap();
    let missing = w
        .schedule_draft(user, account, &fake.did, "gone", 0.5)
        .await;
    w.sql
        .execute(
            r#"update public.scheduled_posts set media = '[{"bucket": "media", "path": "u1/gone.png", "alt": "x"}]' where id = $1"#,
            &[&missing],
        )
        .await
        .unwrap();
    let report = w.run(json!({})).await;
    assert_eq!(
        report["outcomes"],
        json!({ "published": 1, "failed": 1 }),
        "{report}"
    );
    let record = &w.bsky.records(&fake.did, bluesky::POST)[0];
    let images = &record.value["embed"]["images"];
    assert_eq!(record.value["embed"]["$type"], "app.bsky.embed.images");
    assert_eq!(images[0]["alt"], "A red kite over a hill");
    assert_eq!(
        images[0]["aspectRatio"],
        json!({ "width": 1200, "height": 800 })
    );
    let blobs = w.bsky.blobs();
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0].bytes.as_ref(), kite_bytes().as_slice());
    assert_eq!(blobs[0].mime_type, "image/png");
    assert_eq!(images[0]["image"]["ref"]["$link"], blobs[0].cid);
    let error = w.post_row(missing).await["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("image 1 (media/u1/gone.png) is not readable in storage: HTTP 404"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_thread_is_a_reply_chain_and_resumes_after_a_lost_answer_without_doubles() {
    let w = world().await;
    let user = w.user().await;
    w.x.add_user("1001", "alice_x", "x-token-alice");
    let account = w
        .oauth_account(user, "x", "1001", "alice_x", "x-token-alice")
        .await;
    let text = (1..=40)
        .map(|i| format!("Sentence {i} of a long thought about scheduling."))
        .collect::<Vec<_>>()
        .join(" ");
    let post = w.schedule_nexus(user, account, "x", &text).await;
    // Part 1 goes out; part 2 is stored but its answer is lost (503).
    w.x.inject(x::Fault::Pass);
    w.x.inject(x::Fault::CommitThen503);
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"], json!({ "retry": 1 }), "{report}");
    assert_eq!(w.x.tweets().len(), 2);
    w.make_due(post).await;
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"], json!({ "published": 1 }), "{report}");

    let tweets = w.x.tweets_of("1001");
    let n = tweets.len();
    assert!(n >= 3, "a thread: {tweets:?}");
    for (i, t) in tweets.iter().enumerate() {
        assert!(x::weighted_length(&t.text) <= 280, "{}", t.text);
        assert!(t.text.ends_with(&format!(" ({}/{n})", i + 1)), "{}", t.text);
        let parent = if i == 0 {
            None
        } else {
            Some(tweets[i - 1].id.clone())
        };
        assert_eq!(t.in_reply_to, parent, "a reply chain");
    }
    let words: Vec<&str> = tweets
        .iter()
        .flat_map(|t| t.text.rsplit_once(" (").unwrap().0.split_whitespace())
        .collect();
    assert_eq!(
        words,
        text.split_whitespace().collect::<Vec<_>>(),
        "nothing lost or doubled"
    );
    // Part 2 was sent twice (X refused the copy as duplicate content).
    assert_eq!(w.x.post_calls(), n + 1);
    let events = w.events(post).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["claimed", "retry", "claimed", "success"]);
    assert_eq!(events[3].1["result"]["settled_by"], "duplicate");
    let published: Value = w
        .sql
        .query_one(
            "select to_jsonb(p) from public.published_posts p where platform = 'x'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published["platform_post_id"], tweets[0].id);
    assert_eq!(
        published["metadata"]["url"],
        format!("https://x.com/alice_x/status/{}", tweets[0].id)
    );
    let thread: Vec<String> = tweets.iter().map(|t| t.id.clone()).collect();
    assert_eq!(published["metadata"]["thread"], json!(thread));
    let archived: i64 = w
        .sql
        .query_one(
            "select count(*) from public.posts where platform = 'x'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(archived as usize, n);
    let parts: i64 = w
        .sql
        .query_one(
            "select count(*) from public.scheduled_post_parts where scheduled_post_id = $1 and status = 'posted'",
            &[&post],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts as usize, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_failure_answers_429_reset_403_duplicate_and_revoked_tokens() {
    let w = world().await;
    let user = w.user().await;

    // 429 with x-rate-limit-reset: held, then published.
    w.x.add_user("2001", "bob_x", "x-token-bob");
    let bob = w
        .oauth_account(user, "x", "2001", "bob_x", "x-token-bob")
        .await;
    let post = w.schedule_nexus(user, bob, "x", "short and sweet").await;
    w.x.inject(x::Fault::RateLimited { reset_in_secs: 2 });
    assert_eq!(w.run(json!({})).await["outcomes"], json!({ "deferred": 1 }));
    let events = w.events(post).await;
    assert_eq!(events[1].0, "deferred");
    let not_before =
        chrono::DateTime::parse_from_rfc3339(events[1].1["not_before"].as_str().unwrap()).unwrap();
    let wait = (not_before.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    assert!(
        (0..=2500).contains(&wait),
        "held until the reset: {wait} ms"
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        w.run(json!({})).await["outcomes"],
        json!({ "published": 1 })
    );

    // 403 duplicate content on a first send: X's message, failed at once.
    let dup = w.schedule_nexus(user, bob, "x", "short and sweet").await;
    assert_eq!(w.run(json!({})).await["outcomes"], json!({ "failed": 1 }));
    let row = w.post_row(dup).await;
    assert_eq!(
        row["last_error"],
        "X answered 403: You are not allowed to create a Tweet with duplicate content."
    );

    // A revoked token: failed, the account must be reconnected.
    w.x.revoke_token("x-token-bob");
    let revoked = w.schedule_nexus(user, bob, "x", "after revocation").await;
    assert_eq!(w.run(json!({})).await["outcomes"], json!({ "failed": 1 }));
    let row = w.post_row(revoked).await;
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .starts_with("X answered 401: Unauthorized"),
        "{row}"
    );
    let status: String = w
        .sql
        .query_one(
            "select status::text from public.connected_accounts where id = $1",
            &[&bob],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "token_expired");
    // No secret in any event or error.
    let leaked: i64 = w
        .sql
        .query_one(
            "select count(*) from public.post_events where detail::text like '%x-token-bob%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkedin_posts_with_its_version_header_and_refusals_401_and_422_fail_with_its_words() {
    let w = world().await;
    let user = w.user().await;
    w.li.add_member("abc123", "li-token");
    let account = w
        .oauth_account(user, "linkedin", "abc123", "Alice L", "li-token")
        .await;
    let text = "Launch day (v2) for #Outpost: schedule once, publish everywhere_ok";
    let post = w.schedule_nexus(user, account, "linkedin", text).await;
    assert_eq!(
        w.run(json!({})).await["outcomes"],
        json!({ "published": 1 })
    );
    let posts = w.li.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].author, "urn:li:person:abc123");
    assert_eq!(posts[0].version.len(), 6);
    assert_eq!(
        posts[0].commentary,
        "Launch day \\(v2\\) for \\#Outpost: schedule once, publish everywhere\\_ok"
    );
    let row = w.post_row(post).await;
    assert_eq!(row["status"], "posted");
    let url: String = w
        .sql
        .query_one(
            "select metadata->>'url' from public.published_posts where platform = 'linkedin'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        url,
        format!("https://www.linkedin.com/feed/update/{}/", posts[0].urn)
    );

    // 422 with LinkedIn's message: failed at once, its words kept.
    let invalid = w
        .schedule_nexus(user, account, "linkedin", "second post")
        .await;
    w.li.inject(linkedin::Fault::Status {
        status: 422,
        message: "/commentary :: ERROR :: invalid mention".into(),
    });
    assert_eq!(w.run(json!({})).await["outcomes"], json!({ "failed": 1 }));
    assert_eq!(
        w.post_row(invalid).await["last_error"],
        "LinkedIn answered 422: /commentary :: ERROR :: invalid mention"
    );

    // Over 3,000 characters: refused before any call.
    let calls = w.li.requests().len();
    let long = w
        .schedule_nexus(user, account, "linkedin", &"é".repeat(3001))
        .await;
    assert_eq!(w.run(json!({})).await["outcomes"], json!({ "failed": 1 }));
    assert_eq!(
        w.post_row(long).await["last_error"],
        "3001 graphemes; LinkedIn allows 3000"
    );
    assert_eq!(w.li.requests().len(), calls);

    // 401: revoked token, account marked.
    w.li.revoke_token("li-token");
    let revoked = w
        .schedule_nexus(user, account, "linkedin", "third post")
        .await;
    assert_eq!(w.run(json!({})).await["outcomes"], json!({ "failed": 1 }));
    assert!(
        w.post_row(revoked).await["last_error"]
            .as_str()
            .unwrap()
            .starts_with("LinkedIn answered 401: Invalid access token"),
    );
    let status: String = w
        .sql
        .query_one(
            "select status::text from public.connected_accounts where id = $1",
            &[&account],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "token_expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_linkedin_answer_is_settled_by_its_duplicate_refusal() {
    let w = world().await;
    let user = w.user().await;
    w.li.add_member("m1", "li-token-1");
    let account = w
        .oauth_account(user, "linkedin", "m1", "M One", "li-token-1")
        .await;
    let post = w
        .schedule_nexus(user, account, "linkedin", "exactly once on LinkedIn")
        .await;
    w.li.inject(linkedin::Fault::CommitThen504);
    assert_eq!(w.run(json!({})).await["outcomes"], json!({ "retry": 1 }));
    w.make_due(post).await;
    assert_eq!(
        w.run(json!({})).await["outcomes"],
        json!({ "published": 1 })
    );
    let posts = w.li.posts();
    assert_eq!(posts.len(), 1, "one post on LinkedIn");
    let published: String = w
        .sql
        .query_one("select platform_post_id from public.published_posts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, posts[0].urn);
    assert_eq!(
        w.events(post).await[3].1["result"]["settled_by"],
        "duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_recent_bluesky_posts_reach_published_posts_and_engagement_history() {
    let w = world().await;
    let user = w.user().await;
    let (account, fake) = w.bluesky_account(user, "counted.test").await;
    w.schedule_draft(user, account, &fake.did, "count me", 1.0)
        .await;
    let report = w.run(json!({ "metrics": false })).await;
    assert_eq!(report["outcomes"], json!({ "published": 1 }));
    let uri = w.bsky.records(&fake.did, bluesky::POST)[0].uri.clone();
    w.bsky.set_counts(&uri, 5, 2, 1);
    let report = w.run(json!({})).await;
    assert_eq!(report["metrics"]["updated"], 1, "{report}");
    assert_eq!(report["metrics"]["history"], 1, "{report}");
    let metrics: Value = w
        .sql
        .query_one("select metrics from public.published_posts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (
            metrics["likes"].clone(),
            metrics["reposts"].clone(),
            metrics["replies"].clone()
        ),
        (json!(5), json!(2), json!(1))
    );
    assert!(metrics["last_synced"].is_string());
    let history: Value = w
        .sql
        .query_one(
            "select h.engagement_stats from public.engagement_history h
               join public.posts p on p.id = h.post_id where p.platform_post_id = $1",
            &[&uri],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(history["likes"], 5);
    // Refreshed a moment ago: the next run leaves it alone.
    let report = w.run(json!({})).await;
    assert_eq!(report["metrics"]["claimed"], 0, "{report}");
}

/// A replica of the app as its own `outpost up` process (the binary the
/// tests build), serving only `schedule-claim` on the world's database and
/// fakes, so a test can `kill -9` it.
async fn replica_process(w: &World) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let variables = [
        ("database_url", w._db.url()),
        ("database_address", w._db.address()),
        ("job_secret", TestApp::JOB_SECRET.to_string()),
        ("bluesky_pds_url", w.bsky.url()),
        ("bluesky_appview_url", w.bsky.url()),
        ("x_api_url", w.x.url()),
        ("linkedin_api_url", w.li.url()),
        ("media_store_url", w._store.url()),
        ("media_store_access_key", w._store.access_key().to_string()),
        ("media_store_secret_key", w._store.secret_key().to_string()),
        ("token_encryption_key", token_key()),
    ];
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost-e2e-host"));
    command
        .arg("up")
        .arg("--manifest")
        .arg(product_manifest())
        .args(["--listen", &listen, "--no-migrate", "--no-cron"])
        .args(["--component-id", "schedule-claim"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for (name, value) in variables {
        command.arg("--variable").arg(format!("{name}={value}"));
    }
    let child = command.spawn().unwrap();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&listen).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the replica did not start listening on {listen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, format!("http://{listen}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publisher_killed_mid_publish_frees_its_accounts_within_one_lease() {
    // The product default: the claim's lease and each renewal's.
    const LEASE_SECONDS: f64 = 20.0;
    let w = world().await;
    let user = w.user().await;
    let mut posts = Vec::new();
    let mut dids = Vec::new();
    for i in 0..3 {
        let (account, fake) = w.bluesky_account(user, &format!("crash{i}.test")).await;
        posts.push(
            w.schedule_draft(
                user,
                account,
                &fake.did,
                &format!("after the crash {i}"),
                3.0 - f64::from(i),
            )
            .await,
        );
        dids.push(fake.did);
    }
    // Replica A claims all three (one per account) and hangs in its first
    // createRecord (the PDS stores the record at once and never answers).
    w.bsky
        .inject(CREATE_RECORD, Fault::Hang(Duration::from_secs(120)));
    let (mut replica_a, url_a) = replica_process(&w).await;
    let run_a = tokio::spawn(async move {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{url_a}/jobs/schedule-claim"))
            .bearer_auth(TestApp::JOB_SECRET)
            .json(&json!({ "metrics": false }))
            .send()
            .await
    });
    let bsky = w.bsky.clone();
    wait_for(
        "replica A's createRecord",
        Duration::from_secs(30),
        move || bsky.calls(CREATE_RECORD) == 1,
    )
    .await;
    let leased: i64 = w
        .sql
        .query_one(
            "select count(*) from public.scheduled_posts where status = 'posting'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leased, 3, "replica A holds the whole batch");

    // kill -9, mid-publish.
    replica_a.start_kill().unwrap();
    replica_a.wait().await.unwrap();
    let killed_at: chrono::DateTime<chrono::Utc> = w
        .sql
        .query_one("select clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(run_a.await.unwrap().is_err(), "A never answered");

    // Replica B (the in-process app) runs until everything is out.
    let started = Instant::now();
    loop {
        w.run(json!({ "metrics": false })).await;
        let open: i64 = w
            .sql
            .query_one(
                "select count(*) from public.scheduled_posts where status <> 'posted'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{open} posts still not published"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // How long each account waited: from the kill to B's claim.
    let mut waits = Vec::new();
    for post in &posts {
        let row = w
            .sql
            .query_one(
                "select extract(epoch from (max(created_at) - $2))::float8,
                        count(*) filter (where type = 'lease_expired'),
                        count(*) filter (where type = 'success')
                   from public.post_events
                  where scheduled_post_id = $1 and type in ('claimed', 'lease_expired', 'success')",
                &[post, &killed_at],
            )
            .await
            .unwrap();
        let (wait, expired, success): (f64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((expired, success), (1, 1), "post {post}");
        waits.push(wait);
    }
    let worst = waits.iter().copied().fold(0.0_f64, f64::max);
    println!(
        "accounts of the killed publisher waited {waits:.1?} s after the kill (lease {LEASE_SECONDS} s; the old batch lease was 300 s)"
    );
    assert!(
        worst <= LEASE_SECONDS + 5.0,
        "an account waited {worst:.1} s after its publisher died (lease {LEASE_SECONDS} s)"
    );
    // Exactly once: the hung record was stored by the PDS and settled by B.
    for did in &dids {
        assert_eq!(w.bsky.records(did, bluesky::POST).len(), 1, "{did}");
    }
}

//! ai-dispatch's Venice images (issue 15, seed 000 `ai_jobs`): the built
//! component against a loopback Venice that speaks its documented image
//! API (`fakes::venice`), a real S3 server (`s3s-fs`, SigV4 on) and a fresh
//! PostgreSQL database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use outpost_test_kit::fakes::venice::{FakeVenice, Fault};
use outpost_test_kit::{S3Server, TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

const KEY: &str = "vk-test-7c1d2f0e9a8b4c3d2e1f";

struct World {
    _db: TestDb,
    sql: Client,
    s3: S3Server,
    venice: FakeVenice,
    app: TestApp,
}

async fn world() -> World {
    world_with_key(KEY).await
}

/// The app's key may differ from the one the fake accepts.
async fn world_with_key(app_key: &str) -> World {
    require_wasm("ai-dispatch").unwrap();
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let s3 = S3Server::start().await.unwrap();
    let venice = FakeVenice::start(KEY).await.unwrap();
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["ai-dispatch"])
        .variable("venice_api_url", venice.url())
        .variable("venice_api_key", app_key)
        .variable("media_store_url", s3.url())
        .variable("media_store_access_key", s3.access_key())
        .variable("media_store_secret_key", s3.secret_key())
        .start()
        .await
        .unwrap();
    World {
        _db: db,
        sql,
        s3,
        venice,
        app,
    }
}

impl World {
    /// A user with `credits`.
    async fn user(&self, credits: i32) -> Uuid {
        let user = outpost_test_kit::create_user(&self.sql).await.unwrap();
        self.sql
            .execute(
                "update public.users set credits = $2 where id = $1",
                &[&user, &credits],
            )
            .await
            .unwrap();
        user
    }

    /// A queued image job, due now.
    async fn job(&self, user: Uuid, prompt: &str, params: Value) -> Uuid {
        self.sql
            .query_one(
                "insert into public.ai_jobs (user_id, model, prompt, params, next_attempt_at)
                 values ($1, 'venice-sd35', $2, $3, now() - interval '1 second') returning id",
                &[&user, &prompt, &params],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// `POST /jobs/ai-dispatch` with `body`; the Venice part of the report.
    async fn run(&self, body: Value) -> Value {
        self.app.run_job("ai-dispatch", Some(&body)).await.unwrap()["report"]["venice"].clone()
    }

    /// `(status, attempt_count, last_error, dead)` of a job.
    async fn state(&self, job: Uuid) -> (String, i32, Option<String>, bool) {
        let row = self
            .sql
            .query_one(
                "select status, attempt_count, last_error, dead_lettered_at is not null
                   from public.ai_jobs where id = $1",
                &[&job],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3))
    }

    async fn credits(&self, user: Uuid) -> i32 {
        self.sql
            .query_one("select credits from public.users where id = $1", &[&user])
            .await
            .unwrap()
            .get(0)
    }

    /// `(bucket, path, mime, width, height, bytes, user_id)` of a job's assets, by path.
    async fn assets(&self, job: Uuid) -> Vec<(String, String, String, i32, i32, i64, Uuid)> {
        self.sql
            .query(
                "select bucket, path, mime, width, height, coalesce(bytes, 0), user_id
                   from public.ai_assets where job_id = $1 order by path",
                &[&job],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                )
            })
            .collect()
    }

    async fn events(&self, job: Uuid) -> Vec<String> {
        self.sql
            .query(
                "select type from public.ai_job_events where job_id = $1 order by created_at, id",
                &[&job],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// `(status_code, error)` of every Venice call logged for `user`.
    async fn api_logs(&self, user: Uuid) -> Vec<(Option<i32>, Option<String>)> {
        self.sql
            .query(
                "select status_code, error from public.api_logs
                  where provider = 'venice' and user_id = $1 and method = 'POST'
                    and path = '/api/v1/image/generate' and model = 'venice-sd35'
                  order by created_at, id",
                &[&user],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    async fn notifications(&self, user: Uuid, kind: &str) -> i64 {
        self.sql
            .query_one(
                "select count(*) from public.notifications where user_id = $1 and type = $2",
                &[&user, &kind],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn due_now(&self, job: Uuid) {
        self.sql
            .execute(
                "update public.ai_jobs set next_attempt_at = now() - interval '1 second' where id = $1",
                &[&job],
            )
            .await
            .unwrap();
    }

    fn stored(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.s3.object_file("generations", path)).ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_go_from_a_job_into_the_store_with_their_real_sizes() {
    let w = world().await;
    let user = w.user(5).await;
    let png_job = w
        .job(
            user,
            "a red kite over a grey sea",
            json!({"width": 64, "height": 48, "format": "png", "variants": 2, "steps": 12,
                   "cfg_scale": 6.5, "seed": 7, "negative_prompt": "blur"}),
        )
        .await;
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["succeeded"], 1, "{report}");
    assert_eq!(report["images"], 2, "{report}");
    assert_eq!(w.state(png_job).await.0, "succeeded");

    // What Venice was asked.
    let requests = w.venice.requests();
    assert_eq!(requests.len(), 1);
    let sent: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(sent["model"], "venice-sd35");
    assert_eq!(sent["prompt"], "a red kite over a grey sea");
    assert_eq!(
        (
            &sent["width"],
            &sent["height"],
            &sent["variants"],
            &sent["format"]
        ),
        (&json!(64), &json!(48), &json!(2), &json!("png"))
    );
    assert_eq!(
        (&sent["steps"], &sent["cfg_scale"], &sent["seed"]),
        (&json!(12), &json!(6.5), &json!(7))
    );
    assert_eq!(sent["negative_prompt"], "blur");
    assert_eq!(sent["return_binary"], false);
    assert_eq!(
        requests[0].headers["authorization"].to_str().unwrap(),
        format!("Bearer {KEY}")
    );

    // What was stored and recorded, byte for byte and pixel for pixel.
    let served = w.venice.served();
    let assets = w.assets(png_job).await;
    assert_eq!(assets.len(), 2, "{assets:?}");
    for (n, (bucket, path, mime, width, height, bytes, owner)) in assets.iter().enumerate() {
        assert_eq!(bucket, "generations");
        assert_eq!(path, &format!("{user}/ai-images/{png_job}/{n}.png"));
        assert_eq!((mime.as_str(), *width, *height), ("image/png", 64, 48));
        assert_eq!(owner, &user);
        let object = w.stored(path).expect("object stored");
        assert_eq!(
            object, served[0][n],
            "object {n} differs from what Venice sent"
        );
        assert_eq!(*bytes, object.len() as i64);
    }
    assert_eq!(w.events(png_job).await, ["claimed", "success"]);
    assert_eq!(w.credits(user).await, 4, "one credit for the job");
    assert_eq!(w.notifications(user, "ai_image_ready").await, 1);
    assert_eq!(w.api_logs(user).await, [(Some(200), None)]);

    // WebP, Venice's default format: its header gives the size too.
    let webp_job = w.job(user, "a lighthouse", json!({"size": "40x30"})).await;
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["succeeded"], 1, "{report}");
    let assets = w.assets(webp_job).await;
    assert_eq!(assets.len(), 1);
    assert_eq!(
        (assets[0].2.as_str(), assets[0].3, assets[0].4),
        ("image/webp", 40, 30)
    );
    assert!(assets[0].1.ends_with("/0.webp"));
    assert_eq!(w.stored(&assets[0].1).unwrap(), w.venice.served()[1][0]);

    let beat: Value = w
        .sql
        .query_one(
            "select detail from public.worker_heartbeats where worker_id = 'ai-dispatch'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(beat["outcome"], "ok", "{beat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_defers_the_job_for_retry_after_without_using_an_attempt() {
    let w = world().await;
    let user = w.user(5).await;
    let first = w
        .job(user, "a quiet harbour", json!({"width": 32, "height": 32}))
        .await;
    let second = w
        .job(user, "a busy harbour", json!({"width": 32, "height": 32}))
        .await;
    w.venice.fail_next(Fault::rate_limited(120));
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["deferred"], 1, "{report}");
    assert_eq!(report["claimed"], 1, "the run stops at a 429: {report}");
    assert_eq!(w.venice.requests().len(), 1);

    // The older job was claimed; the other was not even tried.
    let deferred = first;
    assert!(w.events(second).await.is_empty());
    assert_eq!(w.state(second).await.1, 0);
    let (status, attempts, _, dead) = w.state(deferred).await;
    assert_eq!((status.as_str(), attempts, dead), ("queued", 0, false));
    let wait: f64 = w
        .sql
        .query_one(
            "select extract(epoch from next_attempt_at - now())::float8 from public.ai_jobs where id = $1",
            &[&deferred],
        )
        .await
        .unwrap()
        .get(0);
    assert!((100.0..=125.0).contains(&wait), "deferred by {wait} s");
    assert_eq!(w.events(deferred).await, ["claimed", "deferred"]);
    let logs = w.api_logs(user).await;
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].0, Some(429));
    assert!(
        logs[0]
            .1
            .as_deref()
            .unwrap()
            .contains("Rate limit exceeded")
    );

    // Due again: it runs, and is charged once.
    w.due_now(deferred).await;
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["succeeded"], 2, "{report}");
    assert_eq!(w.state(deferred).await.0, "succeeded");
    assert_eq!(w.credits(user).await, 3, "two jobs, two credits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5xx_is_retried_with_backoff_and_then_succeeds_charged_once() {
    let w = world().await;
    let user = w.user(5).await;
    let job = w
        .job(
            user,
            "a mountain at dawn",
            json!({"width": 16, "height": 16, "format": "png"}),
        )
        .await;
    w.venice.fail_next(Fault::server_error());
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["retry"], 1, "{report}");
    let (status, attempts, error, dead) = w.state(job).await;
    assert_eq!((status.as_str(), attempts, dead), ("queued", 1, false));
    let error = error.unwrap();
    assert!(
        error.contains("HTTP 500") && error.contains("Inference processing failed"),
        "{error}"
    );
    let backoff: f64 = w
        .sql
        .query_one(
            "select extract(epoch from next_attempt_at - now())::float8 from public.ai_jobs where id = $1",
            &[&job],
        )
        .await
        .unwrap()
        .get(0);
    assert!(backoff > 15.0, "backoff of {backoff} s");
    // Not due yet: a run now leaves it alone.
    let report = w.run(json!({})).await;
    assert_eq!(report["claimed"], 0, "{report}");

    w.due_now(job).await;
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["succeeded"], 1, "{report}");
    assert_eq!(w.state(job).await.0, "succeeded");
    assert_eq!(w.assets(job).await.len(), 1);
    assert_eq!(
        w.events(job).await,
        ["claimed", "retry", "claimed", "success"]
    );
    assert_eq!(w.credits(user).await, 4, "charged once over two attempts");
    assert_eq!(
        w.api_logs(user)
            .await
            .iter()
            .map(|l| l.0)
            .collect::<Vec<_>>(),
        [Some(500), Some(200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_answer_times_out_and_is_retried() {
    let w = world().await;
    let user = w.user(5).await;
    let job = w
        .job(user, "a slow river", json!({"width": 16, "height": 16}))
        .await;
    w.venice.fail_next(Fault::slow(Duration::from_secs(5)));
    let report = w.run(json!({"venice": {"call_timeout_ms": 400}})).await;
    assert_eq!(report["outcomes"]["retry"], 1, "{report}");
    let (status, attempts, error, _) = w.state(job).await;
    assert_eq!((status.as_str(), attempts), ("queued", 1));
    assert!(error.unwrap().contains("timed out"));
    assert_eq!(w.api_logs(user).await[0].0, None, "no answer, no status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_content_policy_refusal_fails_at_once_with_the_message_and_refunds() {
    let w = world().await;
    let user = w.user(3).await;
    let job = w.job(user, "something Venice refuses", json!({})).await;
    w.venice.fail_next(Fault::content_policy());
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["failed"], 1, "{report}");
    let (status, attempts, error, dead) = w.state(job).await;
    assert_eq!((status.as_str(), attempts, dead), ("failed", 1, true));
    assert_eq!(
        error.as_deref(),
        Some("Venice refused the image (HTTP 422): Content policy violation")
    );
    assert_eq!(w.venice.requests().len(), 1, "not retried");
    assert_eq!(w.credits(user).await, 3, "the credit came back");
    assert_eq!(w.notifications(user, "ai_image_failed").await, 1);
    assert_eq!(w.events(job).await, ["claimed", "failure"]);
    assert!(w.s3.keys("generations").is_empty());

    // A validation refusal (Venice's 400 with issues) fails at once too.
    let big = w
        .job(user, "a huge map", json!({"width": 5000, "height": 64}))
        .await;
    w.run(json!({})).await;
    let (status, _, error, _) = w.state(big).await;
    assert_eq!(status, "failed");
    let error = error.unwrap();
    assert!(
        error.contains("HTTP 400")
            && error.contains("width: Number must be less than or equal to 1280"),
        "{error}"
    );
    assert_eq!(w.credits(user).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_jobs_and_assets_are_never_touched() {
    let w = world().await;
    let alice = w.user(5).await;
    let bob = w.user(5).await;
    let alice_job = w
        .job(
            alice,
            "alice's garden",
            json!({"width": 20, "height": 10, "format": "png"}),
        )
        .await;
    let bob_job = w
        .job(
            bob,
            "bob's boat",
            json!({"width": 10, "height": 20, "format": "png"}),
        )
        .await;
    // An asset of Bob's sits (as a bug elsewhere could put it) where Alice's
    // job will store its image.
    let bobs_asset: Uuid = w
        .sql
        .query_one(
            "insert into public.ai_assets (job_id, user_id, bucket, path, mime, width, height)
             values ($1, $2, 'generations', $3, 'image/png', 9, 9) returning id",
            &[
                &bob_job,
                &bob,
                &format!("{alice}/ai-images/{alice_job}/0.png"),
            ],
        )
        .await
        .unwrap()
        .get(0);
    let report = w.run(json!({})).await;
    assert_eq!(report["claimed"], 2, "{report}");

    // Alice's job refuses to take Bob's row over and gives her credit back.
    let (status, _, error, _) = w.state(alice_job).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("belongs to another job or user"));
    assert_eq!(w.credits(alice).await, 5);
    let row = w
        .sql
        .query_one(
            "select job_id, user_id, width from public.ai_assets where id = $1",
            &[&bobs_asset],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, Uuid>(0),
            row.get::<_, Uuid>(1),
            row.get::<_, i32>(2)
        ),
        (bob_job, bob, 9),
        "Bob's asset is untouched"
    );

    // Bob's own job is his alone: his folder, his assets, his credit.
    assert_eq!(w.state(bob_job).await.0, "succeeded");
    let assets = w.assets(bob_job).await;
    assert_eq!(assets.len(), 2, "his planted row and his new image");
    let fresh: Vec<_> = assets
        .iter()
        .filter(|a| a.1.starts_with(&format!("{bob}/")))
        .collect();
    assert_eq!(fresh.len(), 1);
    assert_eq!((fresh[0].3, fresh[0].4, fresh[0].6), (10, 20, bob));
    assert_eq!(w.credits(bob).await, 4);
    assert_eq!(w.notifications(alice, "ai_image_ready").await, 0);
    assert_eq!(w.notifications(bob, "ai_image_ready").await, 1);
    let alice_rows: i64 = w
        .sql
        .query_one(
            "select count(*) from public.ai_assets where user_id = $1",
            &[&alice],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(alice_rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_key_or_prompt_reaches_logs_events_or_errors() {
    // The app holds a wrong key: Venice answers 401, the job waits.
    let wrong_key = "vk-wrong-0f9e8d7c6b5a49382716";
    let w = world_with_key(wrong_key).await;
    let user = w.user(5).await;
    let prompt = "a secret birthday surprise for Dana";
    let job = w
        .job(user, prompt, json!({"width": 16, "height": 16}))
        .await;
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["deferred"], 1, "{report}");
    let (status, attempts, _, _) = w.state(job).await;
    assert_eq!(
        (status.as_str(), attempts),
        ("queued", 0),
        "our key, not the user's fault"
    );
    assert_eq!(w.api_logs(user).await[0].0, Some(401));

    // With the right key: an error body that echoes the prompt (a 400),
    // and a 500.
    let w2 = world().await;
    let user2 = w2.user(5).await;
    let echoed = w2
        .job(user2, prompt, json!({"width": 16, "height": 16}))
        .await;
    w2.venice.fail_next(Fault::Status {
        status: 400,
        body: json!({"error": format!("Invalid prompt: {prompt}")}),
        retry_after: None,
    });
    w2.run(json!({})).await;
    let (status, _, error, _) = w2.state(echoed).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("[redacted]"));
    let retried = w2
        .job(user2, prompt, json!({"width": 16, "height": 16}))
        .await;
    w2.venice.fail_next(Fault::server_error());
    w2.run(json!({})).await;
    assert_eq!(w2.state(retried).await.0, "queued");

    for (world, key) in [(&w, wrong_key), (&w2, KEY)] {
        let everything: String = world
            .sql
            .query_one(
                "select concat_ws(' ',
                   (select string_agg(l::text, ' ') from public.api_logs l),
                   (select string_agg(e::text, ' ') from public.ai_job_events e),
                   (select string_agg(coalesce(j.last_error, '') || coalesce(j.result::text, ''), ' ') from public.ai_jobs j),
                   (select string_agg(n::text, ' ') from public.notifications n),
                   (select string_agg(h::text, ' ') from public.worker_heartbeats h))",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!everything.contains(key), "the key leaked: {everything}");
        assert!(!everything.contains(KEY), "the key leaked: {everything}");
        let logs: String = world
            .sql
            .query_one(
                "select coalesce(string_agg(l::text, ' '), '') from public.api_logs l",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!logs.is_empty());
        assert!(
            !logs.contains("secret birthday"),
            "the prompt reached api_logs: {logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_without_credits_gets_a_refusal_and_venice_is_never_called() {
    let w = world().await;
    let broke = w.user(0).await;
    let job = w
        .job(broke, "a free lunch", json!({"width": 16, "height": 16}))
        .await;
    let report = w.run(json!({})).await;
    assert_eq!(report["claimed"], 0, "refused at the claim: {report}");
    let (status, _, error, dead) = w.state(job).await;
    assert_eq!((status.as_str(), dead), ("failed", true));
    assert_eq!(
        error.as_deref(),
        Some("insufficient credits: 1 needed, 0 left")
    );
    assert!(w.venice.requests().is_empty());
    assert_eq!(w.credits(broke).await, 0, "never negative");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cron_trigger_runs_the_same_work() {
    let w = world().await;
    let user = w.user(2).await;
    let job = w
        .job(
            user,
            "a clock tower",
            json!({"width": 24, "height": 24, "format": "png"}),
        )
        .await;
    w.app.fire_cron("ai-dispatch").await.unwrap();
    assert_eq!(w.state(job).await.0, "succeeded");
    let assets = w.assets(job).await;
    assert_eq!(assets.len(), 1);
    assert_eq!(w.stored(&assets[0].1).unwrap(), w.venice.served()[0][0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_make_each_image_once_and_never_overdraw_credits() {
    let w = world().await;
    let user = w.user(3).await;
    let mut jobs = Vec::new();
    for n in 0..6 {
        jobs.push(
            w.job(
                user,
                &format!("tile number {n}"),
                json!({"width": 8, "height": 8, "format": "png"}),
            )
            .await,
        );
    }
    let (a, b, c, d) = tokio::join!(
        w.run(json!({})),
        w.run(json!({})),
        w.run(json!({})),
        w.run(json!({}))
    );
    let reports = [a, b, c, d];
    let claimed: i64 = reports.iter().map(|r| r["claimed"].as_i64().unwrap()).sum();
    assert_eq!(
        claimed, 3,
        "three paid jobs claimed once in all: {reports:?}"
    );

    let mut statuses = Vec::new();
    for job in &jobs {
        statuses.push(w.state(*job).await);
    }
    let succeeded = statuses.iter().filter(|s| s.0 == "succeeded").count();
    let refused: Vec<_> = statuses.iter().filter(|s| s.0 == "failed").collect();
    assert_eq!((succeeded, refused.len()), (3, 3), "{statuses:?}");
    assert!(
        refused
            .iter()
            .all(|s| s.2.as_deref().unwrap().starts_with("insufficient credits"))
    );
    assert_eq!(w.credits(user).await, 0, "never negative");
    assert_eq!(w.venice.served().len(), 3, "one Venice call per paid job");
    assert_eq!(w.s3.keys("generations").len(), 3);
}

//! ai-dispatch's Replicate half (issue 15) against the fake Replicate
//! (`outpost_test_kit::fakes::replicate`), which sends signed Standard
//! Webhooks to the running app's real `/webhooks/replicate`, and a real S3
//! server: generations from row to copied outputs, webhooks repeated,
//! reordered and lost (polling recovers), the token pool under 8
//! concurrent workers with one token throttled and one revoked, the
//! 600-per-minute budget, credits under concurrent dispatch and refunds,
//! and no token anywhere it could leak.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use outpost_test_kit::fakes::replicate::{Delivery, FakeReplicate, OutputFile, TokenAnswer};
use outpost_test_kit::{S3Server, TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

const GOOD_1: &str = "r8_good_token_one_0123456789";
const GOOD_2: &str = "r8_good_token_two_0123456789";
const THROTTLED: &str = "r8_throttled_token_0123456789";
const REVOKED: &str = "r8_revoked_token_0123456789";

struct Studio {
    _db: TestDb,
    sql: Client,
    s3: S3Server,
    fake: FakeReplicate,
    app: TestApp,
    user: Uuid,
}

/// A studio with `tokens` in the pool (and the fake), one user with
/// `credits`, and an admin.
async fn studio(tokens: &[(&str, TokenAnswer)], credits: i32) -> Studio {
    require_wasm("ai-dispatch").unwrap();
    require_wasm("webhook-receiver").unwrap();
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let s3 = S3Server::start().await.unwrap();
    let fake = FakeReplicate::start().await.unwrap();
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["ai-dispatch", "webhook-receiver", "status"])
        .variable("replicate_api_url", fake.url())
        .variable("replicate_files_url", fake.url())
        .variable(
            "replicate_webhook_url",
            "https://outpost.example.test/webhooks/replicate",
        )
        .variable("replicate_webhook_secret", fake.webhook_secret())
        .variable(
            "replicate_lora_trainer",
            "ostris/flux-dev-lora-trainer:trainer-v1",
        )
        .variable("replicate_lora_owner", "outpost-studio")
        .variable("media_store_url", s3.url())
        .variable("media_store_access_key", s3.access_key())
        .variable("media_store_secret_key", s3.secret_key())
        .start()
        .await
        .unwrap();
    fake.route_webhooks_to(app.url());
    for (i, (token, answer)) in tokens.iter().enumerate() {
        fake.set_token(token, answer.clone());
        sql.execute(
            "insert into public.replicate_tokens (label, token) values ($1, $2)",
            &[&format!("pool-{i}"), token],
        )
        .await
        .unwrap();
    }
    let user = Uuid::new_v4();
    let admin = Uuid::new_v4();
    for (id, email) in [(user, "artist"), (admin, "admin")] {
        sql.execute(
            "insert into auth.users (id, email) values ($1, $2)",
            &[&id, &format!("{email}-{id}@example.test")],
        )
        .await
        .unwrap();
    }
    sql.execute(
        "update public.users set credits = $2 where id = $1",
        &[&user, &credits],
    )
    .await
    .unwrap();
    sql.execute(
        "update public.users set role = 'admin' where id = $1",
        &[&admin],
    )
    .await
    .unwrap();
    Studio {
        _db: db,
        sql,
        s3,
        fake,
        app,
        user,
    }
}

impl Studio {
    async fn generation(&self, model: &str, prompt: &str) -> Uuid {
        self.sql
            .query_one(
                "insert into public.generations (user_id, model_id, prompt, input)
                 values ($1, $2, $3, '{\"aspect_ratio\": \"1:1\"}') returning id",
                &[&self.user, &model, &prompt],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn run(&self, settings: Value) -> Value {
        run_job(self.app.url(), settings).await
    }

    /// `(status, prediction id, error)`.
    async fn row(&self, id: Uuid) -> (String, Option<String>, Option<String>) {
        let row = self
            .sql
            .query_one(
                "select status, replicate_prediction_id, coalesce(error, last_error) from public.generations where id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    }

    async fn prediction_of(&self, id: Uuid) -> String {
        self.row(id).await.1.expect("a prediction id")
    }

    async fn credits(&self) -> i32 {
        self.sql
            .query_one(
                "select credits from public.users where id = $1",
                &[&self.user],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn count(&self, query: &str) -> i64 {
        self.sql.query_one(query, &[]).await.unwrap().get(0)
    }
}

async fn run_job(base: &str, settings: Value) -> Value {
    outpost_test_kit::run_job(base, "ai-dispatch", Some(&json!({ "replicate": settings })))
        .await
        .unwrap()["report"]["replicate"]
        .clone()
}

fn only(parts: &[&str]) -> Value {
    json!({ "only": parts, "poll_after_seconds": 3600 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_goes_from_row_to_copied_outputs_through_real_webhooks() {
    let s = studio(&[(GOOD_1, TokenAnswer::Valid)], 5).await;
    let id = s
        .generation("black-forest-labs/flux-schnell", "a red fox in snow")
        .await;

    let report = s.run(only(&["dispatch"])).await;
    assert_eq!(report["dispatch"]["created"], 1, "{report}");
    let (status, prediction, _) = s.row(id).await;
    assert_eq!(status, "processing");
    let prediction = prediction.unwrap();
    let creations = s.fake.creations();
    assert_eq!(creations.len(), 1);
    let creation = &creations[0];
    assert_eq!(creation.id, prediction);
    assert_eq!(
        creation.path,
        "/v1/models/black-forest-labs/flux-schnell/predictions"
    );
    assert_eq!(creation.body["input"]["prompt"], "a red fox in snow");
    assert_eq!(creation.body["input"]["aspect_ratio"], "1:1");
    assert_eq!(
        creation.body["webhook"],
        "https://outpost.example.test/webhooks/replicate"
    );
    assert_eq!(
        creation.body["webhook_events_filter"],
        json!(["start", "completed"])
    );
    assert_eq!(s.credits().await, 4, "charged once at dispatch");
    let status: Value = reqwest::get(format!("{}/status", s.app.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["replicate"]["generations_processing"], 1, "{status}");
    assert_eq!(status["replicate"]["tokens"]["active"], 1, "{status}");
    assert!(!status.to_string().contains(GOOD_1), "no token in /status");

    let files = vec![
        OutputFile::png("out-0.png", 70_000, 1),
        OutputFile::png("out-1.png", 1_500, 2),
    ];
    s.fake.start_prediction(&prediction).await;
    s.fake.succeed(&prediction, files.clone(), 3.5).await;
    let delivered = s.fake.delivered();
    assert_eq!(delivered.len(), 2, "start and completed");
    assert!(
        delivered.iter().all(|d| d.answer == Some(200)),
        "{delivered:?}"
    );

    let report = s.run(only(&["webhooks"])).await;
    assert_eq!(report["webhooks"]["applied"], 2, "{report}");
    let row = s
        .sql
        .query_one(
            "select status, output_urls, output_thumbs, cost_usd::text, completed_at is not null,
                    processing_time_ms is not null, started_at is not null
               from public.generations where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    let urls: Vec<String> = row.get(1);
    assert_eq!(
        urls,
        vec![
            format!("{}/generations/{}/{id}/0.png", s.s3.url(), s.user),
            format!("{}/generations/{}/{id}/1.png", s.s3.url(), s.user),
        ]
    );
    assert!(
        row.get::<_, Vec<String>>(2).is_empty(),
        "no thumbnails (see THUMBNAILS)"
    );
    assert_eq!(row.get::<_, String>(3), "0.003413", "3.5 s at $0.000975/s");
    assert!(row.get::<_, bool>(4) && row.get::<_, bool>(5) && row.get::<_, bool>(6));
    for (i, file) in files.iter().enumerate() {
        let stored =
            std::fs::read(s.s3.object_file("generations", &format!("{}/{id}/{i}.png", s.user)))
                .unwrap();
        assert_eq!(
            stored,
            file.bytes.to_vec(),
            "output {i} copied byte for byte"
        );
    }
    assert_eq!(s.credits().await, 4, "settled, not refunded");
    assert_eq!(
        s.count("select count(*) from public.credit_charges where settled_at is not null and refunded_at is null").await,
        1
    );
    assert_eq!(
        s.count("select count(*) from public.notifications where type = 'generation_succeeded'")
            .await,
        1
    );
    let log = s
        .sql
        .query_one(
            "select method, path, status_code, provider, user_id, model, duration_ms >= 0 from public.api_logs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(log.get::<_, String>(0), "POST");
    assert_eq!(
        log.get::<_, String>(1),
        "/v1/models/black-forest-labs/flux-schnell/predictions"
    );
    assert_eq!(log.get::<_, i32>(2), 201);
    assert_eq!(log.get::<_, String>(3), "replicate");
    assert_eq!(log.get::<_, Uuid>(4), s.user);
    assert_eq!(log.get::<_, String>(5), "black-forest-labs/flux-schnell");
    assert_eq!(
        s.count("select count(*) from public.worker_heartbeats where worker_id = 'ai-dispatch' and detail ->> 'outcome' = 'ok'").await,
        1
    );

    // A repeat of the finished prediction's webhook changes nothing.
    s.fake.cancel(&prediction).await;
    let report = s.run(only(&["webhooks"])).await;
    assert_eq!(report["webhooks"]["no_change"], 1, "{report}");
    assert_eq!(s.row(id).await.0, "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_repeated_reordered_and_lost_end_the_same_and_polling_recovers() {
    let s = studio(&[(GOOD_1, TokenAnswer::Valid)], 10).await;
    let reordered = s.generation("owner/model:v1", "one").await;
    let lost = s.generation("owner/model:v1", "two").await;
    let failed = s.generation("owner/model:v1", "three").await;
    let report = s.run(only(&["dispatch"])).await;
    assert_eq!(report["dispatch"]["created"], 3, "{report}");
    assert_eq!(s.credits().await, 7);

    // Reordered and repeated: completed arrives before start, both twice.
    s.fake.set_delivery(Delivery {
        hold: true,
        ..Delivery::default()
    });
    let p = s.prediction_of(reordered).await;
    s.fake.start_prediction(&p).await;
    s.fake
        .succeed(&p, vec![OutputFile::png("out-0.png", 4_000, 7)], 2.0)
        .await;
    assert_eq!(s.fake.held().len(), 2);
    s.fake.release_held(&[1, 0, 1, 0]).await;
    assert_eq!(
        s.count("select count(*) from public.ingested_items where platform = 'replicate'")
            .await,
        2,
        "the receiver keeps one item per webhook-id"
    );

    // Lost: the webhook never comes.
    s.fake.set_delivery(Delivery {
        drop: true,
        ..Delivery::default()
    });
    let q = s.prediction_of(lost).await;
    s.fake
        .succeed(&q, vec![OutputFile::png("out-0.png", 9_000, 9)], 1.0)
        .await;

    // Failed, delivered three times.
    s.fake.set_delivery(Delivery {
        repeat: 2,
        ..Delivery::default()
    });
    let r = s.prediction_of(failed).await;
    s.fake.fail(&r, "CUDA out of memory").await;

    let report = s.run(only(&["webhooks"])).await;
    assert_eq!(report["webhooks"]["applied"], 2, "{report}");
    assert_eq!(
        report["webhooks"]["no_change"], 1,
        "the late start: {report}"
    );
    assert_eq!(
        s.row(reordered).await.0,
        "succeeded",
        "a late start never overwrites succeeded"
    );
    assert_eq!(s.row(lost).await.0, "processing", "its webhook was lost");
    let (status, _, error) = s.row(failed).await;
    assert_eq!(status, "failed");
    assert_eq!(error.as_deref(), Some("CUDA out of memory"));
    assert_eq!(s.credits().await, 8, "the failure's credit came back, once");
    assert_eq!(
        s.count("select count(*) from public.notifications where type = 'generation_failed'")
            .await,
        1
    );

    // Polling finds the lost one (no news for 0 s).
    let report = s
        .run(json!({ "only": ["polls"], "poll_after_seconds": 0 }))
        .await;
    assert_eq!(report["polls"]["applied"], 1, "{report}");
    assert_eq!(s.row(lost).await.0, "succeeded");
    let stored =
        std::fs::read(s.s3.object_file("generations", &format!("{}/{lost}/0.png", s.user)))
            .unwrap();
    assert_eq!(stored.len(), 9_000);
    assert!(
        s.count("select count(*) from public.api_logs where method = 'GET' and path like '/v1/predictions/%' and status_code = 200").await
            >= 1
    );
    // Polling again finds nothing left processing.
    let report = s
        .run(json!({ "only": ["polls"], "poll_after_seconds": 0 }))
        .await;
    assert!(report["polls"].as_object().unwrap().is_empty(), "{report}");
    assert_eq!(s.credits().await, 8, "successes are settled, not refunded");

    // A prediction whose own token was retired is asked with the pool's
    // next, which may belong to another Replicate account: its 404 proves
    // nothing, and the generation keeps waiting for news.
    let elsewhere: Uuid = s
        .sql
        .query_one(
            "insert into public.generations (user_id, model_id, prompt, status, replicate_prediction_id,
                                             replicate_token_id, polled_at)
             values ($1, 'owner/model', 'elsewhere', 'processing', 'pred-of-another-account', $2,
                     now() - interval '1 hour') returning id",
            &[&s.user, &Uuid::new_v4()],
        )
        .await
        .unwrap()
        .get(0);
    let report = s
        .run(json!({ "only": ["polls"], "poll_after_seconds": 0 }))
        .await;
    assert_eq!(report["polls"]["not_answered"], 1, "{report}");
    assert_eq!(s.row(elsewhere).await.0, "processing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_deleted_before_the_copy_fail_the_generation_and_refund_it() {
    let s = studio(&[(GOOD_1, TokenAnswer::Valid)], 1).await;
    let id = s.generation("owner/model:v1", "late").await;
    s.run(only(&["dispatch"])).await;
    assert_eq!(s.credits().await, 0);
    s.fake.set_file_lifetime(Duration::from_millis(1));
    let p = s.prediction_of(id).await;
    s.fake
        .succeed(&p, vec![OutputFile::png("out-0.png", 1_000, 3)], 1.0)
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.run(only(&["webhooks"])).await;
    let (status, _, error) = s.row(id).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("deleted"), "the reason is kept");
    assert_eq!(s.credits().await, 1, "refunded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_outages_at_creation() {
    let s = studio(&[(GOOD_1, TokenAnswer::Valid)], 5).await;
    let refused = s.generation("owner/model:v1", "bad steps").await;
    s.fake
        .fail_next_creations(1, 422, "- input.steps: Must be less than or equal to 50");
    s.run(json!({ "only": ["dispatch"], "max_generations": 1 }))
        .await;
    let (status, _, error) = s.row(refused).await;
    assert_eq!(status, "failed");
    assert!(
        error.unwrap().contains("Must be less than or equal to 50"),
        "Replicate's words"
    );
    assert_eq!(s.credits().await, 5, "refunded at once");

    let outage = s.generation("owner/model:v1", "later").await;
    s.fake.fail_next_creations(1, 503, "upstream unavailable");
    s.run(only(&["dispatch"])).await;
    let (status, prediction, error) = s.row(outage).await;
    assert_eq!(status, "pending", "a 5xx is retried later");
    assert!(prediction.is_none());
    assert!(error.unwrap().contains("HTTP 503"));
    s.sql
        .execute(
            "update public.generations set next_attempt_at = now() where id = $1",
            &[&outage],
        )
        .await
        .unwrap();
    s.run(only(&["dispatch"])).await;
    assert_eq!(s.row(outage).await.0, "processing", "and then created");
    assert_eq!(s.credits().await, 4, "charged once across both attempts");

    let bad = s.generation("not a model id", "x").await;
    s.run(only(&["dispatch"])).await;
    let (status, _, error) = s.row(bad).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("is not owner/name"));
    assert_eq!(s.credits().await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_pool_rotates_under_8_workers_past_a_throttled_and_a_revoked_token() {
    let tokens = [
        (GOOD_1, TokenAnswer::Valid),
        (THROTTLED, TokenAnswer::Throttled(120)),
        (GOOD_2, TokenAnswer::Valid),
        (REVOKED, TokenAnswer::Revoked),
    ];
    let s = studio(&tokens, 40).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(s.generation("owner/model:v1", &format!("prompt {i}")).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs: Vec<_> = (0..8)
            .map(|_| {
                let url = s.app.url().to_string();
                tokio::spawn(async move {
                    run_job(&url, json!({ "only": ["dispatch"], "batch_size": 2 })).await
                })
            })
            .collect();
        for run in runs {
            run.await.unwrap();
        }
        let left = s
            .count("select count(*) from public.generations where status <> 'processing'")
            .await;
        if left == 0 || Instant::now() > deadline {
            break;
        }
        // Deferred ones (every token tried was busy) wait a few seconds.
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.sql
            .execute(
                "update public.generations set next_attempt_at = now() where status = 'pending'",
                &[],
            )
            .await
            .unwrap();
    }
    let predictions: Vec<String> = s
        .sql
        .query(
            "select replicate_prediction_id from public.generations where status = 'processing'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        predictions.len(),
        40,
        "every generation was created, none lost"
    );
    let unique: std::collections::BTreeSet<_> = predictions.iter().collect();
    assert_eq!(unique.len(), 40, "one prediction each");
    let creations = s.fake.creations();
    assert_eq!(
        creations.len(),
        40,
        "Replicate saw exactly one creation per generation"
    );
    assert!(
        creations
            .iter()
            .all(|c| c.token == GOOD_1 || c.token == GOOD_2)
    );
    assert!(
        creations.iter().any(|c| c.token == GOOD_1) && creations.iter().any(|c| c.token == GOOD_2)
    );
    let refused = s.fake.refused();
    let throttled = refused.iter().filter(|(t, _)| t == THROTTLED).count();
    let revoked = refused.iter().filter(|(t, _)| t == REVOKED).count();
    assert!(
        (1..=8).contains(&throttled),
        "the throttled token cooled down after its 429s: {throttled}"
    );
    assert!(
        (1..=8).contains(&revoked),
        "the revoked token was retired after its 401s: {revoked}"
    );
    let row = s
        .sql
        .query_one(
            "select (select cooldown_until > now() + interval '60 seconds' from public.replicate_tokens where token = $1),
                    (select is_active from public.replicate_tokens where token = $2)",
            &[&THROTTLED, &REVOKED],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "cooling down for its Retry-After");
    assert!(!row.get::<_, bool>(1), "deactivated");
    assert_eq!(
        s.count("select count(*) from public.notifications where type = 'replicate_token_refused'")
            .await,
        1,
        "the admin is told once"
    );
    assert_eq!(s.credits().await, 0, "charged once each");
    assert_eq!(
        s.count("select count(*) from public.credit_charges").await,
        40
    );

    // No token anywhere a person or a log could read it.
    for token in [GOOD_1, GOOD_2, THROTTLED, REVOKED] {
        let leaks = s
            .count(&format!(
                "select (select count(*) from public.api_logs a where a::text like '%{token}%')
                      + (select count(*) from public.queue_events e where e::text like '%{token}%')
                      + (select count(*) from public.notifications n where n::text like '%{token}%')
                      + (select count(*) from public.generations g where g::text like '%{token}%')
                      + (select count(*) from public.worker_heartbeats h where h::text like '%{token}%')
                      + (select count(*) from public.replicate_tokens t where t.last_error like '%{token}%')"
            ))
            .await;
        assert_eq!(leaks, 0, "a token leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_more_than_600_creations_a_minute_across_workers() {
    let s = studio(
        &[(GOOD_1, TokenAnswer::Valid), (GOOD_2, TokenAnswer::Valid)],
        700,
    )
    .await;
    s.fake.set_creation_limit(600);
    s.sql
        .execute(
            "insert into public.generations (user_id, model_id, prompt)
             select $1, 'owner/model:v1', 'p' || i from generate_series(1, 650) i",
            &[&s.user],
        )
        .await
        .unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = s.app.url().to_string();
            tokio::spawn(async move {
                run_job(
                    &url,
                    json!({ "only": ["dispatch"], "batch_size": 20, "run_seconds": 50 }),
                )
                .await
            })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    assert_eq!(s.fake.creations().len(), 600, "exactly the budget");
    assert!(
        s.fake.refused().is_empty(),
        "Replicate never had to refuse one"
    );
    assert_eq!(
        s.count("select count(*) from public.generations where status = 'processing'")
            .await,
        600
    );
    assert_eq!(
        s.count(
            "select count(*) from public.generations where status = 'pending'
               and next_attempt_at > now() + interval '5 seconds' and attempts = 0"
        )
        .await,
        50,
        "the rest wait for the window, without using an attempt"
    );
    assert!(
        s.count("select count(*) from public.queue_events where event = 'deferred' and detail ->> 'reason' like '%budget%'").await
            >= 50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credits_never_go_negative_under_concurrent_dispatch_and_failures_are_refunded() {
    let s = studio(
        &[(GOOD_1, TokenAnswer::Valid), (GOOD_2, TokenAnswer::Valid)],
        5,
    )
    .await;
    for i in 0..12 {
        s.generation("owner/model:v1", &format!("p{i}")).await;
    }
    s.fake
        .fail_next_creations(2, 422, "- input: NSFW content detected");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = s.app.url().to_string();
            tokio::spawn(async move {
                run_job(&url, json!({ "only": ["dispatch"], "batch_size": 3 })).await
            })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    let credits = s.credits().await;
    assert!(credits >= 0);
    let processing = s
        .count("select count(*) from public.generations where status = 'processing'")
        .await;
    let refused = s
        .count("select count(*) from public.generations where status = 'failed' and error like '%NSFW%'")
        .await;
    let broke = s
        .count("select count(*) from public.generations where status = 'failed' and error like 'insufficient credits%'")
        .await;
    assert_eq!(refused, 2, "both refusals failed at once");
    assert_eq!(
        processing + refused + broke,
        12,
        "nothing lost, nothing left waiting"
    );
    assert_eq!(
        s.count("select count(*) from public.credit_charges where refunded_at is not null")
            .await,
        2,
        "the refusals were refunded"
    );
    // Credits conserved: what is left plus what is still held equals the 5 given.
    let held = s
        .count("select count(*) from public.credit_charges where refunded_at is null")
        .await;
    assert_eq!(i64::from(credits) + held, 5);
    assert_eq!(held, processing);
    assert_eq!(
        s.count("select count(*) from public.credit_charges c join public.generations g on g.id = c.item_id
                  where g.error like 'insufficient credits%'")
            .await,
        0,
        "a refusal for want of credits charges nothing"
    );

    // A prediction that fails at Replicate gives its credit back.
    let p: String = s
        .sql
        .query_one("select replicate_prediction_id from public.generations where status = 'processing' limit 1", &[])
        .await
        .unwrap()
        .get(0);
    s.fake.fail(&p, "model crashed").await;
    s.run(only(&["webhooks"])).await;
    assert_eq!(s.credits().await, credits + 1);
}

/// A pending LoRA of the studio's user with two of the owner's images in
/// the store, and a third row naming another user's folder that must never
/// be used.
async fn lora_with_images(s: &Studio) -> Uuid {
    use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
    let other = Uuid::new_v4();
    s.sql
        .execute(
            "insert into auth.users (id, email) values ($1, $2)",
            &[&other, &format!("{other}@example.test")],
        )
        .await
        .unwrap();
    let lora: Uuid = s
        .sql
        .query_one(
            "insert into public.user_loras (user_id, name, trigger_word, training_params)
             values ($1, 'my face', 'TOK', '{\"steps\": 1000}') returning id",
            &[&s.user],
        )
        .await
        .unwrap()
        .get(0);
    // Two images of the owner in the store; a third row names another
    // user's folder and must not be used.
    let bucket = Bucket::new(
        s.s3.url().parse().unwrap(),
        UrlStyle::Path,
        "lora-training-images",
        "us-east-1",
    )
    .unwrap();
    let credentials = Credentials::new(s.s3.access_key(), s.s3.secret_key());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (path, bytes) in [
        (format!("{}/a.png", s.user), b"\x89PNG-image-a".to_vec()),
        (format!("{}/b.png", s.user), b"\x89PNG-image-b".to_vec()),
        (format!("{other}/secret.png"), b"\x89PNG-not-yours".to_vec()),
    ] {
        let url = bucket
            .put_object(Some(&credentials), &path)
            .sign(Duration::from_secs(60));
        client
            .put(url.as_str())
            .body(bytes)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }
    for (path, caption) in [
        (format!("{}/a.png", s.user), "a photo of TOK smiling"),
        (format!("{}/b.png", s.user), "a photo of TOK outdoors"),
        (format!("{other}/secret.png"), "someone else"),
    ] {
        s.sql
            .execute(
                "insert into public.lora_training_images (lora_id, user_id, storage_path, caption) values ($1, $2, $3, $4)",
                &[&lora, &s.user, &path, &caption],
            )
            .await
            .unwrap();
    }
    lora
}

/// The Replicate training id of a started LoRA.
async fn training_of(s: &Studio, lora: Uuid) -> String {
    s.sql
        .query_one(
            "select replicate_training_id from public.user_loras where id = $1",
            &[&lora],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lora_trains_from_the_owners_images_and_its_generation_runs_on_it() {
    let s = studio(&[(GOOD_1, TokenAnswer::Valid)], 3).await;
    let lora = lora_with_images(&s).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let report = s.run(only(&["trainings"])).await;
    assert_eq!(report["trainings"]["started"], 1, "{report}");
    let (status, training_id): (String, String) = {
        let row = s
            .sql
            .query_one(
                "select status, replicate_training_id from public.user_loras where id = $1",
                &[&lora],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(status, "training");
    let training = s.fake.training(&training_id).unwrap();
    assert_eq!(training["model"], "ostris/flux-dev-lora-trainer");
    assert_eq!(training["version"], "trainer-v1");
    assert_eq!(training["input"]["trigger_word"], "TOK");
    assert_eq!(training["input"]["steps"], 1000);
    let destination = training["destination"].as_str().unwrap().to_string();
    assert!(destination.starts_with("outpost-studio/lora-"));
    // Replicate fetches the zip through the presigned URL.
    let zip = client
        .get(training["input"]["input_images"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&zip);
    assert!(zip.starts_with(b"PK\x03\x04"));
    assert!(text.contains("PNG-image-a") && text.contains("PNG-image-b"));
    assert!(text.contains("a photo of TOK smiling"));
    assert!(
        !text.contains("not-yours"),
        "another user's image is never zipped"
    );

    let weights = OutputFile {
        name: "trained_model.tar".into(),
        content_type: "application/x-tar".into(),
        bytes: bytes::Bytes::from_static(b"lora weights"),
    };
    s.fake.succeed_training(&training_id, weights).await;
    let report = s.run(only(&["webhooks"])).await;
    assert_eq!(report["webhooks"]["applied"], 1, "{report}");
    let row = s
        .sql
        .query_one(
            "select status, replicate_version, storage_path from public.user_loras where id = $1",
            &[&lora],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    let version: String = row.get(1);
    assert!(version.starts_with(&format!("{destination}:")));
    assert_eq!(
        row.get::<_, String>(2),
        format!("lora-models/{}/{lora}/weights.tar", s.user)
    );
    assert_eq!(
        std::fs::read(s.s3.object_file("lora-models", &format!("{}/{lora}/weights.tar", s.user)))
            .unwrap(),
        b"lora weights"
    );
    assert_eq!(
        s.count("select count(*) from public.notifications where type = 'lora_succeeded'")
            .await,
        1
    );

    // A generation with the LoRA runs on the trained version, trigger word added.
    let generation: Uuid = s
        .sql
        .query_one(
            "insert into public.generations (user_id, model_id, prompt, lora_id)
             values ($1, 'black-forest-labs/flux-dev', 'on a beach', $2) returning id",
            &[&s.user, &lora],
        )
        .await
        .unwrap()
        .get(0);
    s.run(only(&["dispatch"])).await;
    assert_eq!(s.row(generation).await.0, "processing");
    let creation = s.fake.creations().pop().unwrap();
    assert_eq!(creation.path, "/v1/predictions");
    assert_eq!(
        creation.body["version"],
        version.rsplit_once(':').unwrap().1
    );
    assert_eq!(creation.body["input"]["prompt"], "TOK on a beach");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_whose_webhook_is_lost_is_polled_and_its_weights_copied() {
    let s = studio(&[(GOOD_1, TokenAnswer::Valid)], 3).await;
    let lora = lora_with_images(&s).await;
    let report = s.run(only(&["trainings"])).await;
    assert_eq!(report["trainings"]["started"], 1, "{report}");
    let training_id = training_of(&s, lora).await;
    let status_of = |lora: Uuid| {
        let sql = &s.sql;
        async move {
            sql.query_one(
                "select status, coalesce(error, '') from public.user_loras where id = $1",
                &[&lora],
            )
            .await
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .unwrap()
        }
    };

    // Replicate finishes it, and its webhook is lost.
    s.fake.set_delivery(Delivery {
        drop: true,
        ..Delivery::default()
    });
    let weights = OutputFile {
        name: "trained_model.tar".into(),
        content_type: "application/x-tar".into(),
        bytes: bytes::Bytes::from_static(b"polled lora weights"),
    };
    s.fake.succeed_training(&training_id, weights).await;
    let report = s.run(only(&["webhooks"])).await;
    assert!(
        report["webhooks"].as_object().unwrap().is_empty(),
        "{report}"
    );
    assert_eq!(status_of(lora).await.0, "training", "no webhook came");

    // Not polled before its time without news ...
    let report = s.run(only(&["polls"])).await;
    assert!(
        report["training_polls"].as_object().unwrap().is_empty(),
        "{report}"
    );
    // ... and then polled, applied as its webhook would have been.
    let report = s
        .run(json!({ "only": ["polls"], "poll_after_seconds": 0 }))
        .await;
    assert_eq!(report["training_polls"]["applied"], 1, "{report}");
    assert_eq!(status_of(lora).await.0, "succeeded");
    assert_eq!(
        std::fs::read(s.s3.object_file("lora-models", &format!("{}/{lora}/weights.tar", s.user)))
            .unwrap(),
        b"polled lora weights"
    );
    assert_eq!(
        s.count("select count(*) from public.notifications where type = 'lora_succeeded'")
            .await,
        1
    );
    assert_eq!(
        s.count(&format!(
            "select count(*) from public.api_logs where method = 'GET' and path = '/v1/trainings/{training_id}' and status_code = 200"
        ))
        .await,
        1,
        "asked once, with the token that made it"
    );
    let report = s
        .run(json!({ "only": ["polls"], "poll_after_seconds": 0 }))
        .await;
    assert!(
        report["training_polls"].as_object().unwrap().is_empty(),
        "a finished training is not polled again: {report}"
    );

    // Replicate does not know a training: asked with the token that made it,
    // it fails and its owner is told; asked with another account's token
    // (its own retired), a 404 proves nothing and it keeps running.
    let good_token: Uuid = s
        .sql
        .query_one(
            "select id from public.replicate_tokens where is_active",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let forgotten = Uuid::new_v4();
    let elsewhere = Uuid::new_v4();
    for (id, training, token) in [
        (forgotten, "gone-training-1", good_token),
        (elsewhere, "other-account-training", Uuid::new_v4()),
    ] {
        s.sql
            .execute(
                "insert into public.user_loras (id, user_id, name, status, replicate_training_id,
                                                replicate_token_id, training_polled_at)
                 values ($1, $2, 'lost one', 'training', $3, $4, now() - interval '2 hours')",
                &[&id, &s.user, &training, &token],
            )
            .await
            .unwrap();
    }
    let report = s.run(only(&["polls"])).await;
    assert_eq!(report["training_polls"]["lost"], 1, "{report}");
    assert_eq!(report["training_polls"]["not_answered"], 1, "{report}");
    assert_eq!(
        status_of(forgotten).await,
        (
            "failed".to_string(),
            "Replicate has no such training (HTTP 404 when polled)".to_string()
        )
    );
    assert_eq!(status_of(elsewhere).await.0, "training");
    assert_eq!(
        s.count("select count(*) from public.notifications where type = 'lora_failed'")
            .await,
        1
    );
    assert_eq!(
        s.count(&format!(
            "select count(*) from public.api_logs a where a::text like '%{GOOD_1}%'"
        ))
        .await,
        0,
        "no token in api_logs"
    );
}

/// Posts `body` to the app's `/webhooks/replicate` as Replicate would,
/// signed with the fake's secret but with the given `webhook-timestamp`.
async fn send_signed_webhook(s: &Studio, webhook_id: &str, timestamp: i64, body: &Value) -> u16 {
    use base64::Engine as _;
    let secret = s.fake.webhook_secret();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .unwrap();
    let (timestamp, body) = (timestamp.to_string(), body.to_string());
    let signature =
        outpost_test_kit::fakes::replicate::sign(&key, webhook_id, &timestamp, body.as_bytes());
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/webhooks/replicate", s.app.url()))
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", &timestamp)
        .header("webhook-signature", format!("v1,{signature}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_webhooks_are_applied_in_webhook_timestamp_order_not_arrival_order() {
    let s = studio(&[(GOOD_1, TokenAnswer::Valid)], 5).await;
    let id = s.generation("owner/model:v1", "in order").await;
    let report = s.run(only(&["dispatch"])).await;
    assert_eq!(report["dispatch"]["created"], 1, "{report}");

    // The fake's two webhooks are held, then sent by hand: `completed`
    // (sent 5 s ago) arrives first, `start` (sent 40 s ago) after it.
    s.fake.set_delivery(Delivery {
        hold: true,
        ..Delivery::default()
    });
    let p = s.prediction_of(id).await;
    s.fake.start_prediction(&p).await;
    s.fake
        .succeed(&p, vec![OutputFile::png("out-0.png", 3_000, 5)], 1.0)
        .await;
    let held = s.fake.held();
    assert_eq!(held.len(), 2);
    assert_eq!(held[1].body["status"], "succeeded");
    let now = chrono::Utc::now().timestamp();
    let (start_sent, completed_sent) = (now - 40, now - 5);
    assert_eq!(
        send_signed_webhook(&s, &held[1].webhook_id, completed_sent, &held[1].body).await,
        200
    );
    assert_eq!(
        send_signed_webhook(&s, &held[0].webhook_id, start_sent, &held[0].body).await,
        200
    );

    // The receiver kept each verified webhook-timestamp with its item.
    for (webhook, sent) in [(&held[0], start_sent), (&held[1], completed_sent)] {
        let kept: Option<i64> = s
            .sql
            .query_one(
                "select (payload ->> 'webhook_timestamp')::bigint from public.ingested_items
                  where platform = 'replicate' and external_id = $1",
                &[&webhook.webhook_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, Some(sent), "{}", webhook.webhook_id);
    }

    // In arrival order the start would come after `succeeded` and change
    // nothing (see the reordered test above); in the order sent, both apply.
    let report = s.run(only(&["webhooks"])).await;
    assert_eq!(report["webhooks"]["applied"], 2, "{report}");
    assert!(report["webhooks"].get("no_change").is_none(), "{report}");
    assert_eq!(s.row(id).await.0, "succeeded");

    // Applied in the order sent: the start's item finished before the
    // completed one's, although it arrived second.
    let order: Vec<String> = s
        .sql
        .query(
            "select i.external_id from public.queue_events e
               join public.ingested_items i on i.id = e.item_id
              where e.queue = 'ingested_items' and e.event = 'success' and i.platform = 'replicate'
              order by e.id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        order,
        vec![held[0].webhook_id.clone(), held[1].webhook_id.clone()],
        "start (sent first) applied before completed (arrived first)"
    );
}

//! The queue contract under real concurrency (`migrations/CONTRACT.md`):
//! many sessions claiming at once never share an item and leave none behind;
//! an expired lease is retaken with a newer fencing token and the old token
//! can neither complete nor fail; the last failure dead-letters with its
//! error. Also the two other counters that must hold under concurrency: the
//! Replicate token pool's round robin and the `ai_text_runs` daily limit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail loudly by design

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use outpost_test_kit::TestDb;
use serde_json::Value;
use tokio_postgres::Client;

/// A user to own queue items (auth.users insert -> public.users by trigger).
async fn create_user(client: &Client) -> uuid::Uuid {
    outpost_test_kit::create_user(client).await.unwrap()
}

async fn call(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Value {
    client.query_one(sql, params).await.unwrap().get(0)
}

async fn claim_posts(
    client: &Client,
    worker: &str,
    lease_seconds: i32,
    max: i32,
    now: &str,
) -> Vec<Value> {
    let claimed = call(
        client,
        "select public.claim_next_scheduled_posts($1, $2, $3, $4::text::timestamptz)",
        &[&worker, &lease_seconds, &max, &now],
    )
    .await;
    claimed.as_array().cloned().unwrap_or_default()
}

fn token(item: &Value) -> i64 {
    item["lease_token"]
        .as_i64()
        .expect("every claimed item carries its lease_token")
}

fn id(item: &Value) -> uuid::Uuid {
    item["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_sessions_claim_ten_thousand_due_posts_exactly_once() {
    const ITEMS: i64 = 10_000;
    const SESSIONS: usize = 16;
    let db = TestDb::new().await.unwrap();
    let setup = db.connect().await.unwrap();
    let user = create_user(&setup).await;
    setup
        .execute(
            "insert into public.scheduled_posts (user_id, content, run_at)
             select $1, 'post ' || n, now() - interval '1 hour' + n * interval '1 ms'
               from generate_series(1, $2::bigint) as n",
            &[&user, &ITEMS],
        )
        .await
        .unwrap();
    // Not yet due and cancelled posts must never be claimed.
    setup
        .execute(
            "insert into public.scheduled_posts (user_id, content, run_at, status)
             values ($1, 'future', now() + interval '1 day', 'queued'),
                    ($1, 'cancelled', now() - interval '1 day', 'cancelled')",
            &[&user],
        )
        .await
        .unwrap();

    let started = Instant::now();
    let mut workers = Vec::new();
    for n in 0..SESSIONS {
        let client = db.connect().await.unwrap();
        workers.push(tokio::spawn(async move {
            let worker = format!("worker-{n}");
            let mut mine = Vec::new();
            loop {
                let now = chrono::Utc::now().to_rfc3339();
                let batch = claim_posts(&client, &worker, 300, 25, &now).await;
                if batch.is_empty() {
                    break;
                }
                mine.extend(batch.iter().map(|item| (id(item), token(item))));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();

    let ids: HashSet<_> = all.iter().map(|(id, _)| *id).collect();
    let tokens: HashSet<_> = all.iter().map(|(_, token)| *token).collect();
    println!(
        "claims: {} items by {SESSIONS} sessions in {:.2?} ({:.0} items/s)",
        all.len(),
        elapsed,
        all.len() as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        all.len() as i64,
        ITEMS,
        "every due item claimed, none twice"
    );
    assert_eq!(ids.len() as i64, ITEMS, "no item claimed twice");
    assert_eq!(
        tokens.len() as i64,
        ITEMS,
        "every claim has its own fencing token"
    );

    let row = setup
        .query_one(
            "select count(*) filter (where status = 'queued'),
                    count(*) filter (where status = 'posting' and attempt_count = 1),
                    count(*) filter (where status = 'cancelled')
               from public.scheduled_posts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        1,
        "only the future post is still waiting"
    );
    assert_eq!(row.get::<_, i64>(1), ITEMS, "each claimed once, attempt 1");
    assert_eq!(row.get::<_, i64>(2), 1, "the cancelled post was left alone");
    let claimed_events: i64 = setup
        .query_one(
            "select count(*) from public.post_events where type = 'claimed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(claimed_events, ITEMS, "one claimed event per claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_queue_shares_a_thousand_items_between_eight_sessions() {
    const ITEMS: i64 = 1_000;
    let db = TestDb::new().await.unwrap();
    let setup = db.connect().await.unwrap();
    let user = create_user(&setup).await;
    setup
        .batch_execute(&format!(
            "insert into public.ingested_items (source, platform, event_type, external_id, payload)
               select 'webhook', 'strava', 'activity:create', 'e' || n, jsonb_build_object('n', n)
                 from generate_series(1, {ITEMS}) as n;
             insert into public.ai_jobs (user_id, provider, model, prompt)
               select '{user}', 'venice', 'flux', 'prompt ' || n from generate_series(1, {ITEMS}) as n;
             -- each AI job costs a credit when claimed (migration 0017)
             update public.users set credits = {ITEMS} where id = '{user}';"
        ))
        .await
        .unwrap();
    for queue in ["ingested_items", "ai_jobs"] {
        let mut workers = Vec::new();
        for n in 0..8 {
            let client = db.connect().await.unwrap();
            let sql = format!("select public.claim_next_{queue}($1, 300, 20, now())");
            workers.push(tokio::spawn(async move {
                let worker = format!("w{n}");
                let mut mine = Vec::new();
                loop {
                    let batch = call(&client, &sql, &[&worker]).await;
                    let batch = batch.as_array().cloned().unwrap_or_default();
                    if batch.is_empty() {
                        break;
                    }
                    mine.extend(batch.iter().map(id));
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.unwrap());
        }
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(all.len() as i64, ITEMS, "{queue}: all claimed");
        assert_eq!(unique.len() as i64, ITEMS, "{queue}: none twice");
    }
}

#[tokio::test]
async fn an_expired_lease_is_retaken_and_the_stale_token_is_refused() {
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    client
        .execute(
            "insert into public.scheduled_posts (user_id, content, run_at) values ($1, 'once', '2026-01-01T00:00:00Z')",
            &[&user],
        )
        .await
        .unwrap();

    let first = claim_posts(&client, "a", 30, 10, "2026-01-01T00:01:00Z").await;
    assert_eq!(first.len(), 1);
    let stale = token(&first[0]);
    let post = id(&first[0]);

    assert!(
        claim_posts(&client, "b", 30, 10, "2026-01-01T00:01:20Z")
            .await
            .is_empty(),
        "a live lease is not taken"
    );
    let second = claim_posts(&client, "b", 30, 10, "2026-01-01T00:01:31Z").await;
    assert_eq!(second.len(), 1, "the expired lease is taken again");
    let current = token(&second[0]);
    assert!(current > stale, "fencing tokens only grow");

    let refused = call(
        &client,
        "select public.complete_scheduled_post($1, $2, '{}'::jsonb, '2026-01-01T00:01:40Z')",
        &[&post, &stale],
    )
    .await;
    assert_eq!(refused["accepted"], false, "{refused}");
    let refused = call(
        &client,
        "select public.fail_scheduled_post($1, $2, 'late worker', false, null, '2026-01-01T00:01:40Z')",
        &[&post, &stale],
    )
    .await;
    assert_eq!(refused["accepted"], false, "{refused}");

    let done = call(
        &client,
        "select public.complete_scheduled_post($1, $2, '{}'::jsonb, '2026-01-01T00:01:45Z')",
        &[&post, &current],
    )
    .await;
    assert_eq!(done["accepted"], true, "{done}");
    let row = client
        .query_one(
            "select status, attempt_count from public.scheduled_posts where id = $1",
            &[&post],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "posted");
    assert_eq!(row.get::<_, i32>(1), 2);

    let events: Vec<String> = client
        .query(
            "select type from public.post_events where scheduled_post_id = $1 order by created_at, id",
            &[&post],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for expected in ["claimed", "lease_expired", "success"] {
        assert!(
            events.iter().any(|e| e == expected),
            "missing {expected} event in {events:?}"
        );
    }
    assert_eq!(
        events.iter().filter(|e| *e == "claimed").count(),
        2,
        "{events:?}"
    );
}

#[tokio::test]
async fn the_last_failure_dead_letters_with_its_error() {
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    client
        .execute(
            "insert into public.scheduled_posts (user_id, content, run_at, max_attempts)
             values ($1, 'flaky', '2026-01-01T00:00:00Z', 3)",
            &[&user],
        )
        .await
        .unwrap();
    let mut now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    let mut last_due = now;
    for attempt in 1..=3 {
        // Claim at the moment the item is due again, never before.
        now = last_due + chrono::Duration::seconds(1);
        let claimed = claim_posts(&client, "w", 60, 1, &now.to_rfc3339()).await;
        assert_eq!(claimed.len(), 1, "attempt {attempt} claims the post");
        let answer = call(
            &client,
            "select public.fail_scheduled_post($1, $2, $3, false, null, $4::text::timestamptz)",
            &[
                &id(&claimed[0]),
                &token(&claimed[0]),
                &format!("PDS answered 502 (attempt {attempt})"),
                &now.to_rfc3339(),
            ],
        )
        .await;
        assert_eq!(answer["accepted"], true, "{answer}");
        if attempt < 3 {
            assert_eq!(answer["status"], "queued", "{answer}");
            let due =
                chrono::DateTime::parse_from_rfc3339(answer["next_attempt_at"].as_str().unwrap())
                    .unwrap();
            assert!(due > now, "backoff moves the due time later: {answer}");
            assert!(
                claim_posts(
                    &client,
                    "w",
                    60,
                    1,
                    &(now + chrono::Duration::milliseconds(10)).to_rfc3339()
                )
                .await
                .is_empty(),
                "not due again before the backoff"
            );
            last_due = due;
        } else {
            assert_eq!(answer["status"], "dead", "{answer}");
        }
    }
    let row = client
        .query_one(
            "select status, last_error, dead_lettered_at is not null from public.scheduled_posts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, String>(1), "PDS answered 502 (attempt 3)");
    assert!(row.get::<_, bool>(2));
    let far_future = "2030-01-01T00:00:00Z";
    assert!(
        claim_posts(&client, "w", 60, 1, far_future)
            .await
            .is_empty(),
        "dead letters stay dead"
    );
    let failures: i64 = client
        .query_one(
            "select count(*) from public.post_events where type = 'failure'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 1, "one failure event: the dead letter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicate_tokens_rotate_round_robin_under_eight_callers_and_never_inactive() {
    const CALLS_PER_CALLER: usize = 60;
    let db = TestDb::new().await.unwrap();
    let setup = db.connect().await.unwrap();
    setup
        .batch_execute(
            "insert into public.replicate_tokens (token, is_active)
               select 'r8_active_' || n, true from generate_series(1, 10) as n;
             insert into public.replicate_tokens (token, is_active)
               select 'r8_inactive_' || n, false from generate_series(1, 3) as n;",
        )
        .await
        .unwrap();

    // One caller alone walks the pool in order: every active token once
    // before any token twice.
    let mut first_round = Vec::new();
    for _ in 0..10 {
        let row = setup
            .query_one("select token from public.get_next_replicate_token()", &[])
            .await
            .unwrap();
        first_round.push(row.get::<_, String>(0));
    }
    let distinct: HashSet<_> = first_round.iter().collect();
    assert_eq!(
        distinct.len(),
        10,
        "one full round before repeating: {first_round:?}"
    );

    let mut callers = Vec::new();
    for _ in 0..8 {
        let client = db.connect().await.unwrap();
        callers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..CALLS_PER_CALLER {
                let rows = client
                    .query("select token from public.get_next_replicate_token()", &[])
                    .await
                    .unwrap();
                assert_eq!(
                    rows.len(),
                    1,
                    "with 10 active tokens and 8 callers a token is always free"
                );
                got.push(rows[0].get::<_, String>(0));
            }
            got
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for caller in callers {
        for token in caller.await.unwrap() {
            *counts.entry(token).or_default() += 1;
        }
    }
    assert!(
        counts.keys().all(|t| t.starts_with("r8_active_")),
        "never an inactive token: {counts:?}"
    );
    assert_eq!(counts.len(), 10, "every active token used: {counts:?}");
    // SKIP LOCKED lets a caller pass over a token another caller holds at
    // that instant, so under load the spread is approximate; a broken
    // rotation (one token favoured) lands far outside a third of the mean.
    let mean = (8 * CALLS_PER_CALLER) / 10;
    for (token, count) in &counts {
        assert!(
            count.abs_diff(mean) <= mean / 3,
            "round robin keeps use even: {token} used {count} times, mean {mean}: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ai_text_run_daily_limit_holds_under_eight_callers() {
    const LIMIT: i32 = 20;
    let db = TestDb::new().await.unwrap();
    let setup = db.connect().await.unwrap();
    let user = create_user(&setup).await;
    let mut callers = Vec::new();
    for n in 0..8 {
        let client = db.connect().await.unwrap();
        callers.push(tokio::spawn(async move {
            let mut allowed = 0;
            for i in 0..10 {
                let answer = call(
                    &client,
                    "select public.record_ai_text_run($1, 'venice', 'llama', $2, 10, 20, $3)",
                    &[&user, &format!("hash-{n}-{i}"), &LIMIT],
                )
                .await;
                if answer["allowed"] == true {
                    allowed += 1;
                }
            }
            allowed
        }));
    }
    let mut allowed = 0;
    for caller in callers {
        allowed += caller.await.unwrap();
    }
    assert_eq!(
        allowed, LIMIT,
        "exactly the limit is allowed out of 80 attempts"
    );
    let stored: i64 = setup
        .query_one(
            "select count(*) from public.ai_text_runs where user_id = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, i64::from(LIMIT), "no run recorded beyond the limit");
}

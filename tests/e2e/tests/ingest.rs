//! `ingest` end to end: the built `.wasm` in the test host over real
//! Postgres, with only the platforms faked on loopback (Strava API,
//! Instagram Graph API, Bluesky AppView). Webhooks are seeded as
//! `webhook-receiver` stores them (`store_ingested_item`, payloads as the
//! platforms send them); accounts hold tokens sealed with
//! `shared::token_cipher`.
//!
//! Covered: Strava create / update (the post is updated, never duplicated)
//! / delete (`deleted_on_platform`) / deauthorize (account disconnected);
//! expired Strava tokens refreshed and the rotated pair saved; Instagram
//! changes (a carousel queues every child) and `/me/media` backfill; a
//! Bluesky backfill of 250 posts over 3 pages (each post once, searchable
//! with `to_tsquery`, media queued, sync logged with counts and
//! `duration_ms`) and a later sync that fetches only new posts; Strava
//! rate-limit headers at the limit and 429 `Retry-After` defer the work
//! instead of failing it; a rejected token moves the account to
//! `token_expired`; a transient 5xx retries with backoff, then
//! dead-letters with its error; no token ever appears in `sync_logs`,
//! `queue_events`, heartbeats or error columns; Replicate items are left
//! alone and unknown event types fail permanently.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use chrono::{Duration, TimeZone, Utc};
use outpost_test_kit::fakes::bluesky::{FakeBluesky, SeedImage, SeedPost};
use outpost_test_kit::fakes::instagram::{self, FakeInstagram};
use outpost_test_kit::fakes::strava::{self as fake_strava, FakeStrava, StravaTokens};
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

/// The token key the tests seal with (base64 of bytes 0..32).
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Fakes<'a> {
    strava: Option<&'a FakeStrava>,
    instagram: Option<&'a FakeInstagram>,
    bluesky: Option<&'a FakeBluesky>,
}

const NO_FAKES: Fakes<'static> = Fakes {
    strava: None,
    instagram: None,
    bluesky: None,
};

async fn start(db: &TestDb, fakes: Fakes<'_>) -> TestApp {
    require_wasm("ingest").unwrap();
    let mut builder = TestApp::builder(product_manifest())
        .database(db)
        .components(&["ingest"])
        .variable("token_encryption_key", KEY);
    if let Some(strava) = fakes.strava {
        builder = builder.variable("strava_api_url", strava.url());
    }
    if let Some(instagram) = fakes.instagram {
        builder = builder.variable("instagram_graph_url", instagram.url());
    }
    if let Some(bluesky) = fakes.bluesky {
        builder = builder.variable("bluesky_appview_url", bluesky.url());
    }
    builder.start().await.unwrap()
}

/// `POST /jobs/ingest` with the job secret: the run's report.
async fn run_job(app: &TestApp) -> Value {
    app.run_job("ingest", None).await.unwrap()["report"].clone()
}

async fn create_user(client: &Client) -> Uuid {
    outpost_test_kit::create_user(client).await.unwrap()
}

fn seal(plain: &str) -> String {
    shared::token_cipher::seal(plain, KEY, "k1").unwrap()
}

fn open(sealed: &str) -> String {
    shared::token_cipher::open(sealed, KEY).unwrap()
}

/// A connected account; `next_sync_at` null unless `due` (then now).
async fn add_account(
    client: &Client,
    user: Uuid,
    platform: &str,
    platform_user_id: &str,
    tokens: Option<(&str, Option<&str>, i64)>,
    due: bool,
) -> Uuid {
    let (access, refresh, expires) = match tokens {
        Some((access, refresh, expires)) => (Some(seal(access)), refresh.map(seal), Some(expires)),
        None => (None, None, None),
    };
    let row = client
        .query_one(
            "insert into public.connected_accounts
               (user_id, platform, platform_user_id, username, access_token, refresh_token,
                token_key_id, token_expires_at, next_sync_at, verified_at)
             values ($1, $2::text::public.platform_enum, $3, $4, $5, $6, 'k1',
                     to_timestamp($7::float8), case when $8 then now() end, now())
             returning id",
            &[
                &user,
                &platform,
                &platform_user_id,
                &format!("{platform}-user-{platform_user_id}"),
                &access,
                &refresh,
                &expires.map(|e| e as f64),
                &due,
            ],
        )
        .await
        .unwrap();
    row.get(0)
}

async fn strava_account(
    client: &Client,
    user: Uuid,
    athlete: u64,
    tokens: &StravaTokens,
    due: bool,
) -> Uuid {
    add_account(
        client,
        user,
        "strava",
        &athlete.to_string(),
        Some((
            &tokens.access_token,
            Some(&tokens.refresh_token),
            tokens.expires_at,
        )),
        due,
    )
    .await
}

/// Stores a webhook as the receiver does.
async fn store_item(
    client: &Client,
    platform: &str,
    event_type: &str,
    external_id: &str,
    payload: &Value,
) -> Uuid {
    let stored: Value = client
        .query_one(
            "select public.store_ingested_item('webhook', $1, $2, $3, $4::jsonb)",
            &[&platform, &event_type, &external_id, payload],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored["stored"], true, "{stored}");
    stored["id"].as_str().unwrap().parse().unwrap()
}

fn strava_event(
    object_type: &str,
    object_id: u64,
    aspect: &str,
    owner: u64,
    updates: Value,
    event_time: i64,
) -> Value {
    json!({
        "aspect_type": aspect,
        "event_time": event_time,
        "object_id": object_id,
        "object_type": object_type,
        "owner_id": owner,
        "subscription_id": 120475,
        "updates": updates,
    })
}

async fn store_strava(client: &Client, event: &Value) -> Uuid {
    let external = format!(
        "{}:{}:{}:{}",
        event["object_type"].as_str().unwrap(),
        event["object_id"],
        event["aspect_type"].as_str().unwrap(),
        event["event_time"]
    );
    let event_type = format!(
        "strava.{}.{}",
        event["object_type"].as_str().unwrap(),
        event["aspect_type"].as_str().unwrap()
    );
    store_item(client, "strava", &event_type, &external, event).await
}

async fn json_of(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Value {
    client.query_one(sql, params).await.unwrap().get(0)
}

async fn item(client: &Client, id: Uuid) -> Value {
    json_of(
        client,
        "select to_jsonb(i) || jsonb_build_object('due_in_seconds', extract(epoch from i.next_attempt_at - now()))
           from public.ingested_items i where i.id = $1",
        &[&id],
    )
    .await
}

async fn count(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    client.query_one(sql, params).await.unwrap().get(0)
}

async fn account(client: &Client, id: Uuid) -> Value {
    json_of(
        client,
        "select to_jsonb(a) || jsonb_build_object('due_in_seconds', extract(epoch from a.next_sync_at - now()))
           from public.connected_accounts a where a.id = $1",
        &[&id],
    )
    .await
}

/// Every text the schema keeps about runs, events and errors.
async fn audit_text(client: &Client) -> String {
    let row = client
        .query_one(
            "select concat_ws(' ',
               (select string_agg(to_jsonb(l)::text, ' ') from public.sync_logs l),
               (select string_agg(to_jsonb(e)::text, ' ') from public.queue_events e),
               (select string_agg(to_jsonb(h)::text, ' ') from public.worker_heartbeats h),
               (select string_agg(concat_ws(' ', i.error_message, i.last_error, i.error_details::text), ' ')
                  from public.ingested_items i),
               (select string_agg(concat_ws(' ', a.error_message), ' ') from public.connected_accounts a),
               (select string_agg(to_jsonb(p)::text, ' ') from public.ingest_platform_pauses p))",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, Option<String>>(0).unwrap_or_default()
}

async fn assert_no_secrets(client: &Client, secrets: &[String]) {
    let text = audit_text(client).await;
    assert!(!text.is_empty());
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a token leaked into the audit trail: {text}"
        );
    }
}

// Strava -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strava_create_update_and_delete_keep_one_post_per_activity() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete(134815);
    let account_id = strava_account(&client, user, 134815, &tokens, false).await;
    let start = Utc.with_ymd_and_hms(2024, 5, 4, 6, 30, 0).unwrap();
    strava.put_activity(
        134815,
        FakeStrava::activity_json(
            1360128428,
            134815,
            "Morning Ride",
            Some("Foggy climb along the river"),
            start,
            Some("https://dgtzuqphqg23d.cloudfront.net"),
        ),
    );
    let app = start_with_strava(&db, &strava).await;

    let created = store_strava(
        &client,
        &strava_event(
            "activity",
            1360128428,
            "create",
            134815,
            json!({}),
            1714804200,
        ),
    )
    .await;
    let report = run_job(&app).await;
    assert_eq!(report["items"]["completed"], 1, "{report}");
    let row = item(&client, created).await;
    assert_eq!(row["status"], "completed", "{row}");
    assert_eq!(
        row["account_id"],
        json!(account_id.to_string()),
        "the item is linked to its account"
    );

    let post = json_of(
        &client,
        "select to_jsonb(p) from public.posts p where p.platform = 'strava' and p.platform_post_id = '1360128428'",
        &[],
    )
    .await;
    assert_eq!(post["content_type"], "activity");
    assert_eq!(
        post["text_content"],
        "Morning Ride\n\nFoggy climb along the river"
    );
    assert_eq!(post["account_id"], json!(account_id.to_string()));
    assert_eq!(post["user_id"], json!(user.to_string()));
    assert_eq!(post["deleted_on_platform"], false);
    let created_at: chrono::DateTime<Utc> =
        serde_json::from_value(post["created_at_platform"].clone()).unwrap();
    assert_eq!(created_at, start);
    let raw = json_of(
        &client,
        "select ip.post_data from public.ingested_posts ip where ip.platform_post_id = '1360128428'",
        &[],
    )
    .await;
    assert_eq!(raw["distance"], 28099.0, "raw Strava data is kept: {raw}");
    assert_eq!(
        raw["embed_token"],
        "18e4615989b47dd4ff3dc711b0aa4502e4b311a9"
    );
    assert_eq!(raw["activity_type"], "MountainBikeRide");
    let media: Vec<String> = client
        .query("select original_url from public.media_downloads", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        media,
        vec!["https://dgtzuqphqg23d.cloudfront.net/1360128428-768x576.jpg".to_string()]
    );
    for query in ["river & climb", "mountainbikeride", "foggy"] {
        assert_eq!(
            count(
                &client,
                "select count(*) from public.posts where search_vector @@ to_tsquery('english', $1)",
                &[&query],
            )
            .await,
            1,
            "{query}"
        );
    }
    let activity_calls = strava.requests_to("/api/v3/activities/1360128428");
    assert_eq!(activity_calls.len(), 1);
    assert_eq!(
        activity_calls[0].headers["authorization"].to_str().unwrap(),
        format!("Bearer {}", tokens.access_token)
    );

    // Update: renamed on Strava; the same post changes.
    let mut renamed = FakeStrava::activity_json(
        1360128428,
        134815,
        "Evening Gravel",
        Some("Foggy climb along the river"),
        start,
        Some("https://dgtzuqphqg23d.cloudfront.net"),
    );
    renamed["private"] = json!(true);
    strava.put_activity(134815, renamed);
    let updated = store_strava(
        &client,
        &strava_event(
            "activity",
            1360128428,
            "update",
            134815,
            json!({"title": "Evening Gravel", "private": "true"}),
            1714810000,
        ),
    )
    .await;
    // And the create again (a redelivery with another event time).
    store_strava(
        &client,
        &strava_event(
            "activity",
            1360128428,
            "create",
            134815,
            json!({}),
            1714804999,
        ),
    )
    .await;
    let report = run_job(&app).await;
    assert_eq!(report["items"]["completed"], 2, "{report}");
    assert_eq!(item(&client, updated).await["status"], "completed");
    assert_eq!(
        count(&client, "select count(*) from public.posts", &[]).await,
        1
    );
    assert_eq!(
        count(&client, "select count(*) from public.ingested_posts", &[]).await,
        1
    );
    assert_eq!(
        count(&client, "select count(*) from public.media_downloads", &[]).await,
        1
    );
    let post = json_of(&client, "select to_jsonb(p) from public.posts p", &[]).await;
    assert_eq!(
        post["text_content"],
        "Evening Gravel\n\nFoggy climb along the river"
    );
    assert_eq!(
        post["published"], false,
        "a private activity is not published"
    );
    assert!(!post["updated_at_platform"].is_null(), "{post}");
    assert_eq!(
        count(&client, "select count(*) from public.posts where search_vector @@ to_tsquery('english', 'gravel')", &[]).await,
        1,
        "search follows the new title"
    );

    // Delete: the archive keeps the post, marked.
    strava.remove_activity(134815, 1360128428);
    let deleted = store_strava(
        &client,
        &strava_event(
            "activity",
            1360128428,
            "delete",
            134815,
            json!({}),
            1714820000,
        ),
    )
    .await;
    run_job(&app).await;
    assert_eq!(item(&client, deleted).await["status"], "completed");
    let post = json_of(&client, "select to_jsonb(p) from public.posts p", &[]).await;
    assert_eq!(post["deleted_on_platform"], true, "{post}");
    assert_eq!(
        count(&client, "select count(*) from public.posts", &[]).await,
        1
    );
    assert_no_secrets(
        &client,
        &[tokens.access_token.clone(), tokens.refresh_token.clone()],
    )
    .await;
    app.stop().await;
}

async fn start_with_strava(db: &TestDb, strava: &FakeStrava) -> TestApp {
    start(
        db,
        Fakes {
            strava: Some(strava),
            ..NO_FAKES
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strava_deauthorization_disconnects_the_account() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete(77);
    let account_id = strava_account(&client, user, 77, &tokens, true).await;
    let app = start_with_strava(&db, &strava).await;
    client
        .execute(
            "update public.connected_accounts set next_sync_at = now() + interval '1 hour'",
            &[],
        )
        .await
        .unwrap();

    let id = store_strava(
        &client,
        &strava_event(
            "athlete",
            77,
            "update",
            77,
            json!({"authorized": "false"}),
            1714804200,
        ),
    )
    .await;
    let other = store_strava(
        &client,
        &strava_event(
            "athlete",
            77,
            "update",
            77,
            json!({"title": "x"}),
            1714804201,
        ),
    )
    .await;
    run_job(&app).await;
    assert_eq!(item(&client, id).await["status"], "completed");
    assert_eq!(item(&client, other).await["status"], "completed");
    let account = account(&client, account_id).await;
    assert_eq!(account["status"], "disconnected", "{account}");
    assert_eq!(account["sync_enabled"], false);
    assert!(account["access_token"].is_null() && account["refresh_token"].is_null());
    assert!(account["next_sync_at"].is_null());
    assert!(
        strava.requests().is_empty(),
        "deauthorization needs no Strava call"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_strava_token_is_refreshed_and_the_rotated_pair_saved_before_use() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete_expiring(5, Utc::now().timestamp() - 60);
    let account_id = strava_account(&client, user, 5, &tokens, false).await;
    strava.put_activity(
        5,
        FakeStrava::activity_json(
            9001,
            5,
            "Lunch Run",
            None,
            Utc::now() - Duration::hours(2),
            None,
        ),
    );
    let app = start_with_strava(&db, &strava).await;

    let id = store_strava(
        &client,
        &strava_event("activity", 9001, "create", 5, json!({}), 1714804200),
    )
    .await;
    run_job(&app).await;
    assert_eq!(item(&client, id).await["status"], "completed");
    assert_eq!(strava.refreshes(), 1);
    let refresh_call = &strava.requests_to("/oauth/token")[0];
    assert!(refresh_call.text().contains("grant_type=refresh_token"));
    assert!(refresh_call.text().contains(&tokens.refresh_token));

    let stored = account(&client, account_id).await;
    let new_refresh = open(stored["refresh_token"].as_str().unwrap());
    let new_access = open(stored["access_token"].as_str().unwrap());
    assert_eq!(
        Some(new_refresh.clone()),
        strava.refresh_token(5),
        "the rotated refresh token is saved"
    );
    assert_ne!(new_refresh, tokens.refresh_token);
    assert!(stored["due_in_seconds"].is_null());
    let expires: chrono::DateTime<Utc> =
        serde_json::from_value(stored["token_expires_at"].clone()).unwrap();
    assert!(expires > Utc::now() + Duration::hours(5), "{expires}");
    let fetch = &strava.requests_to("/api/v3/activities/9001")[0];
    assert_eq!(
        fetch.headers["authorization"].to_str().unwrap(),
        format!("Bearer {new_access}"),
        "the activity is fetched with the new access token"
    );
    assert_no_secrets(
        &client,
        &[
            tokens.access_token.clone(),
            tokens.refresh_token.clone(),
            new_access,
            new_refresh,
        ],
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_strava_token_moves_the_account_to_token_expired() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete(8);
    let account_id = strava_account(&client, user, 8, &tokens, false).await;
    strava.put_activity(
        8,
        FakeStrava::activity_json(42, 8, "Ride", None, Utc::now(), None),
    );
    strava.revoke(8);
    let app = start_with_strava(&db, &strava).await;

    let id = store_strava(
        &client,
        &strava_event("activity", 42, "create", 8, json!({}), 1714804200),
    )
    .await;
    run_job(&app).await;
    let row = item(&client, id).await;
    assert_eq!(
        row["status"], "failed",
        "a rejected token fails the item permanently: {row}"
    );
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("token rejected"),
        "{row}"
    );
    let stored = account(&client, account_id).await;
    assert_eq!(stored["status"], "token_expired", "{stored}");
    let message = stored["error_message"].as_str().unwrap();
    assert!(
        message.contains("Strava refused the token refresh"),
        "{message}"
    );
    assert_eq!(strava.refreshes(), 0, "the refresh was refused");
    assert_eq!(
        count(&client, "select count(*) from public.posts", &[]).await,
        0
    );
    assert_no_secrets(
        &client,
        &[tokens.access_token.clone(), tokens.refresh_token.clone()],
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_refused_for_the_apps_credentials_leaves_the_account_alone() {
    let strava = FakeStrava::start().await.unwrap();
    // Strava wants client credentials this deployment does not send.
    strava.expect_client("12345", "app-secret");
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete_expiring(9, Utc::now().timestamp() - 60);
    let account_id = strava_account(&client, user, 9, &tokens, false).await;
    let app = start_with_strava(&db, &strava).await;
    let id = store_strava(
        &client,
        &strava_event("activity", 1, "create", 9, json!({}), 1714804200),
    )
    .await;
    run_job(&app).await;
    let row = item(&client, id).await;
    assert_eq!(row["status"], "failed", "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("check strava_client_id"),
        "{row}"
    );
    let stored = account(&client, account_id).await;
    assert_eq!(stored["status"], "active", "not the user's fault: {stored}");
    assert_eq!(
        open(stored["refresh_token"].as_str().unwrap()),
        tokens.refresh_token
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strava_usage_at_the_limit_defers_the_rest_without_failing_it() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete(3);
    strava_account(&client, user, 3, &tokens, false).await;
    for id in [1u64, 2, 3] {
        strava.put_activity(
            3,
            FakeStrava::activity_json(id, 3, &format!("Run {id}"), None, Utc::now(), None),
        );
    }
    // One request left in this 15-minute window.
    strava.set_usage(199, 500);
    let app = start_with_strava(&db, &strava).await;
    let mut ids = Vec::new();
    for (n, activity) in [1u64, 2, 3].into_iter().enumerate() {
        ids.push(
            store_strava(
                &client,
                &strava_event(
                    "activity",
                    activity,
                    "create",
                    3,
                    json!({}),
                    1714804200 + n as i64,
                ),
            )
            .await,
        );
    }
    let report = run_job(&app).await;
    assert_eq!(report["items"]["completed"], 1, "{report}");
    assert_eq!(report["items"]["deferred"], 2, "{report}");
    assert_eq!(
        strava.requests().len(),
        1,
        "no request once the window is used up"
    );
    for id in &ids[1..] {
        let row = item(&client, *id).await;
        assert_eq!(row["status"], "pending", "waiting, not failed: {row}");
        assert_eq!(row["attempts"], 0, "a deferral uses no attempt: {row}");
        assert!(row["last_error"].is_null(), "{row}");
        let next: chrono::DateTime<Utc> =
            serde_json::from_value(row["next_attempt_at"].clone()).unwrap();
        let wait = row["due_in_seconds"].as_f64().unwrap();
        assert!(
            next.timestamp() % 900 == 0 && (0.0..=900.0).contains(&wait),
            "deferred to the next quarter hour: {row}"
        );
        let events = count(
            &client,
            "select count(*) from public.queue_events where item_id = $1 and event = 'deferred'",
            &[id],
        )
        .await;
        assert_eq!(events, 1);
    }
    let pause = json_of(
        &client,
        "select to_jsonb(p) from public.ingest_platform_pauses p where platform = 'strava'",
        &[],
    )
    .await;
    assert!(
        pause["reason"]
            .as_str()
            .unwrap()
            .contains("X-RateLimit usage 200,501 of 200,2000"),
        "{pause}"
    );

    // A later run does not claim Strava work while the pause lasts.
    client
        .execute(
            "update public.ingested_items set next_attempt_at = now() where status = 'pending'",
            &[],
        )
        .await
        .unwrap();
    let report = run_job(&app).await;
    assert_eq!(report["items"]["claimed"], 0, "{report}");
    assert_eq!(strava.requests().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strava_429_with_retry_after_defers_items_and_syncs() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete(4);
    let account_id = strava_account(&client, user, 4, &tokens, false).await;
    strava.put_activity(
        4,
        FakeStrava::activity_json(10, 4, "Swim", None, Utc::now(), None),
    );
    strava.fail_next(1, fake_strava::Fault::status(429).retry_after(120));
    let app = start_with_strava(&db, &strava).await;
    let id = store_strava(
        &client,
        &strava_event("activity", 10, "create", 4, json!({}), 1714804200),
    )
    .await;
    let report = run_job(&app).await;
    assert_eq!(report["items"]["deferred"], 1, "{report}");
    let row = item(&client, id).await;
    assert_eq!(row["status"], "pending", "{row}");
    assert_eq!(row["attempts"], 0, "{row}");
    let due = row["due_in_seconds"].as_f64().unwrap();
    assert!((100.0..=121.0).contains(&due), "waits Retry-After: {row}");

    // The same for a poll: the sync waits (cancelled, not failed).
    client
        .execute("delete from public.ingest_platform_pauses", &[])
        .await
        .unwrap();
    client
        .execute(
            "update public.connected_accounts set next_sync_at = now() where id = $1",
            &[&account_id],
        )
        .await
        .unwrap();
    strava.fail_next(1, fake_strava::Fault::status(429).retry_after(300));
    let report = run_job(&app).await;
    assert_eq!(report["accounts"]["synced"], 1, "{report}");
    let log = json_of(&client, "select to_jsonb(l) from public.sync_logs l", &[]).await;
    assert_eq!(log["status"], "cancelled", "{log}");
    assert!(
        log["error_message"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{log}"
    );
    let stored = account(&client, account_id).await;
    assert_eq!(
        stored["error_count"], 0,
        "a rate limit is not a failure: {stored}"
    );
    assert_eq!(stored["status"], "active");
    let due = stored["due_in_seconds"].as_f64().unwrap();
    assert!(
        (280.0..=301.0).contains(&due),
        "next sync after Retry-After: {stored}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_5xx_retries_with_backoff_then_dead_letters_with_its_error() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete(6);
    strava_account(&client, user, 6, &tokens, false).await;
    strava.put_activity(
        6,
        FakeStrava::activity_json(11, 6, "Hike", None, Utc::now(), None),
    );
    strava.fail_next(10, fake_strava::Fault::status(503));
    let app = start_with_strava(&db, &strava).await;
    let id = store_strava(
        &client,
        &strava_event("activity", 11, "create", 6, json!({}), 1714804200),
    )
    .await;
    client
        .execute(
            "update public.ingested_items set max_attempts = 3 where id = $1",
            &[&id],
        )
        .await
        .unwrap();

    let mut waits = Vec::new();
    for attempt in 1..=3 {
        let report = run_job(&app).await;
        assert_eq!(report["items"]["claimed"], 1, "attempt {attempt}: {report}");
        let row = item(&client, id).await;
        assert_eq!(row["attempts"], attempt, "{row}");
        assert!(
            row["last_error"]
                .as_str()
                .unwrap()
                .contains("Strava answered 503"),
            "{row}"
        );
        if attempt < 3 {
            assert_eq!(row["status"], "pending", "{row}");
            waits.push(row["due_in_seconds"].as_f64().unwrap());
            client
                .execute(
                    "update public.ingested_items set next_attempt_at = now() where id = $1",
                    &[&id],
                )
                .await
                .unwrap();
        } else {
            assert_eq!(row["status"], "dead_letter", "{row}");
            assert!(!row["dead_lettered_at"].is_null());
        }
    }
    // 30 s then 60 s, +-20 %.
    assert!((23.0..=37.0).contains(&waits[0]), "{waits:?}");
    assert!((47.0..=73.0).contains(&waits[1]), "{waits:?}");
    let failure = json_of(
        &client,
        "select detail from public.queue_events where item_id = $1 and event = 'failure'",
        &[&id],
    )
    .await;
    assert_eq!(failure["dead_lettered"], true, "{failure}");
    assert!(failure["error"].as_str().unwrap().contains("503"));
    assert_no_secrets(
        &client,
        &[tokens.access_token.clone(), tokens.refresh_token.clone()],
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strava_backfill_lists_every_activity_then_polls_only_recent_ones() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let tokens = strava.add_athlete(12);
    let account_id = strava_account(&client, user, 12, &tokens, true).await;
    let first = Utc::now() - Duration::days(200);
    for n in 0..150u64 {
        let at = first + Duration::hours(i64::try_from(n).unwrap() * 24);
        strava.put_activity(
            12,
            FakeStrava::activity_json(5000 + n, 12, &format!("Activity {n}"), None, at, None),
        );
    }
    let app = start_with_strava(&db, &strava).await;
    let report = run_job(&app).await;
    assert_eq!(report["accounts"]["synced"], 1, "{report}");
    assert_eq!(
        count(
            &client,
            "select count(*) from public.posts where platform = 'strava'",
            &[]
        )
        .await,
        150
    );
    let log = json_of(&client, "select to_jsonb(l) from public.sync_logs l", &[]).await;
    assert_eq!(
        (log["sync_type"].as_str(), log["status"].as_str()),
        (Some("backfill"), Some("success")),
        "{log}"
    );
    assert_eq!(log["posts_created"], 150, "{log}");
    assert!(log["duration_ms"].as_i64().unwrap() >= 0);
    let lists = strava.requests_to("/api/v3/athlete/activities");
    assert_eq!(lists.len(), 2, "two pages of 100");
    assert!(
        lists[1].uri.query().unwrap().contains("before="),
        "{}",
        lists[1].uri
    );
    let stored = account(&client, account_id).await;
    assert_eq!(stored["last_sync_status"], "success");
    assert!(
        stored["due_in_seconds"].as_f64().unwrap() > 3600.0,
        "{stored}"
    );

    // A later poll asks only for the last week, and adds the new activity.
    strava.put_activity(
        12,
        FakeStrava::activity_json(9999, 12, "Brand new", None, Utc::now(), None),
    );
    client
        .execute(
            "update public.connected_accounts set next_sync_at = now()",
            &[],
        )
        .await
        .unwrap();
    run_job(&app).await;
    let lists = strava.requests_to("/api/v3/athlete/activities");
    assert_eq!(lists.len(), 3, "one page");
    assert!(
        lists[2].uri.query().unwrap().contains("after="),
        "{}",
        lists[2].uri
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from public.posts where platform = 'strava'",
            &[]
        )
        .await,
        151
    );
    let log = json_of(
        &client,
        "select to_jsonb(l) from public.sync_logs l order by started_at desc limit 1",
        &[],
    )
    .await;
    assert_eq!(
        (log["sync_type"].as_str(), log["posts_created"].as_i64()),
        (Some("scheduled"), Some(1)),
        "{log}"
    );
    app.stop().await;
}

// Instagram ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instagram_change_archives_the_media_and_a_carousel_queues_every_child() {
    let ig = FakeInstagram::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let token = ig.add_user("17841400000000001", "sunny.days");
    let account_id = add_account(
        &client,
        user,
        "instagram",
        "17841400000000001",
        Some((&token, None, Utc::now().timestamp() + 50 * 86_400)),
        false,
    )
    .await;
    let at = Utc.with_ymd_and_hms(2024, 1, 15, 10, 30, 0).unwrap();
    ig.add_media(
        "17841400000000001",
        FakeInstagram::carousel(
            "17900000000000042",
            Some("Beach day with the kayak #summer"),
            at,
            vec![
                FakeInstagram::image("17900000000000043", None, at),
                FakeInstagram::image("17900000000000044", None, at),
                FakeInstagram::video("17900000000000045", None, at, false),
            ],
        ),
    );
    let app = start(
        &db,
        Fakes {
            instagram: Some(&ig),
            ..NO_FAKES
        },
    )
    .await;
    let payload = json!({"object": "instagram", "entry": [{
    "id": "17841400000000001", "time": 1705314600,
    "changes": [
        {"field": "comments", "value": {"from": {"id": "1", "username": "fan"}, "id": "c1",
          "text": "Love it", "media": {"id": "17900000000000042", "media_product_type": "FEED"}}},
        {"field": "mentions", "value": {"media_id": "999", "comment_id": "c2"}}
    ]}]});
    let id = store_item(
        &client,
        "instagram",
        "instagram.changes",
        "sha256-of-body-1",
        &payload,
    )
    .await;
    let report = run_job(&app).await;
    assert_eq!(report["items"]["completed"], 1, "{report}");
    let row = item(&client, id).await;
    assert_eq!(row["status"], "completed", "{row}");

    let post = json_of(&client, "select to_jsonb(p) from public.posts p", &[]).await;
    assert_eq!(post["platform_post_id"], "17900000000000042");
    assert_eq!(post["content_type"], "post");
    assert_eq!(post["text_content"], "Beach day with the kayak #summer");
    assert_eq!(post["account_id"], json!(account_id.to_string()));
    let created_at: chrono::DateTime<Utc> =
        serde_json::from_value(post["created_at_platform"].clone()).unwrap();
    assert_eq!(created_at, at, "the +0000 timestamp is read");
    let media = count(&client, "select count(*) from public.media_downloads", &[]).await;
    assert_eq!(media, 4, "two images, a video and its thumbnail");
    assert_eq!(
        count(&client, "select count(*) from public.posts where search_vector @@ to_tsquery('english', 'kayak & sunny.days')", &[]).await,
        1
    );
    let raw = json_of(&client, "select post_data from public.ingested_posts", &[]).await;
    assert_eq!(
        raw["children"]["data"].as_array().unwrap().len(),
        3,
        "{raw}"
    );
    let fetch = ig
        .requests()
        .into_iter()
        .find(|r| r.uri.path() == "/17900000000000042")
        .unwrap();
    assert!(
        fetch
            .uri
            .query()
            .unwrap()
            .contains("fields=id%2Ccaption%2Cmedia_type"),
        "{}",
        fetch.uri
    );
    assert_eq!(
        ig.requests().len(),
        1,
        "the mention (someone else's media) is not fetched"
    );
    assert_no_secrets(&client, &[token]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instagram_polling_pages_through_me_media_and_a_revoked_token_expires_the_account() {
    let ig = FakeInstagram::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let token = ig.add_user("178414", "maker");
    let account_id = add_account(
        &client,
        user,
        "instagram",
        "178414",
        Some((&token, None, Utc::now().timestamp() + 50 * 86_400)),
        true,
    )
    .await;
    let base = Utc::now() - Duration::days(100);
    for n in 0..60 {
        let at = base + Duration::days(n);
        let media = if n % 10 == 0 {
            FakeInstagram::video(&format!("m{n}"), Some(&format!("Reel {n}")), at, true)
        } else {
            FakeInstagram::image(&format!("m{n}"), Some(&format!("Photo {n}")), at)
        };
        ig.add_media("178414", media);
    }
    let app = start(
        &db,
        Fakes {
            instagram: Some(&ig),
            ..NO_FAKES
        },
    )
    .await;
    run_job(&app).await;
    assert_eq!(
        count(
            &client,
            "select count(*) from public.posts where platform = 'instagram'",
            &[]
        )
        .await,
        60
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from public.posts where content_type = 'reel'",
            &[]
        )
        .await,
        6
    );
    let pages = ig
        .requests()
        .iter()
        .filter(|r| r.uri.path() == "/me/media")
        .count();
    assert_eq!(pages, 2, "50 + 10");
    let log = json_of(&client, "select to_jsonb(l) from public.sync_logs l", &[]).await;
    assert_eq!(
        (log["status"].as_str(), log["posts_created"].as_i64()),
        (Some("success"), Some(60)),
        "{log}"
    );

    // The user revokes us: the next poll is refused with code 190.
    ig.revoke("178414");
    client
        .execute(
            "update public.connected_accounts set next_sync_at = now()",
            &[],
        )
        .await
        .unwrap();
    run_job(&app).await;
    let stored = account(&client, account_id).await;
    assert_eq!(stored["status"], "token_expired", "{stored}");
    assert!(
        stored["error_message"]
            .as_str()
            .unwrap()
            .contains("code 190"),
        "{stored}"
    );
    assert_eq!(stored["error_count"], 1);
    let log = json_of(
        &client,
        "select to_jsonb(l) from public.sync_logs l order by started_at desc limit 1",
        &[],
    )
    .await;
    assert_eq!(log["status"], "failed", "{log}");
    // No more polling of a token_expired account.
    client
        .execute(
            "update public.connected_accounts set next_sync_at = now()",
            &[],
        )
        .await
        .unwrap();
    let report = run_job(&app).await;
    assert_eq!(report["accounts"]["synced"], 0, "{report}");
    assert_no_secrets(&client, &[token]).await;
    app.stop().await;
}

// Bluesky ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bluesky_backfill_of_250_posts_over_3_pages_then_only_new_posts() {
    let bsky = FakeBluesky::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let alice = bsky.add_account("alice.test", "app-pass-1234");
    let account_id = add_account(&client, user, "bluesky", &alice.did, None, true).await;
    bsky.add_posts(&alice.did, 250, |i| {
        let topic = if i % 10 == 0 { "kayaking" } else { "gardening" };
        let post = SeedPost::new(format!("Post number {i} about {topic}"));
        if i % 25 == 0 {
            post.image(SeedImage::jpeg(&format!("picture {i}")))
        } else {
            post
        }
    });
    let app = start(
        &db,
        Fakes {
            bluesky: Some(&bsky),
            ..NO_FAKES
        },
    )
    .await;

    let report = run_job(&app).await;
    assert_eq!(report["accounts"]["synced"], 1, "{report}");
    assert_eq!(
        bsky.calls("app.bsky.feed.getAuthorFeed"),
        3,
        "three pages: 100, 100, 50"
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from public.posts where platform = 'bluesky'",
            &[]
        )
        .await,
        250
    );
    assert_eq!(
        count(
            &client,
            "select count(distinct platform_post_id) from public.posts",
            &[]
        )
        .await,
        250,
        "each post once"
    );
    assert_eq!(
        count(&client, "select count(*) from public.ingested_posts", &[]).await,
        250
    );
    assert_eq!(
        count(&client, "select count(*) from public.posts where search_vector @@ to_tsquery('english', 'kayaking')", &[]).await,
        25
    );
    assert_eq!(
        count(&client, "select count(*) from public.posts where search_vector @@ to_tsquery('english', 'alice.test & number & 42')", &[]).await,
        1,
        "the author's handle is searchable too"
    );
    assert_eq!(
        count(&client, "select count(*) from public.media_downloads", &[]).await,
        10,
        "one image every 25 posts"
    );
    let log = json_of(&client, "select to_jsonb(l) from public.sync_logs l", &[]).await;
    assert_eq!(log["sync_type"], "backfill", "{log}");
    assert_eq!(log["status"], "success", "{log}");
    assert_eq!(log["posts_fetched"], 250, "{log}");
    assert_eq!(log["posts_created"], 250, "{log}");
    assert_eq!(log["metadata"]["pages"], 3, "{log}");
    assert_eq!(log["metadata"]["media_queued"], 10, "{log}");
    assert!(log["duration_ms"].as_i64().is_some_and(|d| d >= 0), "{log}");
    assert!(!log["completed_at"].is_null());
    let stored = account(&client, account_id).await;
    assert_eq!(stored["last_sync_status"], "success");
    assert_eq!(stored["error_count"], 0);
    let due = stored["due_in_seconds"].as_f64().unwrap();
    assert!(
        (800.0..=900.0).contains(&due),
        "next poll in 15 minutes: {stored}"
    );

    // Five new posts; the next sync fetches one small page and stops at the
    // first archived post.
    bsky.add_posts(&alice.did, 5, |i| {
        SeedPost::new(format!("Fresh news {i} about windsurfing"))
    });
    client
        .execute(
            "update public.connected_accounts set next_sync_at = now()",
            &[],
        )
        .await
        .unwrap();
    run_job(&app).await;
    assert_eq!(
        bsky.calls("app.bsky.feed.getAuthorFeed"),
        4,
        "one more page"
    );
    let last = bsky
        .requests()
        .into_iter()
        .filter(|r| r.uri.path().ends_with("getAuthorFeed"))
        .last()
        .unwrap();
    assert!(
        last.uri.query().unwrap().contains("limit=25"),
        "{}",
        last.uri
    );
    assert!(
        !last.uri.query().unwrap().contains("cursor="),
        "{}",
        last.uri
    );
    assert_eq!(
        count(&client, "select count(*) from public.posts", &[]).await,
        255
    );
    let log = json_of(
        &client,
        "select to_jsonb(l) from public.sync_logs l order by started_at desc limit 1",
        &[],
    )
    .await;
    assert_eq!(log["sync_type"], "scheduled", "{log}");
    assert_eq!(log["posts_created"], 5, "{log}");
    assert_eq!(log["posts_updated"], 0, "{log}");
    assert_eq!(
        count(&client, "select count(*) from public.posts where search_vector @@ to_tsquery('english', 'windsurfing')", &[]).await,
        5
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_never_sync_the_same_account() {
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    for n in 0..4 {
        add_account(
            &client,
            user,
            "bluesky",
            &format!("did:plc:{n:024}"),
            None,
            true,
        )
        .await;
    }
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(db.connect().await.unwrap());
    }
    let claims = futures_join(sessions.into_iter().map(|s| async move {
        let mut mine = Vec::new();
        loop {
            let claimed: Value = s
                .query_one("select public.claim_next_sync_account('w', 60)", &[])
                .await
                .unwrap()
                .get(0);
            if claimed.is_null() {
                break mine;
            }
            mine.push(claimed["id"].as_str().unwrap().to_string());
        }
    }))
    .await;
    let mut all: Vec<String> = claims.into_iter().flatten().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(
        (before, all.len()),
        (4, 4),
        "each account leased exactly once"
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from public.sync_logs where status = 'running'",
            &[]
        )
        .await,
        4
    );
}

async fn futures_join<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

// Other items ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_items_are_left_alone_and_unknown_event_types_fail_permanently() {
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let app = start(&db, NO_FAKES).await;
    let replicate = store_item(
        &client,
        "replicate",
        "replicate.prediction",
        "msg_1",
        &json!({"id": "p1", "status": "succeeded"}),
    )
    .await;
    let unknown = store_item(
        &client,
        "strava",
        "strava.club.update",
        "club:1",
        &json!({"object_type": "club"}),
    )
    .await;
    let report = run_job(&app).await;
    assert_eq!(report["items"]["claimed"], 1, "{report}");
    let row = item(&client, replicate).await;
    assert_eq!(
        (row["status"].as_str(), row["attempts"].as_i64()),
        (Some("pending"), Some(0)),
        "{row}"
    );
    let row = item(&client, unknown).await;
    assert_eq!(row["status"], "failed", "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("unknown event type `strava.club.update`"),
        "{row}"
    );
    let heartbeat = json_of(
        &client,
        "select detail from public.worker_heartbeats where worker_id = 'ingest'",
        &[],
    )
    .await;
    assert_eq!(heartbeat["outcome"], "ok", "{heartbeat}");
    app.stop().await;
}

// Keep `instagram::graph_time` in use: the fake's timestamp format is the
// one the parser reads.
#[test]
fn graph_time_is_graphs_format() {
    let at = Utc.with_ymd_and_hms(2024, 1, 15, 10, 30, 0).unwrap();
    assert_eq!(instagram::graph_time(at), "2024-01-15T10:30:00+0000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_tick_runs_the_job_and_beats() {
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let app = start(&db, NO_FAKES).await;
    app.fire_cron("ingest").await.unwrap();
    let heartbeat = json_of(
        &client,
        "select detail from public.worker_heartbeats where worker_id = 'ingest'",
        &[],
    )
    .await;
    assert_eq!(
        (heartbeat["trigger"].as_str(), heartbeat["outcome"].as_str()),
        (Some("cron"), Some("ok")),
        "{heartbeat}"
    );
    assert_eq!(heartbeat["report"]["items"]["claimed"], 0, "{heartbeat}");
    assert_eq!(heartbeat["report"]["accounts"]["synced"], 0, "{heartbeat}");
    app.stop().await;
}

//! `token-rotation` end to end: the built `.wasm` in the test host over real
//! Postgres, with the platforms' token endpoints faked on loopback (Strava's
//! rotating `POST /oauth/token`, X's `POST /2/oauth2/token`, Instagram's
//! `GET /refresh_access_token`). Accounts hold tokens sealed with
//! `shared::token_cipher`.
//!
//! Covered: eight concurrent runs over 1,000 due accounts refresh each
//! exactly once and lose no rotated token; a 5xx keeps the account `active`
//! with its tokens and retries after a backoff; `invalid_grant` (X) and a
//! revoked Strava app move the account to `token_expired` with a
//! "Reconnect your ... account" notification, and stop; an account another
//! worker holds the lease on is left alone; tokens sealed under an older key
//! are re-sealed under the current one (the old key can then go); a worker
//! whose lease was taken over after X rotated its refresh token keeps the
//! rotated pair; an Instagram token is renewed through `ig_refresh_token`; a
//! LinkedIn token without a refresh token gets one reconnect notice; no
//! token appears in any answer, heartbeat, notification, log row or error
//! column.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use chrono::{DateTime, Duration, Utc};
use outpost_test_kit::fakes::instagram::FakeInstagram;
use outpost_test_kit::fakes::strava::{self as fake_strava, FakeStrava};
use outpost_test_kit::fakes::x::FakeX;
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;

/// The current token key (base64 of bytes 0..32), id `k1`.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// An older key, id `k0`.
const OLD_KEY: &str = "HxscGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQAfHh0=";

fn seal(plain: &str) -> String {
    shared::token_cipher::seal(plain, KEY, "k1").unwrap()
}

fn open(sealed: &str) -> String {
    shared::token_cipher::open(sealed, KEY).unwrap()
}

#[derive(Default)]
struct Platforms<'a> {
    strava: Option<&'a FakeStrava>,
    x: Option<&'a FakeX>,
    instagram: Option<&'a FakeInstagram>,
}

async fn start(db: &TestDb, platforms: Platforms<'_>, keys: &str) -> TestApp {
    require_wasm("token-rotation").unwrap();
    let mut builder = TestApp::builder(product_manifest())
        .database(db)
        .components(&["token-rotation"])
        .variable("token_encryption_key", keys);
    if let Some(strava) = platforms.strava {
        builder = builder.variable("strava_api_url", strava.url());
    }
    if let Some(x) = platforms.x {
        builder = builder
            .variable("x_api_url", x.url())
            .variable("x_client_id", "x-client");
    }
    if let Some(instagram) = platforms.instagram {
        builder = builder.variable("instagram_graph_url", instagram.url());
    }
    builder.start().await.unwrap()
}

/// `POST /jobs/token-rotation` with the job secret: the run's report.
async fn run_job(app: &TestApp) -> Value {
    app.run_job("token-rotation", None).await.unwrap()["report"].clone()
}

async fn create_user(client: &Client) -> Uuid {
    outpost_test_kit::create_user(client).await.unwrap()
}

/// A verified, active account with sealed tokens (key id `key_id`).
async fn add_account(
    client: &Client,
    user: Uuid,
    platform: &str,
    platform_user_id: &str,
    sealed: (String, Option<String>),
    key_id: &str,
    expires_at: DateTime<Utc>,
) -> Uuid {
    client
        .query_one(
            "insert into public.connected_accounts
               (user_id, platform, platform_user_id, username, access_token, refresh_token,
                token_key_id, token_expires_at, verified_at)
             values ($1, $2::text::public.platform_enum, $3, $4, $5, $6, $7,
                     $8::text::timestamptz, now())
             returning id",
            &[
                &user,
                &platform,
                &platform_user_id,
                &format!("{platform}-{platform_user_id}"),
                &sealed.0,
                &sealed.1,
                &key_id,
                &expires_at.to_rfc3339(),
            ],
        )
        .await
        .unwrap()
        .get(0)
}

/// A verified Strava account of `user` for the fake's athlete `athlete`,
/// its tokens (sealed under `k1`) ending `expires_in` from now: the row's
/// id and the plain tokens.
async fn strava_account(
    strava: &FakeStrava,
    client: &Client,
    user: Uuid,
    athlete: u64,
    expires_in: Duration,
) -> (Uuid, fake_strava::StravaTokens) {
    let expires_at = Utc::now() + expires_in;
    let tokens = strava.add_athlete_expiring(athlete, expires_at.timestamp());
    let id = add_account(
        client,
        user,
        "strava",
        &athlete.to_string(),
        (
            seal(&tokens.access_token),
            Some(seal(&tokens.refresh_token)),
        ),
        "k1",
        expires_at,
    )
    .await;
    (id, tokens)
}

async fn account(client: &Client, id: Uuid) -> Value {
    client
        .query_one(
            "select to_jsonb(a) - 'profile_data' from public.connected_accounts a where id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

async fn rotation_state(client: &Client, id: Uuid) -> Value {
    client
        .query_one(
            "select coalesce((select to_jsonb(s) from public.account_token_rotation s where account_id = $1), 'null')",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

async fn notifications(client: &Client, user: Uuid) -> Vec<Value> {
    client
        .query(
            "select to_jsonb(n) from public.notifications n where user_id = $1 order by created_at",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Everything a token could leak into: heartbeats, notifications, provider
/// logs, queue events, error columns and the rotation state.
async fn audit_text(client: &Client) -> String {
    let row = client
        .query_one(
            "select concat_ws(' ',
               (select string_agg(to_jsonb(h)::text, ' ') from public.worker_heartbeats h),
               (select string_agg(to_jsonb(n)::text, ' ') from public.notifications n),
               (select string_agg(to_jsonb(l)::text, ' ') from public.api_logs l),
               (select string_agg(to_jsonb(e)::text, ' ') from public.queue_events e),
               (select string_agg(to_jsonb(s)::text, ' ') from public.account_token_rotation s),
               (select string_agg(concat_ws(' ', a.error_message), ' ') from public.connected_accounts a))",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, Option<String>>(0).unwrap_or_default()
}

async fn assert_no_secrets(client: &Client, reports: &[&Value], secrets: &[String]) {
    let mut text = audit_text(client).await;
    assert!(!text.is_empty());
    for report in reports {
        text.push_str(&report.to_string());
    }
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a token leaked into the audit trail: {text}"
        );
    }
}

fn count(report: &Value, platform: &str, what: &str) -> u64 {
    report["platforms"][platform][what].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_runs_over_a_thousand_due_accounts_refresh_each_exactly_once() {
    const ACCOUNTS: u64 = 1000;
    let strava = FakeStrava::start().await.unwrap();
    strava.instant();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    // Due: their 6-hour tokens end within the hour.
    let expires = Utc::now() + Duration::minutes(20);
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut old_refresh = Vec::new();
    for id in 1..=ACCOUNTS {
        let tokens = strava.add_athlete_expiring(id, expires.timestamp());
        rows.push((
            id.to_string(),
            seal(&tokens.access_token),
            seal(&tokens.refresh_token),
        ));
        old_refresh.push(tokens.refresh_token);
    }
    let (ids, access, refresh): (Vec<String>, Vec<String>, Vec<String>) = rows.into_iter().fold(
        (Vec::new(), Vec::new(), Vec::new()),
        |(mut a, mut b, mut c), (x, y, z)| {
            a.push(x);
            b.push(y);
            c.push(z);
            (a, b, c)
        },
    );
    client
        .execute(
            "insert into public.connected_accounts
               (user_id, platform, platform_user_id, username, access_token, refresh_token,
                token_key_id, token_expires_at, verified_at)
             select $1, 'strava', u.id, 'athlete' || u.id, u.access, u.refresh, 'k1',
                    $5::text::timestamptz, now()
               from unnest($2::text[], $3::text[], $4::text[]) as u(id, access, refresh)",
            &[&user, &ids, &access, &refresh, &expires.to_rfc3339()],
        )
        .await
        .unwrap();
    let app = start(
        &db,
        Platforms {
            strava: Some(&strava),
            ..Platforms::default()
        },
        KEY,
    )
    .await;

    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = format!("{}/jobs/token-rotation", app.url());
        runs.spawn(async move {
            let response = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(url)
                .bearer_auth(TestApp::JOB_SECRET)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["report"].clone()
        });
    }
    let mut reports = Vec::new();
    while let Some(report) = runs.join_next().await {
        reports.push(report.unwrap());
    }
    let refreshed: u64 = reports
        .iter()
        .map(|r| count(r, "strava", "refreshed"))
        .sum();
    let lost: u64 = reports
        .iter()
        .map(|r| count(r, "strava", "lost_lease"))
        .sum();
    assert_eq!(refreshed, ACCOUNTS, "each account once: {reports:?}");
    assert_eq!(lost, 0, "{reports:?}");
    assert!(
        reports
            .iter()
            .filter(|r| count(r, "strava", "refreshed") > 0)
            .count()
            > 1,
        "the runs shared the work: {reports:?}"
    );
    assert_eq!(
        strava.refreshes() as u64,
        ACCOUNTS,
        "no refresh token spent twice"
    );

    // No rotated token lost: each stored refresh token is the one Strava
    // holds now, and the access token is the new one.
    let stored = client
        .query(
            "select platform_user_id, access_token, refresh_token, token_key_id, token_expires_at
               from public.connected_accounts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, ACCOUNTS);
    for row in &stored {
        let athlete: u64 = row.get::<_, String>(0).parse().unwrap();
        let refresh = open(&row.get::<_, String>(2));
        assert_eq!(
            Some(refresh.clone()),
            strava.refresh_token(athlete),
            "athlete {athlete}: the rotated refresh token is stored"
        );
        assert_ne!(refresh, old_refresh[(athlete - 1) as usize]);
        assert!(strava.access_valid(&open(&row.get::<_, String>(1))));
        assert_eq!(row.get::<_, String>(3), "k1");
        let expires_at: DateTime<Utc> = row.get::<_, std::time::SystemTime>(4).into();
        assert!(expires_at > Utc::now() + Duration::hours(5), "{expires_at}");
    }
    assert_eq!(
        client
            .query_one(
                "select count(*) from public.account_token_rotation where lease_token is not null",
                &[]
            )
            .await
            .unwrap()
            .get::<_, i64>(0),
        0,
        "every lease released"
    );
    // A later run finds nothing due.
    let again = run_job(&app).await;
    assert_eq!(again["handled"], 0, "{again}");
    let beat = client
        .query_one(
            "select detail from public.worker_heartbeats where worker_id = 'token-rotation'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, Value>(0);
    assert_eq!(beat["outcome"], "ok", "{beat}");
    assert_eq!(beat["report"]["platforms"], serde_json::json!({}), "{beat}");
    let report_refs: Vec<&Value> = reports.iter().collect();
    assert_no_secrets(&client, &report_refs, &old_refresh[..50]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_outage_keeps_the_account_active_and_retries_after_a_backoff() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let (id, tokens) = strava_account(&strava, &client, user, 7, Duration::minutes(30)).await;
    strava.fail_next(1, fake_strava::Fault::status(503).on_path("/oauth/token"));
    let app = start(
        &db,
        Platforms {
            strava: Some(&strava),
            ..Platforms::default()
        },
        KEY,
    )
    .await;

    let report = run_job(&app).await;
    assert_eq!(
        count(&report, "strava", "failed_transiently"),
        1,
        "{report}"
    );
    assert_eq!(count(&report, "strava", "expired"), 0, "{report}");
    let stored = account(&client, id).await;
    assert_eq!(
        stored["status"], "active",
        "an outage disconnects nobody: {stored}"
    );
    assert_eq!(
        open(stored["refresh_token"].as_str().unwrap()),
        tokens.refresh_token
    );
    let state = rotation_state(&client, id).await;
    assert_eq!(state["attempts"], 1, "{state}");
    assert!(
        state["last_error"].as_str().unwrap().contains("503"),
        "{state}"
    );
    let next: DateTime<Utc> = serde_json::from_value(state["next_attempt_at"].clone()).unwrap();
    assert!(next > Utc::now() + Duration::seconds(30), "backoff: {next}");
    assert!(notifications(&client, user).await.is_empty());
    let logged: Value = client
        .query_one(
            "select to_jsonb(l) from public.api_logs l where provider = 'strava'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged["path"], "/oauth/token", "{logged}");
    assert_eq!(logged["status_code"], 503, "{logged}");
    assert_eq!(logged["user_id"], user.to_string(), "{logged}");

    // Within the backoff nothing is tried.
    let report = run_job(&app).await;
    assert_eq!(report["handled"], 0, "{report}");
    assert_eq!(strava.refreshes(), 0);

    // After it, the refresh goes through.
    client
        .execute(
            "update public.account_token_rotation set next_attempt_at = now() - interval '1 second' where account_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let report = run_job(&app).await;
    assert_eq!(count(&report, "strava", "refreshed"), 1, "{report}");
    let stored = account(&client, id).await;
    assert_eq!(
        Some(open(stored["refresh_token"].as_str().unwrap())),
        strava.refresh_token(7)
    );
    assert_eq!(rotation_state(&client, id).await["attempts"], 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_grant_expires_the_account_notifies_its_user_and_stops() {
    let strava = FakeStrava::start().await.unwrap();
    let x = FakeX::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    // X: a refresh token X does not know (revoked) -> invalid_grant.
    let x_access = "x-access-secret-0001".to_string();
    let x_refresh = "x-refresh-secret-0001".to_string();
    let x_id = add_account(
        &client,
        user,
        "x",
        "1001",
        (seal(&x_access), Some(seal(&x_refresh))),
        "k1",
        Utc::now() + Duration::minutes(10),
    )
    .await;
    // Strava: the athlete revoked the app.
    let (strava_id, tokens) = strava_account(&strava, &client, user, 8, Duration::minutes(5)).await;
    strava.revoke(8);
    let app = start(
        &db,
        Platforms {
            strava: Some(&strava),
            x: Some(&x),
            ..Platforms::default()
        },
        KEY,
    )
    .await;

    let report = run_job(&app).await;
    assert_eq!(count(&report, "x", "expired"), 1, "{report}");
    assert_eq!(count(&report, "strava", "expired"), 1, "{report}");
    for id in [x_id, strava_id] {
        let stored = account(&client, id).await;
        assert_eq!(stored["status"], "token_expired", "{stored}");
    }
    let x_error = account(&client, x_id).await["error_message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(x_error.contains("invalid_grant"), "{x_error}");
    let titles: Vec<String> = notifications(&client, user)
        .await
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(
        titles.contains(&"Reconnect your X account".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Reconnect your Strava account".to_string()),
        "{titles:?}"
    );

    // Stopped: nothing is tried again, nobody is notified twice.
    let report = run_job(&app).await;
    assert_eq!(report["handled"], 0, "{report}");
    assert_eq!(notifications(&client, user).await.len(), 2);
    assert_no_secrets(
        &client,
        &[&report],
        &[
            x_access,
            x_refresh,
            tokens.access_token.clone(),
            tokens.refresh_token.clone(),
        ],
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stalls_past_its_lease_keeps_the_refresh_token_x_already_rotated() {
    let x = FakeX::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let grant = x.grant("2001", "stalled", Utc::now().timestamp());
    let old_refresh = grant.refresh_token.clone().unwrap();
    let id = add_account(
        &client,
        user,
        "x",
        "2001",
        (seal(&grant.access_token), Some(seal(&old_refresh))),
        "k1",
        Utc::now() + Duration::minutes(10),
    )
    .await;
    let app = start(
        &db,
        Platforms {
            x: Some(&x),
            ..Platforms::default()
        },
        KEY,
    )
    .await;

    // X rotates the refresh token at once but its answer is held; meanwhile
    // the worker's lease is taken over by another refresher.
    x.delay_token_answers(std::time::Duration::from_millis(1500));
    let takeover = async {
        loop {
            if !rotation_state(&client, id).await["lease_token"].is_null() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        client
            .execute(
                "update public.account_token_rotation
                    set lease_token = lease_token + 1000, locked_by = 'another-refresher',
                        lease_expires_at = now() + interval '5 minutes'
                  where account_id = $1",
                &[&id],
            )
            .await
            .unwrap();
    };
    let (report, ()) = tokio::join!(run_job(&app), takeover);
    assert_eq!(x.refreshes(), 1, "{report}");
    assert!(
        !x.refresh_valid(&old_refresh),
        "X spent the old refresh token"
    );

    // The rotated pair is kept: the only refresh token X still honours.
    let stored = account(&client, id).await;
    assert_eq!(stored["status"], "active", "{stored}");
    let stored_refresh = open(stored["refresh_token"].as_str().unwrap());
    assert_ne!(stored_refresh, old_refresh);
    assert!(
        x.refresh_valid(&stored_refresh),
        "the stored refresh token is the one X honours now"
    );
    assert_eq!(count(&report, "x", "refreshed"), 1, "{report}");
    // The other refresher keeps its lease; its own finish will see the
    // tokens changed and stand down.
    assert_eq!(
        rotation_state(&client, id).await["locked_by"],
        "another-refresher"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_leased_by_another_refresher_is_left_alone() {
    let strava = FakeStrava::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    let (id, tokens) = strava_account(&strava, &client, user, 9, Duration::minutes(5)).await;
    // Ingest (say) is refreshing this account right now.
    let claim: Value = client
        .query_one(
            "select public.claim_token_refresh($1, 'ingest', 300)",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(claim["claimed"], true, "{claim}");
    let app = start(
        &db,
        Platforms {
            strava: Some(&strava),
            ..Platforms::default()
        },
        KEY,
    )
    .await;
    let report = run_job(&app).await;
    assert_eq!(report["handled"], 0, "{report}");
    assert_eq!(
        strava.refreshes(),
        0,
        "the refresh token is not spent twice"
    );
    assert_eq!(
        open(
            account(&client, id).await["refresh_token"]
                .as_str()
                .unwrap()
        ),
        tokens.refresh_token
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_under_an_older_key_are_resealed_under_the_current_one() {
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    // Not due for a refresh (Strava, 5 hours left), only under key k0.
    let access = "old-key-access-secret".to_string();
    let refresh = "old-key-refresh-secret".to_string();
    let id = add_account(
        &client,
        user,
        "strava",
        "11",
        (
            shared::token_cipher::seal(&access, OLD_KEY, "k0").unwrap(),
            Some(shared::token_cipher::seal(&refresh, OLD_KEY, "k0").unwrap()),
        ),
        "k0",
        Utc::now() + Duration::hours(5),
    )
    .await;
    // k1 is current; k0 is kept for reading until nothing uses it.
    let app = start(&db, Platforms::default(), &format!("k1:{KEY},k0:{OLD_KEY}")).await;
    let report = run_job(&app).await;
    assert_eq!(count(&report, "strava", "resealed"), 1, "{report}");
    assert_eq!(report["current_key_id"], "k1", "{report}");
    let stored = account(&client, id).await;
    assert_eq!(stored["token_key_id"], "k1", "{stored}");
    let sealed_access = stored["access_token"].as_str().unwrap();
    assert!(sealed_access.starts_with("v1.k1."), "{sealed_access}");
    // Readable with the current key alone: k0 can be retired.
    assert_eq!(open(sealed_access), access);
    assert_eq!(open(stored["refresh_token"].as_str().unwrap()), refresh);
    let remaining: i64 = client
        .query_one(
            "select count(*) from public.connected_accounts where token_key_id = 'k0'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(remaining, 0);
    let report = run_job(&app).await;
    assert_eq!(report["handled"], 0, "done once: {report}");
    assert_no_secrets(&client, &[&report], &[access, refresh]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instagram_is_renewed_and_linkedin_without_refresh_is_told_to_reconnect_once() {
    let instagram = FakeInstagram::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let client = db.connect().await.unwrap();
    let user = create_user(&client).await;
    // A 60-day Instagram token issued ten days ago.
    let issued = Utc::now() - Duration::days(10);
    let grant = instagram.grant("17841400000000001", "studio", issued.timestamp());
    let ig_id = add_account(
        &client,
        user,
        "instagram",
        "17841400000000001",
        (seal(&grant.access_token), None),
        "k1",
        issued + Duration::days(60),
    )
    .await;
    // LinkedIn: no refresh token, five days left.
    let li_id = add_account(
        &client,
        user,
        "linkedin",
        "abc123",
        (seal("linkedin-access-secret"), None),
        "k1",
        Utc::now() + Duration::days(5),
    )
    .await;
    let app = start(
        &db,
        Platforms {
            instagram: Some(&instagram),
            ..Platforms::default()
        },
        KEY,
    )
    .await;
    let report = run_job(&app).await;
    assert_eq!(count(&report, "instagram", "refreshed"), 1, "{report}");
    assert_eq!(count(&report, "linkedin", "notified"), 1, "{report}");
    assert_eq!(instagram.refreshes(), 1);
    let stored = account(&client, ig_id).await;
    let new_token = open(stored["access_token"].as_str().unwrap());
    assert_ne!(new_token, grant.access_token);
    assert!(instagram.access_valid(&new_token));
    let expires: DateTime<Utc> =
        serde_json::from_value(stored["token_expires_at"].clone()).unwrap();
    assert!(expires > Utc::now() + Duration::days(59), "{expires}");
    let calls: Vec<_> = instagram
        .requests()
        .into_iter()
        .filter(|r| r.uri.path() == "/refresh_access_token")
        .collect();
    assert_eq!(calls.len(), 1);
    assert!(
        calls[0]
            .uri
            .query()
            .unwrap()
            .contains("grant_type=ig_refresh_token")
    );
    let linkedin = account(&client, li_id).await;
    assert_eq!(linkedin["status"], "active", "{linkedin}");
    let notes = notifications(&client, user).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["title"], "Reconnect your LinkedIn account soon");
    assert_eq!(notes[0]["data"]["account_id"], li_id.to_string());
    let report = run_job(&app).await;
    assert_eq!(report["handled"], 0, "once per token: {report}");
    assert_no_secrets(
        &client,
        &[&report],
        &[
            grant.access_token.clone(),
            new_token,
            "linkedin-access-secret".into(),
        ],
    )
    .await;
    app.stop().await;
}

//! Issue 12, the workers' half, end to end: the built components in the
//! test host over real Postgres. Rows are planted as the superuser, past
//! every row-level policy, as a policy bug would let them in; the workers'
//! SQL (migration 0017) must still never act for one user with another
//! user's account or identity.
//!
//! * A post planted on another user's Bluesky account is never published
//!   (the PDS gets no record) and ends `failed` with the reason, while the
//!   account owner's own post goes out.
//! * An account row naming someone else's DID with the attacker's own app
//!   password: createSession answers the attacker's DID, the session is
//!   refused, nothing is posted, and the post fails saying why; a genuine
//!   unverified account becomes verified by that same createSession.
//! * Strava and Instagram webhooks for an identity two users claim reach
//!   only the verified owner, not the one who touched their row last.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use outpost_test_kit::fakes::bluesky::{FakeAccount, FakeBluesky};
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_postgres::Client;
use uuid::Uuid;

const APP_PASSWORD: &str = "abcd-efgh-ijkl-mnop";
const ATTACKER_PASSWORD: &str = "zzzz-yyyy-xxxx-wwww";
const CREATE_RECORD: &str = "com.atproto.repo.createRecord";
const POST_COLLECTION: &str = "app.bsky.feed.post";

const STRAVA_VERIFY_TOKEN: &str = "strava-verify-token-for-tests";
const STRAVA_SUBSCRIPTION_ID: &str = "120475";
const INSTAGRAM_VERIFY_TOKEN: &str = "instagram-verify-token-for-tests";
const INSTAGRAM_APP_SECRET: &str = "instagram-app-secret-for-tests";

fn token_key() -> String {
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// The components that publish: `schedule-claim` (it links `publishing`).
fn publishing_components() -> Vec<&'static str> {
    require_wasm("schedule-claim").unwrap();
    vec!["schedule-claim"]
}

async fn user(sql: &Client) -> Uuid {
    outpost_test_kit::create_user(sql).await.unwrap()
}

/// A Bluesky account row (as the superuser), its app password in Vault,
/// logging in with `handle`, naming `did`.
async fn bluesky_row(
    sql: &Client,
    user: Uuid,
    did: &str,
    handle: &str,
    password: &str,
    verified: bool,
) -> Uuid {
    let secret: Uuid = sql
        .query_one(
            "select vault.create_secret($1, $2, '')",
            &[&password, &format!("bsky-{user}-{handle}")],
        )
        .await
        .unwrap()
        .get(0);
    sql.query_one(
        "insert into public.connected_accounts
           (user_id, platform, platform_user_id, username, handle, vault_secret_id, verified_at)
         values ($1, 'bluesky', $2, $3, $3, $4, case when $5 then now() end) returning id",
        &[&user, &did, &handle, &secret, &verified],
    )
    .await
    .unwrap()
    .get(0)
}

/// A post due a few seconds ago, inserted as the superuser (no policy
/// looks at it).
async fn plant_post(sql: &Client, user: Uuid, account: Uuid, text: &str, seconds_ago: f64) -> Uuid {
    sql.query_one(
        "insert into public.scheduled_posts (user_id, account_id, content, run_at)
         values ($1, $2, $3, now() - make_interval(secs => $4)) returning id",
        &[&user, &account, &text, &seconds_ago],
    )
    .await
    .unwrap()
    .get(0)
}

async fn post_row(sql: &Client, id: Uuid) -> Value {
    sql.query_one(
        "select to_jsonb(sp) from public.scheduled_posts sp where id = $1",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}

async fn event_types(sql: &Client, id: Uuid) -> Vec<String> {
    sql.query(
        "select type from public.post_events where scheduled_post_id = $1
          order by created_at, case type when 'claimed' then 0 else 1 end",
        &[&id],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|row| row.get(0))
    .collect()
}

struct Publishing {
    _db: TestDb,
    sql: Client,
    bsky: FakeBluesky,
    app: TestApp,
}

async fn publishing() -> Publishing {
    let components = publishing_components();
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let bsky = FakeBluesky::start().await.unwrap();
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&components)
        .variable("bluesky_pds_url", bsky.url())
        .variable("bluesky_appview_url", bsky.url())
        .variable("token_encryption_key", token_key())
        .start()
        .await
        .unwrap();
    Publishing {
        _db: db,
        sql,
        bsky,
        app,
    }
}

impl Publishing {
    /// `POST /jobs/schedule-claim`; the run's report.
    async fn run(&self) -> Value {
        self.app
            .run_job("schedule-claim", Some(&json!({"metrics": false})))
            .await
            .unwrap()["report"]
            .clone()
    }

    fn posts_of(&self, account: &FakeAccount) -> usize {
        self.bsky.records(&account.did, POST_COLLECTION).len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_planted_on_another_users_account_is_never_published() {
    let w = publishing().await;
    let owner = user(&w.sql).await;
    let intruder = user(&w.sql).await;
    let victim = w.bsky.add_account("victim.test", APP_PASSWORD);
    let account = bluesky_row(
        &w.sql,
        owner,
        &victim.did,
        &victim.handle,
        APP_PASSWORD,
        true,
    )
    .await;

    // The intruder's post on the owner's account, due first; the owner's
    // own post right behind it on the same account.
    let planted = plant_post(&w.sql, intruder, account, "posted as somebody else", 30.0).await;
    let own = plant_post(&w.sql, owner, account, "my own words", 20.0).await;

    let report = w.run().await;

    let row = post_row(&w.sql, planted).await;
    assert_eq!(row["status"], "failed", "{row}\n{report}");
    assert_eq!(
        row["last_error"], "refused: the account belongs to another user",
        "{row}"
    );
    assert!(!row["dead_lettered_at"].is_null(), "{row}");
    assert_eq!(
        event_types(&w.sql, planted).await,
        ["claimed", "failure"],
        "claimed, then refused: never handed to a platform"
    );
    let texts: Vec<String> = w
        .bsky
        .records(&victim.did, POST_COLLECTION)
        .iter()
        .map(|r| r.value["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        texts,
        ["my own words"],
        "the PDS holds the owner's post only, never the planted one"
    );
    assert_eq!(
        post_row(&w.sql, own).await["status"],
        "posted",
        "the owner's lane went on after the refusal: {report}"
    );
    let archived_for_intruder: i64 = w
        .sql
        .query_one(
            "select count(*) from public.published_posts where user_id = $1",
            &[&intruder],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        archived_for_intruder, 0,
        "nothing published for the intruder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bluesky_identity_is_proven_by_create_session_before_anything_is_posted() {
    let w = publishing().await;
    let owner = user(&w.sql).await;
    let intruder = user(&w.sql).await;
    let victim = w.bsky.add_account("victim.test", APP_PASSWORD);
    let own_login = w.bsky.add_account("intruder.test", ATTACKER_PASSWORD);

    // The intruder's row names the victim's DID but logs in with the
    // intruder's own handle and app password (all the intruder has).
    let squatted = bluesky_row(
        &w.sql,
        intruder,
        &victim.did,
        &own_login.handle,
        ATTACKER_PASSWORD,
        false,
    )
    .await;
    // The owner's genuine account, connected but not yet verified.
    let genuine = bluesky_row(
        &w.sql,
        owner,
        &victim.did,
        &victim.handle,
        APP_PASSWORD,
        false,
    )
    .await;

    let squat_post = plant_post(&w.sql, intruder, squatted, "squatting", 30.0).await;
    let genuine_post = plant_post(&w.sql, owner, genuine, "hello from the owner", 20.0).await;

    let report = w.run().await;

    let row = post_row(&w.sql, squat_post).await;
    assert_eq!(row["status"], "failed", "{row}\n{report}");
    let error = row["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("logs in as {}", own_login.did)) && error.contains("did_mismatch"),
        "the failure says whose DID the password proved: {error}"
    );
    assert_eq!(w.posts_of(&own_login), 0, "nothing posted as the intruder");

    let squat_account: Value = w
        .sql
        .query_one(
            "select jsonb_build_object('verified_at', verified_at, 'status', status, 'stored_session',
                      (select count(*) from public.bluesky_sessions s
                        where s.account_id = ca.id and s.access_jwt is not null))
               from public.connected_accounts ca where id = $1",
            &[&squatted],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        squat_account,
        json!({"verified_at": null, "status": "token_expired", "stored_session": 0}),
        "the squatted row stays unverified, stopped, with no session"
    );

    assert_eq!(
        post_row(&w.sql, genuine_post).await["status"],
        "posted",
        "{report}"
    );
    assert_eq!(w.posts_of(&victim), 1, "the owner's post only");
    let verified: bool = w
        .sql
        .query_one(
            "select verified_at is not null from public.connected_accounts where id = $1",
            &[&genuine],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        verified,
        "createSession with the account's own app password verified it"
    );
    assert_eq!(
        w.bsky.calls(CREATE_RECORD),
        1,
        "one record written in all: the owner's"
    );
}

// Webhooks -------------------------------------------------------------------

async fn receiver(db: &TestDb) -> TestApp {
    require_wasm("webhook-receiver").unwrap();
    TestApp::builder(product_manifest())
        .database(db)
        .components(&["webhook-receiver"])
        .variables(vec![
            ("strava_verify_token", STRAVA_VERIFY_TOKEN.to_string()),
            ("strava_subscription_id", STRAVA_SUBSCRIPTION_ID.to_string()),
            ("instagram_verify_token", INSTAGRAM_VERIFY_TOKEN.to_string()),
            ("instagram_app_secret", INSTAGRAM_APP_SECRET.to_string()),
        ])
        .start()
        .await
        .unwrap()
}

async fn deliver(app: &TestApp, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Value {
    let mut request = http().post(format!("{}{path}", app.url())).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn meta_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(INSTAGRAM_APP_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Two users' rows for one platform identity: the owner's verified, the
/// copycat's not, and touched last.
async fn two_claimants(sql: &Client, platform: &str, identity: &str) -> (Uuid, Uuid, Uuid, Uuid) {
    let owner = user(sql).await;
    let copycat = user(sql).await;
    let mut ids = Vec::new();
    for (who, verified) in [(owner, true), (copycat, false)] {
        let id: Uuid = sql
            .query_one(
                "insert into public.connected_accounts
                   (user_id, platform, platform_user_id, username, verified_at)
                 values ($1, $2::text::public.platform_enum, $3, $4, case when $5 then now() end)
                 returning id",
                &[
                    &who,
                    &platform,
                    &identity,
                    &format!("{platform}-{who}"),
                    &verified,
                ],
            )
            .await
            .unwrap()
            .get(0);
        ids.push(id);
    }
    sql.execute(
        "update public.connected_accounts set username = username || '-touched', status = 'active'
          where id = $1",
        &[&ids[1]],
    )
    .await
    .unwrap();
    (owner, ids[0], copycat, ids[1])
}

/// How many archived webhook items `user` can read through the API (RLS).
async fn readable_items(sql: &Client, user: Uuid) -> i64 {
    sql.batch_execute("begin").await.unwrap();
    sql.execute(
        "select set_config('request.jwt.claims', $1, true)",
        &[&json!({"sub": user, "role": "authenticated"}).to_string()],
    )
    .await
    .unwrap();
    sql.batch_execute("set local role authenticated")
        .await
        .unwrap();
    let n: i64 = sql
        .query_one("select count(*) from public.ingested_items", &[])
        .await
        .unwrap()
        .get(0);
    sql.batch_execute("rollback").await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_for_an_identity_two_users_claim_reach_only_the_verified_owner() {
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let app = receiver(&db).await;

    // Strava: athlete 134815.
    let (owner, owner_account, copycat, _) = two_claimants(&sql, "strava", "134815").await;
    let strava = json!({
        "aspect_type": "create", "event_time": 1_716_000_001, "object_id": 9_001,
        "object_type": "activity", "owner_id": 134_815,
        "subscription_id": STRAVA_SUBSCRIPTION_ID.parse::<u64>().unwrap(), "updates": {}
    })
    .to_string()
    .into_bytes();
    let stored = deliver(&app, "/webhooks/strava", &[], strava).await;
    assert_eq!(stored["duplicate"], false, "{stored}");
    let row: Value = sql
        .query_one(
            "select jsonb_build_object('account_id', account_id, 'user_id', user_id)
               from public.ingested_items where platform = 'strava'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        row,
        json!({"account_id": owner_account, "user_id": owner}),
        "the Strava event is the verified owner's"
    );
    assert_eq!(readable_items(&sql, owner).await, 1);
    assert_eq!(
        readable_items(&sql, copycat).await,
        0,
        "the copycat never sees it"
    );

    // Instagram: one entry id, signed by Meta.
    let (ig_owner, ig_account, ig_copycat, _) =
        two_claimants(&sql, "instagram", "17841400000000000").await;
    let instagram = json!({
        "object": "instagram",
        "entry": [{"id": "17841400000000000", "time": 1_716_000_000,
                   "changes": [{"field": "media", "value": {"media_id": "tenancy-1"}}]}]
    })
    .to_string()
    .into_bytes();
    let signature = meta_signature(&instagram);
    deliver(
        &app,
        "/webhooks/instagram",
        &[("x-hub-signature-256", signature)],
        instagram,
    )
    .await;
    let row: Value = sql
        .query_one(
            "select jsonb_build_object('account_id', account_id, 'user_id', user_id)
               from public.ingested_items where platform = 'instagram'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        row,
        json!({"account_id": ig_account, "user_id": ig_owner}),
        "the Instagram event is the verified owner's"
    );
    assert_eq!(readable_items(&sql, ig_copycat).await, 0);

    // With nobody verified, nobody gets it.
    let (_, _, nobody, unverified) = two_claimants(&sql, "strava", "777").await;
    sql.execute(
        "update public.connected_accounts set verified_at = null
          where platform = 'strava' and platform_user_id = '777'",
        &[],
    )
    .await
    .unwrap();
    let unclaimed = json!({
        "aspect_type": "create", "event_time": 1_716_000_002, "object_id": 9_002,
        "object_type": "activity", "owner_id": 777,
        "subscription_id": STRAVA_SUBSCRIPTION_ID.parse::<u64>().unwrap(), "updates": {}
    })
    .to_string()
    .into_bytes();
    deliver(&app, "/webhooks/strava", &[], unclaimed).await;
    let row: Value = sql
        .query_one(
            "select jsonb_build_object('account_id', account_id, 'user_id', user_id)
               from public.ingested_items where platform = 'strava' and external_id like 'activity:9002:%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        row,
        json!({"account_id": null, "user_id": null}),
        "an identity nobody verified routes to no account (not {unverified})"
    );
    assert_eq!(readable_items(&sql, nobody).await, 0);
}

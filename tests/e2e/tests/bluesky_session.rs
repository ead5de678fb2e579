//! End-to-end tests of `shared::bluesky_session` (cached PDS sessions,
//! migration 0011) inside the `probe` component against the fake PDS:
//! many instances posting for one account at once log in exactly once; an
//! expired access token is refreshed, not re-created; a revoked app password
//! moves the account to `token_expired` and stops further logins; and no
//! token or password reaches an answer or the account's error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use outpost_test_kit::fakes::bluesky::FakeBluesky;
use outpost_test_kit::{TestApp, TestDb, probe_manifest, require_wasm};
use serde_json::Value;
use uuid::Uuid;

type Res = anyhow::Result<()>;

const APP_PASSWORD: &str = "abcd-efgh-ijkl-mnop";

/// A user with one Bluesky account whose app password is in Vault.
async fn seed_account(db: &TestDb, handle: &str, did: &str) -> anyhow::Result<Uuid> {
    let client = db.connect().await?;
    let user = Uuid::new_v4();
    let account = Uuid::new_v4();
    client
        .execute(
            "insert into auth.users (id, email) values ($1, $2)",
            &[&user, &format!("{user}@example.test")],
        )
        .await?;
    let secret: Uuid = client
        .query_one(
            "select vault.create_secret($1, $2, '')",
            &[&APP_PASSWORD, &format!("bsky-{account}")],
        )
        .await?
        .get(0);
    client
        .execute(
            "insert into public.connected_accounts
               (id, user_id, platform, platform_user_id, username, handle, vault_secret_id, verified_at)
             values ($1, $2, 'bluesky', $3, $4, $4, $5, now())",
            &[&account, &user, &did, &handle, &secret],
        )
        .await?;
    Ok(account)
}

async fn post(
    app: &TestApp,
    pds: &FakeBluesky,
    account: Uuid,
    worker: &str,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let account = account.to_string();
    let pds_url = pds.url();
    Ok(client
        .get(format!("{}/probe/bluesky-post", app.url()))
        .query(&[
            ("pds", pds_url.as_str()),
            ("account_id", account.as_str()),
            ("worker", worker),
        ])
        .timeout(Duration::from_secs(30))
        .send()
        .await?
        .json()
        .await?)
}

/// Posts, waiting as told while another worker logs in.
async fn post_until_done(
    app: &TestApp,
    pds: &FakeBluesky,
    account: Uuid,
    worker: &str,
) -> anyhow::Result<Value> {
    for _ in 0..20 {
        let v = post(app, pds, account, worker).await?;
        if v["kind"] != "wait" {
            return Ok(v);
        }
        let wait = v["retry_after"].as_u64().unwrap_or(1).min(2);
        tokio::time::sleep(Duration::from_millis(wait * 500)).await;
    }
    anyhow::bail!("worker {worker} waited 20 times")
}

async fn start(db: &TestDb, pds: &FakeBluesky) -> anyhow::Result<TestApp> {
    require_wasm("probe")?;
    Ok(TestApp::builder(probe_manifest())
        .database(db)
        .variable("outbound_allowed", pds.url())
        .start()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twelve_instances_at_once_log_in_once_then_refresh_instead_of_logging_in() -> Res {
    let db = TestDb::new().await?;
    let pds = FakeBluesky::start().await?;
    let fake = pds.add_account("writer.test", APP_PASSWORD);
    let account = seed_account(&db, "writer.test", &fake.did).await?;
    let app = start(&db, &pds).await?;

    let results = concurrent_posts(&app, &pds, account, 12).await?;
    for v in &results {
        assert!(
            v["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("at://{}/", fake.did))),
            "{v}"
        );
    }
    assert_eq!(
        pds.calls("com.atproto.server.createSession"),
        1,
        "one login for twelve instances"
    );
    assert_eq!(pds.records(&fake.did, "app.bsky.feed.post").len(), 12);

    pds.expire_access_tokens();
    let v = post_until_done(&app, &pds, account, "after-expiry").await?;
    assert!(v["uri"].is_string(), "{v}");
    assert_eq!(
        pds.calls("com.atproto.server.refreshSession"),
        1,
        "the expired token was refreshed"
    );
    assert_eq!(
        pds.calls("com.atproto.server.createSession"),
        1,
        "not logged in again"
    );

    let client = db.connect().await?;
    let row = client
        .query_one(
            "select access_jwt is not null and refreshed_at is not null from public.bluesky_sessions where account_id = $1",
            &[&account],
        )
        .await?;
    assert!(row.get::<_, bool>(0), "the refreshed session is stored");
    app.stop().await;
    Ok(())
}

/// Twelve concurrent posters, each waiting as told.
async fn concurrent_posts(
    app: &TestApp,
    pds: &FakeBluesky,
    account: Uuid,
    n: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let url = app.url().to_string();
        let pds_url = pds.url();
        set.spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build()?;
            let worker = format!("instance-{i}");
            for _ in 0..20 {
                let v: Value = client
                    .get(format!("{url}/probe/bluesky-post"))
                    .query(&[
                        ("pds", pds_url.as_str()),
                        ("account_id", account.to_string().as_str()),
                        ("worker", worker.as_str()),
                    ])
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await?
                    .json()
                    .await?;
                if v["kind"] != "wait" {
                    return Ok::<Value, anyhow::Error>(v);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            anyhow::bail!("{worker} never got a session")
        });
    }
    let mut out = Vec::new();
    while let Some(result) = set.join_next().await {
        out.push(result??);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_app_password_expires_the_account_and_stops_logins() -> Res {
    let db = TestDb::new().await?;
    let pds = FakeBluesky::start().await?;
    let fake = pds.add_account("revoked.test", APP_PASSWORD);
    let account = seed_account(&db, "revoked.test", &fake.did).await?;
    let app = start(&db, &pds).await?;

    let v = post_until_done(&app, &pds, account, "w1").await?;
    assert!(v["uri"].is_string(), "{v}");

    pds.revoke_app_password(&fake.did);
    pds.expire_access_tokens();
    let v = post_until_done(&app, &pds, account, "w2").await?;
    assert_eq!(v["kind"], "unusable", "{v}");
    assert_eq!(v["transient"], false, "{v}");
    let message = v["error"].as_str().unwrap();
    assert!(message.contains("AuthenticationRequired"), "{message}");
    assert!(!message.contains(APP_PASSWORD), "{message}");

    let client = db.connect().await?;
    let row = client
        .query_one(
            "select status::text, error_message from public.connected_accounts where id = $1",
            &[&account],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "token_expired");
    let stored: String = row.get(1);
    assert!(
        stored.contains("AuthenticationRequired") && !stored.contains(APP_PASSWORD),
        "{stored}"
    );

    let logins = pds.calls("com.atproto.server.createSession");
    let v = post(&app, &pds, account, "w3").await?;
    assert_eq!(v["kind"], "unusable", "{v}");
    assert_eq!(
        pds.calls("com.atproto.server.createSession"),
        logins,
        "no more login attempts"
    );
    app.stop().await;
    Ok(())
}

//! connect (issue 14): accounts connected through the platform itself, run
//! as the built `connect.wasm` under the test host against real PostgreSQL
//! and the loopback OAuth fakes (Strava, Instagram, X, LinkedIn, Bluesky).
//! Every redirect is a real HTTP hop: start -> the fake's authorize page ->
//! our callback -> the return URL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use outpost_test_kit::fakes::bluesky::FakeBluesky;
use outpost_test_kit::fakes::instagram::FakeInstagram;
use outpost_test_kit::fakes::linkedin::FakeLinkedIn;
use outpost_test_kit::fakes::strava::FakeStrava;
use outpost_test_kit::fakes::x::FakeX;
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use reqwest::Url;
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

const TOKEN_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const JWT_SECRET: &str = "connect-test-jwt-secret-with-at-least-32-characters";
const STATE_KEY: &str = "connect-test-state-signing-key-0123456789";
const RETURN: &str = "https://app.example/settings/accounts";

struct World {
    _db: TestDb,
    sql: Client,
    app: TestApp,
    strava: FakeStrava,
    ig: FakeInstagram,
    x: FakeX,
    li: FakeLinkedIn,
    bsky: FakeBluesky,
    http: reqwest::Client,
}

fn user_token(user: Uuid) -> String {
    outpost_test_kit::supabase_access_token(JWT_SECRET, user, 600)
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// One hop's answer: status, `Location`, body.
struct Hop {
    status: u16,
    location: Option<Url>,
    body: String,
}

impl Hop {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

async fn world() -> World {
    require_wasm("connect").unwrap();
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let (strava, ig, x, li, bsky) = (
        FakeStrava::start().await.unwrap(),
        FakeInstagram::start().await.unwrap(),
        FakeX::start().await.unwrap(),
        FakeLinkedIn::start().await.unwrap(),
        FakeBluesky::start().await.unwrap(),
    );
    strava.expect_client("strava-id", "strava-secret");
    ig.expect_client("ig-id", "ig-secret");
    x.expect_client("x-id", "x-secret");
    li.expect_client("li-id", "li-secret");
    let builder = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["connect"])
        .variable("token_encryption_key", TOKEN_KEY)
        .variable("supabase_jwt_secret", JWT_SECRET)
        .variable("connect_state_key", STATE_KEY)
        .variable(
            "connect_return_urls",
            "https://app.example/settings, http://localhost:3000",
        )
        .variable("strava_api_url", strava.url())
        .variable("strava_client_id", "strava-id")
        .variable("strava_client_secret", "strava-secret")
        .variable("instagram_authorize_url", ig.url())
        .variable("instagram_api_url", ig.url())
        .variable("instagram_graph_url", ig.url())
        .variable("instagram_client_id", "ig-id")
        .variable("instagram_app_secret", "ig-secret")
        .variable("x_authorize_url", x.url())
        .variable("x_api_url", x.url())
        .variable("x_client_id", "x-id")
        .variable("x_client_secret", "x-secret")
        .variable("linkedin_oauth_url", li.url())
        .variable("linkedin_api_url", li.url())
        .variable("linkedin_client_id", "li-id")
        .variable("linkedin_client_secret", "li-secret")
        .variable("bluesky_appview_url", bsky.url())
        .variable("bluesky_pds_url", bsky.url())
        .variable("plc_directory_url", bsky.url());
    // connect_public_url is left empty: redirect URIs are made from the
    // address the start request came to (the kit's random loopback port).
    let app = builder.start().await.unwrap();
    World {
        _db: db,
        sql,
        app,
        strava,
        ig,
        x,
        li,
        bsky,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    }
}

impl World {
    async fn user(&self) -> Uuid {
        outpost_test_kit::create_user(&self.sql).await.unwrap()
    }

    async fn hop(&self, request: reqwest::RequestBuilder) -> Hop {
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let location = answer
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Url::parse(v).ok());
        Hop {
            status,
            location,
            body: answer.text().await.unwrap_or_default(),
        }
    }

    /// `POST /connect/{platform}/start`: the authorize URL.
    async fn start(&self, user: Uuid, platform: &str) -> Url {
        let hop = self
            .hop(
                self.http
                    .post(format!("{}/connect/{platform}/start", self.app.url()))
                    .bearer_auth(user_token(user))
                    .json(&json!({"return_url": RETURN})),
            )
            .await;
        assert_eq!(hop.status, 200, "{}", hop.body);
        Url::parse(hop.json()["authorize_url"].as_str().unwrap()).unwrap()
    }

    /// Follows the authorize URL at the fake: where it sends the browser
    /// (our callback with code and state, or with an error).
    async fn authorize(&self, url: &Url) -> Url {
        let hop = self.hop(self.http.get(url.as_str())).await;
        assert_eq!(hop.status, 302, "{}", hop.body);
        hop.location.unwrap()
    }

    /// Follows our callback: its answer (303 to the return URL, or an error).
    async fn callback(&self, url: &Url) -> Hop {
        let mut url = url.clone();
        url.set_fragment(None);
        self.hop(self.http.get(url.as_str())).await
    }

    /// The whole flow for `user`.
    async fn connect(&self, user: Uuid, platform: &str) -> (Url, Hop) {
        let authorize = self.start(user, platform).await;
        let back = self.authorize(&authorize).await;
        let hop = self.callback(&back).await;
        (back, hop)
    }

    async fn accounts(&self, user: Uuid) -> Vec<tokio_postgres::Row> {
        self.sql
            .query(
                "select platform::text, platform_user_id, username, access_token, refresh_token,
                        token_key_id, token_expires_at, scope, verified_at, status::text, id,
                        vault_secret_id, handle
                   from public.connected_accounts where user_id = $1 order by created_at",
                &[&user],
            )
            .await
            .unwrap()
    }
}

/// The pairs of a form or query string.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    Url::parse(&format!("http://x/?{text}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn open(sealed: &str) -> String {
    shared::token_cipher::open(sealed, TOKEN_KEY).unwrap()
}

fn assert_connected(hop: &Hop, platform: &str) -> Uuid {
    assert_eq!(hop.status, 303, "{}", hop.body);
    let location = hop.location.as_ref().unwrap();
    assert!(location.as_str().starts_with(RETURN), "{location}");
    assert_eq!(
        param(location, "connected").as_deref(),
        Some(platform),
        "{location}"
    );
    assert_eq!(param(location, "code"), None);
    param(location, "account_id").unwrap().parse().unwrap()
}

fn assert_outcome(hop: &Hop, error: &str) {
    assert_eq!(hop.status, 303, "{}", hop.body);
    let location = hop.location.as_ref().unwrap();
    assert!(location.as_str().starts_with(RETURN), "{location}");
    assert_eq!(
        param(location, "error").as_deref(),
        Some(error),
        "{location}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_oauth_platform_connects_through_real_redirects() {
    let w = world().await;
    let user = w.user().await;
    w.strava.consent_as(4242);
    w.strava.name_athlete(4242, "marianne", "Marianne", "V");
    w.ig.consent_as("17841400000000042", "marianne.v");
    w.x.consent_as("2244994945", "marianne_x");
    w.li.consent_as("yrZCpj2Z12");
    w.li.name_member("yrZCpj2Z12", "Marianne", "V", "m@example.com");

    for (platform, identity, username) in [
        ("strava", "4242", "marianne"),
        ("instagram", "17841400000000042", "marianne.v"),
        ("x", "2244994945", "marianne_x"),
        ("linkedin", "yrZCpj2Z12", "Marianne V"),
    ] {
        let authorize = w.start(user, platform).await;
        // The authorize URL carries a PKCE S256 challenge and a signed state.
        assert_eq!(
            param(&authorize, "code_challenge_method").as_deref(),
            Some("S256")
        );
        assert_eq!(param(&authorize, "code_challenge").unwrap().len(), 43);
        assert!(param(&authorize, "state").unwrap().contains('.'));
        assert_eq!(
            param(&authorize, "redirect_uri").unwrap(),
            format!("{}/connect/{platform}/callback", w.app.url())
        );
        let back = w.authorize(&authorize).await;
        let hop = w.callback(&back).await;
        let id = assert_connected(&hop, platform);
        let rows = w.accounts(user).await;
        let row = rows.iter().find(|r| r.get::<_, Uuid>(10) == id).unwrap();
        assert_eq!(row.get::<_, String>(0), platform);
        assert_eq!(
            row.get::<_, String>(1),
            identity,
            "identity from the platform"
        );
        assert_eq!(row.get::<_, String>(2), username);
        assert!(
            row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(8)
                .is_some(),
            "verified"
        );
        assert_eq!(row.get::<_, String>(9), "active");
        let sealed: String = row.get(3);
        assert!(sealed.starts_with("v1."), "sealed, not plain");
        let access = open(&sealed);
        let valid = match platform {
            "strava" => w.strava.access_valid(&access),
            "instagram" => w.ig.access_valid(&access),
            "x" => w.x.access_valid(&access),
            _ => w.li.access_valid(&access),
        };
        assert!(
            valid,
            "{platform}: the stored token is the platform's live token"
        );
        let expires: chrono::DateTime<chrono::Utc> = row.get(6);
        let lifetime = (expires - chrono::Utc::now()).num_hours();
        let expected = match platform {
            "strava" => 5..=6,
            "instagram" => 1400..=1440, // the long-lived token, not the 1-hour one
            "x" => 1..=2,
            _ => 1400..=1440,
        };
        assert!(expected.contains(&lifetime), "{platform}: {lifetime} h");
        let refresh: Option<String> = row.get(4);
        match platform {
            "strava" => assert_eq!(
                open(refresh.as_ref().unwrap()),
                w.strava.refresh_token(4242).unwrap()
            ),
            "x" => assert!(w.x.refresh_valid(&open(refresh.as_ref().unwrap()))),
            _ => assert_eq!(refresh, None),
        }
        assert!(
            row.get::<_, Option<String>>(7).is_some(),
            "{platform}: scope kept"
        );
    }
    assert_eq!(w.accounts(user).await.len(), 4);
    // Each token endpoint call left an api_logs row without any secret.
    let logs: Vec<String> = w
        .sql
        .query("select to_jsonb(l)::text from public.api_logs l", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(logs.len() >= 5, "{logs:?}");
    let requests: Vec<_> = [
        w.strava.requests(),
        w.ig.requests(),
        w.x.requests(),
        w.li.requests(),
    ]
    .concat();
    let mut secrets: Vec<String> = Vec::new();
    for r in &requests {
        for (k, v) in form_pairs(r.uri.query().unwrap_or(""))
            .into_iter()
            .chain(form_pairs(&String::from_utf8_lossy(&r.body)))
        {
            if [
                "code",
                "code_verifier",
                "access_token",
                "refresh_token",
                "client_secret",
                "token",
            ]
            .contains(&k.as_str())
            {
                secrets.push(v);
            }
        }
    }
    assert!(secrets.len() >= 12, "{}", secrets.len());
    let states: Vec<String> = w
        .sql
        .query("select to_jsonb(s)::text from public.connect_states s", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for secret in &secrets {
        for text in logs.iter().chain(states.iter()) {
            assert!(!text.contains(secret.as_str()), "a secret reached {text}");
        }
    }
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_replayed_expired_and_foreign_states_are_refused() {
    let w = world().await;
    let user = w.user().await;
    w.x.consent_as("1001", "alice");

    // Tampered: one character of the signed payload changed.
    let back = w.authorize(&w.start(user, "x").await).await;
    let state = param(&back, "state").unwrap();
    let mut forged = back.clone();
    let flipped = if state.starts_with('e') { "f" } else { "e" };
    let tampered = format!("{flipped}{}", &state[1..]);
    forged
        .query_pairs_mut()
        .clear()
        .append_pair("code", &param(&back, "code").unwrap())
        .append_pair("state", &tampered);
    let hop = w.callback(&forged).await;
    assert_eq!(hop.status, 400, "{}", hop.body);
    assert_eq!(hop.json()["error"], "state_invalid");
    assert!(!hop.body.contains(&param(&back, "code").unwrap()));
    // The state of X is no good at Strava's callback either.
    let mut elsewhere = back.clone();
    elsewhere.set_path("/connect/strava/callback");
    assert_eq!(
        w.callback(&elsewhere).await.json()["error"],
        "state_invalid"
    );
    assert!(w.accounts(user).await.is_empty());

    // The genuine callback still works once; replayed, it is refused.
    let id = assert_connected(&w.callback(&back).await, "x");
    assert_outcome(&w.callback(&back).await, "state_replayed");
    assert_eq!(w.accounts(user).await.len(), 1);
    assert_eq!(
        w.x.code_exchanges(),
        1,
        "a replay never reaches the platform"
    );

    // Expired: the row's deadline passed while the user was away.
    let back = w.authorize(&w.start(user, "x").await).await;
    w.sql
        .execute(
            "update public.connect_states set expires_at = now() - interval '1 second' where consumed_at is null",
            &[],
        )
        .await
        .unwrap();
    assert_outcome(&w.callback(&back).await, "state_expired");
    assert_eq!(w.x.code_exchanges(), 1);

    // Another user's token cannot start for someone else: the state binds
    // the user who started it, and a state never names a return URL off the list.
    let hop = w
        .hop(
            w.http
                .post(format!("{}/connect/x/start", w.app.url()))
                .bearer_auth(user_token(user))
                .json(&json!({"return_url": "https://app.example.evil.test/settings"})),
        )
        .await;
    assert_eq!(
        (hop.status, hop.json()["error"].as_str()),
        (400, Some("return_url_not_allowed"))
    );
    let hop = w
        .hop(w.http.post(format!("{}/connect/x/start", w.app.url())))
        .await;
    assert_eq!(hop.status, 401);
    let rows = w.accounts(user).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, Uuid>(10), id);
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pkce_mismatch_denied_consent_and_refused_codes_write_nothing() {
    let w = world().await;
    let user = w.user().await;
    w.li.consent_as("member-1");

    // A code issued for one connect (challenge A) injected into another
    // (verifier B): LinkedIn refuses the verifier, nothing is stored.
    let back_a = w.authorize(&w.start(user, "linkedin").await).await;
    let back_b = w.authorize(&w.start(user, "linkedin").await).await;
    let mut injected = back_b.clone();
    injected
        .query_pairs_mut()
        .clear()
        .append_pair("code", &param(&back_a, "code").unwrap())
        .append_pair("state", &param(&back_b, "state").unwrap());
    assert_outcome(&w.callback(&injected).await, "code_refused");
    assert!(w.accounts(user).await.is_empty());
    assert_eq!(w.li.code_exchanges(), 0);

    // Denied consent: LinkedIn's user_cancelled_authorize is access_denied.
    w.li.deny_next(1);
    let back = w.authorize(&w.start(user, "linkedin").await).await;
    assert_eq!(param(&back, "code"), None);
    assert_outcome(&w.callback(&back).await, "access_denied");
    // X's standard access_denied too.
    w.x.deny_next(1);
    let back = w.authorize(&w.start(user, "x").await).await;
    assert_outcome(&w.callback(&back).await, "access_denied");

    // The platform down at exchange time: unavailable, not refused.
    w.x.consent_as("1002", "bob");
    w.x.fail_oauth_next(1, 503, Some("/2/oauth2/token"));
    let back = w.authorize(&w.start(user, "x").await).await;
    assert_outcome(&w.callback(&back).await, "platform_unavailable");
    assert!(w.accounts(user).await.is_empty(), "nothing half-written");
    let states: i64 = w
        .sql
        .query_one(
            "select count(*) from public.connect_states where consumed_at is null",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        states, 1,
        "every callback spent its state; only connect A's is left"
    );
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_identity_verified_by_another_user_is_refused() {
    let w = world().await;
    let (alice, mallory) = (w.user().await, w.user().await);
    w.strava.consent_as(777);
    let alice_account = assert_connected(&w.connect(alice, "strava").await.1, "strava");
    // Mallory somehow gets the same athlete to consent (shared login).
    let (_, hop) = w.connect(mallory, "strava").await;
    assert_outcome(&hop, "identity_taken");
    assert!(
        w.accounts(mallory).await.is_empty(),
        "nothing written for mallory"
    );
    let rows = w.accounts(alice).await;
    assert_eq!(rows[0].get::<_, Uuid>(10), alice_account);
    assert!(
        rows[0]
            .get::<_, Option<chrono::DateTime<chrono::Utc>>>(8)
            .is_some()
    );
    // Alice reconnecting the same identity updates her one account.
    let again = assert_connected(&w.connect(alice, "strava").await.1, "strava");
    assert_eq!(again, alice_account);
    assert_eq!(w.accounts(alice).await.len(), 1);
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bluesky_connects_with_the_right_password_only() {
    let w = world().await;
    let user = w.user().await;
    let alice = w.bsky.add_account("alice.test", "good-app-pass");
    let secrets_before: i64 = w
        .sql
        .query_one("select count(*) from vault.secrets", &[])
        .await
        .unwrap()
        .get(0);
    let post = |password: &str| {
        w.http
            .post(format!("{}/connect/bluesky", w.app.url()))
            .bearer_auth(user_token(user))
            .json(&json!({"identifier": "alice.test", "app_password": password}))
    };
    let hop = w.hop(post("wrong-pass")).await;
    assert_eq!(hop.status, 422, "{}", hop.body);
    assert_eq!(hop.json()["error"], "login_refused");
    assert!(
        hop.json()["message"]
            .as_str()
            .unwrap()
            .contains("Invalid identifier or password")
    );
    assert!(!hop.body.contains("wrong-pass"));
    assert!(w.accounts(user).await.is_empty());
    let secrets: i64 = w
        .sql
        .query_one("select count(*) from vault.secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        secrets, secrets_before,
        "no Vault secret for a refused login"
    );

    let hop = w.hop(post("good-app-pass")).await;
    assert_eq!(hop.status, 200, "{}", hop.body);
    assert_eq!(hop.json()["did"], alice.did.as_str());
    assert!(!hop.body.contains("good-app-pass"));
    let rows = w.accounts(user).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), alice.did);
    assert_eq!(
        rows[0].get::<_, Option<String>>(12).as_deref(),
        Some("alice.test")
    );
    assert!(
        rows[0]
            .get::<_, Option<chrono::DateTime<chrono::Utc>>>(8)
            .is_some()
    );
    let secret: Uuid = rows[0].get(11);
    let stored: String = w
        .sql
        .query_one(
            "select decrypted_secret from vault.decrypted_secrets where id = $1",
            &[&secret],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "good-app-pass");
    let session = w
        .sql
        .query_one(
            "select did, access_jwt is not null from public.bluesky_sessions where account_id = $1",
            &[&rows[0].get::<_, Uuid>(10)],
        )
        .await
        .unwrap();
    assert_eq!(
        session.get::<_, Option<String>>(0).as_deref(),
        Some(alice.did.as_str())
    );
    assert!(session.get::<_, bool>(1));
    // The DID document was read (the PDS comes from it, not a fixed host).
    assert!(w.bsky.calls("plc") >= 1);

    // Disconnect: the PDS session is deleted there, the password leaves Vault.
    let account: Uuid = rows[0].get(10);
    let hop = w
        .hop(
            w.http
                .post(format!("{}/connect/bluesky/disconnect", w.app.url()))
                .bearer_auth(user_token(user))
                .json(&json!({ "account_id": account })),
        )
        .await;
    assert_eq!(hop.status, 200, "{}", hop.body);
    assert_eq!(hop.json()["revoked"], true, "{}", hop.body);
    assert_eq!(w.bsky.calls("com.atproto.server.deleteSession"), 1);
    let left: (i64, i64) = {
        let row = w
            .sql
            .query_one(
                "select (select count(*) from public.bluesky_sessions where account_id = $1),
                        (select count(*) from vault.secrets where id = $2)",
                &[&account, &secret],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(left, (0, 0));
    let row = &w.accounts(user).await[0];
    assert_eq!(row.get::<_, String>(9), "disconnected");
    assert!(row.get::<_, Option<Uuid>>(11).is_none());
    w.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnect_revokes_at_the_platform_and_keeps_the_account() {
    let w = world().await;
    let (user, other) = (w.user().await, w.user().await);
    w.x.consent_as("3003", "carol");
    let account = assert_connected(&w.connect(user, "x").await.1, "x");
    let row = &w.accounts(user).await[0];
    let access = open(&row.get::<_, String>(3));
    let refresh = open(&row.get::<_, String>(4));
    let disconnect = |who: Uuid, platform: &str| {
        w.http
            .post(format!("{}/connect/{platform}/disconnect", w.app.url()))
            .bearer_auth(user_token(who))
            .json(&json!({ "account_id": account }))
    };
    // Not yours, or not that platform: the same 404, nothing revoked.
    assert_eq!(w.hop(disconnect(other, "x")).await.status, 404);
    assert_eq!(w.hop(disconnect(user, "strava")).await.status, 404);
    assert!(w.x.revocations().is_empty());

    let hop = w.hop(disconnect(user, "x")).await;
    assert_eq!(hop.status, 200, "{}", hop.body);
    assert_eq!(hop.json()["revoked"], true);
    assert_eq!(w.x.revocations(), vec![refresh.clone(), access.clone()]);
    assert!(!w.x.access_valid(&access));
    assert!(!w.x.refresh_valid(&refresh));
    let row = &w.accounts(user).await[0];
    assert_eq!(row.get::<_, String>(9), "disconnected");
    assert_eq!(row.get::<_, Option<String>>(3), None);
    assert_eq!(row.get::<_, Option<String>>(4), None);
    assert!(
        row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(8)
            .is_none(),
        "unverified"
    );

    // Strava: deauthorize; LinkedIn: no endpoint, dropped only.
    w.strava.consent_as(9);
    let strava_account = assert_connected(&w.connect(user, "strava").await.1, "strava");
    let hop = w
        .hop(
            w.http
                .post(format!("{}/connect/strava/disconnect", w.app.url()))
                .bearer_auth(user_token(user))
                .json(&json!({ "account_id": strava_account })),
        )
        .await;
    assert_eq!(hop.json()["revoked"], true, "{}", hop.body);
    assert_eq!(w.strava.deauthorizations().len(), 1);
    w.li.consent_as("m-9");
    let li_account = assert_connected(&w.connect(user, "linkedin").await.1, "linkedin");
    let hop = w
        .hop(
            w.http
                .post(format!("{}/connect/linkedin/disconnect", w.app.url()))
                .bearer_auth(user_token(user))
                .json(&json!({ "account_id": li_account })),
        )
        .await;
    assert_eq!(hop.status, 200, "{}", hop.body);
    assert_eq!(hop.json()["revoked"], Value::Null);
    w.app.stop().await;
}

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End-to-end tests of the Bluesky feed generator (issue #6): the built
//! `feed-skeleton` and `feed-indexer` components in the test host over real
//! PostgreSQL, with the fake Bluesky (PDS, AppView, PLC directory) on
//! loopback.
//!
//! - Paging 10,000 indexed posts (500 sharing one timestamp, neighbours one
//!   microsecond apart) with limits 1, 7, 50 and 100 returns every post
//!   exactly once, in order, and the last page has no cursor; it stays exact
//!   while the indexer's SQL inserts newer and older posts meanwhile.
//! - XRPC errors: UnknownFeed (unknown, disabled, unpublished), InvalidRequest
//!   (limit, cursor, feed).
//! - describeFeedGenerator and `/.well-known/did.json`.
//! - Service JWTs: missing, expired, wrong audience, wrong method, bad
//!   signature (unknown issuer, forged), valid; the issuer's key is fetched
//!   from the PLC directory once and then read from the SQL cache.
//! - The indexer: include / exclude / language / emoji / accent rules,
//!   reposts left out, microseconds of `createdAt` kept, each author read
//!   once for several feeds, retention pruning, per-feed run log, heartbeat;
//!   a second run reads only the new posts (AppView calls counted).
//! - Publishing: putRecord through the owner's session, columns stored,
//!   republishing keeps the rkey and createdAt; strangers and bad tokens are
//!   refused.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{SecondsFormat, Utc};
use outpost_test_kit::fakes::bluesky::{FakeBluesky, SeedPost};
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use uuid::Uuid;

const SERVICE_DID: &str = "did:web:feeds.test";
const HOSTNAME: &str = "feeds.test";
const SUPABASE_SECRET: &str = "test-supabase-jwt-secret-with-32-chars-or-more";
const GET_SKELETON: &str = "app.bsky.feed.getFeedSkeleton";
const APP_PASSWORD: &str = "abcd-efgh-ijkl-mnop";

/// An HTTP answer: status and JSON body (Null when not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn error(&self) -> (u16, &str) {
        (self.status, self.body["error"].as_str().unwrap_or(""))
    }
}

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(app: &TestApp) -> Self {
        Self {
            base: app.url().to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    async fn send(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)], bearer: Option<&str>) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.base)).query(query);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Self::send(request).await
    }

    async fn skeleton(
        &self,
        feed: &str,
        limit: Option<&str>,
        cursor: Option<&str>,
        bearer: Option<&str>,
    ) -> Answer {
        let mut query = vec![("feed", feed)];
        if let Some(limit) = limit {
            query.push(("limit", limit));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor));
        }
        self.get("/xrpc/app.bsky.feed.getFeedSkeleton", &query, bearer)
            .await
    }

    async fn post(&self, path: &str, bearer: Option<&str>) -> Answer {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Self::send(request).await
    }

    /// Pages through `feed` with `limit` until a page has no cursor.
    async fn page_all(&self, feed: &str, limit: usize) -> Vec<String> {
        let limit_text = limit.to_string();
        let mut cursor: Option<String> = None;
        let mut all = Vec::new();
        loop {
            let page = self
                .skeleton(feed, Some(&limit_text), cursor.as_deref(), None)
                .await;
            assert_eq!(page.status, 200, "{}", page.body);
            let posts = posts_of(&page.body);
            assert!(posts.len() <= limit, "page over the limit: {}", posts.len());
            // A full last page has no cursor, so no empty page follows.
            assert!(
                !posts.is_empty() || all.is_empty(),
                "an empty page after a cursor"
            );
            all.extend(posts.iter().cloned());
            match page.body["cursor"].as_str() {
                Some(next) => {
                    assert_eq!(posts.len(), limit, "only full pages carry a cursor");
                    assert_ne!(Some(next), cursor.as_deref(), "cursor must advance");
                    cursor = Some(next.to_string());
                }
                None => break,
            }
        }
        all
    }
}

fn posts_of(body: &Value) -> Vec<String> {
    body["feed"]
        .as_array()
        .unwrap_or_else(|| panic!("no feed in {body}"))
        .iter()
        .map(|item| item["post"].as_str().unwrap().to_string())
        .collect()
}

fn rfc3339_micros(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A user (auth.users -> public.users by trigger).
async fn add_user(db: &tokio_postgres::Client) -> Uuid {
    let user = Uuid::new_v4();
    db.execute(
        "insert into auth.users (id, email) values ($1, $2)",
        &[&user, &format!("{user}@example.test")],
    )
    .await
    .unwrap();
    user
}

/// A feed of `user`; published at `at://did:plc:owner<n>/app.bsky.feed.generator/<slug>`
/// when `published`. Answers (id, at-uri).
async fn add_feed(
    db: &tokio_postgres::Client,
    user: Uuid,
    slug: &str,
    published: bool,
    enabled: bool,
) -> (Uuid, String) {
    let id = Uuid::new_v4();
    let publisher = "did:plc:feedowner0000000000000000";
    let uri = format!("at://{publisher}/app.bsky.feed.generator/{slug}");
    db.execute(
        "insert into public.feeds (id, user_id, slug, display_name, is_enabled,
                                   published_uri, published_rkey, publisher_did, published_at)
         values ($1, $2, $3, $3, $4,
                 case when $5 then $6 end, case when $5 then $3 end,
                 case when $5 then $7 end, case when $5 then now() end)",
        &[&id, &user, &slug, &enabled, &published, &uri, &publisher],
    )
    .await
    .unwrap();
    (id, uri)
}

/// 10,000 posts: 500 share one timestamp; the others come in threes per
/// microsecond, so neighbours differ by exactly one microsecond.
async fn load_posts(db: &tokio_postgres::Client, feed: Uuid) {
    db.execute(
        "insert into public.indexed_posts (feed_id, uri, author_did, created_at)
         select $1,
                format('at://did:plc:author%s/app.bsky.feed.post/%s', i % 17, lpad(i::text, 6, '0')),
                format('did:plc:author%s', i % 17),
                case when i <= 500 then now() - interval '1 day'
                     else now() - interval '1 day' + ((i - 5000) / 3) * interval '1 microsecond' end
           from generate_series(1, 10000) i",
        &[&feed],
    )
    .await
    .unwrap();
}

/// The feed's uris in the order the skeleton must serve them.
async fn expected_order(db: &tokio_postgres::Client, feed: Uuid) -> Vec<String> {
    db.query(
        "select uri from public.indexed_posts where feed_id = $1 order by created_at desc, uri desc",
        &[&feed],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn skeleton_app(db: &TestDb, extra: &[(&str, &str)]) -> TestApp {
    require_wasm("feed-skeleton").unwrap();
    let mut builder = TestApp::builder(product_manifest())
        .database(db)
        .components(&["feed-skeleton"])
        .variable("feed_service_did", SERVICE_DID)
        .variable("feed_hostname", HOSTNAME);
    for (k, v) in extra {
        builder = builder.variable(*k, *v);
    }
    builder.start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_returns_every_post_exactly_once_at_every_limit() {
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let user = add_user(&sql).await;
    let (feed, uri) = add_feed(&sql, user, "big", true, true).await;
    load_posts(&sql, feed).await;
    let expected = expected_order(&sql, feed).await;
    assert_eq!(expected.len(), 10_000);
    let shared_ts: i64 = sql
        .query_one(
            "select count(*) from public.indexed_posts where feed_id = $1
              group by created_at order by count(*) desc limit 1",
            &[&feed],
        )
        .await
        .unwrap()
        .get(0);
    assert!(shared_ts >= 500, "500 posts share one timestamp");

    let app = skeleton_app(&db, &[]).await;
    let http = Arc::new(Http::new(&app));
    let mut runs = Vec::new();
    for limit in [1usize, 7, 50, 100] {
        let http = http.clone();
        let uri = uri.clone();
        runs.push(tokio::spawn(async move {
            (limit, http.page_all(&uri, limit).await)
        }));
    }
    for run in runs {
        let (limit, got) = run.await.unwrap();
        assert_eq!(got.len(), expected.len(), "limit {limit}: count");
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "limit {limit}: a post repeated");
        assert!(got == expected, "limit {limit}: order or content differs");
    }

    // Default limit 50; the cursor is `<micros>::<base64url(uri)>` of the
    // page's last post.
    let first = http.skeleton(&uri, None, None, None).await;
    let posts = posts_of(&first.body);
    assert_eq!(posts.len(), 50);
    let cursor = first.body["cursor"].as_str().unwrap();
    let (micros, encoded) = cursor.split_once("::").unwrap();
    assert_eq!(
        String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap(),
        posts[49]
    );
    let at: String = sql
        .query_one(
            "select (extract(epoch from created_at) * 1000000)::bigint::text
               from public.indexed_posts where feed_id = $1 and uri = $2",
            &[&feed, &posts[49]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(micros, at, "the cursor keeps microseconds");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_stays_exact_while_posts_are_inserted() {
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let user = add_user(&sql).await;
    let (feed, uri) = add_feed(&sql, user, "busy", true, true).await;
    load_posts(&sql, feed).await;
    let initial = expected_order(&sql, feed).await;
    let source: Uuid = sql
        .query_one(
            "insert into public.feed_sources (feed_id, actor_did) values ($1, 'did:plc:author0')
             returning id",
            &[&feed],
        )
        .await
        .unwrap()
        .get(0);

    let app = skeleton_app(&db, &[]).await;
    let http = Http::new(&app);
    let first = http.skeleton(&uri, Some("50"), None, None).await;
    let mut got = posts_of(&first.body);
    let mut cursor = first.body["cursor"].as_str().map(str::to_string);

    // The indexer's own SQL inserts newer posts (above the first page) and
    // older ones (anywhere below) while the rest is paged.
    let stop = Arc::new(AtomicBool::new(false));
    let writer_db = db.connect().await.unwrap();
    let writer_stop = stop.clone();
    let writer = tokio::spawn(async move {
        let mut batch = 0;
        let mut newer = Vec::new();
        while !writer_stop.load(Ordering::Relaxed) && batch < 400 {
            let posts: Vec<Value> = (0..10)
                .map(|i| {
                    let n = batch * 10 + i;
                    let (kind, at) = if n % 2 == 0 {
                        ("new", Utc::now())
                    } else {
                        (
                            "old",
                            Utc::now() - chrono::Duration::hours(30)
                                + chrono::Duration::microseconds(n),
                        )
                    };
                    json!({
                        "uri": format!("at://did:plc:author0/app.bsky.feed.post/{kind}{n:06}"),
                        "cid": "bafy",
                        "author_did": "did:plc:author0",
                        "text": "x",
                        "created_at": rfc3339_micros(at),
                    })
                })
                .collect();
            newer.extend(
                posts
                    .iter()
                    .filter(|p| p["uri"].as_str().unwrap().contains("/new"))
                    .map(|p| p["uri"].as_str().unwrap().to_string()),
            );
            let answer: Value = writer_db
                .query_one(
                    "select public.store_feed_source_posts($1, $2::text::jsonb, null, 7)",
                    &[&source, &Value::Array(posts).to_string()],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(answer["inserted"], 10, "{answer}");
            batch += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (batch, newer)
    });

    while let Some(c) = cursor.clone() {
        let page = http.skeleton(&uri, Some("50"), Some(&c), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        got.extend(posts_of(&page.body));
        cursor = page.body["cursor"].as_str().map(str::to_string);
    }
    stop.store(true, Ordering::Relaxed);
    let (batches, newer) = writer.await.unwrap();
    assert!(batches > 0, "the writer ran while paging");

    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a post was served twice");
    for post in &initial {
        assert!(unique.contains(post), "{post} was skipped");
    }
    for post in &newer {
        assert!(
            !unique.contains(post),
            "newer post {post} appeared after the first page"
        );
    }
    // Whatever was served is in feed order.
    let order = expected_order(&sql, feed).await;
    let position: std::collections::HashMap<&String, usize> =
        order.iter().enumerate().map(|(i, u)| (u, i)).collect();
    assert!(got.windows(2).all(|w| position[&w[0]] < position[&w[1]]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_unknown_feeds_answer_xrpc_errors() {
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let user = add_user(&sql).await;
    let (feed, uri) = add_feed(&sql, user, "small", true, true).await;
    let (_, disabled) = add_feed(&sql, user, "off", true, false).await;
    let (_, unpublished) = add_feed(&sql, user, "draft", false, true).await;
    sql.execute(
        "insert into public.indexed_posts (feed_id, uri, created_at)
         select $1, 'at://did:plc:a/app.bsky.feed.post/' || i, now() - i * interval '1 minute'
           from generate_series(1, 3) i",
        &[&feed],
    )
    .await
    .unwrap();
    let app = skeleton_app(&db, &[]).await;
    let http = Http::new(&app);

    let ok = http.skeleton(&uri, Some("5"), None, None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(posts_of(&ok.body).len(), 3);
    assert!(
        ok.body.get("cursor").is_none(),
        "a short last page has no cursor"
    );
    assert_eq!(ok.headers.get("content-type").unwrap(), "application/json");

    for unknown in [
        "at://did:plc:nobody0000000000000000000/app.bsky.feed.generator/x".to_string(),
        disabled,
        unpublished,
    ] {
        let answer = http.skeleton(&unknown, None, None, None).await;
        assert_eq!(
            answer.error(),
            (400, "UnknownFeed"),
            "{unknown}: {}",
            answer.body
        );
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap()
                .contains("Unknown feed")
        );
    }
    for (limit, cursor) in [
        (Some("0"), None),
        (Some("101"), None),
        (Some("ten"), None),
        (Some("-5"), None),
        (None, Some("not-a-cursor")),
        (None, Some("1700000000000000::aHR0cHM6Ly9ldmls")), // https://evil
        (None, Some("abc::YXQ6Ly94")),
    ] {
        let answer = http.skeleton(&uri, limit, cursor, None).await;
        assert_eq!(
            answer.error(),
            (400, "InvalidRequest"),
            "{limit:?} {cursor:?}: {}",
            answer.body
        );
        assert!(answer.body["message"].is_string());
    }
    let no_feed = http
        .get(
            "/xrpc/app.bsky.feed.getFeedSkeleton",
            &[("limit", "5")],
            None,
        )
        .await;
    assert_eq!(no_feed.error(), (400, "InvalidRequest"));
    let not_uri = http
        .skeleton("https://bsky.app/feed", None, None, None)
        .await;
    assert_eq!(not_uri.error(), (400, "InvalidRequest"));
    let post = http.post("/xrpc/app.bsky.feed.getFeedSkeleton", None).await;
    assert_eq!(post.status, 405);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_feed_generator_and_did_document() {
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let user = add_user(&sql).await;
    let (_, first) = add_feed(&sql, user, "first", true, true).await;
    let (_, second) = add_feed(&sql, user, "second", true, true).await;
    add_feed(&sql, user, "disabled", true, false).await;
    add_feed(&sql, user, "draft", false, true).await;
    let app = skeleton_app(&db, &[]).await;
    let http = Http::new(&app);

    let described = http
        .get("/xrpc/app.bsky.feed.describeFeedGenerator", &[], None)
        .await;
    assert_eq!(described.status, 200, "{}", described.body);
    assert_eq!(described.body["did"], SERVICE_DID);
    let uris: HashSet<&str> = described.body["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, HashSet::from([first.as_str(), second.as_str()]));

    let did = http.get("/.well-known/did.json", &[], None).await;
    assert_eq!(did.status, 200, "{}", did.body);
    assert_eq!(
        did.body,
        json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": "did:web:feeds.test",
            "service": [{"id": "#bsky_fg", "type": "BskyFeedGenerator", "serviceEndpoint": "https://feeds.test"}],
        })
    );
    app.stop().await;

    // A service DID that is not this host's did:web: no document here.
    let other = skeleton_app(
        &db,
        &[("feed_service_did", "did:plc:feedgen00000000000000000")],
    )
    .await;
    let http = Http::new(&other);
    let missing = http.get("/.well-known/did.json", &[], None).await;
    assert_eq!(missing.error(), (404, "NotFound"), "{}", missing.body);
    let described = http
        .get("/xrpc/app.bsky.feed.describeFeedGenerator", &[], None)
        .await;
    assert_eq!(described.body["did"], "did:plc:feedgen00000000000000000");
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_jwts_are_checked_and_issuer_keys_cached() {
    let bsky = FakeBluesky::start().await.unwrap();
    let alice = bsky.add_account("alice.test", APP_PASSWORD);
    let bob = bsky.add_account("bob.test", APP_PASSWORD);
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let user = add_user(&sql).await;
    let (feed, uri) = add_feed(&sql, user, "guarded", true, true).await;
    sql.execute(
        "insert into public.indexed_posts (feed_id, uri, created_at) values ($1, 'at://did:plc:a/app.bsky.feed.post/1', now())",
        &[&feed],
    )
    .await
    .unwrap();
    let plc = bsky.url();
    let app = skeleton_app(
        &db,
        &[
            ("feed_verify_jwt", "true"),
            ("plc_directory_url", plc.as_str()),
        ],
    )
    .await;
    let http = Http::new(&app);
    let exp = Utc::now().timestamp() + 60;
    let ask = |token: Option<String>| {
        let http = &http;
        let uri = uri.clone();
        async move { http.skeleton(&uri, None, None, token.as_deref()).await }
    };

    let missing = ask(None).await;
    assert_eq!(
        missing.error(),
        (401, "AuthenticationRequired"),
        "{}",
        missing.body
    );
    let expired = ask(Some(bsky.sign_service_jwt(
        &alice.did,
        SERVICE_DID,
        GET_SKELETON,
        Utc::now().timestamp() - 10,
    )))
    .await;
    assert_eq!(expired.error(), (401, "JwtExpired"), "{}", expired.body);
    let audience = ask(Some(bsky.sign_service_jwt(
        &alice.did,
        "did:web:elsewhere.test",
        GET_SKELETON,
        exp,
    )))
    .await;
    assert_eq!(
        audience.error(),
        (401, "BadJwtAudience"),
        "{}",
        audience.body
    );
    let method = ask(Some(bsky.sign_service_jwt(
        &alice.did,
        SERVICE_DID,
        "app.bsky.feed.getTimeline",
        exp,
    )))
    .await;
    assert_eq!(
        method.error(),
        (401, "BadJwtLexiconMethod"),
        "{}",
        method.body
    );
    let garbage = ask(Some("not.a.jwt".into())).await;
    assert_eq!(garbage.error(), (401, "BadJwt"), "{}", garbage.body);
    assert_eq!(
        bsky.calls("plc"),
        0,
        "claims are checked before any key lookup"
    );

    // Claims of alice signed with bob's key.
    let forged = bsky.sign_jwt_claims(
        &bob.did,
        &json!({"iss": alice.did, "aud": SERVICE_DID, "exp": exp, "lxm": GET_SKELETON}),
    );
    let answer = ask(Some(forged.clone())).await;
    assert_eq!(answer.error(), (401, "BadJwtSignature"), "{}", answer.body);
    assert_eq!(bsky.calls("plc"), 1, "alice's key was fetched");

    // An issuer no directory knows.
    let stranger = bsky.sign_service_jwt(
        "did:plc:stranger0000000000000000",
        SERVICE_DID,
        GET_SKELETON,
        exp,
    );
    let answer = ask(Some(stranger)).await;
    assert_eq!(answer.error(), (401, "BadJwtSignature"), "{}", answer.body);
    assert_eq!(bsky.calls("plc"), 2);

    // Valid: served, twice, with alice's key from the cache.
    for _ in 0..3 {
        let valid = ask(Some(bsky.sign_service_jwt(
            &alice.did,
            SERVICE_DID,
            GET_SKELETON,
            exp,
        )))
        .await;
        assert_eq!(valid.status, 200, "{}", valid.body);
        assert_eq!(posts_of(&valid.body).len(), 1);
    }
    // An iss with a service fragment is the same DID and key.
    let fragment = bsky.sign_service_jwt(
        &format!("{}#bsky_appview", alice.did),
        SERVICE_DID,
        GET_SKELETON,
        exp,
    );
    assert_eq!(ask(Some(fragment)).await.status, 200);
    // The forgery is still refused, still without asking the directory.
    assert_eq!(ask(Some(forged)).await.error(), (401, "BadJwtSignature"));
    assert_eq!(bsky.calls("plc"), 2, "alice's key came from the cache");
    let cached: String = sql
        .query_one(
            "select key_multibase from public.did_signing_keys where did = $1",
            &[&alice.did],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cached, alice.public_key_multibase);

    // A valid token for an unknown feed is UnknownFeed, not an auth error.
    let unknown = http
        .skeleton(
            "at://did:plc:nobody0000000000000000000/app.bsky.feed.generator/x",
            None,
            None,
            Some(&bsky.sign_service_jwt(&alice.did, SERVICE_DID, GET_SKELETON, exp)),
        )
        .await;
    assert_eq!(unknown.error(), (400, "UnknownFeed"));
    app.stop().await;
}

/// A job run of the indexer through `POST /jobs/feed-indexer`.
async fn run_indexer(app: &TestApp) -> Value {
    app.run_job("feed-indexer", None).await.unwrap()["report"].clone()
}

async fn indexer_app(db: &TestDb, bsky: &FakeBluesky) -> TestApp {
    require_wasm("feed-indexer").unwrap();
    TestApp::builder(product_manifest())
        .database(db)
        .components(&["feed-indexer"])
        .variable("bluesky_appview_url", bsky.url())
        .start()
        .await
        .unwrap()
}

async fn add_source(db: &tokio_postgres::Client, feed: Uuid, did: &str) {
    db.execute(
        "insert into public.feed_sources (feed_id, actor_did) values ($1, $2)",
        &[&feed, &did],
    )
    .await
    .unwrap();
}

async fn add_rule(
    db: &tokio_postgres::Client,
    feed: Uuid,
    kind: &str,
    value: &str,
    lang: Option<&str>,
) {
    db.execute(
        "insert into public.feed_rules (feed_id, kind, value, lang) values ($1, $2, $3, $4)",
        &[&feed, &kind, &value, &lang],
    )
    .await
    .unwrap();
}

/// (uri, text, created_at with microseconds) of a feed's indexed posts.
async fn indexed(db: &tokio_postgres::Client, feed: Uuid) -> Vec<(String, String, String)> {
    db.query(
        "select uri, coalesce(text, ''), to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
           from public.indexed_posts where feed_id = $1 order by created_at desc, uri desc",
        &[&feed],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexer_keeps_what_matches_each_feeds_rules() {
    let bsky = FakeBluesky::start().await.unwrap();
    let alice = bsky.add_account("alice.test", APP_PASSWORD);
    let bob = bsky.add_account("bob.test", APP_PASSWORD);
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let user = add_user(&sql).await;
    let (rusty, _) = add_feed(&sql, user, "rusty", false, true).await;
    let (hello, _) = add_feed(&sql, user, "hello", false, true).await;
    let (off, _) = add_feed(&sql, user, "off", false, false).await;
    for feed in [rusty, hello, off] {
        add_source(&sql, feed, &alice.did).await;
    }
    add_rule(&sql, rusty, "include", "rust", None).await;
    add_rule(&sql, rusty, "include", "Café", None).await;
    add_rule(&sql, rusty, "include", "🦀", None).await;
    add_rule(&sql, rusty, "include", "", Some("pt")).await;
    add_rule(&sql, rusty, "include", "bonjour", Some("fr")).await;
    add_rule(&sql, rusty, "exclude", "nsfw", None).await;
    add_rule(&sql, hello, "include", "hello", None).await;
    // Already indexed, but 10 days old: pruned by the run (retention 7).
    sql.execute(
        "insert into public.indexed_posts (feed_id, uri, created_at)
         values ($1, 'at://did:plc:old/app.bsky.feed.post/1', now() - interval '10 days')",
        &[&rusty],
    )
    .await
    .unwrap();

    // Posts from 100 minutes ago onwards, oldest first, each with
    // microseconds; (text, langs, kept in rusty?).
    let base = Utc::now() - chrono::Duration::minutes(100);
    let posts: Vec<(&str, Vec<&str>, bool)> = vec![
        ("I love Rust", vec!["en"], true),
        ("rusty trusty crust", vec!["en"], false),
        ("Rust tips, NSFW edition", vec!["en"], false),
        ("Un cafe à Paris", vec!["fr"], true),
        ("Ferris says 🦀🦀", vec![], true),
        ("Olá mundo", vec!["pt-BR"], true),
        ("Hello world", vec!["en"], false),
        ("CRÈME BRÛLÉE au CAFÉ", vec!["fr"], true),
        ("bonjour tout le monde", vec!["fr"], true),
        ("bonjour from an English post", vec!["en"], false),
    ];
    let mut expected_rusty = Vec::new();
    for (i, (text, langs, kept)) in posts.iter().enumerate() {
        let at = rfc3339_micros(
            base + chrono::Duration::minutes(i as i64)
                + chrono::Duration::microseconds(123_457 + i as i64),
        );
        let uri = bsky.add_post(
            &alice.did,
            SeedPost::new(*text).created_at(at.clone()).langs(langs),
        );
        if *kept {
            expected_rusty.push((uri, text.to_string(), at));
        }
    }
    // Bob's post about Rust, reposted by alice: not alice's post.
    let bobs = bsky.add_post(
        &bob.did,
        SeedPost::new("Rust is great")
            .created_at(rfc3339_micros(Utc::now() - chrono::Duration::minutes(5))),
    );
    bsky.add_repost(&alice.did, &bobs);
    // Older than the retention window: never read into the feed.
    bsky.add_post(
        &alice.did,
        SeedPost::new("ancient rust")
            .created_at(rfc3339_micros(Utc::now() - chrono::Duration::days(9))),
    );

    let app = indexer_app(&db, &bsky).await;
    let report = run_indexer(&app).await;
    assert_eq!(report["feeds"], 2, "{report}");
    assert_eq!(report["authors"], 1, "{report}");
    assert_eq!(
        bsky.calls("app.bsky.feed.getAuthorFeed"),
        1,
        "alice is read once for both feeds"
    );
    assert_eq!(report["posts_pruned"], 1, "{report}");

    expected_rusty.reverse(); // newest first
    assert_eq!(indexed(&sql, rusty).await, expected_rusty, "rusty feed");
    let hello_posts = indexed(&sql, hello).await;
    assert_eq!(hello_posts.len(), 1, "{hello_posts:?}");
    assert_eq!(hello_posts[0].1, "Hello world");
    assert!(
        indexed(&sql, off).await.is_empty(),
        "a disabled feed is not indexed"
    );

    // The per-feed log.
    let log = sql
        .query_one(
            "select sources, appview_calls, posts_seen, posts_matched, posts_inserted, posts_pruned, errors::text
               from public.feed_index_runs where feed_id = $1",
            &[&rusty],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            log.get::<_, i32>(0),
            log.get::<_, i32>(1),
            log.get::<_, i32>(2),
            log.get::<_, i32>(3),
            log.get::<_, i32>(4),
            log.get::<_, i32>(5),
            log.get::<_, String>(6),
        ),
        (1, 1, 10, 6, 6, 1, "[]".to_string())
    );
    let beat: Value = sql
        .query_one(
            "select detail from public.worker_heartbeats where worker_id = 'feed-indexer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(beat["outcome"], "ok", "{beat}");
    assert_eq!(beat["report"]["posts_inserted"], 7, "{beat}");

    // A second run changes nothing: each post once per feed.
    let again = run_indexer(&app).await;
    assert_eq!(again["posts_inserted"], 0, "{again}");
    assert_eq!(indexed(&sql, rusty).await.len(), 6);

    // The cron trigger runs the same job.
    app.fire_cron("feed-indexer").await.unwrap();
    let beat: Value = sql
        .query_one(
            "select detail from public.worker_heartbeats where worker_id = 'feed-indexer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        (beat["trigger"].as_str(), beat["outcome"].as_str()),
        (Some("cron"), Some("ok")),
        "{beat}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_reads_only_new_posts() {
    let bsky = FakeBluesky::start().await.unwrap();
    let carol = bsky.add_account("carol.test", APP_PASSWORD);
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let user = add_user(&sql).await;
    let (feed, _) = add_feed(&sql, user, "carol", false, true).await;
    add_source(&sql, feed, &carol.did).await;
    // 150 posts a minute apart, the newest a minute ago.
    let now = Utc::now();
    bsky.add_posts(&carol.did, 150, |i| {
        SeedPost::new(format!("post {i}")).created_at(rfc3339_micros(
            now - chrono::Duration::minutes(150 - i as i64),
        ))
    });
    let app = indexer_app(&db, &bsky).await;
    let calls = || bsky.calls("app.bsky.feed.getAuthorFeed");

    let first = run_indexer(&app).await;
    assert_eq!(
        (first["posts_inserted"].as_u64(), calls()),
        (Some(150), 2),
        "{first}"
    );

    // Three new posts: one page, stopped by the mark.
    bsky.add_posts(&carol.did, 3, |i| SeedPost::new(format!("new {i}")));
    let second = run_indexer(&app).await;
    assert_eq!(
        (second["posts_inserted"].as_u64(), calls()),
        (Some(3), 3),
        "{second}"
    );
    let cursors: Vec<bool> = bsky
        .requests()
        .iter()
        .filter(|r| r.uri.path().ends_with("getAuthorFeed"))
        .map(|r| r.uri.query().unwrap_or("").contains("cursor="))
        .collect();
    assert_eq!(
        cursors,
        [false, true, false],
        "only the first run followed a cursor"
    );

    let third = run_indexer(&app).await;
    assert_eq!(
        (third["posts_inserted"].as_u64(), calls()),
        (Some(0), 4),
        "{third}"
    );
    assert_eq!(indexed(&sql, feed).await.len(), 153);

    let runs: Vec<(i32, i32, i32)> = sql
        .query(
            "select appview_calls, posts_inserted, posts_seen from public.feed_index_runs
              where feed_id = $1 order by finished_at",
            &[&feed],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(runs[0], (2, 150, 150));
    assert_eq!((runs[1].0, runs[1].1), (1, 3));
    assert_eq!((runs[2].0, runs[2].1), (1, 0));
    // Only the overlap second before the mark (the three new posts) is
    // looked at again.
    assert!(runs[2].2 <= 3, "{runs:?}");

    // A failing AppView leaves the mark alone and says so in the log.
    bsky.inject(
        "app.bsky.feed.getAuthorFeed",
        outpost_test_kit::fakes::bluesky::Fault::status(502, "UpstreamFailure", "try later"),
    );
    bsky.add_posts(&carol.did, 2, |i| SeedPost::new(format!("later {i}")));
    let failed = run_indexer(&app).await;
    assert_eq!(failed["errors"], 1, "{failed}");
    let errors: String = sql
        .query_one(
            "select errors::text from public.feed_index_runs where feed_id = $1 order by finished_at desc limit 1",
            &[&feed],
        )
        .await
        .unwrap()
        .get(0);
    assert!(errors.contains("UpstreamFailure"), "{errors}");
    let recovered = run_indexer(&app).await;
    assert_eq!(recovered["posts_inserted"], 2, "{recovered}");
    app.stop().await;
}

fn user_token(user: Uuid, exp_in: i64, secret: &str) -> String {
    outpost_test_kit::supabase_access_token(secret, user, exp_in)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_writes_the_generator_record_and_republishing_keeps_it() {
    let bsky = FakeBluesky::start().await.unwrap();
    let alice = bsky.add_account("alice.test", APP_PASSWORD);
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let owner = add_user(&sql).await;
    let stranger = add_user(&sql).await;
    let secret: Uuid = sql
        .query_one(
            "select vault.create_secret($1, 'alice', '')",
            &[&APP_PASSWORD],
        )
        .await
        .unwrap()
        .get(0);
    sql.execute(
        "insert into public.connected_accounts
           (user_id, platform, platform_user_id, username, handle, vault_secret_id, verified_at)
         values ($1, 'bluesky', $2, $3, $3, $4, now())",
        &[&owner, &alice.did, &alice.handle, &secret],
    )
    .await
    .unwrap();
    let feed = Uuid::new_v4();
    sql.execute(
        "insert into public.feeds (id, user_id, slug, display_name, description)
         values ($1, $2, 'rust-news', 'Rust News 🦀', 'Posts about Rust')",
        &[&feed, &owner],
    )
    .await
    .unwrap();
    let pds = bsky.url();
    let app = skeleton_app(
        &db,
        &[
            ("supabase_jwt_secret", SUPABASE_SECRET),
            ("bluesky_pds_url", pds.as_str()),
        ],
    )
    .await;
    let http = Http::new(&app);
    let path = format!("/feeds/{feed}/publish");
    let token = user_token(owner, 3600, SUPABASE_SECRET);

    let published = http.post(&path, Some(&token)).await;
    assert_eq!(published.status, 200, "{}", published.body);
    let uri = format!("at://{}/app.bsky.feed.generator/rust-news", alice.did);
    assert_eq!(published.body["uri"], uri.as_str());
    assert_eq!(published.body["rkey"], "rust-news");
    assert_eq!(bsky.calls("com.atproto.repo.putRecord"), 1);
    let record = bsky
        .record(&uri)
        .expect("the record is in alice's repo")
        .value;
    assert_eq!(record["$type"], "app.bsky.feed.generator");
    assert_eq!(record["did"], SERVICE_DID);
    assert_eq!(record["displayName"], "Rust News 🦀");
    assert_eq!(record["description"], "Posts about Rust");
    let created_at = record["createdAt"].as_str().unwrap().to_string();
    let row = sql
        .query_one(
            "select published_uri, published_rkey, publisher_did, published_at is not null
               from public.feeds where id = $1",
            &[&feed],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, bool>(3)
        ),
        (
            uri.clone(),
            "rust-news".to_string(),
            alice.did.clone(),
            true
        )
    );

    // Republish after an edit: same record key, new description, same createdAt.
    sql.execute(
        "update public.feeds set description = 'All about Rust' where id = $1",
        &[&feed],
    )
    .await
    .unwrap();
    let again = http.post(&path, Some(&token)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["uri"], uri.as_str());
    assert_eq!(bsky.calls("com.atproto.repo.putRecord"), 2);
    assert_eq!(
        bsky.calls("com.atproto.server.createSession"),
        1,
        "the session is reused"
    );
    let records = bsky.records(&alice.did, "app.bsky.feed.generator");
    assert_eq!(records.len(), 1, "one record, replaced");
    assert_eq!(records[0].value["description"], "All about Rust");
    assert_eq!(records[0].value["createdAt"], created_at.as_str());
    assert_eq!(again.body["published_at"], published.body["published_at"]);

    // The published feed is served and described.
    let served = http.skeleton(&uri, None, None, None).await;
    assert_eq!(served.status, 200, "{}", served.body);
    let described = http
        .get("/xrpc/app.bsky.feed.describeFeedGenerator", &[], None)
        .await;
    assert_eq!(described.body["feeds"], json!([{"uri": uri}]));

    // Refusals: a stranger's token, no token, bad tokens, wrong method.
    let foreign = http
        .post(&path, Some(&user_token(stranger, 3600, SUPABASE_SECRET)))
        .await;
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    let no_token = http.post(&path, None).await;
    assert_eq!(no_token.error(), (401, "unauthorized"));
    let expired = http
        .post(&path, Some(&user_token(owner, -60, SUPABASE_SECRET)))
        .await;
    assert_eq!(expired.error(), (401, "unauthorized"));
    let wrong_key = http
        .post(
            &path,
            Some(&user_token(
                owner,
                3600,
                "another-secret-entirely-0123456789",
            )),
        )
        .await;
    assert_eq!(wrong_key.error(), (401, "unauthorized"));
    let missing = http
        .post(&format!("/feeds/{}/publish", Uuid::new_v4()), Some(&token))
        .await;
    assert_eq!(missing.status, 404);
    let get = http.get(&path, &[], Some(&token)).await;
    assert_eq!(get.status, 405);
    assert_eq!(
        bsky.calls("com.atproto.repo.putRecord"),
        2,
        "no refused request wrote"
    );

    // The stranger has no Bluesky account for their own feed.
    let theirs = Uuid::new_v4();
    sql.execute(
        "insert into public.feeds (id, user_id, slug) values ($1, $2, 'mine')",
        &[&theirs, &stranger],
    )
    .await
    .unwrap();
    let no_account = http
        .post(
            &format!("/feeds/{theirs}/publish"),
            Some(&user_token(stranger, 3600, SUPABASE_SECRET)),
        )
        .await;
    assert_eq!(no_account.error(), (409, "conflict"), "{}", no_account.body);
    // No secret or token in any answer.
    for answer in [
        &published,
        &again,
        &foreign,
        &no_token,
        &expired,
        &no_account,
    ] {
        let text = answer.body.to_string();
        assert!(
            !text.contains(APP_PASSWORD) && !text.contains(&token),
            "{text}"
        );
    }
    app.stop().await;
}

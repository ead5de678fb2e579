#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Self-tests of the loopback fake Bluesky (`outpost_test_kit::fakes::bluesky`):
//! plain HTTP calls against it, one per quirk `shared/PLATFORMS.md` lists,
//! so the component tests that lean on it lean on the documented behaviour.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use outpost_test_kit::fakes::bluesky::k256::ecdsa::signature::Verifier;
use outpost_test_kit::fakes::bluesky::k256::ecdsa::{Signature, VerifyingKey};
use outpost_test_kit::fakes::bluesky::{
    FakeBluesky, Fault, SeedImage, SeedPost, is_tid, tid_from_micros,
};
use serde_json::{Value, json};

type Res = anyhow::Result<()>;

/// One answer: status, headers, JSON body (Null when not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn error(&self) -> (u16, &str, &str) {
        (
            self.status,
            self.body["error"].as_str().unwrap_or(""),
            self.body["message"].as_str().unwrap_or(""),
        )
    }
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(bsky: &FakeBluesky) -> Self {
        Self {
            base: bsky.url(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn answer(r: reqwest::RequestBuilder) -> Answer {
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn query(&self, nsid: &str, params: &[(&str, &str)]) -> Answer {
        Self::answer(
            self.http
                .get(format!("{}/xrpc/{nsid}", self.base))
                .query(params),
        )
        .await
    }

    async fn call(&self, nsid: &str, token: Option<&str>, body: &Value) -> Answer {
        let mut r = self.http.post(format!("{}/xrpc/{nsid}", self.base));
        if !body.is_null() {
            r = r.json(body);
        }
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        Self::answer(r).await
    }

    async fn session(&self, identifier: &str, password: &str) -> Answer {
        self.call(
            "com.atproto.server.createSession",
            None,
            &json!({"identifier": identifier, "password": password}),
        )
        .await
    }

    /// (did, accessJwt, refreshJwt) of a fresh session.
    async fn login(&self, identifier: &str, password: &str) -> (String, String, String) {
        let a = self.session(identifier, password).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        (
            a.body["did"].as_str().unwrap().into(),
            a.body["accessJwt"].as_str().unwrap().into(),
            a.body["refreshJwt"].as_str().unwrap().into(),
        )
    }

    async fn create_post(
        &self,
        token: &str,
        did: &str,
        rkey: Option<&str>,
        record: Value,
    ) -> Answer {
        let mut body = json!({"repo": did, "collection": "app.bsky.feed.post", "record": record});
        if let Some(k) = rkey {
            body["rkey"] = json!(k);
        }
        self.call("com.atproto.repo.createRecord", Some(token), &body)
            .await
    }

    async fn get_record(&self, did: &str, collection: &str, rkey: &str) -> Answer {
        self.query(
            "com.atproto.repo.getRecord",
            &[("repo", did), ("collection", collection), ("rkey", rkey)],
        )
        .await
    }
}

fn post(text: &str) -> Value {
    json!({"$type": "app.bsky.feed.post", "text": text, "createdAt": "2025-01-02T03:04:05.678901Z"})
}

async fn setup() -> (FakeBluesky, Client, String, String) {
    let bsky = FakeBluesky::start().await.unwrap();
    let alice = bsky.add_account("alice.test", "alice-app-pass");
    let client = Client::new(&bsky);
    let (did, access, _) = client.login("alice.test", "alice-app-pass").await;
    assert_eq!(did, alice.did);
    (bsky, client, did, access)
}

#[tokio::test]
async fn sessions_tokens_and_auth_errors() -> Res {
    let bsky = FakeBluesky::start().await?;
    let alice = bsky.add_account("alice.test", "pw-1");
    let c = Client::new(&bsky);
    assert!(alice.did.starts_with("did:plc:") && alice.did.len() == 8 + 24);

    // By handle and by DID; a wrong password is 401 AuthenticationRequired.
    let (did, access, refresh) = c.login("alice.test", "pw-1").await;
    assert_eq!(did, alice.did);
    c.login(&alice.did, "pw-1").await;
    let wrong = c.session("alice.test", "nope").await;
    assert_eq!(wrong.error().0, 401);
    assert_eq!(wrong.error().1, "AuthenticationRequired");

    let me = c.query("com.atproto.server.getSession", &[]).await;
    assert_eq!(me.error(), (401, "AuthMissing", "Authentication Required"));
    let me = Client::answer(
        c.http
            .get(format!("{}/xrpc/com.atproto.server.getSession", c.base))
            .bearer_auth(&access),
    )
    .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["handle"], "alice.test");

    // Writes: no header, unknown token, refresh token used as access.
    let no_auth = c
        .call("com.atproto.repo.createRecord", None, &json!({}))
        .await;
    assert_eq!(no_auth.error().0, 401);
    assert_eq!(no_auth.error().1, "AuthMissing");
    let bogus = c.create_post("not.a.token", &did, None, post("x")).await;
    assert_eq!((bogus.status, bogus.error().1), (400, "InvalidToken"));
    let wrong_kind = c.create_post(&refresh, &did, None, post("x")).await;
    assert_eq!(
        (wrong_kind.status, wrong_kind.error().1),
        (400, "InvalidToken")
    );

    // An access token is not a refresh token.
    let a = c
        .call(
            "com.atproto.server.refreshSession",
            Some(&access),
            &json!(null),
        )
        .await;
    assert_eq!((a.status, a.error().1), (400, "InvalidToken"));

    // An app-password session cannot make app passwords.
    let a = c
        .call(
            "com.atproto.server.createAppPassword",
            Some(&access),
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!(a.error(), (400, "InvalidToken", "Bad token scope"));

    // refreshSession takes no input.
    let a = c
        .call(
            "com.atproto.server.refreshSession",
            Some(&refresh),
            &json!({}),
        )
        .await;
    assert_eq!((a.status, a.error().1), (400, "InvalidRequest"));

    // Expired access tokens answer ExpiredToken; a refresh gives a working one.
    bsky.expire_access_tokens();
    let expired = c.create_post(&access, &did, None, post("x")).await;
    assert_eq!((expired.status, expired.error().1), (400, "ExpiredToken"));
    let refreshed = c
        .call(
            "com.atproto.server.refreshSession",
            Some(&refresh),
            &json!(null),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{:?}", refreshed.body);
    let new_access = refreshed.body["accessJwt"].as_str().unwrap();
    assert_ne!(new_access, access);
    assert_eq!(new_access.split('.').count(), 3, "JWT-shaped");
    let ok = c
        .create_post(new_access, &did, None, post("after refresh"))
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);

    // A used refresh token works during the 2-hour grace window, not after.
    let again = c
        .call(
            "com.atproto.server.refreshSession",
            Some(&refresh),
            &json!(null),
        )
        .await;
    assert_eq!(again.status, 200);
    bsky.advance_clock(Duration::from_secs(2 * 3600 + 60));
    let late = c
        .call(
            "com.atproto.server.refreshSession",
            Some(&refresh),
            &json!(null),
        )
        .await;
    assert_eq!(
        late.error(),
        (400, "ExpiredToken", "Token has been revoked")
    );
    // Access tokens themselves expire after 2 hours.
    let old = c.create_post(new_access, &did, None, post("x")).await;
    assert_eq!(old.error().1, "ExpiredToken");
    Ok(())
}

#[tokio::test]
async fn revoked_app_password() -> Res {
    let (bsky, c, did, access) = setup().await;
    let (_, _, refresh) = c.login("alice.test", "alice-app-pass").await;
    bsky.revoke_app_password(&did);
    let login = c.session("alice.test", "alice-app-pass").await;
    assert_eq!(
        (login.status, login.error().1),
        (401, "AuthenticationRequired")
    );
    let r = c
        .call(
            "com.atproto.server.refreshSession",
            Some(&refresh),
            &json!(null),
        )
        .await;
    assert_eq!(r.error(), (400, "ExpiredToken", "Token has been revoked"));
    // Tokens already issued keep working until they expire.
    let still = c.create_post(&access, &did, None, post("still")).await;
    assert_eq!(still.status, 200);
    // A new app password works again.
    bsky.add_account("alice.test", "new-pass");
    c.login("alice.test", "new-pass").await;
    Ok(())
}

#[tokio::test]
async fn create_session_is_limited_to_30_per_5_minutes() -> Res {
    let bsky = FakeBluesky::start().await?;
    bsky.add_account("bob.test", "pw");
    let c = Client::new(&bsky);
    for _ in 0..30 {
        c.login("bob.test", "pw").await;
    }
    let limited = c.session("bob.test", "pw").await;
    assert_eq!(
        (limited.status, limited.error().1),
        (429, "RateLimitExceeded")
    );
    assert_eq!(limited.header("ratelimit-limit"), Some("30"));
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    assert_eq!(limited.header("ratelimit-policy"), Some("30;w=300"));
    let reset: i64 = limited.header("ratelimit-reset").unwrap().parse()?;
    assert!(reset > bsky.now().timestamp());
    let retry: u64 = limited.header("retry-after").unwrap().parse()?;
    assert!((1..=300).contains(&retry), "{retry}");
    assert_eq!(bsky.calls("com.atproto.server.createSession"), 31);
    bsky.advance_clock(Duration::from_secs(301));
    c.login("bob.test", "pw").await;
    Ok(())
}

#[tokio::test]
async fn duplicate_rkey_is_a_500_and_get_record_settles_it() -> Res {
    let (bsky, c, did, access) = setup().await;
    let rkey = tid_from_micros(1_736_000_000_000_000);
    let first = c
        .create_post(&access, &did, Some(&rkey), post("first"))
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let uri = format!("at://{did}/app.bsky.feed.post/{rkey}");
    assert_eq!(first.body["uri"], uri.as_str());
    let cid = first.body["cid"].as_str().unwrap().to_string();
    assert!(cid.starts_with("bafyrei"), "{cid}");
    assert!(first.body["commit"]["cid"].is_string());
    assert!(first.body["commit"]["rev"].as_str().is_some_and(is_tid));
    assert_eq!(first.body["validationStatus"], "valid");

    let dup = c
        .create_post(&access, &did, Some(&rkey), post("second"))
        .await;
    assert_eq!(
        dup.error(),
        (500, "InternalServerError", "Internal Server Error")
    );
    let stored = bsky.records(&did, "app.bsky.feed.post");
    assert_eq!(stored.len(), 1, "nothing changed");
    assert_eq!(stored[0].value["text"], "first");

    let found = c.get_record(&did, "app.bsky.feed.post", &rkey).await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["uri"], uri.as_str());
    assert_eq!(found.body["cid"], cid.as_str());
    assert_eq!(found.body["value"]["text"], "first");
    let other = tid_from_micros(1_736_000_000_000_001);
    let missing = c.get_record(&did, "app.bsky.feed.post", &other).await;
    assert_eq!((missing.status, missing.error().1), (400, "RecordNotFound"));
    // getRecord also takes the handle.
    let by_handle = c
        .get_record("alice.test", "app.bsky.feed.post", &rkey)
        .await;
    assert_eq!(by_handle.status, 200);

    // The same record always has the same cid.
    let again = c
        .create_post(&access, &did, Some(&other), post("first"))
        .await;
    assert_eq!(again.body["cid"], cid.as_str());
    // Without rkey the fake makes a TID.
    let auto = c.create_post(&access, &did, None, post("auto")).await;
    let auto_rkey = auto.body["uri"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert!(is_tid(auto_rkey), "{auto_rkey}");
    Ok(())
}

#[tokio::test]
async fn invalid_rkey_wrong_repo_and_post_validation() -> Res {
    let (bsky, c, did, access) = setup().await;
    let bob = bsky.add_account("bob.test", "pw");
    for bad in [
        "not-a-tid",
        "kzzzzzzzzzzzz",
        "3jzfcijpj2z2",
        "3JZFCIJPJ2Z2A",
    ] {
        let a = c.create_post(&access, &did, Some(bad), post("x")).await;
        assert_eq!(
            a.error(),
            (400, "InvalidRequest", "Invalid record key"),
            "{bad}"
        );
    }
    let other = c.create_post(&access, &bob.did, None, post("x")).await;
    assert_eq!((other.status, other.error().1), (400, "InvalidRequest"));

    let long = "a".repeat(301);
    let a = c.create_post(&access, &did, None, post(&long)).await;
    assert_eq!(
        a.error(),
        (
            400,
            "InvalidRequest",
            "Invalid app.bsky.feed.post record: grapheme too big (maximum 300, got 301) at $.record.text"
        )
    );
    // 300 graphemes of several code points each are fine (graphemes, not chars).
    let accented = "e\u{301}".repeat(300);
    assert_eq!(
        c.create_post(&access, &did, None, post(&accented))
            .await
            .status,
        200
    );
    // Over 3000 bytes.
    let wide = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}".repeat(200);
    let a = c.create_post(&access, &did, None, post(&wide)).await;
    assert_eq!(a.status, 400);
    assert!(a.error().2.contains("maximum 3000"), "{}", a.error().2);

    let mut four_langs = post("x");
    four_langs["langs"] = json!(["en", "fr", "de", "es"]);
    let a = c.create_post(&access, &did, None, four_langs).await;
    assert!(a.error().2.contains("$.record.langs"), "{:?}", a.body);
    let mut no_zone = post("x");
    no_zone["createdAt"] = json!("2025-01-02T03:04:05");
    let a = c.create_post(&access, &did, None, no_zone).await;
    assert!(a.error().2.contains("$.record.createdAt"), "{:?}", a.body);
    let mut bad_mention = post("hi @bob");
    bad_mention["facets"] = json!([{"index": {"byteStart": 3, "byteEnd": 7},
        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "bob.test"}]}]);
    let a = c.create_post(&access, &did, None, bad_mention).await;
    assert_eq!(a.status, 400);
    assert!(a.error().2.contains("did"), "{:?}", a.body);
    // Facet byte ranges are not checked: wrong offsets are accepted.
    let mut wrong_range = post("hi");
    wrong_range["facets"] = json!([{"index": {"byteStart": 50, "byteEnd": 90},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com"}]}]);
    assert_eq!(
        c.create_post(&access, &did, None, wrong_range).await.status,
        200
    );
    Ok(())
}

#[tokio::test]
async fn put_delete_and_list_records() -> Res {
    let (bsky, c, did, access) = setup().await;
    let generator = json!({"$type": "app.bsky.feed.generator", "did": "did:web:feeds.test",
        "displayName": "Runs", "createdAt": "2025-01-01T00:00:00Z"});
    let put = |record: &Value| json!({"repo": did, "collection": "app.bsky.feed.generator", "rkey": "runs", "record": record});
    let first = c
        .call(
            "com.atproto.repo.putRecord",
            Some(&access),
            &put(&generator),
        )
        .await;
    assert_eq!(first.status, 200);
    assert!(first.body["commit"].is_object());
    let same = c
        .call(
            "com.atproto.repo.putRecord",
            Some(&access),
            &put(&generator),
        )
        .await;
    assert_eq!(same.status, 200);
    assert_eq!(same.body["cid"], first.body["cid"]);
    assert!(
        same.body.get("commit").is_none(),
        "identical record: no commit"
    );
    let mut changed = generator.clone();
    changed["displayName"] = json!("Rides");
    let third = c
        .call("com.atproto.repo.putRecord", Some(&access), &put(&changed))
        .await;
    assert_ne!(third.body["cid"], first.body["cid"]);
    assert!(third.body["commit"].is_object());
    assert_eq!(bsky.records(&did, "app.bsky.feed.generator").len(), 1);

    // deleteRecord of a missing record is 200 {}.
    let del = json!({"repo": did, "collection": "app.bsky.feed.generator", "rkey": "nope"});
    let a = c
        .call("com.atproto.repo.deleteRecord", Some(&access), &del)
        .await;
    assert_eq!((a.status, a.body.clone()), (200, json!({})));

    // listRecords: a cursor on every non-empty page, then an empty page.
    for i in 0..5 {
        assert_eq!(
            c.create_post(&access, &did, None, post(&format!("p{i}")))
                .await
                .status,
            200
        );
    }
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    loop {
        let mut params = vec![
            ("repo", did.clone()),
            ("collection", "app.bsky.feed.post".to_string()),
            ("limit", "2".to_string()),
        ];
        if let Some(cur) = &cursor {
            params.push(("cursor", cur.clone()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = c.query("com.atproto.repo.listRecords", &params).await;
        assert_eq!(page.status, 200);
        let records = page.body["records"].as_array().unwrap();
        sizes.push(records.len());
        if records.is_empty() {
            assert_eq!(page.body, json!({"records": []}));
            break;
        }
        seen.extend(records.iter().map(|r| r["value"]["text"].clone()));
        cursor = Some(
            page.body["cursor"]
                .as_str()
                .expect("cursor on non-empty page")
                .into(),
        );
    }
    assert_eq!(sizes, vec![2, 2, 1, 0]);
    assert_eq!(seen, vec!["p4", "p3", "p2", "p1", "p0"], "newest first");
    let too_many = c
        .query(
            "com.atproto.repo.listRecords",
            &[
                ("repo", &did),
                ("collection", "app.bsky.feed.post"),
                ("limit", "101"),
            ],
        )
        .await;
    assert_eq!(
        (too_many.status, too_many.error().1),
        (400, "InvalidRequest")
    );
    Ok(())
}

#[tokio::test]
async fn author_feed_pages_250_posts_in_3_pages() -> Res {
    let (bsky, c, did, access) = setup().await;
    bsky.add_posts(&did, 249, |i| {
        SeedPost::new(format!("seeded {i}"))
            .langs(&["en"])
            .counts(i as i64, 1, 2)
    });
    // A post made through createRecord shows too (the newest).
    let made = c
        .create_post(
            &access,
            &did,
            None,
            json!({"text": "made",
        "createdAt": bsky.now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}),
        )
        .await;
    assert_eq!(made.status, 200, "{:?}", made.body);

    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    let mut texts = Vec::new();
    loop {
        let mut params = vec![("actor", did.clone()), ("limit", "100".to_string())];
        if let Some(cur) = &cursor {
            params.push(("cursor", cur.clone()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = c.query("app.bsky.feed.getAuthorFeed", &params).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        let feed = page.body["feed"].as_array().unwrap();
        pages.push(feed.len());
        texts.extend(
            feed.iter()
                .map(|f| f["post"]["record"]["text"].as_str().unwrap().to_string()),
        );
        match page.body.get("cursor").and_then(Value::as_str) {
            Some(cur) => cursor = Some(cur.into()),
            None => break,
        }
    }
    assert_eq!(pages, vec![100, 100, 50]);
    assert_eq!(texts[0], "made");
    assert_eq!(texts[1], "seeded 248");
    assert_eq!(texts[249], "seeded 0");
    let mut unique = texts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 250, "no post twice");

    // The post view's shape.
    let one = c
        .query(
            "app.bsky.feed.getAuthorFeed",
            &[("actor", "alice.test"), ("limit", "2")],
        )
        .await;
    let view = &one.body["feed"][1]["post"];
    assert_eq!(view["author"]["did"], did.as_str());
    assert_eq!(view["author"]["handle"], "alice.test");
    assert!(view["author"]["displayName"].is_string());
    assert_eq!(view["record"]["$type"], "app.bsky.feed.post");
    assert_eq!(view["record"]["langs"], json!(["en"]));
    assert_eq!(view["likeCount"], 248);
    assert_eq!(view["repostCount"], 1);
    assert_eq!(view["replyCount"], 2);
    assert_eq!(view["quoteCount"], 0);
    let created = view["record"]["createdAt"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2025-01-02T03:04:05.678901Z".len(),
        "microseconds: {created}"
    );
    assert!(view["indexedAt"].is_string());
    // Default limit is 50.
    let default = c
        .query("app.bsky.feed.getAuthorFeed", &[("actor", &did)])
        .await;
    assert_eq!(default.body["feed"].as_array().unwrap().len(), 50);

    let unknown = c
        .query(
            "app.bsky.feed.getAuthorFeed",
            &[("actor", "did:plc:nobodyhere")],
        )
        .await;
    assert_eq!(
        unknown.error(),
        (400, "InvalidRequest", "Profile not found")
    );
    let bad_limit = c
        .query(
            "app.bsky.feed.getAuthorFeed",
            &[("actor", &did), ("limit", "0")],
        )
        .await;
    assert_eq!(bad_limit.error().1, "InvalidRequest");
    Ok(())
}

#[tokio::test]
async fn get_posts_counts_and_resolve_handle() -> Res {
    let (bsky, c, did, _) = setup().await;
    let a = bsky.add_post(&did, SeedPost::new("one").counts(1, 2, 3));
    let b = bsky.add_post(&did, SeedPost::new("two").reply_to(a.clone()));
    bsky.set_counts(&a, 10, 20, 30);
    let posts = c
        .query(
            "app.bsky.feed.getPosts",
            &[
                ("uris", &b),
                ("uris", &a),
                ("uris", "at://did:plc:x/app.bsky.feed.post/3kaaaaaaaaaaa"),
            ],
        )
        .await;
    assert_eq!(posts.status, 200);
    let list = posts.body["posts"].as_array().unwrap();
    assert_eq!(list.len(), 2, "missing posts are left out");
    assert_eq!(list[0]["uri"], b.as_str());
    assert_eq!(list[0]["record"]["reply"]["parent"]["uri"], a.as_str());
    assert_eq!(list[1]["likeCount"], 10);
    assert_eq!(list[1]["repostCount"], 20);
    assert_eq!(list[1]["replyCount"], 30);
    let many: Vec<(&str, &str)> = (0..26).map(|_| ("uris", a.as_str())).collect();
    let too_many = c.query("app.bsky.feed.getPosts", &many).await;
    assert_eq!(
        (too_many.status, too_many.error().1),
        (400, "InvalidRequest")
    );

    let found = c
        .query(
            "com.atproto.identity.resolveHandle",
            &[("handle", "alice.test")],
        )
        .await;
    assert_eq!(found.body, json!({"did": did}));
    let unknown = c
        .query(
            "com.atproto.identity.resolveHandle",
            &[("handle", "nobody.test")],
        )
        .await;
    assert_eq!((unknown.status, unknown.error().1), (400, "HandleNotFound"));

    // Replies can be filtered out.
    let no_replies = c
        .query(
            "app.bsky.feed.getAuthorFeed",
            &[("actor", &did), ("filter", "posts_no_replies")],
        )
        .await;
    assert_eq!(no_replies.body["feed"].as_array().unwrap().len(), 1);
    let all = c
        .query("app.bsky.feed.getAuthorFeed", &[("actor", &did)])
        .await;
    assert_eq!(all.body["feed"][0]["reply"]["parent"]["uri"], a.as_str());

    // Reposts show with a reason.
    let bob = bsky.add_account("bob.test", "pw");
    bsky.add_repost(&bob.did, &a);
    let feed = c
        .query("app.bsky.feed.getAuthorFeed", &[("actor", &bob.did)])
        .await;
    assert_eq!(feed.body["feed"][0]["post"]["uri"], a.as_str());
    assert_eq!(
        feed.body["feed"][0]["reason"]["$type"],
        "app.bsky.feed.defs#reasonRepost"
    );
    Ok(())
}

#[tokio::test]
async fn blobs_and_images() -> Res {
    let (bsky, c, did, access) = setup().await;
    let big = Client::answer(
        c.http
            .post(format!("{}/xrpc/com.atproto.repo.uploadBlob", c.base))
            .bearer_auth(&access)
            .header("content-type", "image/jpeg")
            .body(vec![0u8; 1_000_001]),
    )
    .await;
    assert_eq!((big.status, big.error().1), (400, "BlobTooLarge"));
    let up = Client::answer(
        c.http
            .post(format!("{}/xrpc/com.atproto.repo.uploadBlob", c.base))
            .bearer_auth(&access)
            .header("content-type", "image/png")
            .body(vec![7u8; 1000]),
    )
    .await;
    assert_eq!(up.status, 200);
    let blob = &up.body["blob"];
    assert_eq!(blob["$type"], "blob");
    assert_eq!(blob["mimeType"], "image/png");
    assert_eq!(blob["size"], 1000);
    assert!(
        blob["ref"]["$link"]
            .as_str()
            .unwrap()
            .starts_with("bafkrei")
    );
    assert_eq!(bsky.blobs().len(), 1);

    let mut record = post("with image");
    record["embed"] = json!({"$type": "app.bsky.embed.images",
        "images": [{"alt": "a run", "image": blob}]});
    assert_eq!(
        c.create_post(&access, &did, None, record.clone())
            .await
            .status,
        200
    );
    record["embed"]["images"][0]["image"]["ref"]["$link"] = json!("bafkreinotuploaded");
    let missing = c.create_post(&access, &did, None, record).await;
    assert_eq!((missing.status, missing.error().1), (400, "BlobNotFound"));

    // Seeded images get CDN URLs that serve the bytes.
    let image = SeedImage::jpeg("ride");
    let bytes = image.bytes.clone();
    let uri = bsky.add_post(&did, SeedPost::new("pic").image(image));
    let posts = c.query("app.bsky.feed.getPosts", &[("uris", &uri)]).await;
    let view = &posts.body["posts"][0]["embed"];
    assert_eq!(view["$type"], "app.bsky.embed.images#view");
    assert_eq!(view["images"][0]["alt"], "ride");
    let full = view["images"][0]["fullsize"].as_str().unwrap();
    let got = c.http.get(full).send().await?.bytes().await?;
    assert_eq!(got.as_ref(), bytes.as_slice());
    Ok(())
}

#[tokio::test]
async fn plc_document_and_service_jwt_verify() -> Res {
    let bsky = FakeBluesky::start().await?;
    let alice = bsky.add_account("alice.test", "pw");
    let c = Client::new(&bsky);
    let doc = Client::answer(c.http.get(format!("{}/{}", c.base, alice.did))).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["id"], alice.did.as_str());
    assert_eq!(doc.body["alsoKnownAs"], json!(["at://alice.test"]));
    let vm = &doc.body["verificationMethod"][0];
    assert_eq!(vm["id"], format!("{}#atproto", alice.did));
    assert_eq!(vm["type"], "Multikey");
    assert_eq!(vm["controller"], alice.did.as_str());
    assert_eq!(doc.body["service"][0]["id"], "#atproto_pds");
    assert_eq!(doc.body["service"][0]["serviceEndpoint"], c.base.as_str());

    // Decode the multibase by hand: z + base58btc([0xe7, 0x01] + 33 bytes).
    let multibase = vm["publicKeyMultibase"].as_str().unwrap();
    let raw = outpost_test_kit::fakes::bluesky::bs58::decode(&multibase[1..]).into_vec()?;
    assert!(multibase.starts_with('z'));
    assert_eq!(&raw[..2], &[0xe7, 0x01]);
    assert_eq!(raw.len(), 35);
    let key = VerifyingKey::from_sec1_bytes(&raw[2..])?;
    assert_eq!(key, alice.verifying_key);

    let exp = bsky.now().timestamp() + 60;
    let jwt = bsky.sign_service_jwt(
        &alice.did,
        "did:web:feeds.test",
        "app.bsky.feed.getFeedSkeleton",
        exp,
    );
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0])?)?;
    assert_eq!(header, json!({"typ": "JWT", "alg": "ES256K"}));
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1])?)?;
    assert_eq!(claims["iss"], alice.did.as_str());
    assert_eq!(claims["aud"], "did:web:feeds.test");
    assert_eq!(claims["lxm"], "app.bsky.feed.getFeedSkeleton");
    assert_eq!(claims["exp"], exp);
    let sig_bytes = URL_SAFE_NO_PAD.decode(parts[2])?;
    assert_eq!(sig_bytes.len(), 64);
    let sig = Signature::from_slice(&sig_bytes)?;
    assert!(sig.normalize_s().is_none(), "low-S");
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)?;
    // A tampered payload does not verify.
    assert!(
        key.verify(format!("{}.{}x", parts[0], parts[1]).as_bytes(), &sig)
            .is_err()
    );

    let unknown = Client::answer(
        c.http
            .get(format!("{}/did:plc:unknownunknownunknown1", c.base)),
    )
    .await;
    assert_eq!(unknown.status, 404);
    let encoded = alice.did.replace(':', "%3A");
    let doc2 = Client::answer(c.http.get(format!("{}/{encoded}", c.base))).await;
    assert_eq!(doc2.body["id"], alice.did.as_str());
    assert_eq!(bsky.calls("plc"), 3);
    Ok(())
}

#[tokio::test]
async fn faults_in_order() -> Res {
    let (bsky, c, did, access) = setup().await;
    let nsid = "com.atproto.repo.createRecord";
    bsky.inject(nsid, Fault::status(502, "UpstreamFailure", "bad gateway"));
    bsky.inject(
        nsid,
        Fault::RateLimited {
            retry_after_secs: 7,
        },
    );
    let a = c.create_post(&access, &did, None, post("x")).await;
    assert_eq!(a.error(), (502, "UpstreamFailure", "bad gateway"));
    let a = c.create_post(&access, &did, None, post("x")).await;
    assert_eq!((a.status, a.error().1), (429, "RateLimitExceeded"));
    assert_eq!(a.header("retry-after"), Some("7"));
    assert!(a.header("ratelimit-limit").is_some() && a.header("ratelimit-policy").is_some());
    assert_eq!(a.header("ratelimit-remaining"), Some("0"));
    assert!(a.header("ratelimit-reset").is_some());
    assert!(
        bsky.records(&did, "app.bsky.feed.post").is_empty(),
        "faults store nothing"
    );

    // Commit, then 500: getRecord says it was written.
    bsky.inject(nsid, Fault::CommitThen500);
    let rkey = tid_from_micros(1_736_000_000_000_000);
    let a = c
        .create_post(&access, &did, Some(&rkey), post("lost answer"))
        .await;
    assert_eq!(
        a.error(),
        (500, "InternalServerError", "Internal Server Error")
    );
    assert_eq!(
        c.get_record(&did, "app.bsky.feed.post", &rkey).await.status,
        200
    );

    // Hang: written at once, answered late, others served meanwhile.
    // Wide margins: on two loaded cores a probe can wait its turn for a while.
    bsky.inject(nsid, Fault::Hang(Duration::from_millis(1500)));
    let rkey2 = tid_from_micros(1_736_000_000_000_001);
    let started = Instant::now();
    let slow = c.create_post(&access, &did, Some(&rkey2), post("slow"));
    let probe = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = c.get_record(&did, "app.bsky.feed.post", &rkey2).await;
        (r.status, started.elapsed())
    };
    let (slow, (probe_status, probe_at)) = tokio::join!(slow, probe);
    assert_eq!(slow.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(probe_status, 200, "written before the answer");
    assert!(
        probe_at < Duration::from_millis(1300),
        "not blocked: {probe_at:?}"
    );

    // HangThenCommit: not there at first, there after the hang.
    bsky.inject(nsid, Fault::HangThenCommit(Duration::from_millis(500)));
    let rkey3 = tid_from_micros(1_736_000_000_000_002);
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(100))
        .build()?;
    let gave_up = quick
        .post(format!("{}/xrpc/{nsid}", c.base))
        .bearer_auth(&access)
        .json(&json!({"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey3, "record": post("late")}))
        .send()
        .await;
    assert!(gave_up.is_err(), "client timed out");
    let early = c.get_record(&did, "app.bsky.feed.post", &rkey3).await;
    assert_eq!(early.error().1, "RecordNotFound");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let late = c.get_record(&did, "app.bsky.feed.post", &rkey3).await;
    assert_eq!(late.status, 200, "committed after the client gave up");

    assert_eq!(bsky.calls(nsid), 5);
    // Faults are per method: other methods are untouched.
    bsky.inject(
        "app.bsky.feed.getAuthorFeed",
        Fault::status(503, "NotEnoughResources", "busy"),
    );
    assert_eq!(
        c.get_record(&did, "app.bsky.feed.post", &rkey).await.status,
        200
    );
    let feed = c
        .query("app.bsky.feed.getAuthorFeed", &[("actor", &did)])
        .await;
    assert_eq!(feed.status, 503);
    Ok(())
}

#[tokio::test]
async fn write_points_run_out_at_5000_per_hour() -> Res {
    let (bsky, c, did, access) = setup().await;
    // 1,666 creates cost 4,998 points; the next (3 more) is over 5,000.
    for i in 0..1666 {
        let a = c
            .create_post(&access, &did, None, post(&format!("{i}")))
            .await;
        assert_eq!(a.status, 200, "{i}: {:?}", a.body);
    }
    let over = c.create_post(&access, &did, None, post("over")).await;
    assert_eq!((over.status, over.error().1), (429, "RateLimitExceeded"));
    assert_eq!(over.header("ratelimit-limit"), Some("5000"));
    assert_eq!(over.header("ratelimit-policy"), Some("5000;w=3600"));
    assert!(over.header("retry-after").is_some());
    // A delete (1 point) still fits.
    let rkey = bsky.records(&did, "app.bsky.feed.post")[0].rkey.clone();
    let del = c
        .call(
            "com.atproto.repo.deleteRecord",
            Some(&access),
            &json!({"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey}),
        )
        .await;
    assert_eq!(del.status, 200);
    assert!(del.body["commit"].is_object());
    bsky.advance_clock(Duration::from_secs(3601));
    assert_eq!(
        c.create_post(&access, &did, None, post("next hour"))
            .await
            .status,
        200
    );
    Ok(())
}

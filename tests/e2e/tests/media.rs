//! media-fetch (issue 13) against a real S3 server (`s3s-fs`, started by the
//! kit with SigV4 on) and a loopback media host that streams its answers in
//! chunks, redirects, fails, and hangs on demand.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost_test_kit::fakes::instagram::FakeInstagram;
use outpost_test_kit::{S3Server, TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use uuid::Uuid;

const MB50: usize = 50 * 1024 * 1024;
const TOKEN_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const JWT_SECRET: &str = "media-test-jwt-secret-with-at-least-32-characters";

/// What the media host answers on one path.
#[derive(Clone)]
enum Route {
    /// 200 with this type and body, in chunks of `chunk` bytes, with or
    /// without `Content-Length`.
    File {
        content_type: &'static str,
        body: Bytes,
        with_length: bool,
        chunk: usize,
    },
    /// 200 with this type and body in 64 KiB chunks, one every `pace`.
    Paced {
        content_type: &'static str,
        body: Bytes,
        pace: Duration,
    },
    /// This status, empty body.
    Status(u16),
    /// 302 to this path.
    Redirect(String),
    /// 200 image/jpeg announcing 1000 bytes, sends 16, then nothing.
    Hang,
    /// The n-th request gets the n-th route (the last one repeats).
    Sequence(Vec<Route>),
}

type Body = BoxBody<Bytes, Infallible>;

struct MediaHost {
    addr: std::net::SocketAddr,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl MediaHost {
    async fn start() -> MediaHost {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (r, h) = (routes.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (r, h) = (r.clone(), h.clone());
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let path = req.uri().path().to_string();
                        let n = {
                            let mut hits = h.lock().unwrap();
                            let n = hits.entry(path.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        let route = r.lock().unwrap().get(&path).cloned();
                        async move { Ok::<_, Infallible>(answer(route, n)) }
                    },
                );
                tokio::spawn(async move {
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                        .ok();
                });
            }
        });
        MediaHost { addr, routes, hits }
    }

    fn route(&self, path: &str, route: Route) -> String {
        self.routes.lock().unwrap().insert(path.to_string(), route);
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn answer(route: Option<Route>, n: usize) -> http::Response<Body> {
    let empty = || http_body_util::Empty::new().boxed();
    let mut builder = http::Response::builder();
    let route = match route {
        Some(Route::Sequence(list)) => list.get(n - 1).or(list.last()).cloned(),
        other => other,
    };
    match route {
        None => builder.status(404).body(empty()).unwrap(),
        Some(Route::Status(status)) => builder.status(status).body(empty()).unwrap(),
        Some(Route::Redirect(to)) => builder
            .status(302)
            .header("location", to)
            .body(empty())
            .unwrap(),
        Some(Route::File {
            content_type,
            body,
            with_length,
            chunk,
        }) => {
            builder = builder.header("content-type", content_type);
            if with_length {
                builder = builder.header("content-length", body.len());
            }
            let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(4);
            tokio::spawn(async move {
                let mut at = 0;
                while at < body.len() {
                    let end = (at + chunk).min(body.len());
                    if tx.send_data(body.slice(at..end)).await.is_err() {
                        return;
                    }
                    at = end;
                }
            });
            builder.status(200).body(rx.boxed()).unwrap()
        }
        Some(Route::Paced {
            content_type,
            body,
            pace,
        }) => {
            let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
            let len = body.len();
            tokio::spawn(async move {
                for start in (0..len).step_by(64 * 1024) {
                    tokio::time::sleep(pace).await;
                    let end = (start + 64 * 1024).min(len);
                    if tx.send_data(body.slice(start..end)).await.is_err() {
                        return;
                    }
                }
            });
            builder
                .status(200)
                .header("content-type", content_type)
                .header("content-length", len)
                .body(rx.boxed())
                .unwrap()
        }
        Some(Route::Hang) => {
            let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                tx.send_data(Bytes::from_static(b"\xFF\xD8\xFF\xE0 hanging jpeg"))
                    .await
                    .ok();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tx);
            });
            builder
                .status(200)
                .header("content-type", "image/jpeg")
                .header("content-length", 1000)
                .body(rx.boxed())
                .unwrap()
        }
        Some(Route::Sequence(_)) => builder.status(500).body(empty()).unwrap(),
    }
}

/// `len` bytes that start like a JPEG (and are otherwise a pattern, so a
/// misplaced chunk shows in the comparison).
fn jpeg(len: usize) -> Bytes {
    let mut bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    bytes[..4].copy_from_slice(b"\xFF\xD8\xFF\xE0");
    Bytes::from(bytes)
}

fn mp4(len: usize) -> Bytes {
    let mut bytes: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
    bytes[..12].copy_from_slice(b"\x00\x00\x00\x18ftypmp42");
    Bytes::from(bytes)
}

fn file(content_type: &'static str, body: Bytes) -> Route {
    Route::File {
        content_type,
        body,
        with_length: true,
        chunk: 64 * 1024,
    }
}

struct World {
    ig: FakeInstagram,
    _db: TestDb,
    sql: Client,
    s3: S3Server,
    host: MediaHost,
    app: TestApp,
    user: Uuid,
    account: Uuid,
}

async fn world() -> World {
    world_with_secret(None).await
}

async fn world_with_secret(secret: Option<&str>) -> World {
    require_wasm("media-fetch").unwrap();
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let s3 = S3Server::start().await.unwrap();
    let host = MediaHost::start().await;
    let ig = FakeInstagram::start().await.unwrap();
    let app = TestApp::builder(product_manifest())
        .variable("instagram_graph_url", ig.url())
        .variable("token_encryption_key", TOKEN_KEY)
        .database(&db)
        .components(&["media-fetch"])
        .variable("media_store_url", s3.url())
        .variable("supabase_jwt_secret", JWT_SECRET)
        .variable("media_store_access_key", s3.access_key())
        .variable(
            "media_store_secret_key",
            secret.unwrap_or(s3.secret_key()).to_string(),
        )
        .start()
        .await
        .unwrap();
    let user = Uuid::new_v4();
    sql.execute(
        "insert into auth.users (id, email) values ($1, $2)",
        &[&user, &format!("{user}@example.test")],
    )
    .await
    .unwrap();
    let account: Uuid = sql
        .query_one(
            "insert into public.connected_accounts (user_id, platform, platform_user_id, username, verified_at)
             values ($1, 'instagram', $2, 'ig-user', now()) returning id",
            &[&user, &format!("ig-{user}")],
        )
        .await
        .unwrap()
        .get(0);
    World {
        ig,
        _db: db,
        sql,
        s3,
        host,
        app,
        user,
        account,
    }
}

impl World {
    /// An archived post of the account and a queued download of `url`.
    async fn queue(&self, url: &str) -> Uuid {
        let post: Uuid = self
            .sql
            .query_one(
                "insert into public.ingested_posts (platform, account_id, user_id, platform_post_id, post_data, status)
                 values ('instagram', $1, $2, $3, '{}', 'completed') returning id",
                &[&self.account, &self.user, &Uuid::new_v4().to_string()],
            )
            .await
            .unwrap()
            .get(0);
        self.sql
            .query_one(
                "insert into public.media_downloads (ingested_post_id, user_id, original_url)
                 values ($1, $2, $3) returning id",
                &[&post, &self.user, &url],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn run(&self, settings: Value) -> Value {
        self.app
            .run_job("media-fetch", Some(&settings))
            .await
            .unwrap()["report"]
            .clone()
    }

    /// `(status, error, attempts)` of a download.
    async fn item(&self, id: Uuid) -> (String, Option<String>, i32) {
        let row = self
            .sql
            .query_one(
                "select status::text, coalesce(error, last_error), attempts from public.media_downloads where id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    }

    /// Makes a waiting item due now (skips its backoff).
    async fn due_now(&self, id: Uuid) {
        self.sql
            .execute(
                "update public.media_downloads set next_attempt_at = now() - interval '1 second' where id = $1",
                &[&id],
            )
            .await
            .unwrap();
    }

    fn key(&self, url: &str, ext: &str) -> String {
        format!(
            "{}/instagram/{}.{ext}",
            self.user,
            hex::encode(Sha256::digest(url.as_bytes()))
        )
    }

    fn stored(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.s3.object_file("media", key)).ok()
    }

    async fn counts(&self) -> (i32, i32) {
        let row = self
            .sql
            .query_one(
                "select coalesce(sum(media_downloaded), 0)::int, coalesce(sum(media_failed), 0)::int
                   from public.sync_logs where account_id = $1",
                &[&self.account],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_is_stored_under_the_hash_of_its_url_and_counted() {
    let w = world().await;
    let body = jpeg(200_000);
    let url = w
        .host
        .route("/p/kite.jpg", file("image/jpeg", body.clone()));
    let id = w.queue(&url).await;
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["downloaded"], 1, "{report}");
    assert_eq!(w.item(id).await.0, "downloaded");
    let key = w.key(&url, "jpg");
    assert_eq!(
        w.stored(&key).as_deref(),
        Some(&body[..]),
        "object at {key}"
    );
    assert_eq!(w.s3.keys("media"), vec![key]);
    assert_eq!(w.counts().await, (1, 0));
    let beat: Value = w
        .sql
        .query_one(
            "select detail from public.worker_heartbeats where worker_id = 'media-fetch'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(beat["outcome"], "ok", "{beat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_video_streamed_in_small_chunks_without_length_arrives_whole() {
    let w = world().await;
    // 12 MB in 16 KiB chunks and no Content-Length: a multipart upload.
    let body = mp4(12 * 1024 * 1024 + 12345);
    let url = w.host.route(
        "/v/clip.mp4",
        Route::File {
            content_type: "video/mp4",
            body: body.clone(),
            with_length: false,
            chunk: 16 * 1024,
        },
    );
    let id = w.queue(&url).await;
    let report = w.run(json!({})).await;
    assert_eq!(w.item(id).await.0, "downloaded", "{report}");
    let stored = w.stored(&w.key(&url, "mp4")).expect("stored");
    assert_eq!(stored.len(), body.len());
    assert!(stored == body[..], "the bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_fifty_megabytes_is_taken_and_one_byte_more_is_refused() {
    let w = world().await;
    let at_limit = w.host.route("/big/ok.mp4", file("video/mp4", mp4(MB50)));
    let over = w
        .host
        .route("/big/over.mp4", file("video/mp4", mp4(MB50 + 1)));
    let over_unknown = w.host.route(
        "/big/over-chunked.mp4",
        Route::File {
            content_type: "video/mp4",
            body: mp4(MB50 + 1),
            with_length: false,
            chunk: 256 * 1024,
        },
    );
    let a = w.queue(&at_limit).await;
    let b = w.queue(&over).await;
    let c = w.queue(&over_unknown).await;
    let report = w.run(json!({"transfer_seconds": 300})).await;
    assert_eq!(w.item(a).await.0, "downloaded", "{report}");
    assert_eq!(
        std::fs::metadata(w.s3.object_file("media", &w.key(&at_limit, "mp4")))
            .unwrap()
            .len(),
        MB50 as u64
    );
    for id in [b, c] {
        let (status, error, _) = w.item(id).await;
        assert_eq!(status, "failed");
        assert!(error.unwrap_or_default().contains("refused size"));
    }
    assert_eq!(
        w.s3.keys("media").len(),
        1,
        "nothing of the refused ones is stored"
    );
    assert_eq!(w.counts().await, (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn html_and_pages_dressed_as_images_are_refused() {
    let w = world().await;
    let html = w.host.route(
        "/login",
        file(
            "text/html; charset=utf-8",
            Bytes::from_static(b"<!doctype html><p>log in</p>"),
        ),
    );
    let fake = w.host.route(
        "/fake.jpg",
        file(
            "image/jpeg",
            Bytes::from_static(b"<!DOCTYPE html><html>nope</html>"),
        ),
    );
    let a = w.queue(&html).await;
    let b = w.queue(&fake).await;
    w.run(json!({})).await;
    let (status, error, attempts) = w.item(a).await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    assert!(error.unwrap_or_default().contains("text/html"));
    let (status, error, _) = w.item(b).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains("bytes are text"));
    assert!(w.s3.keys("media").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gone_media_is_unavailable_at_once() {
    let w = world().await;
    let a = w
        .queue(&w.host.route("/gone404.jpg", Route::Status(404)))
        .await;
    let b = w
        .queue(&w.host.route("/gone410.jpg", Route::Status(410)))
        .await;
    w.run(json!({})).await;
    for (id, code) in [(a, "404"), (b, "410")] {
        let (status, error, attempts) = w.item(id).await;
        assert_eq!((status.as_str(), attempts), ("unavailable", 1));
        assert!(error.unwrap_or_default().contains(code));
    }
    assert_eq!(w.counts().await, (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_500_is_retried_and_then_succeeds() {
    let w = world().await;
    let body = jpeg(5000);
    let url = w.host.route(
        "/flaky.jpg",
        Route::Sequence(vec![Route::Status(500), file("image/jpeg", body.clone())]),
    );
    let id = w.queue(&url).await;
    w.run(json!({})).await;
    let (status, error, attempts) = w.item(id).await;
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    assert!(error.unwrap_or_default().contains("500"));
    w.due_now(id).await;
    w.run(json!({})).await;
    assert_eq!(w.item(id).await.0, "downloaded");
    assert_eq!(w.stored(&w.key(&url, "jpg")).as_deref(), Some(&body[..]));
    assert_eq!(w.host.hits("/flaky.jpg"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_host_is_cut_off_by_the_timeout_and_retried() {
    let w = world().await;
    let id = w.queue(&w.host.route("/hang.jpg", Route::Hang)).await;
    let started = std::time::Instant::now();
    w.run(json!({"call_timeout_ms": 1000})).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let (status, error, _) = w.item(id).await;
    assert_eq!(status, "pending", "{error:?}");
    assert!(w.s3.keys("media").is_empty(), "no partial object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redirects_are_followed_a_bounded_number_of_times() {
    let w = world().await;
    let body = jpeg(3000);
    w.host
        .route("/r/final.jpg", file("image/jpeg", body.clone()));
    for i in 1..=3 {
        w.host
            .route(&format!("/r/{i}"), Route::Redirect(format!("/r/{}", i + 1)));
    }
    w.host.route("/r/4", Route::Redirect("/r/final.jpg".into()));
    let start = format!("http://{}/r/1", w.host.addr);
    let good = w.queue(&start).await;
    for i in 0..=6 {
        w.host.route(
            &format!("/loop/{i}"),
            Route::Redirect(format!("/loop/{}", i + 1)),
        );
    }
    let endless = w.queue(&format!("http://{}/loop/0", w.host.addr)).await;
    w.run(json!({})).await;
    assert_eq!(w.item(good).await.0, "downloaded");
    // The key is the URL the post named, not where it redirected.
    assert_eq!(w.stored(&w.key(&start, "jpg")).as_deref(), Some(&body[..]));
    let (status, error, _) = w.item(endless).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap_or_default().contains("redirects"));
    assert_eq!(w.host.hits("/loop/6"), 0, "stopped after 5 redirects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_already_stored_is_not_uploaded_again() {
    let w = world().await;
    let url = w.host.route("/shared.jpg", file("image/jpeg", jpeg(4000)));
    let first = w.queue(&url).await;
    w.run(json!({})).await;
    assert_eq!(w.item(first).await.0, "downloaded");
    let key = w.key(&url, "jpg");
    let modified = std::fs::metadata(w.s3.object_file("media", &key))
        .unwrap()
        .modified()
        .unwrap();
    // Another post of the user names the same URL (the first row is gone:
    // a user has one row per URL).
    w.sql
        .execute(
            "delete from public.media_downloads where id = $1",
            &[&first],
        )
        .await
        .unwrap();
    let second = w.queue(&url).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["already_stored"], 1, "{report}");
    assert_eq!(w.item(second).await.0, "downloaded");
    assert_eq!(w.s3.keys("media"), vec![key.clone()]);
    let again = std::fs::metadata(w.s3.object_file("media", &key))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(modified, again, "not written again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_concurrent_runs_download_each_item_once() {
    let w = world().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let url = w.host.route(
            &format!("/c/{i}.jpg"),
            file("image/jpeg", jpeg(100_000 + i)),
        );
        ids.push(w.queue(&url).await);
    }
    let settings = json!({"batch_size": 2});
    let (a, b, c, d) = tokio::join!(
        w.run(settings.clone()),
        w.run(settings.clone()),
        w.run(settings.clone()),
        w.run(settings.clone())
    );
    let reports = [a, b, c, d];
    let claimed: u64 = reports.iter().map(|r| r["claimed"].as_u64().unwrap()).sum();
    assert_eq!(claimed, 12, "{reports:?}");
    for id in ids {
        assert_eq!(w.item(id).await.0, "downloaded");
    }
    for i in 0..12 {
        assert_eq!(w.host.hits(&format!("/c/{i}.jpg")), 1, "item {i}");
    }
    assert_eq!(w.s3.keys("media").len(), 12);
    assert_eq!(w.counts().await, (12, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_is_down_loses_nothing() {
    let w = world().await;
    let url = w.host.route("/outage.jpg", file("image/jpeg", jpeg(7000)));
    let id = w.queue(&url).await;
    w.s3.stop();
    w.run(json!({"call_timeout_ms": 2000})).await;
    let (status, error, attempts) = w.item(id).await;
    assert_eq!((status.as_str(), attempts), ("pending", 1));
    assert!(error.unwrap_or_default().contains("object store"));
    w.s3.restart().await.unwrap();
    w.due_now(id).await;
    w.run(json!({})).await;
    assert_eq!(w.item(id).await.0, "downloaded");
    assert!(w.stored(&w.key(&url, "jpg")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_refuses_a_wrong_secret_and_the_item_waits() {
    let w = world_with_secret(Some("not-the-secret")).await;
    let url = w.host.route("/signed.jpg", file("image/jpeg", jpeg(2000)));
    let id = w.queue(&url).await;
    w.run(json!({})).await;
    let (status, error, _) = w.item(id).await;
    assert_eq!(status, "pending");
    let error = error.unwrap_or_default();
    assert!(error.contains("403"), "{error}");
    assert!(!error.contains("not-the-secret"), "{error}");
    assert!(w.s3.keys("media").is_empty());
}

fn user_token(user: Uuid) -> String {
    outpost_test_kit::supabase_access_token(JWT_SECRET, user, 600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_reads_their_media_through_a_presigned_url_and_nobody_else_does() {
    let w = world().await;
    let body = jpeg(9000);
    let url = w.host.route("/mine.jpg", file("image/jpeg", body.clone()));
    let id = w.queue(&url).await;
    let waiting = w
        .queue(&w.host.route("/later.jpg", Route::Status(503)))
        .await;
    w.run(json!({})).await;
    assert_eq!(w.item(id).await.0, "downloaded");

    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |id: Uuid, token: Option<String>| {
        let mut request = client.get(format!("{}/media/{id}", w.app.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let answer = get(id, Some(user_token(w.user))).await.unwrap();
    assert_eq!(answer.status().as_u16(), 302);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&w.s3.url()), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(!location.contains(w.s3.secret_key()));
    let object = client.get(&location).send().await.unwrap();
    assert_eq!(object.status().as_u16(), 200);
    assert_eq!(object.bytes().await.unwrap(), body);
    // The store checks the signature: a changed one is refused.
    let at = location.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let first = if &location[at..at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    let forged = format!("{}{first}{}", &location[..at], &location[at + 1..]);
    assert_eq!(
        client.get(&forged).send().await.unwrap().status().as_u16(),
        403
    );

    let stranger = Uuid::new_v4();
    w.sql
        .execute(
            "insert into auth.users (id, email) values ($1, $2)",
            &[&stranger, &format!("{stranger}@example.test")],
        )
        .await
        .unwrap();
    assert_eq!(
        get(id, Some(user_token(stranger)))
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        get(waiting, Some(user_token(w.user)))
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        get(Uuid::new_v4(), Some(user_token(w.user)))
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(get(id, None).await.unwrap().status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_that_keeps_failing_is_dead_lettered_after_the_last_attempt() {
    let w = world().await;
    let id = w
        .queue(&w.host.route("/down.jpg", Route::Status(502)))
        .await;
    w.sql
        .execute(
            "update public.media_downloads set max_attempts = 2 where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    w.run(json!({})).await;
    assert_eq!(w.item(id).await.0, "pending");
    assert_eq!(w.counts().await, (0, 0), "a retry is not counted yet");
    w.due_now(id).await;
    w.run(json!({})).await;
    let (status, error, attempts) = w.item(id).await;
    assert_eq!((status.as_str(), attempts), ("failed", 2));
    assert!(error.unwrap_or_default().contains("502"));
    let dead: bool = w
        .sql
        .query_one(
            "select dead_lettered_at is not null from public.media_downloads where id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dead, "dead-lettered, still in the table");
    assert_eq!(w.counts().await, (0, 1));
    assert_eq!(w.host.hits("/down.jpg"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_instagram_link_is_refreshed_from_the_graph_api() {
    let w = world().await;
    let ig_user = format!("ig-{}", w.user);
    let token = w.ig.add_user(&ig_user, "iguser");
    let sealed = shared::token_cipher::seal(&token, TOKEN_KEY, "k1").unwrap();
    w.sql
        .execute(
            "update public.connected_accounts set access_token = $2, token_key_id = 'k1' where id = $1",
            &[&w.account, &sealed],
        )
        .await
        .unwrap();
    let body = jpeg(6000);
    let expired = w.host.route("/cdn/old.jpg", Route::Status(403));
    let fresh = w
        .host
        .route("/cdn/new.jpg", file("image/jpeg", body.clone()));
    let gone = w.host.route("/cdn/gone.jpg", Route::Status(403));
    let mut media = FakeInstagram::image("17900000000000001", None, chrono::Utc::now());
    media["media_url"] = json!(fresh);
    w.ig.add_media(&ig_user, media);

    // The archived posts name the old links, as ingest stored them.
    let mut ids = Vec::new();
    for (media_id, url) in [
        ("17900000000000001", &expired),
        ("17900000000000002", &gone),
    ] {
        let post: Uuid = w
            .sql
            .query_one(
                "insert into public.ingested_posts (platform, account_id, user_id, platform_post_id, post_data, status)
                 values ('instagram', $1, $2, $3, $4, 'completed') returning id",
                &[&w.account, &w.user, &media_id, &json!({"id": media_id, "media_url": url})],
            )
            .await
            .unwrap()
            .get(0);
        let id: Uuid = w
            .sql
            .query_one(
                "insert into public.media_downloads (ingested_post_id, user_id, original_url)
                 values ($1, $2, $3) returning id",
                &[&post, &w.user, url],
            )
            .await
            .unwrap()
            .get(0);
        ids.push(id);
    }
    w.run(json!({})).await;
    assert_eq!(w.item(ids[0]).await.0, "downloaded");
    // Stored under the link the post named, so a refresh never duplicates it.
    assert_eq!(
        w.stored(&w.key(&expired, "jpg")).as_deref(),
        Some(&body[..])
    );
    assert_eq!(
        (w.host.hits("/cdn/old.jpg"), w.host.hits("/cdn/new.jpg")),
        (1, 1)
    );
    // A media the Graph API no longer has: failed with the reason, once.
    let (status, error, _) = w.item(ids[1]).await;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("403") && error.contains("Graph"), "{error}");
    assert!(!error.contains(&token), "{error}");
    assert_eq!(w.host.hits("/cdn/gone.jpg"), 1);
    let graph_calls =
        w.ig.requests()
            .iter()
            .filter(|r| r.uri.path().starts_with("/1790000000000000"))
            .count();
    assert_eq!(graph_calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_stopped_mid_run_and_restarted_loses_nothing() {
    let w = world().await;
    let mut items = Vec::new();
    for i in 0..8 {
        // 1 MiB in 16 chunks 15 ms apart: about a quarter second each.
        let body = jpeg(1024 * 1024 + i);
        let url = w.host.route(
            &format!("/m/{i}.jpg"),
            Route::Paced {
                content_type: "image/jpeg",
                body: body.clone(),
                pace: Duration::from_millis(15),
            },
        );
        items.push((w.queue(&url).await, url, body));
    }
    let outage = async {
        // The store goes down once two objects are in, mid-run.
        while w.s3.keys("media").len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        w.s3.stop();
        w.s3.keys("media").len()
    };
    let (report, stored_before_outage) = tokio::join!(
        w.run(json!({"batch_size": 8, "call_timeout_ms": 2000})),
        outage
    );
    assert!(stored_before_outage < 8, "{report}");
    let mut waiting = 0;
    for (id, _, _) in &items {
        let (status, error, _) = w.item(*id).await;
        match status.as_str() {
            "downloaded" => {}
            "pending" => {
                waiting += 1;
                assert!(error.unwrap_or_default().contains("object store"));
            }
            other => panic!("item {id} is {other}: lost or failed by an outage"),
        }
    }
    assert!(waiting > 0, "the outage hit nothing: {report}");

    w.s3.restart().await.unwrap();
    for (id, _, _) in &items {
        w.due_now(*id).await;
    }
    w.run(json!({"batch_size": 8})).await;
    for (id, url, body) in &items {
        assert_eq!(w.item(*id).await.0, "downloaded");
        assert_eq!(w.stored(&w.key(url, "jpg")).as_deref(), Some(&body[..]));
    }
    assert_eq!(w.s3.keys("media").len(), 8);
    assert_eq!(w.counts().await, (8, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_archived_posts_sharing_one_url_give_one_object() {
    let w = world().await;
    let body = jpeg(8000);
    let url = w.host.route("/same.jpg", file("image/jpeg", body.clone()));
    let post = |id: &str| {
        json!({"platform_post_id": id, "content_type": "post", "text_content": id,
               "created_at_platform": "2026-12-01T10:00:00Z", "post_data": {"id": id},
               "media_urls": [url]})
    };
    // Archived the way ingest archives them.
    let archived: Value = w
        .sql
        .query_one(
            "select public.archive_platform_posts($1, null, $2)",
            &[&w.account, &json!([post("p1"), post("p2")])],
        )
        .await
        .unwrap()
        .get(0);
    let queued: i64 = w
        .sql
        .query_one(
            "select count(*) from public.media_downloads where user_id = $1",
            &[&w.user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1, "{archived}");
    let posts: i64 = w
        .sql
        .query_one(
            "select count(*) from public.ingested_posts where account_id = $1",
            &[&w.account],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(posts, 2, "both posts archived: {archived}");
    let report = w.run(json!({})).await;
    assert_eq!(report["outcomes"]["downloaded"], 1, "{report}");
    assert_eq!(w.s3.keys("media"), vec![w.key(&url, "jpg")]);
    assert_eq!(w.host.hits("/same.jpg"), 1);
}

//! pipeline (issue 17) under the test host with the built wasm, against
//! the migrated database and a real S3 server (`s3s-fs`): the run state
//! machine, idempotent bot events, bot tokens (hashed, revocable, per
//! bot), artifacts checked by SHA-256 while streaming into the store,
//! oversize bodies refused before anything is stored, tenancy, artifact
//! links checked later, and exact event paging under concurrent writers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use outpost_test_kit::{FakeServer, S3Server, TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;
use uuid::Uuid;

const JWT_SECRET: &str = "pipeline-test-jwt-secret-with-at-least-32-characters";
const BUCKET: &str = "artifacts";
const MIB: usize = 1024 * 1024;

struct World {
    _db: TestDb,
    sql: Client,
    s3: S3Server,
    app: TestApp,
    http: reqwest::Client,
}

async fn world() -> World {
    world_with_limit(20 * MIB).await
}

async fn world_with_limit(max_bytes: usize) -> World {
    require_wasm("pipeline").unwrap();
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let s3 = S3Server::start().await.unwrap();
    // s3s-fs serves each directory of its root as a bucket.
    std::fs::create_dir_all(s3.object_file(BUCKET, "")).unwrap();
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["pipeline"])
        .variable("supabase_jwt_secret", JWT_SECRET)
        .variable("media_store_url", s3.url())
        .variable("media_store_access_key", s3.access_key())
        .variable("media_store_secret_key", s3.secret_key())
        .variable("pipeline_artifact_bucket", BUCKET)
        .variable("pipeline_artifact_max_bytes", max_bytes.to_string())
        .variable("pipeline_link_hosts", "http://127.0.0.1:*")
        .start()
        .await
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    World {
        _db: db,
        sql,
        s3,
        app,
        http,
    }
}

fn user_token(user: Uuid) -> String {
    outpost_test_kit::supabase_access_token(JWT_SECRET, user, 600)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Bytes that differ from run to run and position to position.
fn file(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

impl World {
    async fn user(&self) -> Uuid {
        outpost_test_kit::create_user(&self.sql).await.unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.url())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn as_user(
        &self,
        user: Uuid,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(user_token(user));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn new_run(&self, user: Uuid) -> String {
        let (status, body) = self
            .as_user(
                user,
                "POST",
                "/pipeline/runs",
                Some(json!({"project_spec": {"app": "demo"}})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["run_id"].as_str().unwrap().to_string()
    }

    async fn bot_token(&self, user: Uuid, bot_name: Option<&str>) -> (String, String) {
        let body = bot_name.map(|name| json!({ "bot_name": name }));
        let (status, answer) = self
            .as_user(user, "POST", "/pipeline/bot-tokens", body)
            .await;
        assert_eq!(status, 201, "{answer}");
        (
            answer["token"].as_str().unwrap().to_string(),
            answer["id"].as_str().unwrap().to_string(),
        )
    }

    async fn event(&self, token: &str, run: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(&format!("/pipeline/runs/{run}/events")))
                .bearer_auth(token)
                .json(&body),
        )
        .await
    }

    async fn upload(&self, token: &str, run: &str, bytes: Vec<u8>, checksum: &str) -> (u16, Value) {
        self.send(
            self.http
                .post(self.url(&format!(
                    "/pipeline/runs/{run}/artifacts?kind=zip&name=app.zip"
                )))
                .bearer_auth(token)
                .header("content-type", "application/zip")
                .header("x-checksum-sha256", checksum)
                .body(bytes),
        )
        .await
    }

    async fn status(&self, run: &str) -> (String, i64) {
        let row = self
            .sql
            .query_one(
                "select status, (select count(*) from public.job_events e where e.run_id = j.run_id)
                   from public.jobs j where run_id = $1",
                &[&run],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    async fn artifact_rows(&self, run: &str) -> i64 {
        self.sql
            .query_one(
                "select count(*) from public.artifacts where run_id = $1",
                &[&run],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn run_job(&self) -> Value {
        self.app.run_job("pipeline", None).await.unwrap()["report"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_run_moves_only_as_the_state_machine_allows() {
    let w = world().await;
    let user = w.user().await;
    let (token, _) = w.bot_token(user, None).await;
    let ev = |t: &str| json!({"bot_name": "builder", "event_type": t, "payload": {"step": t}});

    // pending -> running on the first event, running stays running.
    let run = w.new_run(user).await;
    assert_eq!(w.status(&run).await, ("pending".into(), 0));
    let (s, b) = w.event(&token, &run, ev("started")).await;
    assert_eq!(
        (s, b["status"].as_str(), b["previous_status"].as_str()),
        (201, Some("running"), Some("pending")),
        "{b}"
    );
    let (s, b) = w.event(&token, &run, ev("progress")).await;
    assert_eq!((s, b["status"].as_str()), (201, Some("running")), "{b}");
    // running -> completed; after it nothing moves and nothing is added.
    let (s, b) = w.event(&token, &run, ev("completed")).await;
    assert_eq!((s, b["status"].as_str()), (201, Some("completed")), "{b}");
    for t in ["progress", "started", "completed", "failed"] {
        let (s, b) = w.event(&token, &run, ev(t)).await;
        assert_eq!(s, 409, "{t}: {b}");
        assert_eq!(b["reason"], "run_completed", "{b}");
        assert!(b["message"].as_str().unwrap().contains("completed"), "{b}");
    }
    let (s, b) = w
        .as_user(user, "POST", &format!("/pipeline/runs/{run}/cancel"), None)
        .await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (409, Some("run_completed")),
        "{b}"
    );
    assert_eq!(w.status(&run).await, ("completed".into(), 3));
    let times = w
        .sql
        .query_one("select started_at is not null and completed_at is not null from public.jobs where run_id = $1", &[&run])
        .await
        .unwrap();
    assert!(times.get::<_, bool>(0));

    // pending -> failed directly, with the bot's error; then closed.
    let run = w.new_run(user).await;
    let (s, b) = w
        .event(&token, &run, json!({"bot_name": "tester", "event_type": "failed", "payload": {"error": "tests failed: 3"}}))
        .await;
    assert_eq!((s, b["status"].as_str()), (201, Some("failed")), "{b}");
    let (s, b) = w.event(&token, &run, ev("progress")).await;
    assert_eq!((s, b["reason"].as_str()), (409, Some("run_failed")), "{b}");
    let (s, b) = w
        .as_user(user, "POST", &format!("/pipeline/runs/{run}/cancel"), None)
        .await;
    assert_eq!((s, b["reason"].as_str()), (409, Some("run_failed")), "{b}");
    let (s, b) = w
        .as_user(user, "GET", &format!("/pipeline/runs/{run}"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["run"]["error_message"], "tests failed: 3");
    assert_eq!(w.status(&run).await, ("failed".into(), 1));

    // pending -> completed directly.
    let run = w.new_run(user).await;
    let (s, b) = w.event(&token, &run, ev("completed")).await;
    assert_eq!((s, b["status"].as_str()), (201, Some("completed")), "{b}");

    // pending -> cancelled; cancelling again changes nothing; no events after.
    let run = w.new_run(user).await;
    let (s, b) = w
        .as_user(user, "POST", &format!("/pipeline/runs/{run}/cancel"), None)
        .await;
    assert_eq!(
        (s, b["changed"].as_bool(), b["run"]["status"].as_str()),
        (200, Some(true), Some("cancelled")),
        "{b}"
    );
    let (s, b) = w
        .as_user(user, "POST", &format!("/pipeline/runs/{run}/cancel"), None)
        .await;
    assert_eq!((s, b["changed"].as_bool()), (200, Some(false)), "{b}");
    for t in ["started", "completed", "failed"] {
        let (s, b) = w.event(&token, &run, ev(t)).await;
        assert_eq!(
            (s, b["reason"].as_str()),
            (409, Some("run_cancelled")),
            "{t}: {b}"
        );
    }
    assert_eq!(w.status(&run).await, ("cancelled".into(), 0));

    // running -> cancelled; running -> failed.
    let run = w.new_run(user).await;
    w.event(&token, &run, ev("started")).await;
    let (s, b) = w
        .as_user(user, "POST", &format!("/pipeline/runs/{run}/cancel"), None)
        .await;
    assert_eq!(
        (s, b["run"]["status"].as_str()),
        (200, Some("cancelled")),
        "{b}"
    );
    let run = w.new_run(user).await;
    w.event(&token, &run, ev("started")).await;
    let (s, b) = w.event(&token, &run, ev("failed")).await;
    assert_eq!((s, b["status"].as_str()), (201, Some("failed")), "{b}");

    // The database refuses a final status changing, whoever writes it.
    let error = w
        .sql
        .execute(
            "update public.jobs set status = 'running' where run_id = $1",
            &[&run],
        )
        .await
        .unwrap_err();
    assert!(
        format!("{error:?}").contains("can no longer become running"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_idempotent_by_their_event_id() {
    let w = world().await;
    let user = w.user().await;
    let (token, _) = w.bot_token(user, Some("deployer")).await;
    let run = w.new_run(user).await;
    let event = json!({"event_type": "deployed", "payload": {"url": "https://x.example"}, "event_id": "deploy-1"});

    let (s, first) = w.event(&token, &run, event.clone()).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(
        first["event"]["bot_name"], "deployer",
        "a per-bot token names its bot"
    );
    assert_eq!(first["duplicate"], false);
    let (s, again) = w.event(&token, &run, event.clone()).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        again["event"], first["event"],
        "the stored event, same id and seq"
    );
    assert_eq!(w.status(&run).await.1, 1);

    // The same id for another event is refused and adds nothing.
    let mut other = event.clone();
    other["payload"] = json!({"url": "https://y.example"});
    let (s, b) = w.event(&token, &run, other).await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (409, Some("event_id_reused")),
        "{b}"
    );
    assert_eq!(w.status(&run).await.1, 1);

    // A retried completing event answers as it did, even once the run is closed.
    let done = json!({"event_type": "completed", "payload": {}, "event_id": "done-1"});
    assert_eq!(w.event(&token, &run, done.clone()).await.0, 201);
    let (s, b) = w.event(&token, &run, done).await;
    assert_eq!(
        (s, b["duplicate"].as_bool(), b["status"].as_str()),
        (200, Some(true), Some("completed")),
        "{b}"
    );
    // Events without ids are not deduplicated, and are refused once closed.
    let (s, _) = w
        .event(&token, &run, json!({"event_type": "note", "payload": {}}))
        .await;
    assert_eq!(s, 409);
    assert_eq!(w.status(&run).await, ("completed".into(), 2));

    // Bad input is a 400 with a reason.
    let run = w.new_run(user).await;
    let (s, b) = w.event(&token, &run, json!({"payload": {}})).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("event_type"), "{b}");
    let (s, _) = w
        .event(&token, &run, json!({"event_type": "", "payload": {}}))
        .await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bot_tokens_are_hashed_per_bot_and_revocable() {
    let w = world().await;
    let user = w.user().await;
    let run = w.new_run(user).await;
    let (token, id) = w.bot_token(user, None).await;
    assert!(token.starts_with("opb_") && token.len() > 40, "{token}");
    // Only the hash is stored.
    let stored: String = w
        .sql
        .query_one(
            "select token_hash from public.pipeline_bot_tokens where id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, sha256_hex(token.as_bytes()));
    let leaked: i64 = w
        .sql
        .query_one(
            "select count(*) from public.pipeline_bot_tokens where token_hash = $1",
            &[&token],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);

    // An owner-wide token needs a bot name.
    let (s, b) = w
        .event(
            &token,
            &run,
            json!({"event_type": "started", "payload": {}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("bot_name"), "{b}");
    assert_eq!(
        w.event(
            &token,
            &run,
            json!({"bot_name": "a", "event_type": "started"})
        )
        .await
        .0,
        201
    );

    // A per-bot token speaks for its bot only.
    let (tester, _) = w.bot_token(user, Some("tester")).await;
    let (s, b) = w
        .event(
            &tester,
            &run,
            json!({"bot_name": "builder", "event_type": "x"}),
        )
        .await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (403, Some("bot_name_mismatch")),
        "{b}"
    );

    // Revoked: refused at once, for events and artifacts, and listed as revoked.
    let (s, b) = w
        .as_user(user, "DELETE", &format!("/pipeline/bot-tokens/{id}"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["revoked_at"].is_string(), "{b}");
    let (s, b) = w
        .event(
            &token,
            &run,
            json!({"bot_name": "a", "event_type": "progress"}),
        )
        .await;
    assert_eq!(s, 401, "{b}");
    assert!(b["message"].as_str().unwrap().contains("revoked"), "{b}");
    let bytes = file(1000, 1);
    let (s, _) = w
        .upload(&token, &run, bytes.clone(), &sha256_hex(&bytes))
        .await;
    assert_eq!(s, 401);
    assert!(w.s3.keys(BUCKET).is_empty());
    let (s, list) = w.as_user(user, "GET", "/pipeline/bot-tokens", None).await;
    assert_eq!(s, 200);
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(
        !list.to_string().contains(&token),
        "the list never shows a token"
    );
    assert!(!list.to_string().contains(&stored), "nor its hash");
    // The other token still works; unknown and malformed tokens do not.
    assert_eq!(
        w.event(&tester, &run, json!({"event_type": "progress"}))
            .await
            .0,
        201
    );
    assert_eq!(
        w.event(
            "opb_not-a-token",
            &run,
            json!({"bot_name": "a", "event_type": "x"})
        )
        .await
        .0,
        401
    );
    assert_eq!(
        w.event(
            &user_token(user),
            &run,
            json!({"bot_name": "a", "event_type": "x"})
        )
        .await
        .0,
        401
    );

    // Someone else cannot revoke my tokens (404) and nobody without a sign-in mints.
    let stranger = w.user().await;
    let (_, tester_id) = w.bot_token(user, Some("other")).await;
    let (s, _) = w
        .as_user(
            stranger,
            "DELETE",
            &format!("/pipeline/bot-tokens/{tester_id}"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = w
        .send(w.http.post(w.url("/pipeline/bot-tokens")).json(&json!({})))
        .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_run_is_invisible_and_closed_to_their_bots() {
    let w = world().await;
    let alice = w.user().await;
    let mallory = w.user().await;
    let run = w.new_run(alice).await;
    let (alice_bot, _) = w.bot_token(alice, Some("builder")).await;
    assert_eq!(
        w.event(&alice_bot, &run, json!({"event_type": "started"}))
            .await
            .0,
        201
    );
    let (mallory_bot, _) = w.bot_token(mallory, Some("x")).await;

    for (method, path) in [
        ("GET", format!("/pipeline/runs/{run}")),
        ("GET", format!("/pipeline/runs/{run}/events")),
        ("POST", format!("/pipeline/runs/{run}/cancel")),
    ] {
        let (s, b) = w.as_user(mallory, method, &path, None).await;
        assert_eq!(s, 404, "{method} {path}: {b}");
        assert!(!b.to_string().contains("started"), "{b}");
    }
    let (s, _) = w
        .event(
            &mallory_bot,
            &run,
            json!({"bot_name": "x", "event_type": "completed"}),
        )
        .await;
    assert_eq!(s, 404);
    let bytes = file(5000, 2);
    let (s, _) = w
        .upload(&mallory_bot, &run, bytes.clone(), &sha256_hex(&bytes))
        .await;
    assert_eq!(s, 404);
    let (s, b) = w
        .send(
            w.http
                .post(w.url(&format!("/pipeline/runs/{run}/artifact-links")))
                .bearer_auth(&mallory_bot)
                .json(&json!({"bot_name": "x", "url": "http://127.0.0.1:9/a", "sha256": sha256_hex(b"a")})),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert!(w.s3.keys(BUCKET).is_empty());
    assert_eq!(w.artifact_rows(&run).await, 0);
    assert_eq!(w.status(&run).await, ("running".into(), 1));
    // The same 404 as a run that does not exist.
    let (s, b) = w
        .as_user(mallory, "GET", "/pipeline/runs/run_doesnotexist", None)
        .await;
    assert_eq!((s, b["message"].as_str()), (404, Some("no such run")));
    // Without a sign-in: 401.
    let (s, _) = w
        .send(w.http.get(w.url(&format!("/pipeline/runs/{run}"))))
        .await;
    assert_eq!(s, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifacts_are_stored_only_with_the_right_checksum() {
    let w = world().await;
    let user = w.user().await;
    let run = w.new_run(user).await;
    let (token, _) = w.bot_token(user, Some("packager")).await;

    // Right checksum (hex header): stored at {owner}/{run}/{sha256}, recorded.
    let small = file(300 * 1024, 3);
    let sum = sha256_hex(&small);
    let (s, b) = w.upload(&token, &run, small.clone(), &sum).await;
    assert_eq!(s, 201, "{b}");
    let key = format!("{user}/{run}/{sum}");
    let a = &b["artifact"];
    assert_eq!(a["object_key"], key.as_str());
    assert_eq!(a["file_size"], small.len());
    assert_eq!(a["content_type"], "application/zip");
    assert_eq!(a["checksum"], sum.as_str());
    assert_eq!(a["kind"], "zip");
    assert_eq!(a["meta"]["name"], "app.zip");
    assert_eq!(a["verification"], "verified");
    assert_eq!(a["url"], format!("{}/{BUCKET}/{key}", w.s3.url()));
    assert_eq!(
        std::fs::read(w.s3.object_file(BUCKET, &key)).unwrap(),
        small
    );

    // Wrong checksum: 422, nothing stored, nothing recorded.
    let other = file(200 * 1024, 4);
    let (s, b) = w
        .upload(&token, &run, other.clone(), &sha256_hex(b"something else"))
        .await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["error"], "checksum_mismatch");
    assert_eq!(w.s3.keys(BUCKET), vec![key.clone()]);
    assert_eq!(w.artifact_rows(&run).await, 1);

    // RFC 9530 Content-Digest, right and wrong.
    let digest = |bytes: &[u8]| format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(bytes)));
    let send_digest = |bytes: Vec<u8>, header: String| {
        w.http
            .post(w.url(&format!("/pipeline/runs/{run}/artifacts")))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .header("content-digest", header)
            .body(bytes)
    };
    let (s, b) = w.send(send_digest(other.clone(), digest(&other))).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["artifact"]["checksum"], sha256_hex(&other));
    let third = file(1000, 5);
    let (s, _) = w.send(send_digest(third.clone(), digest(b"nope"))).await;
    assert_eq!(s, 422);
    // No checksum at all: 400 before anything is read.
    let (s, b) = w
        .send(
            w.http
                .post(w.url(&format!("/pipeline/runs/{run}/artifacts")))
                .bearer_auth(&token)
                .body(third),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("SHA-256"), "{b}");

    // Bigger than a part: multipart; right is stored whole, wrong is aborted.
    let big = file(9 * MIB + 12345, 6);
    let big_sum = sha256_hex(&big);
    let (s, b) = w.upload(&token, &run, big.clone(), &big_sum).await;
    assert_eq!(s, 201, "{b}");
    let big_key = format!("{user}/{run}/{big_sum}");
    assert_eq!(
        std::fs::read(w.s3.object_file(BUCKET, &big_key)).unwrap(),
        big
    );
    let mut bad = big.clone();
    bad[5 * MIB] ^= 0xff;
    let (s, _) = w.upload(&token, &run, bad, &big_sum).await;
    assert_eq!(s, 422);
    assert_eq!(w.s3.keys(BUCKET).len(), 3);
    assert_eq!(w.artifact_rows(&run).await, 3);

    // The same bytes again: the stored artifact, once.
    let (s, b) = w.upload(&token, &run, small.clone(), &sum).await;
    assert_eq!((s, b["duplicate"].as_bool()), (200, Some(true)), "{b}");
    assert_eq!(w.artifact_rows(&run).await, 3);

    // The owner sees them with the run; a closed run takes no more.
    let (_, shown) = w
        .as_user(user, "GET", &format!("/pipeline/runs/{run}"), None)
        .await;
    assert_eq!(shown["artifacts"].as_array().unwrap().len(), 3);
    // Each with a short-lived presigned link the store honours.
    let listed = shown["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["object_key"] == key.as_str())
        .unwrap();
    let link = listed["download_url"].as_str().unwrap();
    assert!(
        link.contains("X-Amz-Signature=") && !link.contains(w.s3.secret_key()),
        "{link}"
    );
    let fetched = w.http.get(link).send().await.unwrap();
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), small.as_slice());
    w.as_user(user, "POST", &format!("/pipeline/runs/{run}/cancel"), None)
        .await;
    let late = file(100, 7);
    let (s, b) = w
        .upload(&token, &run, late.clone(), &sha256_hex(&late))
        .await;
    assert_eq!(
        (s, b["reason"].as_str()),
        (409, Some("run_cancelled")),
        "{b}"
    );
    assert_eq!(w.s3.keys(BUCKET).len(), 3);
}

/// Sends a raw HTTP/1.1 POST: `length` announced (or chunked when `None`),
/// the body written by a task of its own so an early answer can be read
/// while the body is still going. Returns the status and the body text.
async fn raw_post(
    base: &str,
    path: &str,
    token: &str,
    checksum: &str,
    length: Option<usize>,
    body: Vec<u8>,
) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let framing = match length {
        Some(n) => format!("content-length: {n}"),
        None => "transfer-encoding: chunked".to_string(),
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/octet-stream\r\nx-checksum-sha256: {checksum}\r\n{framing}\r\nconnection: close\r\n\r\n"
    );
    let chunked = length.is_none();
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        for piece in body.chunks(256 * 1024) {
            if chunked {
                write
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                write.write_all(piece).await?;
                write.write_all(b"\r\n").await?;
            } else {
                write.write_all(piece).await?;
            }
        }
        if chunked {
            write.write_all(b"0\r\n\r\n").await?;
        }
        // Dropping the write half would half-close the connection, which
        // the server takes as the client leaving: hold it until aborted.
        std::future::pending::<()>().await;
        drop(write);
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 8192];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if let Some(end) = find(&answer, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                        if let Some(len) = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            && answer.len() >= end + 4 + len
                        {
                            break;
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .unwrap();
    writer.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_bodies_are_refused_before_anything_is_stored() {
    let limit = 10 * MIB;
    let w = world_with_limit(limit).await;
    let user = w.user().await;
    let run = w.new_run(user).await;
    let (token, _) = w.bot_token(user, Some("packager")).await;
    let path = format!("/pipeline/runs/{run}/artifacts");

    // Announced too big: refused from the headers, before a byte of body.
    let (s, b) = raw_post(
        w.app.url(),
        &path,
        &token,
        &sha256_hex(b"x"),
        Some(limit + 1),
        Vec::new(),
    )
    .await;
    assert_eq!(s, 413, "{b}");
    assert!(b.contains("nothing was stored"), "{b}");

    // Not announced (chunked) and too big: refused while streaming, after a
    // whole part went up to the store, which is then abandoned.
    let big = file(limit + MIB, 8);
    let (s, b) = raw_post(
        w.app.url(),
        &path,
        &token,
        &sha256_hex(&big),
        None,
        big.clone(),
    )
    .await;
    assert_eq!(s, 413, "{b}");
    assert!(w.s3.keys(BUCKET).is_empty(), "{:?}", w.s3.keys(BUCKET));
    assert_eq!(w.artifact_rows(&run).await, 0);

    // Exactly the limit, chunked, is taken.
    let exact = file(limit, 9);
    let sum = sha256_hex(&exact);
    let (s, b) = raw_post(w.app.url(), &path, &token, &sum, None, exact.clone()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        std::fs::read(w.s3.object_file(BUCKET, &format!("{user}/{run}/{sum}"))).unwrap(),
        exact
    );
    // And a wrong-checksum chunked body of several parts leaves nothing.
    let other = file(9 * MIB, 10);
    let (s, _) = raw_post(w.app.url(), &path, &token, &sha256_hex(b"x"), None, other).await;
    assert_eq!(s, 422);
    assert_eq!(w.s3.keys(BUCKET).len(), 1);
    // JSON bodies have their own limit.
    let huge_spec = json!({"project_spec": {"blob": "x".repeat(2 * MIB)}});
    let (s, _) = w
        .as_user(user, "POST", "/pipeline/runs", Some(huge_spec))
        .await;
    assert_eq!(s, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_paging_is_exact_under_concurrent_writers() {
    let w = Arc::new(world().await);
    let user = w.user().await;
    let run = w.new_run(user).await;
    let (token, _) = w.bot_token(user, None).await;
    const WRITERS: usize = 8;
    const EACH: usize = 40;

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (w, token, run) = (w.clone(), token.clone(), run.clone());
        writers.push(tokio::spawn(async move {
            for n in 0..EACH {
                let (s, b) = w
                    .event(&token, &run, json!({"bot_name": format!("bot-{writer}"), "event_type": "progress", "payload": {"w": writer, "n": n}}))
                    .await;
                assert_eq!(s, 201, "{b}");
            }
        }));
    }
    // Direct inserts (as the seed's clients may make) share the order.
    let direct = {
        let (w, run) = (w.clone(), run.clone());
        tokio::spawn(async move {
            for n in 0..EACH {
                w.sql
                    .execute(
                        "insert into public.job_events (run_id, bot_name, event_type, payload) values ($1, 'direct', 'progress', $2)",
                        &[&run, &json!({"n": n})],
                    )
                    .await
                    .unwrap();
            }
        })
    };

    // A follower pages with a small page size while the writers write.
    let total = WRITERS * EACH + EACH;
    let mut seen: Vec<i64> = Vec::new();
    let mut ids = BTreeSet::new();
    let mut after = 0i64;
    let mut pages = 0;
    while seen.len() < total {
        let (s, page) = w
            .as_user(
                user,
                "GET",
                &format!("/pipeline/runs/{run}/events?after={after}&limit=7"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        pages += 1;
        for event in page["events"].as_array().unwrap() {
            seen.push(event["seq"].as_i64().unwrap());
            assert!(
                ids.insert(event["id"].as_str().unwrap().to_string()),
                "an event came twice: {event}"
            );
        }
        after = page["next_after"].as_i64().unwrap();
        assert!(pages < 10_000, "the follower never caught up");
    }
    for task in writers {
        task.await.unwrap();
    }
    direct.await.unwrap();
    // Every event once, in order, with no gap: what a page showed was final.
    assert_eq!(seen, (1..=total as i64).collect::<Vec<_>>());
    let (s, last) = w
        .as_user(
            user,
            "GET",
            &format!("/pipeline/runs/{run}/events?after={after}"),
            None,
        )
        .await;
    assert_eq!((s, last["events"].as_array().unwrap().len()), (200, 0));
    assert!(
        pages > 10,
        "the follower read while writers wrote ({pages} pages)"
    );

    // Long poll: a waiting follower gets the next event when it lands.
    let waiter = {
        let (w, run) = (w.clone(), run.clone());
        tokio::spawn(async move {
            w.as_user(
                user,
                "GET",
                &format!("/pipeline/runs/{run}/events?after={after}&wait=10"),
                None,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the follower waits for an event");
    w.event(
        &token,
        &run,
        json!({"bot_name": "late", "event_type": "completed"}),
    )
    .await;
    let (s, page) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(page["events"][0]["event_type"], "completed");
    assert_eq!(page["events"][0]["seq"], total as i64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifact_links_are_fetched_and_verified_later() {
    let w = world().await;
    let user = w.user().await;
    let run = w.new_run(user).await;
    let (token, _) = w.bot_token(user, Some("publisher")).await;
    let good = Bytes::from(file(700 * 1024, 11));
    let served = good.clone();
    let host = FakeServer::start(move |request| {
        let path = request.uri.path().to_string();
        let builder = http::Response::builder();
        match path.as_str() {
            "/good.zip" | "/also-good.zip" => builder
                .header("content-type", "application/zip")
                .body(served.clone())
                .unwrap(),
            "/tampered.zip" => builder.body(Bytes::from_static(b"not the file")).unwrap(),
            "/busy.zip" => builder.status(503).body(Bytes::new()).unwrap(),
            _ => builder.status(404).body(Bytes::new()).unwrap(),
        }
    })
    .await
    .unwrap();
    let sum = sha256_hex(&good);
    let register = |path: &str| {
        w.http
            .post(w.url(&format!("/pipeline/runs/{run}/artifact-links")))
            .bearer_auth(&token)
            .json(&json!({"url": format!("{}{path}", host.url()), "sha256": sum, "kind": "zip"}))
    };
    let mut ids = Vec::new();
    for path in ["/good.zip", "/tampered.zip", "/missing.zip", "/busy.zip"] {
        let (s, b) = w.send(register(path)).await;
        assert_eq!(s, 202, "{b}");
        assert_eq!(b["artifact"]["verification"], "pending");
        ids.push(b["artifact"]["id"].as_str().unwrap().to_string());
    }
    let (s, b) = w
        .send(
            w.http
                .post(w.url(&format!("/pipeline/runs/{run}/artifact-links")))
                .bearer_auth(&token)
                .json(&json!({"url": "file:///etc/passwd", "sha256": sum})),
        )
        .await;
    assert_eq!(s, 400, "{b}");

    let report = w.run_job().await;
    assert_eq!(report, json!({"verified": 1, "failed": 2, "retried": 1}));
    let state = |id: String| {
        let sql = &w.sql;
        async move {
            let row = sql
                .query_one(
                    "select verification, file_size, content_type, verify_error from public.artifacts where id = $1::text::uuid",
                    &[&id],
                )
                .await
                .unwrap();
            (
                row.get::<_, String>(0),
                row.get::<_, Option<i64>>(1),
                row.get::<_, Option<String>>(2),
                row.get::<_, Option<String>>(3),
            )
        }
    };
    let (v, size, ct, _) = state(ids[0].clone()).await;
    assert_eq!(
        (v.as_str(), size, ct.as_deref()),
        ("verified", Some(good.len() as i64), Some("application/zip"))
    );
    let (v, _, _, error) = state(ids[1].clone()).await;
    assert_eq!(v, "failed");
    assert!(error.unwrap().contains("SHA-256"));
    let (v, _, _, error) = state(ids[2].clone()).await;
    assert_eq!(v, "failed");
    assert!(error.unwrap().contains("404"));
    let (v, _, _, error) = state(ids[3].clone()).await;
    assert_eq!(v, "pending", "a 503 is tried again later");
    assert!(error.unwrap().contains("503"));

    // The owner reading the run checks its due links on the way.
    let (s, b) = w.send(register("/also-good.zip")).await;
    assert_eq!(s, 202, "{b}");
    let (s, shown) = w
        .as_user(user, "GET", &format!("/pipeline/runs/{run}"), None)
        .await;
    assert_eq!(s, 200);
    let fresh = shown["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == b["artifact"]["id"])
        .unwrap();
    assert_eq!(fresh["verification"], "verified", "{shown}");
}

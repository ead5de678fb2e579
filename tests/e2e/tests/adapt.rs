//! adapt (issue 16): the built component in the test host against real
//! PostgreSQL and a loopback OpenAI-compatible model
//! (`outpost_test_kit::fakes::openai`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::{Duration, Instant};

use outpost_test_kit::fakes::openai::{FakeOpenAi, Script, over_long_variant, valid_adaptations};
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use serde_json::{Value, json};
use tokio_postgres::Client;
use uuid::Uuid;

const JWT_SECRET: &str = "adapt-test-jwt-secret-with-at-least-32-characters";
const API_KEY: &str = "sk-adapt-test-key-0123456789";
const ALL: [&str; 4] = ["linkedin", "x", "bluesky", "substack"];

struct World {
    _db: TestDb,
    sql: Client,
    app: TestApp,
    model: FakeOpenAi,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    server_timing: Option<String>,
    body: Value,
}

async fn world() -> World {
    world_with(&[]).await
}

async fn world_with(variables: &[(&str, &str)]) -> World {
    require_wasm("adapt").unwrap();
    let db = TestDb::new().await.unwrap();
    let sql = db.connect().await.unwrap();
    let model = FakeOpenAi::start(API_KEY).await.unwrap();
    let mut builder = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["adapt"])
        .variable("supabase_jwt_secret", JWT_SECRET)
        .variable("adapt_api_url", model.url())
        .variable("adapt_api_base_path", "/v1")
        .variable("adapt_api_key", API_KEY)
        .variable("adapt_model", "test-model")
        .variable("adapt_provider", "openai-compatible");
    for (name, value) in variables {
        builder = builder.variable(*name, *value);
    }
    let app = builder.start().await.unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    World {
        _db: db,
        sql,
        app,
        model,
        http,
    }
}

fn token(user: Uuid) -> String {
    outpost_test_kit::supabase_access_token(JWT_SECRET, user, 600)
}

impl World {
    async fn user(&self) -> Uuid {
        outpost_test_kit::create_user(&self.sql).await.unwrap()
    }

    /// A voice profile; the user's first becomes the default (seed rule).
    async fn profile(
        &self,
        user: Uuid,
        name: &str,
        characteristics: Value,
        samples: &[&str],
    ) -> Uuid {
        let samples: Vec<String> = samples.iter().map(|s| s.to_string()).collect();
        self.sql
            .query_one(
                "insert into public.voice_profiles (user_id, name, characteristics, sample_posts)
                 values ($1, $2, $3, $4) returning id",
                &[&user, &name, &characteristics, &samples],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        user: Option<Uuid>,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}{path}", self.app.url());
        let mut req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(user) = user {
            req = req.bearer_auth(token(user));
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let server_timing = res
            .headers()
            .get("server-timing")
            .map(|v| v.to_str().unwrap().to_string());
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            retry_after,
            server_timing,
            body,
        }
    }

    async fn adapt(&self, user: Uuid, body: Value) -> Answer {
        self.send("POST", "/adapt", Some(user), Some(body)).await
    }

    async fn count(&self, sql: &str, user: Uuid) -> i64 {
        self.sql.query_one(sql, &[&user]).await.unwrap().get(0)
    }

    async fn runs(&self, user: Uuid) -> i64 {
        self.count(
            "select count(*) from public.ai_text_runs where user_id = $1",
            user,
        )
        .await
    }

    async fn adaptations(&self, user: Uuid) -> i64 {
        self.count(
            "select count(*) from public.content_adaptations where user_id = $1",
            user,
        )
        .await
    }
}

fn chars(v: &Value) -> usize {
    let s = v.as_str().unwrap();
    assert!(
        s.is_ascii(),
        "the fake writes ASCII, so characters are X's weights: {s}"
    );
    s.chars().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_platform_gets_a_variant_within_its_limits_in_the_default_voice() {
    let w = world().await;
    let user = w.user().await;
    let default = w
        .profile(
            user,
            "Founder voice",
            json!({"tone": ["candid", "warm"], "style": "concise", "formality_level": 4,
                   "common_phrases": ["Here's the thing"], "avoid_words": ["synergy", "leverage"]}),
            &["We shipped the importer today. Tiny, boring, and it works."],
        )
        .await;
    let other = w
        .profile(
            user,
            "Formal",
            json!({"tone": ["stiff"], "avoid_words": ["lol"]}),
            &["Dear colleagues"],
        )
        .await;
    assert_ne!(default, other);

    let a = w
        .adapt(
            user,
            json!({"idea": "Small releases beat big launches", "platforms": ALL,
                   "tone": "casual", "target_audience": "indie founders"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    // The time waited for the model, so clients can tell it from ours.
    let timing = a.server_timing.as_deref().unwrap_or_default();
    assert!(timing.starts_with("model;dur="), "{timing}");
    let row = &a.body;
    assert_eq!(row["voice_profile_id"], json!(default));
    assert_eq!(row["original_idea"], "Small releases beat big launches");
    assert_eq!(row["idea_hash"].as_str().unwrap().len(), 64);
    assert_eq!(row["tone"], "casual");
    let ad = &row["adaptations"];
    assert!(chars(&ad["linkedin"]["text"]) <= 3000);
    assert!(ad["linkedin"]["hashtags"].is_array());
    assert!(chars(&ad["x"]["text"]) <= 280);
    assert!(ad["x"]["thread"].is_array());
    assert!(chars(&ad["bluesky"]["text"]) <= 300);
    assert!(!ad["substack"]["title"].as_str().unwrap().is_empty());
    assert!(!ad["substack"]["body"].as_str().unwrap().is_empty());

    // The default profile's voice, samples and avoid-words reached the
    // prompt, with the platform rules from the prompts table; the other
    // profile's did not.
    let chats = w.model.chats();
    assert_eq!(chats.len(), 1);
    let chat = &chats[0];
    assert_eq!(chat.model, "test-model");
    assert_eq!(
        chat.authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    let prompt = chat.text();
    for needle in [
        "Small releases beat big launches",
        "Founder voice",
        "candid, warm",
        "Here's the thing",
        "formality level: 4",
        "synergy, leverage",
        "We shipped the importer today",
        "casual",
        "indie founders",
        "at most 280 weighted characters",
        "at most 300 characters",
        "at most 3000 characters",
    ] {
        assert!(
            prompt.contains(needle),
            "prompt lacks {needle:?}:\n{prompt}"
        );
    }
    assert!(
        !prompt.contains("stiff") && !prompt.contains("Dear colleagues"),
        "{prompt}"
    );
    assert_eq!(chat.response_format["type"], "json_schema");
    assert_eq!(chat.response_format["json_schema"]["strict"], true);
    assert_eq!(chat.platforms(), ALL.map(String::from).to_vec());

    // One run with its prompt hash and the answer's usage tokens.
    let run = w
        .sql
        .query_one(
            "select provider, model, prompt_hash, input_tokens, output_tokens from public.ai_text_runs where user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(run.get::<_, String>(0), "openai-compatible");
    assert_eq!(run.get::<_, String>(1), "test-model");
    assert_eq!(run.get::<_, String>(2).len(), 64);
    let prompt_chars: usize = chat.messages.iter().map(|(_, c)| c.chars().count()).sum();
    assert_eq!(
        run.get::<_, i32>(3) as usize,
        prompt_chars / 4,
        "the fake's prompt_tokens"
    );
    assert!(run.get::<_, i32>(4) > 0);

    // One api_logs row, with no key and no prompt text anywhere in it.
    let logs = w
        .sql
        .query(
            "select method, path, status_code, provider, model, coalesce(error, ''), row_to_json(l)::text
               from public.api_logs l where user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(logs.len(), 1);
    let log = &logs[0];
    assert_eq!(log.get::<_, String>(0), "POST");
    assert_eq!(log.get::<_, String>(1), "/v1/chat/completions");
    assert_eq!(log.get::<_, Option<i32>>(2), Some(200));
    assert_eq!(log.get::<_, String>(3), "openai-compatible");
    let whole: String = log.get(6);
    assert!(
        !whole.contains(API_KEY) && !whole.contains("Small releases"),
        "{whole}"
    );

    // GET answers the same row; the voice profile was used.
    let id = row["id"].as_str().unwrap();
    let got = w
        .send("GET", &format!("/adapt/{id}"), Some(user), None)
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["adaptations"], row["adaptations"]);
    let used: Option<String> = w
        .sql
        .query_one(
            "select last_used_at::text from public.voice_profiles where id = $1",
            &[&default],
        )
        .await
        .unwrap()
        .get(0);
    assert!(used.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_named_profile_is_used_and_without_any_profile_the_voice_is_plain() {
    let w = world().await;
    let user = w.user().await;
    w.profile(user, "Default one", json!({"tone": ["sunny"]}), &[])
        .await;
    let named = w
        .profile(user, "Named", json!({"tone": ["dry"]}), &[])
        .await;
    let a = w
        .adapt(
            user,
            json!({"idea": "Tea", "platforms": ["bluesky"], "voice_profile_id": named}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["voice_profile_id"], json!(named));
    let prompt = w.model.chats()[0].text();
    assert!(
        prompt.contains("dry") && !prompt.contains("sunny"),
        "{prompt}"
    );

    let loner = w.user().await;
    let b = w
        .adapt(loner, json!({"idea": "Coffee", "platforms": ["x"]}))
        .await;
    assert_eq!(b.status, 201, "{}", b.body);
    assert_eq!(b.body["voice_profile_id"], Value::Null);
    assert!(w.model.chats()[1].text().contains("no voice profile"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_idea_is_not_paid_for_twice_unless_forced() {
    let w = world().await;
    let user = w.user().await;
    w.profile(user, "Me", json!({"tone": ["plain"]}), &[]).await;
    let first = w
        .adapt(user, json!({"idea": "Ship  small,\n ship often", "platforms": ["x", "bluesky"], "tone": "Casual"}))
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    // Same idea after normalisation, platforms in another order, tone case.
    let again = w
        .adapt(user, json!({"idea": "Ship small, ship often ", "platforms": ["bluesky", "x"], "tone": "casual"}))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.body["adaptations"], first.body["adaptations"]);
    assert_eq!(w.model.calls(), 1, "no second model call");
    assert_eq!(w.runs(user).await, 1);

    let forced = w
        .adapt(user, json!({"idea": "Ship small, ship often", "platforms": ["x", "bluesky"], "tone": "casual", "force": true}))
        .await;
    assert_eq!(forced.status, 201, "{}", forced.body);
    assert_ne!(forced.body["id"], first.body["id"]);
    assert_eq!(forced.body["idea_hash"], first.body["idea_hash"]);
    assert_eq!(w.model.calls(), 2);

    // Other options are another idea: another platform set, another tone.
    let other = w
        .adapt(
            user,
            json!({"idea": "Ship small, ship often", "platforms": ["x"], "tone": "casual"}),
        )
        .await;
    assert_eq!(other.status, 201);
    assert_ne!(other.body["idea_hash"], first.body["idea_hash"]);
    assert_eq!(w.model.calls(), 3);
    assert_eq!(w.adaptations(user).await, 3);

    // Another user's identical idea is theirs to pay for.
    let someone = w.user().await;
    w.profile(someone, "Them", json!({}), &[]).await;
    let theirs = w
        .adapt(someone, json!({"idea": "Ship small, ship often", "platforms": ["x", "bluesky"], "tone": "casual"}))
        .await;
    assert_eq!(theirs.status, 201);
    assert_eq!(w.model.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_requests_at_once_pay_for_one_model_call_and_a_failure_lets_the_next_go() {
    let w = world().await;
    let user = w.user().await;
    w.profile(user, "Me", json!({"tone": ["plain"]}), &[]).await;
    // The model takes a while, so the requests overlap.
    w.model.set_latency(Duration::from_millis(1500));
    let idea = json!({"idea": "Three identical clicks", "platforms": ["x", "bluesky"]});
    let (a, b, c) = tokio::join!(
        w.adapt(user, idea.clone()),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            w.adapt(user, idea.clone()).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            w.adapt(user, idea.clone()).await
        },
    );
    let mut statuses = vec![a.status, b.status, c.status];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 201],
        "{} / {} / {}",
        a.body,
        b.body,
        c.body
    );
    assert_eq!(
        w.model.calls(),
        1,
        "one model call for three identical requests"
    );
    assert_eq!(
        w.runs(user).await,
        1,
        "one run counted against the daily limit"
    );
    assert_eq!(w.adaptations(user).await, 1);
    assert!(a.body["id"] == b.body["id"] && b.body["id"] == c.body["id"]);
    // The waiting requests waited about as long as the model took.
    for waiting in [&b, &c] {
        let timing = waiting.server_timing.as_deref().unwrap();
        let ms: f64 = timing.trim_start_matches("model;dur=").parse().unwrap();
        assert!(ms >= 500.0, "{timing}");
    }
    assert_eq!(
        w.sql
            .query_one("select count(*) from public.adapt_ideas_in_flight", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0,
        "the stored answer cleared the mark"
    );

    // The writer fails: the request waiting for it makes its own call
    // instead of waiting out the mark.
    w.model.script(Script::Status(500));
    let other = json!({"idea": "A failing first writer", "platforms": ["x"]});
    let started = Instant::now();
    let (failed, second) = tokio::join!(w.adapt(user, other.clone()), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.adapt(user, other.clone()).await
    });
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert_eq!(second.status, 201, "{}", second.body);
    assert_eq!(w.model.calls(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "released, not expired: {:?}",
        started.elapsed()
    );
    // Forced requests never wait and never mark.
    let (f1, f2) = tokio::join!(
        w.adapt(
            user,
            json!({"idea": "Three identical clicks", "platforms": ["x", "bluesky"], "force": true})
        ),
        w.adapt(
            user,
            json!({"idea": "Three identical clicks", "platforms": ["x", "bluesky"], "force": true})
        ),
    );
    assert_eq!((f1.status, f2.status), (201, 201));
    assert_eq!(w.model.calls(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_limit_holds_exactly_under_eight_concurrent_requests() {
    let w = world_with(&[("ai_text_daily_limit", "3")]).await;
    let user = w.user().await;
    let w = std::sync::Arc::new(w);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move {
            w.adapt(
                user,
                json!({"idea": format!("idea number {i}"), "platforms": ["bluesky"]}),
            )
            .await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let ok = answers.iter().filter(|a| a.status == 201).count();
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        (ok, limited.len()),
        (3, 5),
        "{:?}",
        answers
            .iter()
            .map(|a| (a.status, a.body.to_string()))
            .collect::<Vec<_>>()
    );
    for a in &limited {
        assert_eq!(a.body["error"], "daily_limit_reached");
        assert_eq!(a.body["limit"], 3);
        let resets_at =
            chrono::DateTime::parse_from_rfc3339(a.body["resets_at"].as_str().unwrap()).unwrap();
        let now = chrono::Utc::now();
        assert!(
            resets_at > now && resets_at <= now + chrono::Duration::days(1),
            "{resets_at}"
        );
        let wait: i64 = a.retry_after.as_deref().unwrap().parse().unwrap();
        assert!(wait > 0 && wait <= 86_400, "{wait}");
    }
    assert_eq!(w.runs(user).await, 3);
    assert_eq!(
        w.model.calls(),
        3,
        "no call past the limit reached the model"
    );
    assert_eq!(w.adaptations(user).await, 3);

    // A dedupe hit costs nothing, so it still answers over the limit.
    let stored: String = w
        .sql
        .query_one(
            "select original_idea from public.content_adaptations where user_id = $1 limit 1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let hit = w
        .adapt(user, json!({"idea": stored, "platforms": ["bluesky"]}))
        .await;
    assert_eq!(hit.status, 200, "{}", hit.body);
    // Another user has their own day.
    let other = w.user().await;
    assert_eq!(
        w.adapt(
            other,
            json!({"idea": "idea number 0", "platforms": ["bluesky"]})
        )
        .await
        .status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_profile_and_adaptations_are_refused() {
    let w = world().await;
    let alice = w.user().await;
    let bob = w.user().await;
    w.profile(alice, "Alice", json!({"tone": ["alice-ish"]}), &[])
        .await;
    let bobs_profile = w
        .profile(
            bob,
            "Bob",
            json!({"tone": ["bob-ish"]}),
            &["bob's secret sample"],
        )
        .await;
    let refused = w
        .adapt(
            alice,
            json!({"idea": "Borrow a voice", "platforms": ["x"], "voice_profile_id": bobs_profile}),
        )
        .await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert_eq!(refused.body["error"], "voice_profile_not_found");
    // The same answer as an id that does not exist.
    let unknown = w
        .adapt(alice, json!({"idea": "Borrow a voice", "platforms": ["x"], "voice_profile_id": Uuid::new_v4()}))
        .await;
    assert_eq!(
        (unknown.status, &unknown.body["error"]),
        (404, &json!("voice_profile_not_found"))
    );
    assert_eq!(w.model.calls(), 0);
    assert_eq!(w.runs(alice).await, 0);

    let bobs = w
        .adapt(bob, json!({"idea": "Bob's idea", "platforms": ["x"]}))
        .await;
    assert_eq!(bobs.status, 201);
    let id = bobs.body["id"].as_str().unwrap().to_string();
    let read = w
        .send("GET", &format!("/adapt/{id}"), Some(alice), None)
        .await;
    assert_eq!(read.status, 404);
    let regen = w
        .send(
            "POST",
            &format!("/adapt/{id}/regenerate"),
            Some(alice),
            Some(json!({"platform": "x"})),
        )
        .await;
    assert_eq!(regen.status, 404);
    assert_eq!(
        w.model.calls(),
        1,
        "only Bob's own adaptation called the model"
    );
    assert!(!w.model.chats()[0].text().contains("alice-ish"));

    // No token, a bad token: 401.
    assert_eq!(
        w.send("GET", &format!("/adapt/{id}"), None, None)
            .await
            .status,
        401
    );
    let forged = w
        .http
        .get(format!("{}/adapt/{id}", w.app.url()))
        .bearer_auth(format!("{}x", token(bob)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalid_answer_is_asked_for_once_more_then_fails_clearly() {
    let w = world().await;
    let user = w.user().await;
    w.profile(user, "Me", json!({}), &[]).await;

    // Invalid, then valid: stored.
    w.model
        .script(Script::Content("Sure! Here are your posts: ...".into()));
    let a = w
        .adapt(user, json!({"idea": "Retry me", "platforms": ALL}))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let chats = w.model.chats();
    assert_eq!(chats.len(), 2);
    let retry = &chats[1];
    assert_eq!(
        retry.messages[2],
        (
            "assistant".to_string(),
            "Sure! Here are your posts: ...".to_string()
        )
    );
    assert!(
        retry.messages[3]
            .1
            .contains("could not be used: not valid JSON"),
        "{:?}",
        retry.messages[3]
    );
    assert_eq!(w.runs(user).await, 2);

    // Invalid twice (prose, then JSON missing a platform): a clear 502 and
    // nothing stored.
    let mut missing = valid_adaptations(&ALL);
    missing.as_object_mut().unwrap().remove("substack");
    w.model.script(Script::Content(
        "I think these posts would work well".into(),
    ));
    w.model.script(Script::Json(missing));
    let b = w
        .adapt(user, json!({"idea": "Fail me", "platforms": ALL}))
        .await;
    assert_eq!(b.status, 502, "{}", b.body);
    assert_eq!(b.body["error"], "invalid_model_answer");
    let message = b.body["message"].as_str().unwrap();
    assert!(
        message.contains("not valid JSON") && message.contains("no `substack` variant"),
        "{message}"
    );
    assert_eq!(w.model.calls(), 4);
    assert_eq!(w.adaptations(user).await, 1);

    // A cut-off answer (finish_reason length) is unusable too, never half-parsed.
    w.model.script(Script::Truncated);
    w.model.script(Script::Truncated);
    let c = w
        .adapt(user, json!({"idea": "Cut me", "platforms": ALL}))
        .await;
    assert_eq!(
        (c.status, &c.body["error"]),
        (502, &json!("invalid_model_answer"))
    );
    assert_eq!(w.adaptations(user).await, 1);

    // A refusal is said as such.
    w.model
        .script(Script::Refusal("I can't help with that.".into()));
    let d = w
        .adapt(user, json!({"idea": "Refuse me", "platforms": ["x"]}))
        .await;
    assert_eq!(d.status, 422, "{}", d.body);
    assert_eq!(d.body["error"], "model_refused");
    assert!(
        d.body["message"]
            .as_str()
            .unwrap()
            .contains("I can't help with that.")
    );
    assert_eq!(w.model.pending_scripts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_long_variants_are_split_or_asked_again_never_cut() {
    let w = world().await;
    let user = w.user().await;
    w.profile(user, "Me", json!({}), &[]).await;
    let mut first = valid_adaptations(&ALL);
    first["x"] = over_long_variant("x");
    first["bluesky"] = over_long_variant("bluesky");
    w.model.script(Script::Json(first.clone()));
    let a = w
        .adapt(user, json!({"idea": "Long one", "platforms": ALL}))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let ad = &a.body["adaptations"];

    // X: split into a thread by publish's splitter, every word kept in order.
    let x = &ad["x"];
    let mut posts = vec![x["text"].clone()];
    posts.extend(x["thread"].as_array().unwrap().iter().cloned());
    assert!(posts.len() >= 3, "{x}");
    for post in &posts {
        assert!(chars(post) <= 280, "{post}");
    }
    let words: Vec<String> = posts
        .iter()
        .flat_map(|p| {
            p.as_str()
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|w| w.starts_with("word"))
        .collect();
    let expected: Vec<String> = (1..=100).map(|i| format!("word{i}")).collect();
    assert_eq!(words, expected);

    // Bluesky: asked again, for Bluesky only, with the count in the prompt.
    let chats = w.model.chats();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[1].platforms(), vec!["bluesky".to_string()]);
    let asked = &chats[1].messages.last().unwrap().1;
    assert!(
        asked.contains("420 graphemes; Bluesky allows 300"),
        "{asked}"
    );
    assert!(chars(&ad["bluesky"]["text"]) <= 300);
    assert_eq!(ad["linkedin"], first["linkedin"]);
    assert_eq!(ad["substack"], first["substack"]);

    // Still too long after asking again: a clear error, nothing stored.
    let mut long = valid_adaptations(&["linkedin", "substack"]);
    long["linkedin"] = over_long_variant("linkedin");
    long["substack"] = over_long_variant("substack");
    w.model.script(Script::Json(long));
    w.model.script(Script::Json(json!({"linkedin": over_long_variant("linkedin"), "substack": valid_adaptations(&["substack"])["substack"]})));
    let b = w
        .adapt(
            user,
            json!({"idea": "Longer", "platforms": ["linkedin", "substack"]}),
        )
        .await;
    assert_eq!(b.status, 502, "{}", b.body);
    assert_eq!(b.body["error"], "variant_too_long");
    assert!(
        b.body["message"]
            .as_str()
            .unwrap()
            .contains("3100 graphemes; LinkedIn allows 3000"),
        "{}",
        b.body
    );
    assert_eq!(
        w.model.chats()[3].platforms(),
        vec!["linkedin".to_string(), "substack".to_string()]
    );
    assert_eq!(w.adaptations(user).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regenerate_redoes_one_platform_and_keeps_the_others() {
    let w = world().await;
    let user = w.user().await;
    w.profile(user, "Me", json!({"tone": ["bright"]}), &[])
        .await;
    let a = w
        .adapt(
            user,
            json!({"idea": "Regenerate me", "platforms": ALL, "tone": "upbeat"}),
        )
        .await;
    assert_eq!(a.status, 201);
    let id = a.body["id"].as_str().unwrap().to_string();
    w.model.script(Script::Json(
        json!({"bluesky": {"text": "A fresh take, written again."}}),
    ));
    let r = w
        .send(
            "POST",
            &format!("/adapt/{id}/regenerate"),
            Some(user),
            Some(json!({"platform": "bluesky"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], a.body["id"]);
    assert_eq!(
        r.body["adaptations"]["bluesky"]["text"],
        "A fresh take, written again."
    );
    for p in ["linkedin", "x", "substack"] {
        assert_eq!(
            r.body["adaptations"][p], a.body["adaptations"][p],
            "{p} kept"
        );
    }
    let chat = &w.model.chats()[1];
    assert_eq!(chat.platforms(), vec!["bluesky".to_string()]);
    assert!(
        chat.text().contains("Regenerate me")
            && chat.text().contains("bright")
            && chat.text().contains("upbeat")
    );
    let got = w
        .send("GET", &format!("/adapt/{id}"), Some(user), None)
        .await;
    assert_eq!(got.body["adaptations"], r.body["adaptations"]);
    assert_eq!(w.runs(user).await, 2);

    let bad = w
        .send(
            "POST",
            &format!("/adapt/{id}/regenerate"),
            Some(user),
            Some(json!({"platform": "myspace"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    let unknown = w
        .send(
            "POST",
            &format!("/adapt/{}/regenerate", Uuid::new_v4()),
            Some(user),
            Some(json!({"platform": "x"})),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(w.model.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_429_and_500_answer_503_with_retry_after_and_cost_nothing() {
    let w = world().await;
    let user = w.user().await;
    w.profile(user, "Me", json!({}), &[]).await;
    w.model.script(Script::RateLimited {
        retry_after_secs: 42,
    });
    let a = w
        .adapt(user, json!({"idea": "Busy", "platforms": ["x"]}))
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body["error"], "model_unavailable");
    assert_eq!(a.retry_after.as_deref(), Some("42"));

    w.model.script(Script::Status(500));
    let b = w
        .adapt(user, json!({"idea": "Broken", "platforms": ["x"]}))
        .await;
    assert_eq!(b.status, 503, "{}", b.body);
    let wait: u64 = b.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(wait >= 1);

    // No answer, no spend: both reservations were released; both calls logged.
    assert_eq!(w.runs(user).await, 0);
    assert_eq!(w.adaptations(user).await, 0);
    let statuses: Vec<Option<i32>> = w
        .sql
        .query(
            "select status_code from public.api_logs where user_id = $1 order by created_at",
            &[&user],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, vec![Some(429), Some(500)]);

    // Then it works again.
    let c = w
        .adapt(user, json!({"idea": "Busy", "platforms": ["x"]}))
        .await;
    assert_eq!(c.status, 201);
    assert_eq!(w.runs(user).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wrong_key_and_bad_requests_get_clear_answers() {
    let w = world_with(&[("adapt_api_key", "sk-wrong-key")]).await;
    let user = w.user().await;
    let a = w
        .adapt(user, json!({"idea": "Key", "platforms": ["x"]}))
        .await;
    assert_eq!(a.status, 502, "{}", a.body);
    assert_eq!(a.body["error"], "model_api_error");
    assert!(!a.body.to_string().contains("sk-wrong-key"));
    for body in [
        json!({"platforms": ["x"]}),
        json!({"idea": "x", "platforms": []}),
        json!({"idea": "x", "platforms": ["myspace"]}),
        json!({"idea": "x", "platforms": ["x"], "voice_profile_id": "not-a-uuid"}),
    ] {
        let r = w.adapt(user, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(!r.body["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(w.model.calls(), 1);
}

//! End-to-end tests of the Spin-compatible host: the built `.wasm`
//! components (the `probe` test component and the product's `status` and
//! `maintenance`) against real PostgreSQL, each test on its own database and
//! its own host, in parallel.
//!
//! Build the components first:
//! `cargo build --target wasm32-wasip2 --release -p probe -p status -p maintenance`.

use std::collections::BTreeMap;
use std::time::Duration;

use outpost_host::cron::CronFailure;
use outpost_host::pg_cluster::PgCluster;
use outpost_test_kit::{
    FakeServer, TestApp, TestDb, probe_manifest, product_manifest, require_wasm, workspace_root,
};
use serde_json::Value;

type Res = anyhow::Result<()>;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

async fn get(base: &str, path: &str) -> anyhow::Result<Answer> {
    get_with(base, path, &[]).await
}

async fn get_with(base: &str, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Answer> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let r = client
        .get(format!("{base}{path}"))
        .query(query)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    Ok(Answer {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await?,
    })
}

async fn probe_app(db: &TestDb, strict: bool) -> anyhow::Result<TestApp> {
    require_wasm("probe")?;
    Ok(TestApp::builder(probe_manifest())
        .database(db)
        .strict_single_jsonb(strict)
        .start()
        .await?)
}

/// Runs SQL through the probe and returns its JSON answer.
async fn probe_sql(app: &TestApp, sql: &str) -> anyhow::Result<Value> {
    let a = get_with(app.url(), "/probe/pg-query", &[("sql", sql)]).await?;
    assert_eq!(a.status, 200, "{}", a.body);
    Ok(a.json())
}

fn error_of(v: &Value) -> String {
    v["error"].as_str().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------- /status

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_a_fresh_database_is_200_with_migration_and_empty_queues() -> Res {
    require_wasm("status")?;
    let db = TestDb::new().await?;
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["status"])
        .start()
        .await?;
    let a = get(app.url(), "/status").await?;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["database"], "ok", "{v}");
    let latest = &v["latest_migration"];
    assert!(latest.is_object(), "latest_migration: {v}");
    let files = outpost_host::migrate::discover(&workspace_root().join("migrations"))?;
    let last = files.last().map(|f| f.version.clone()).unwrap_or_default();
    assert!(
        latest.to_string().contains(&last),
        "latest migration {last} not in {latest}"
    );
    let queues = v["queues"].as_object().expect("queues object");
    assert!(!queues.is_empty(), "{v}");
    for (name, depth) in queues {
        let total: i64 = depth
            .as_object()
            .map(|m| m.values().filter_map(Value::as_i64).sum())
            .unwrap_or_else(|| depth.as_i64().unwrap_or(0));
        assert_eq!(total, 0, "queue {name} not empty: {depth}");
    }
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_503_while_postgres_is_down_and_recovers() -> Res {
    require_wasm("status")?;
    let mut cluster = tokio::task::spawn_blocking(|| PgCluster::start_new(None)).await??;
    let (client, conn) =
        tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(conn);
    client.batch_execute("create database outpost").await?;
    drop(client);
    driver.await.ok();
    let url = cluster.url("outpost");
    outpost_host::migrate::run(&url, &workspace_root().join("migrations")).await?;
    let app = TestApp::builder(product_manifest())
        .variable("database_url", url)
        .variable("database_address", cluster.address())
        .components(&["status"])
        .start()
        .await?;
    assert_eq!(get(app.url(), "/status").await?.status, 200);

    let cluster = tokio::task::spawn_blocking(move || cluster.stop().map(|()| cluster)).await??;
    let a = get(app.url(), "/status").await?;
    assert_eq!(a.status, 503, "{}", a.body);
    let v = a.json();
    assert_eq!(v["error"], "database_unavailable", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");

    let mut cluster = cluster;
    let cluster = tokio::task::spawn_blocking(move || cluster.start().map(|()| cluster)).await??;
    let mut last = String::new();
    for _ in 0..50 {
        let a = get(app.url(), "/status").await?;
        if a.status == 200 {
            app.stop().await;
            tokio::task::spawn_blocking(move || drop(cluster)).await?;
            return Ok(());
        }
        last = format!("{} {}", a.status, a.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("status did not recover: {last}");
}

// ---------------------------------------------------------------- postgres

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_type_round_trips_through_spin_postgres() -> Res {
    let db = TestDb::new().await?;
    let app = probe_app(&db, false).await?;
    let a = get(app.url(), "/probe/pg-roundtrip").await?;
    let v = a.json();
    let failures: Vec<&Value> = v["cases"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["ok"] != true).collect())
        .unwrap_or_default();
    assert!(
        a.status == 200 && v["ok"] == true,
        "failures: {}",
        serde_json::to_string_pretty(&failures)?
    );
    assert!(v["cases"].as_array().is_some_and(|c| c.len() >= 20), "{v}");
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_row_query_fails_loudly_naming_spins_hang() -> Res {
    let db = TestDb::empty().await?;
    let app = probe_app(&db, false).await?;
    let v = probe_sql(&app, "select 1 as one where false").await?;
    let e = error_of(&v);
    assert!(e.contains("QueryFailed(QueryError::Text("), "{e}");
    assert!(e.contains("zero rows") && e.contains("spin#3671"), "{e}");
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamptz_column_fails_like_spin_and_says_why() -> Res {
    let db = TestDb::empty().await?;
    let app = probe_app(&db, false).await?;
    let v = probe_sql(&app, "select now() as ts").await?;
    let e = error_of(&v);
    assert!(
        e.contains("error deserializing column 0")
            && e.contains("NaiveDateTime")
            && e.contains("timestamptz"),
        "{e}"
    );
    assert!(
        e.contains("outpost-host") && e.contains("AT TIME ZONE"),
        "{e}"
    );
    // A NULL timestamptz fails too: the type check comes first, as in Spin.
    let v = probe_sql(&app, "select null::timestamptz as ts").await?;
    assert!(error_of(&v).contains("NaiveDateTime"), "{v}");
    // The cast works.
    let v = probe_sql(&app, "select now() at time zone 'UTC' as ts").await?;
    assert!(
        v["rows"][0][0]
            .as_str()
            .is_some_and(|s| s.starts_with("Datetime(")),
        "{v}"
    );
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_single_jsonb_refuses_other_shapes_but_allows_execute() -> Res {
    let db = TestDb::empty().await?;
    let strict = probe_app(&db, true).await?;
    let v = probe_sql(&strict, "select 1 as a, 2 as b").await?;
    let e = error_of(&v);
    assert!(
        e.contains("strict_single_jsonb") && e.contains("one row holding one jsonb"),
        "{e}"
    );
    let v = probe_sql(&strict, "select x from generate_series(1, 2) x").await?;
    assert!(error_of(&v).contains("2 row(s)"), "{v}");
    let v = probe_sql(&strict, "select jsonb_build_object('a', 1) as v").await?;
    assert_eq!(v["rows"][0][0], r#"Jsonb({"a":1})"#, "{v}");
    let a = get_with(
        strict.url(),
        "/probe/pg-execute",
        &[("sql", "create table strict_t (x int)")],
    )
    .await?;
    assert_eq!(a.json()["rows_affected"], 0, "{}", a.body);
    strict.stop().await;

    let lax = probe_app(&db, false).await?;
    let v = probe_sql(&lax, "select 1 as a, 2 as b").await?;
    assert_eq!(
        v["rows"][0],
        serde_json::json!(["Int32(1)", "Int32(2)"]),
        "{v}"
    );
    lax.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_errors_have_spins_shapes() -> Res {
    let db = TestDb::empty().await?;
    let app = probe_app(&db, false).await?;
    let v = probe_sql(&app, "select nope").await?;
    let e = error_of(&v);
    assert!(
        e.contains("QueryFailed(QueryError::DbError(DbError {")
            && e.contains(r#"code: "42703""#)
            && e.contains(r#"message: "column \"nope\" does not exist""#),
        "{e}"
    );
    // A parameter the server infers as another type.
    let a = get_with(
        app.url(),
        "/probe/pg-query",
        &[("sql", "select $1::int4 as v"), ("p1", "12")],
    )
    .await?;
    assert!(error_of(&a.json()).contains("WrongType"), "{}", a.body);
    // A database host outside allowed_outbound_hosts.
    let a = get_with(
        app.url(),
        "/probe/pg-query",
        &[
            ("sql", "select 1"),
            ("db", "postgres://postgres@10.9.8.7:6543/x"),
        ],
    )
    .await?;
    assert!(
        error_of(&a.json())
            .contains(r#"ConnectionFailed("address postgres://10.9.8.7:6543 is not permitted")"#),
        "{}",
        a.body
    );
    let a = get_with(
        app.url(),
        "/probe/pg-query",
        &[("sql", "select 1"), ("db", "host=/tmp user=postgres")],
    )
    .await?;
    assert!(
        error_of(&a.json()).contains("Unix sockets are not supported on WebAssembly"),
        "{}",
        a.body
    );
    // Enum and json come back unsupported with their raw bytes.
    db.connect()
        .await?
        .batch_execute("create type mood as enum ('happy', 'sad')")
        .await?;
    let v = probe_sql(&app, r#"select 'happy'::mood as m, '{"a": 1}'::json as j"#).await?;
    assert_eq!(
        v["columns"],
        serde_json::json!([["m", "Other(\"mood\")"], ["j", "Other(\"json\")"]]),
        "{v}"
    );
    assert_eq!(
        v["rows"][0],
        serde_json::json!(["Unsupported(happy)", r#"Unsupported({"a": 1})"#]),
        "{v}"
    );
    app.stop().await;
    Ok(())
}

// ---------------------------------------------------------------- outbound HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_is_limited_to_allowed_hosts() -> Res {
    require_wasm("probe")?;
    let db = TestDb::empty().await?;
    let allowed = FakeServer::answering(200, "hello from the fake").await?;
    let denied = FakeServer::answering(200, "must not be reached").await?;
    let app = TestApp::builder(probe_manifest())
        .database(&db)
        .variable("outbound_allowed", allowed.url())
        .start()
        .await?;

    let a = get_with(
        app.url(),
        "/probe/outbound",
        &[("url", &format!("{}/x?y=1", allowed.url()))],
    )
    .await?;
    let v = a.json();
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["body"], "hello from the fake", "{v}");
    let seen = allowed.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri.path(), "/x");

    let a = get_with(
        app.url(),
        "/probe/outbound",
        &[("url", &format!("{}/x", denied.url()))],
    )
    .await?;
    assert!(
        error_of(&a.json()).contains("HttpRequestDenied"),
        "{}",
        a.body
    );
    assert!(
        denied.requests().is_empty(),
        "a denied request reached the network"
    );

    let a = get_with(
        app.url(),
        "/probe/outbound",
        &[("url", "http://denied.example:8080/")],
    )
    .await?;
    assert!(
        error_of(&a.json()).contains("HttpRequestDenied"),
        "{}",
        a.body
    );
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_chaining_reaches_the_named_component_with_spins_headers() -> Res {
    let db = TestDb::empty().await?;
    let app = probe_app(&db, true).await?;
    let a = get(app.url(), "/probe/chain").await?;
    let v = a.json();
    assert_eq!(v["status"], 200, "{v}");
    let inner: Value = serde_json::from_str(v["body"].as_str().unwrap_or_default())?;
    let h = &inner["headers"];
    assert_eq!(h["spin-path-info"], "/chained/path", "{inner}");
    assert_eq!(h["spin-matched-route"], "/...", "{inner}");
    assert_eq!(h["spin-raw-component-route"], "/...", "{inner}");
    assert_eq!(h["spin-component-route"], "", "{inner}");
    assert_eq!(h["spin-client-addr"], "0.0.0.0:0", "{inner}");
    assert_eq!(h["spin-base-path"], "/", "{inner}");
    assert_eq!(
        h["spin-full-url"], "http://probe-private.spin.internal/chained/path?x=1",
        "{inner}"
    );
    // The private component reads its own variables.
    let a = get_with(
        app.url(),
        "/probe/chain",
        &[(
            "url",
            "http://probe-private.spin.internal/probe/variable?name=greeting",
        )],
    )
    .await?;
    let inner: Value = serde_json::from_str(a.json()["body"].as_str().unwrap_or_default())?;
    assert_eq!(inner["value"], "private hello", "{inner}");
    // Allowed but not a component: an error, never the network.
    let a = get_with(
        app.url(),
        "/probe/chain",
        &[("url", "http://ghost.spin.internal/")],
    )
    .await?;
    assert!(!error_of(&a.json()).is_empty(), "{}", a.body);
    // A component the allow-list does not name.
    let a = get_with(
        app.url(),
        "/probe/chain",
        &[("url", "http://route-a.spin.internal/")],
    )
    .await?;
    assert!(
        error_of(&a.json()).contains("HttpRequestDenied"),
        "{}",
        a.body
    );
    // Private routes are not reachable from outside.
    assert_eq!(get(app.url(), "/chained/path").await?.status, 404);
    app.stop().await;
    Ok(())
}

// ---------------------------------------------------------------- variables

async fn variable(app: &TestApp, name: &str) -> anyhow::Result<Value> {
    Ok(get_with(app.url(), "/probe/variable", &[("name", name)])
        .await?
        .json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_resolve_templates_env_and_overrides_per_component() -> Res {
    let db = TestDb::empty().await?;
    let app = probe_app(&db, true).await?;
    assert_eq!(variable(&app, "greeting").await?["value"], "hello!");
    assert_eq!(variable(&app, "database_url").await?["value"], db.url());
    let e = error_of(&variable(&app, "database_address").await?);
    assert!(
        e.contains(r#"Undefined("no variable for \"probe\".\"database_address\"")"#),
        "{e}"
    );
    assert!(error_of(&variable(&app, "Bad-Name").await?).contains("InvalidName"));
    app.stop().await;

    let app = TestApp::builder(probe_manifest())
        .database(&db)
        .env("SPIN_VARIABLE_GREETING", "from env")
        .start()
        .await?;
    assert_eq!(variable(&app, "greeting").await?["value"], "from env!");
    app.stop().await;

    let app = TestApp::builder(probe_manifest())
        .database(&db)
        .env("SPIN_VARIABLE_GREETING", "from env")
        .variable("greeting", "override")
        .start()
        .await?;
    assert_eq!(variable(&app, "greeting").await?["value"], "override!");
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_variable_stops_start_up_naming_it() -> Res {
    require_wasm("probe")?;
    let db = TestDb::empty().await?;
    let e = match TestApp::builder(probe_manifest())
        .variable("database_url", db.url())
        .start()
        .await
    {
        Ok(_) => panic!("started without database_address"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        e,
        r#"provider error: no provider resolved required variable(s): [Key("database_address")]"#
    );

    // The binary, with the real process environment.
    let bin = env!("CARGO_BIN_EXE_outpost-e2e-host");
    let manifest = probe_manifest();
    let out = tokio::process::Command::new(bin)
        .args(["cron", "probe-cron", "--manifest"])
        .arg(&manifest)
        .env_remove("SPIN_VARIABLE_DATABASE_URL")
        .env_remove("SPIN_VARIABLE_DATABASE_ADDRESS")
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            r#"provider error: no provider resolved required variable(s): [Key("database_address"), Key("database_url")]"#
        ),
        "{stderr}"
    );

    // SPIN_VARIABLE_* in the environment satisfies them (and reaches the guest).
    let out = tokio::process::Command::new(bin)
        .args(["cron", "probe-cron", "--manifest"])
        .arg(&manifest)
        .env("SPIN_VARIABLE_DATABASE_URL", db.url())
        .env("SPIN_VARIABLE_DATABASE_ADDRESS", db.address())
        .env("SPIN_VARIABLE_CRON_MODE", "fail")
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the probe was asked to fail"), "{stderr}");
    Ok(())
}

// ---------------------------------------------------------------- traps

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_or_trap_is_a_500_and_the_host_keeps_serving() -> Res {
    let db = TestDb::empty().await?;
    let app = probe_app(&db, true).await?;
    for path in ["/probe/panic", "/probe/trap", "/probe/panic"] {
        let a = get(app.url(), path).await?;
        assert_eq!(a.status, 500, "{path}");
        assert_eq!(a.body, "", "{path}");
        let ok = get(app.url(), "/probe/ok").await?;
        assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));
    }
    app.stop().await;
    Ok(())
}

// ---------------------------------------------------------------- routes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_spins_precedence() -> Res {
    let db = TestDb::empty().await?;
    let app = probe_app(&db, true).await?;
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        (
            "/users/42",
            "/users/:id",
            &[("spin-path-match-id", "42"), ("spin-path-info", "")],
        ),
        ("/users/me", "/users/me", &[]),
        ("/users/me/", "/users/me", &[]),
        ("/api/foo", "/api/...", &[("spin-path-info", "/foo")]),
        ("/zzz/foo", "/:x/foo", &[("spin-path-match-x", "zzz")]),
        ("/api", "/api/...", &[("spin-path-info", "")]),
        ("/exact", "/exact", &[]),
        ("/exact/", "/exact", &[]),
        ("/exact?q=1", "/exact", &[]),
    ];
    for (path, route, extra) in cases {
        let a = get(app.url(), path).await?;
        assert_eq!(a.status, 200, "{path}");
        let h = &a.json()["headers"];
        assert_eq!(h["spin-matched-route"], *route, "{path}: {h}");
        for (k, v) in *extra {
            assert_eq!(h[*k], *v, "{path} {k}: {h}");
        }
    }
    for path in ["/nope", "/exact/x", "/users/42/x", "/.well-known/spin/nope"] {
        let a = get(app.url(), path).await?;
        assert_eq!((a.status, a.body.as_str()), (404, ""), "{path}");
    }
    let a = get(app.url(), "/.well-known/spin/health").await?;
    assert_eq!((a.status, a.body.as_str()), (200, "OK"));
    let a = get(app.url(), "/.well-known/spin/info").await?;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        "{\n  \"name\": \"probe\",\n  \"version\": \"0.1.0\"\n}"
    );
    let a = get(app.url(), "/static").await?;
    assert_eq!((a.status, a.body.as_str()), (201, "static body"));
    assert_eq!(a.headers["x-static"], "yes");
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_sees_exactly_spins_headers() -> Res {
    let db = TestDb::empty().await?;
    let app = probe_app(&db, true).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let r = client
        .get(format!("{}/base/path/end/rest?key=value", app.url()))
        .header("host", "example.com")
        .header("x-custom", "kept")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await?;
    let h = v["headers"].as_object().expect("headers");
    let spin: BTreeMap<&str, &str> = h
        .iter()
        .filter(|(k, _)| k.starts_with("spin-"))
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
        .collect();
    let client_addr = spin
        .get("spin-client-addr")
        .copied()
        .unwrap_or_default()
        .to_string();
    assert!(client_addr.starts_with("127.0.0.1:"), "{client_addr}");
    let expected: BTreeMap<&str, &str> = [
        ("spin-base-path", "/"),
        ("spin-client-addr", client_addr.as_str()),
        ("spin-component-route", "/base/:path_segment/:path_end"),
        (
            "spin-full-url",
            "http://example.com/base/path/end/rest?key=value",
        ),
        ("spin-matched-route", "/base/:path_segment/:path_end/..."),
        ("spin-path-info", "/rest"),
        ("spin-path-match-path-end", "end"),
        ("spin-path-match-path-segment", "path"),
        (
            "spin-raw-component-route",
            "/base/:path_segment/:path_end/...",
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(spin, expected);
    assert_eq!(h["x-custom"], "kept");
    assert!(
        !h.contains_key("host"),
        "the guest must not see a host header: {v}"
    );
    assert_eq!(v["uri"], "http://example.com/base/path/end/rest?key=value");
    app.stop().await;
    Ok(())
}

// ---------------------------------------------------------------- cron

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_components_fire_on_demand() -> Res {
    let db = TestDb::empty().await?;
    let client = db.connect().await?;
    client
        .batch_execute(
            "create table probe_cron_marks (fired_at int8 not null, mark jsonb not null)",
        )
        .await?;
    let app = probe_app(&db, true).await?;
    let before = outpost_host::cron::now_seconds();
    app.fire_cron("probe-cron").await?;
    let row = client
        .query_one("select fired_at, mark::text from probe_cron_marks", &[])
        .await?;
    let fired: i64 = row.get(0);
    assert!(
        (fired - before as i64).abs() <= 5,
        "timestamp {fired} vs {before}"
    );
    let mark: String = row.get(1);
    assert!(mark.contains("\"component\": \"probe\""), "{mark}");
    assert!(matches!(
        app.fire_cron("route-a").await,
        Err(CronFailure::NotCron(_))
    ));
    app.stop().await;

    for (mode, want_guest) in [("fail", true), ("trap", false)] {
        let app = TestApp::builder(probe_manifest())
            .database(&db)
            .variable("cron_mode", mode)
            .start()
            .await?;
        match app.fire_cron("probe-cron").await {
            Err(CronFailure::Guest(m)) if want_guest => assert!(m.contains("asked to fail")),
            Err(CronFailure::Trap(_)) if !want_guest => {}
            other => panic!("cron_mode {mode}: {other:?}"),
        }
        // The host still serves after a cron trap.
        assert_eq!(get(app.url(), "/probe/ok").await?.status, 200);
        app.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_product_maintenance_job_fires() -> Res {
    require_wasm("maintenance")?;
    let db = TestDb::new().await?;
    let app = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["maintenance"])
        .start()
        .await?;
    app.fire_cron("maintenance").await?;
    app.stop().await;
    Ok(())
}

fn manifest_with_cron(expression: &str) -> anyhow::Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(probe_manifest())?;
    let wasm = require_wasm("probe")?;
    let text = text.replace("0 0 0 1 1 *", expression).replace(
        "../../../target/wasm32-wasip2/release/probe.wasm",
        &wasm.display().to_string(),
    );
    let path =
        std::env::temp_dir().join(format!("probe-cron-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text)?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_expressions_need_exactly_six_fields() -> Res {
    let db = TestDb::empty().await?;
    for (expr, ok) in [
        ("0 * * * * *", true),
        ("0 */5 * * * *", true),
        ("* * * * *", false),
        ("0 0 * * * * 2030", false),
        ("0 99 * * * *", false),
    ] {
        let path = manifest_with_cron(expr)?;
        let result = TestApp::builder(&path).database(&db).start().await;
        std::fs::remove_file(&path).ok();
        match (result, ok) {
            (Ok(app), true) => app.stop().await,
            (Err(e), false) => {
                let e = e.to_string();
                assert!(
                    e.contains("invalid cron expression") && e.contains(expr),
                    "{e}"
                );
            }
            (Ok(_), false) => panic!("{expr:?} was accepted"),
            (Err(e), true) => panic!("{expr:?} was refused: {e}"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- worlds

/// Whether real Spin 4.0.2 (and this host) provides an import.
fn spin_provides(import: &str) -> bool {
    const WASI_P2: &[&str] = &[
        "wasi:cli/",
        "wasi:clocks/",
        "wasi:filesystem/",
        "wasi:io/",
        "wasi:random/",
        "wasi:sockets/",
        "wasi:http/types@",
        "wasi:http/outgoing-handler@",
    ];
    let wasi = WASI_P2.iter().any(|p| import.starts_with(p))
        && import
            .split('@')
            .nth(1)
            .is_some_and(|v| v.starts_with("0.2."));
    wasi || matches!(
        import,
        "spin:postgres/postgres@4.0.0"
            | "fermyon:spin/variables@2.0.0"
            | "fermyon:spin-cron/cron-types@2.0.0"
    )
}

#[test]
fn every_built_component_imports_only_what_spin_provides() -> Res {
    let dir = workspace_root().join("target/wasm32-wasip2/release");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let (imports, exports) = outpost_host::runtime::component_world(&path)?;
        let bad: Vec<&String> = imports.iter().filter(|i| !spin_provides(i)).collect();
        assert!(bad.is_empty(), "{} imports {bad:?}", path.display());
        for e in &exports {
            assert!(
                e.starts_with("wasi:http/incoming-handler@0.2.") || e == "handle-cron-event",
                "{} exports {e}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no component built in {}", dir.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_fires_on_the_schedule() -> Res {
    let db = TestDb::empty().await?;
    let client = db.connect().await?;
    client
        .batch_execute(
            "create table probe_cron_marks (fired_at int8 not null, mark jsonb not null)",
        )
        .await?;
    let path = manifest_with_cron("* * * * * *")?;
    let app = TestApp::builder(&path)
        .database(&db)
        .cron_scheduler(true)
        .start()
        .await;
    std::fs::remove_file(&path).ok();
    let app = app?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.stop().await;
    let n: i64 = client
        .query_one("select count(*) from probe_cron_marks", &[])
        .await?
        .get(0);
    assert!((1..=4).contains(&n), "{n} ticks in 2.5 s");
    Ok(())
}

//! Feed generator benchmark: `getFeedSkeleton` with limit 50 over 1,000,000
//! indexed posts in 100 feeds, 32 concurrent keep-alive connections, through
//! the real `feed-skeleton` component in the test host, printed beside the
//! same page read as bare SQL through 32 Postgres connections in the same
//! run: the very statement the component sends (`select
//! public.feed_skeleton(...)`) and the plain page `SELECT` it wraps. Also
//! the component with service-JWT verification on (keys from the SQL
//! cache), and the `EXPLAIN (ANALYZE, BUFFERS)` of the page query, first
//! page and after a cursor, as plpgsql runs it (generic plan).
//!
//! Each request picks one of 100 feeds and one of five positions: the first
//! page or a cursor 2,000 / 4,000 / 6,000 / 8,000 posts deep.
//!
//! A third bare row sends, before each call, the reset Spin's Postgres pool
//! runs on every connection checkout (deadpool `RecyclingMethod::Clean`):
//! every request is a fresh instance that opens its connection, so that
//! reset is part of any component's request on Spin and in the test host,
//! and that row separates its cost from the component's own.
//!
//! Run: `cargo build --target wasm32-wasip2 --release -p feed-skeleton &&
//! cargo bench -p outpost-e2e --bench feeds`. `OUTPOST_BENCH_SECS` sets the
//! measured seconds per target (default 5), `OUTPOST_TEST_DATABASE_URL` an
//! existing PostgreSQL (else a private one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use outpost_e2e::bench::{CONNECTIONS, SPIN_CHECKOUT_RESET, Stats, addr_of, verdict};
use outpost_e2e::native_baseline::{self, Handler, NativeServer};
use outpost_test_kit::fakes::bluesky::FakeBluesky;
use outpost_test_kit::{TestApp, TestDb, product_manifest, require_wasm};
use uuid::Uuid;

const FEEDS: usize = 100;

/// Posts per feed: `OUTPOST_BENCH_FEED_POSTS` (total over the 100 feeds)
/// / 100, else 10,000 (1,000,000 posts in all, the size).
fn posts_per_feed() -> usize {
    std::env::var("OUTPOST_BENCH_FEED_POSTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(10_000, |total| (total / FEEDS).max(1))
}
const LIMIT: i32 = 50;
const SERVICE_DID: &str = "did:web:feeds.bench";
const PUBLISHER: &str = "did:plc:benchpublisher00000000000";

/// One page request: which feed, and where.
#[derive(Clone)]
struct PageRequest {
    feed_uri: String,
    /// (created_at RFC 3339 with microseconds, uri, encoded cursor)
    cursor: Option<(String, String, String)>,
    feed_id: Uuid,
}

impl PageRequest {
    /// The request path; at-uris and cursors need no escaping in a query
    /// (`:` and `/` are allowed there, cursors are base64url).
    fn path(&self) -> String {
        let mut path = format!(
            "/xrpc/app.bsky.feed.getFeedSkeleton?feed={}&limit={LIMIT}",
            self.feed_uri
        );
        if let Some((_, _, cursor)) = &self.cursor {
            path.push_str("&cursor=");
            path.push_str(cursor);
        }
        path
    }
}

/// 100 published feeds of 10,000 posts each, loaded in SQL.
async fn load(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    let posts = posts_per_feed();
    db.batch_execute(&format!(
        "insert into auth.users (id, email) values ('00000000-0000-4000-8000-000000000001', 'bench@example.test');
         insert into public.feeds (id, user_id, slug, published_uri, publisher_did, published_rkey, published_at)
         select ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
                '00000000-0000-4000-8000-000000000001', 'feed' || n,
                'at://{PUBLISHER}/app.bsky.feed.generator/feed' || n, '{PUBLISHER}', 'feed' || n, now()
           from generate_series(1, {FEEDS}) n;
         insert into public.indexed_posts (feed_id, uri, cid, author_did, created_at)
         select ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid,
                format('at://did:plc:author%s/app.bsky.feed.post/%s', i % 997, lpad(i::text, 7, '0')),
                'bafyreib' || i, format('did:plc:author%s', i % 997),
                now() - (i / 2) * interval '3 seconds' - n * interval '1 microsecond'
           from generate_series(1, {FEEDS}) n, generate_series(1, {posts}) i;
"
    ))
    .await?;
    // As autovacuum would: statistics, and a visibility map for index-only scans.
    db.batch_execute("vacuum analyze public.feeds").await?;
    db.batch_execute("vacuum analyze public.indexed_posts")
        .await?;
    Ok(())
}

/// Five positions per feed: the first page and cursors 2,000 to 8,000 deep.
async fn requests(db: &tokio_postgres::Client) -> anyhow::Result<Vec<PageRequest>> {
    let rows = db
        .query(
            "select f.id, f.published_uri, p.uri,
                    to_char(p.created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    (extract(epoch from p.created_at) * 1000000)::bigint
               from public.feeds f
               join lateral (select uri, created_at,
                                    row_number() over (order by created_at desc, uri desc) as rn
                               from public.indexed_posts ip where ip.feed_id = f.id) p
                 on p.rn in (2000, 4000, 6000, 8000)
              order by f.slug, p.rn",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        let feed_id: Uuid = row.get(0);
        let feed_uri: String = row.get(1);
        if seen.insert(feed_id) {
            out.push(PageRequest {
                feed_uri: feed_uri.clone(),
                cursor: None,
                feed_id,
            });
        }
        let uri: String = row.get(2);
        let at: String = row.get(3);
        let micros: i64 = row.get(4);
        let encoded = format!("{micros}::{}", URL_SAFE_NO_PAD.encode(uri.as_bytes()));
        out.push(PageRequest {
            feed_uri,
            cursor: Some((at, uri, encoded)),
            feed_id,
        });
    }
    // A fixed shuffle (xorshift), so every target sees the same mix.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..out.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.swap(i, (state % (i as u64 + 1)) as usize);
    }
    Ok(out)
}

/// Drives `CONNECTIONS` keep-alive HTTP connections at `addr` for `duration`.
async fn load_http(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    tokens: Arc<Vec<String>>,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let paths = paths.clone();
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(conn);
            let mut i = c * 7;
            while Instant::now() < deadline {
                let mut req = hyper::Request::get(paths[i % paths.len()].as_str())
                    .header("host", addr.to_string());
                if !tokens.is_empty() {
                    req = req.header(
                        "authorization",
                        format!("Bearer {}", tokens[i % tokens.len()]),
                    );
                }
                let req = req.body(Empty::<Bytes>::new())?;
                i += 1;
                let t = Instant::now();
                sender.ready().await?;
                let res = sender.send_request(req).await?;
                let ok = res.status().is_success();
                res.into_body().collect().await?;
                lat.push(t.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
            }
            drop(sender);
            driver.await.ok();
            Ok::<_, anyhow::Error>((lat, errors))
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await??;
        latencies.extend(lat);
        errors += e;
    }
    Ok(Stats::from_latencies(latencies, errors, start.elapsed()))
}

/// `getFeedSkeleton` written natively (the native baseline): the same
/// query parameters parsed (feed at-uri, limit, `micros::base64url(uri)`
/// cursor), the same `feed_skeleton` call through a pool like the host's,
/// the same `{"feed": [{"post": uri}], "cursor"}` answer.
fn native_skeleton() -> Handler {
    Arc::new(|parts, _body, pool| {
        Box::pin(async move {
            let query = parts.uri.query().unwrap_or_default().to_string();
            let (mut feed, mut limit, mut cursor) = (None, 50i32, None);
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("feed", v)) => feed = Some(v.to_string()),
                    Some(("limit", v)) => limit = v.parse().unwrap_or(50),
                    Some(("cursor", v)) => cursor = Some(v.to_string()),
                    _ => {}
                }
            }
            let Some(feed) = feed else {
                return native_baseline::status(400, "InvalidRequest");
            };
            let mut parts_of = feed.trim_start_matches("at://").split('/');
            let (publisher, rkey) = match (parts_of.next(), parts_of.next(), parts_of.next()) {
                (Some(did), Some(_), Some(rkey)) => (Some(did.to_string()), Some(rkey.to_string())),
                _ => (None, None),
            };
            let (at, uri) = match cursor.as_deref().and_then(|c| c.split_once("::")) {
                Some((micros, uri)) => {
                    let Ok(micros) = micros.parse::<i64>() else {
                        return native_baseline::status(400, "BadCursor");
                    };
                    let Some(at) = chrono::DateTime::from_timestamp_micros(micros) else {
                        return native_baseline::status(400, "BadCursor");
                    };
                    let Ok(uri) = URL_SAFE_NO_PAD.decode(uri) else {
                        return native_baseline::status(400, "BadCursor");
                    };
                    (
                        Some(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
                        Some(String::from_utf8_lossy(&uri).into_owned()),
                    )
                }
                None => (None, None),
            };
            let answer = native_baseline::call_jsonb(
                &pool,
                FUNCTION_SQL,
                &[&feed, &publisher, &rkey, &limit, &at, &uri, &None::<String>],
            )
            .await;
            let Ok(answer) = answer else {
                return native_baseline::status(503, "database_unavailable");
            };
            if answer["found"] != serde_json::Value::Bool(true) {
                return native_baseline::status(400, "UnknownFeed");
            }
            let feed: Vec<serde_json::Value> = answer["posts"]
                .as_array()
                .map(|posts| {
                    posts
                        .iter()
                        .map(|p| serde_json::json!({ "post": p }))
                        .collect()
                })
                .unwrap_or_default();
            let mut body = serde_json::json!({ "feed": feed });
            if let (Some(micros), Some(uri)) = (
                answer["cursor"]["created_at_micros"].as_i64(),
                answer["cursor"]["uri"].as_str(),
            ) {
                body["cursor"] = format!("{micros}::{}", URL_SAFE_NO_PAD.encode(uri)).into();
            }
            native_baseline::json(200, &body)
        })
    })
}

/// Which bare SQL to run.
#[derive(Clone, Copy)]
enum Bare {
    /// `select public.feed_skeleton(...)`, as the component sends it.
    Function,
    /// The page `SELECT` alone, feed id known.
    PageQuery,
    /// `select public.feed_skeleton(...)` after the reset Spin's Postgres
    /// pool sends on every checkout (deadpool-postgres `RecyclingMethod::Clean`,
    /// which Spin's factor-outbound-pg and the test host both use): what one
    /// request of any component costs the database at least, since each
    /// request is a fresh instance that checks a connection out.
    SpinCheckout,
}

/// deadpool-postgres' `RecyclingMethod::Clean` query.
const FUNCTION_SQL: &str = "select public.feed_skeleton($1::text, $2::text, $3::text, $4::int, $5::text, $6::text, $7::text)";
const FIRST_PAGE_SQL: &str = "select ip.uri, ip.created_at from public.indexed_posts ip
     where ip.feed_id = $1 order by ip.created_at desc, ip.uri desc limit $2";
const CURSOR_PAGE_SQL: &str = "select ip.uri, ip.created_at from public.indexed_posts ip
     where ip.feed_id = $1 and (ip.created_at, ip.uri) < ($2::text::timestamptz, $3)
     order by ip.created_at desc, ip.uri desc limit $4";

/// Drives `CONNECTIONS` Postgres connections (one per task, like a pool of
/// that size) with the bare query for `duration`. Statements are sent as
/// text each time, as Spin's `query` does.
async fn load_sql(
    db: &TestDb,
    reqs: Arc<Vec<PageRequest>>,
    bare: Bare,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(db.connect().await?);
    }
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let reqs = reqs.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c * 7;
            let limit = LIMIT + 1;
            let rkey_of = |uri: &str| uri.rsplit('/').next().unwrap_or("").to_string();
            while Instant::now() < deadline {
                let r = &reqs[i % reqs.len()];
                i += 1;
                let t = Instant::now();
                if matches!(bare, Bare::SpinCheckout) {
                    client.simple_query(SPIN_CHECKOUT_RESET).await?;
                }
                match (bare, &r.cursor) {
                    (Bare::Function | Bare::SpinCheckout, cursor) => {
                        let (at, uri) = match cursor {
                            Some((at, uri, _)) => (Some(at.clone()), Some(uri.clone())),
                            None => (None, None),
                        };
                        let rkey = rkey_of(&r.feed_uri);
                        let row = client
                            .query_one(
                                FUNCTION_SQL,
                                &[
                                    &r.feed_uri,
                                    &PUBLISHER,
                                    &rkey,
                                    &LIMIT,
                                    &at,
                                    &uri,
                                    &None::<String>,
                                ],
                            )
                            .await?;
                        let _: serde_json::Value = row.get(0);
                    }
                    (Bare::PageQuery, None) => {
                        client
                            .query(FIRST_PAGE_SQL, &[&r.feed_id, &i64::from(limit)])
                            .await?;
                    }
                    (Bare::PageQuery, Some((at, uri, _))) => {
                        client
                            .query(CURSOR_PAGE_SQL, &[&r.feed_id, at, uri, &i64::from(limit)])
                            .await?;
                    }
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Stats::from_latencies(latencies, 0, start.elapsed()))
}

fn row(name: &str, s: &Stats, base: Option<&Stats>) {
    let ratio = base
        .map(|b| format!("{:>5.1}% of its req/s", 100.0 * s.rate() / b.rate()))
        .unwrap_or_else(|| "baseline".into());
    println!(
        "{name:<44} {:>8.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   errors {:>4}   {ratio}",
        s.rate(),
        s.percentile(0.50),
        s.percentile(0.99),
        s.errors
    );
}

async fn explain(db: &TestDb, reqs: &[PageRequest]) -> anyhow::Result<()> {
    let client = db.connect().await?;
    let Some(deep) = reqs.iter().find(|r| r.cursor.is_some()) else {
        return Ok(());
    };
    let Some((at, uri, _)) = &deep.cursor else {
        return Ok(());
    };
    // plpgsql caches a generic plan for the function's page queries; show
    // that plan, with the values of one request.
    client
        .batch_execute(&format!(
            "set plan_cache_mode = force_generic_plan;
             prepare first_page(uuid, int) as {FIRST_PAGE_SQL};
             prepare cursor_page(uuid, text, text, int) as {CURSOR_PAGE_SQL};"
        ))
        .await?;
    for (title, sql) in [
        (
            "first page",
            format!(
                "explain (analyze, buffers) execute first_page('{}', {})",
                deep.feed_id,
                LIMIT + 1
            ),
        ),
        (
            "after a cursor 2,000-8,000 posts deep",
            format!(
                "explain (analyze, buffers) execute cursor_page('{}', '{at}', '{uri}', {})",
                deep.feed_id,
                LIMIT + 1
            ),
        ),
    ] {
        println!("\nEXPLAIN (ANALYZE, BUFFERS), {title} (generic plan, as in plpgsql):");
        for line in client.query(sql.as_str(), &[]).await? {
            let text: String = line.get(0);
            println!("  {text}");
        }
    }
    let size: String = client
        .query_one(
            "select pg_size_pretty(pg_relation_size('public.indexed_posts_feed_cursor_idx'))",
            &[],
        )
        .await?
        .get(0);
    println!("index indexed_posts_feed_cursor_idx (feed_id, created_at desc, uri desc): {size}");
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("OUTPOST_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(secs);
    require_wasm("feed-skeleton")?;
    let db = TestDb::new().await?;
    let sql = db.connect().await?;
    let loading = Instant::now();
    load(&sql).await?;
    println!(
        "loaded {} posts in {FEEDS} feeds in {:.1} s",
        FEEDS * posts_per_feed(),
        loading.elapsed().as_secs_f64()
    );
    let reqs = Arc::new(requests(&sql).await?);
    let paths: Arc<Vec<String>> = Arc::new(reqs.iter().map(PageRequest::path).collect());

    // The same component twice: unverified, and verifying service JWTs
    // against keys from the PLC directory (cached in SQL after the first).
    let bsky = FakeBluesky::start().await?;
    let viewers: Vec<String> = (0..8)
        .map(|i| bsky.add_account(&format!("viewer{i}.test"), "x").did)
        .collect();
    let exp = chrono::Utc::now().timestamp() + 3600;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..256)
            .map(|i| {
                bsky.sign_service_jwt(
                    &viewers[i % viewers.len()],
                    SERVICE_DID,
                    "app.bsky.feed.getFeedSkeleton",
                    exp,
                )
            })
            .collect(),
    );
    let plain = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["feed-skeleton"])
        .variable("feed_service_did", SERVICE_DID)
        .variable("feed_hostname", "feeds.bench")
        .start()
        .await?;
    let verifying = TestApp::builder(product_manifest())
        .database(&db)
        .components(&["feed-skeleton"])
        .variable("feed_service_did", SERVICE_DID)
        .variable("feed_hostname", "feeds.bench")
        .variable("feed_verify_jwt", "true")
        .variable("plc_directory_url", bsky.url())
        .start()
        .await?;
    let no_tokens = Arc::new(Vec::new());
    let native = NativeServer::start(&db.url(), native_skeleton())
        .await
        .map_err(|e| anyhow::anyhow!("native baseline: {e}"))?;
    load_http(
        native.addr(),
        paths.clone(),
        no_tokens.clone(),
        Duration::from_millis(500),
    )
    .await?;

    // Warm up every path (pools, plan caches, the key cache).
    load_http(
        addr_of(plain.url())?,
        paths.clone(),
        no_tokens.clone(),
        Duration::from_millis(500),
    )
    .await?;
    load_http(
        addr_of(verifying.url())?,
        paths.clone(),
        tokens.clone(),
        Duration::from_millis(500),
    )
    .await?;
    for bare in [Bare::Function, Bare::PageQuery, Bare::SpinCheckout] {
        load_sql(&db, reqs.clone(), bare, Duration::from_millis(500)).await?;
    }

    println!(
        "feeds benchmark: getFeedSkeleton limit {LIMIT}, {} posts in {FEEDS} feeds, {CONNECTIONS} connections, {secs} s per target, loopback, {} cores",
        FEEDS * posts_per_feed(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let bare_page = load_sql(&db, reqs.clone(), Bare::PageQuery, duration).await?;
    let bare_function = load_sql(&db, reqs.clone(), Bare::Function, duration).await?;
    let spin_checkout = load_sql(&db, reqs.clone(), Bare::SpinCheckout, duration).await?;
    let component = load_http(
        addr_of(plain.url())?,
        paths.clone(),
        no_tokens.clone(),
        duration,
    )
    .await?;
    let native_run = load_http(native.addr(), paths.clone(), no_tokens, duration).await?;
    let verified = load_http(addr_of(verifying.url())?, paths.clone(), tokens, duration).await?;
    let did_json = Arc::new(vec!["/.well-known/did.json".to_string()]);
    let no_sql = load_http(
        addr_of(plain.url())?,
        did_json,
        Arc::new(Vec::new()),
        duration,
    )
    .await?;
    row("bare SQL: page SELECT (feed id known)", &bare_page, None);
    row("bare SQL: select feed_skeleton(...)", &bare_function, None);
    row(
        "bare SQL: checkout reset + feed_skeleton",
        &spin_checkout,
        None,
    );
    row(
        "component GET getFeedSkeleton",
        &component,
        Some(&bare_function),
    );
    row("  (vs the bare page SELECT)", &component, Some(&bare_page));
    row("  (vs the native baseline)", &component, Some(&native_run));
    row(
        "native baseline: same request, hyper+pg",
        &native_run,
        Some(&bare_page),
    );
    row(
        "  (vs checkout reset + feed_skeleton)",
        &component,
        Some(&spin_checkout),
    );
    row(
        "component, service JWT verified",
        &verified,
        Some(&bare_function),
    );
    row(
        "component GET /.well-known/did.json (no SQL)",
        &no_sql,
        None,
    );
    println!(
        "target: component p99 < 20 ms ({}), >= 60% of the bare feed_skeleton rate ({}); \
         >= 60% of checkout reset + feed_skeleton ({})",
        verdict(component.percentile(0.99) < 20.0),
        verdict(component.rate() >= 0.6 * bare_function.rate()),
        verdict(component.rate() >= 0.6 * spin_checkout.rate()),
    );
    println!(
        "component/native: {:.2}x (target >= 0.70x: {}); component/bare page SELECT: {:.2}x (target >= 0.50x: {})",
        component.rate() / native_run.rate(),
        verdict(component.rate() >= 0.7 * native_run.rate()),
        component.rate() / bare_page.rate(),
        verdict(component.rate() >= 0.5 * bare_page.rate()),
    );
    println!(
        "PLC directory lookups during the run: {}",
        bsky.calls("plc")
    );
    explain(&db, &reqs).await?;
    native.stop();
    plain.stop().await;
    verifying.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

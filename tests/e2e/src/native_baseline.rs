//! The native baseline the component benchmarks print beside each
//! component: the same SQL call behind a plain hyper + tokio-postgres
//! server, with no wasm and no Spin interfaces in the way. It serves HTTP/1.1
//! keep-alive like the host, and holds its Postgres connections in the same
//! kind of pool as the host's `spin:postgres` (deadpool-postgres, at most 64
//! connections per address), checked out once per request as a component's
//! `Connection::open` does. As any native service would, it recycles
//! connections with deadpool's cheap check and keeps each connection's
//! prepared statements (`prepare_cached`), so it is the ceiling a component
//! making the same call can approach.
//!
//! A benchmark gives it a [`Handler`]: what one request does (read the
//! body, check it, make the call, answer), written natively.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The host's pool size per connection string (Spin's).
pub const POOL_MAX_SIZE: usize = 64;

/// Errors starting the baseline.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A native answer's future.
pub type Answer = Pin<Box<dyn Future<Output = http::Response<Full<Bytes>>> + Send>>;

/// One request, natively: its head, its whole body, and the pool.
pub type Handler = Arc<dyn Fn(http::request::Parts, Bytes, Pool) -> Answer + Send + Sync>;

/// A running baseline server; dropping it stops accepting.
pub struct NativeServer {
    addr: SocketAddr,
    pool: Pool,
    task: JoinHandle<()>,
}

impl NativeServer {
    /// Serves `handler` on a free loopback port, with a pool to
    /// `database_url` (plain TCP, as the benchmarks' local Postgres).
    pub async fn start(database_url: &str, handler: Handler) -> Result<Self, BoxError> {
        let config = tokio_postgres::Config::from_str(database_url)?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(POOL_MAX_SIZE).build()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let served = pool.clone();
        let task = tokio::spawn(async move {
            let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
                TokioExecutor::new(),
            ));
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).ok();
                let (handler, pool, builder) = (handler.clone(), served.clone(), builder.clone());
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (handler, pool) = (handler.clone(), pool.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let answer = match body.collect().await {
                                Ok(body) => handler(parts, body.to_bytes(), pool).await,
                                Err(_) => status(400, "unreadable body"),
                            };
                            Ok::<_, Infallible>(answer)
                        }
                    },
                );
                tokio::spawn(async move {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                        .ok();
                });
            }
        });
        Ok(Self { addr, pool, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes the pool.
    pub fn stop(self) {
        self.task.abort();
        self.pool.close();
    }
}

/// An answer with `status` and a JSON `body`.
pub fn json(status: u16, body: &serde_json::Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// An error answer `{"error": reason}`.
pub fn status(status: u16, reason: &str) -> http::Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": reason }))
}

/// Checks a connection out of `pool` and runs `sql` (prepared once per
/// connection) with `params`, returning its one `jsonb` value: what a
/// component's `Connection::open` + `query` does, natively.
pub async fn call_jsonb(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<serde_json::Value, BoxError> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(sql).await?;
    let row = client.query_one(&statement, params).await?;
    Ok(row.try_get::<_, serde_json::Value>(0)?)
}

/// CPU time this process has used so far (user + system), from
/// `/proc/self/stat` (Linux; zero elsewhere). On a shared machine the rate
/// of a run depends on what else runs, but the CPU it takes per request
/// does not: benchmarks divide this over a run by its requests.
pub fn process_cpu() -> std::time::Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return std::time::Duration::ZERO;
    };
    // Fields after the command (which may hold spaces) end with ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return std::time::Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let total = ticks(11) + ticks(12);
    // Linux reports in USER_HZ, 100 on every platform it runs on.
    std::time::Duration::from_millis(total * 10)
}

//! A loopback fake server: hyper on `127.0.0.1:0` answering with a closure
//! and recording every request, for faking outside platforms.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

use crate::KitError;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub uri: http::Uri,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Whole body.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What an async handler returns: the answer, computed later.
pub type ResponseFuture = Pin<Box<dyn Future<Output = http::Response<Bytes>> + Send>>;

type AsyncHandler = dyn Fn(RecordedRequest) -> ResponseFuture + Send + Sync;

/// A running fake; stops when dropped.
pub struct FakeServer {
    addr: std::net::SocketAddr,
    log: Arc<Mutex<Vec<RecordedRequest>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeServer {
    /// Starts a fake answering every request with `handler`.
    pub async fn start(
        handler: impl Fn(&RecordedRequest) -> http::Response<Bytes> + Send + Sync + 'static,
    ) -> Result<Self, KitError> {
        let handler = Arc::new(handler);
        Self::start_async(move |request: RecordedRequest| -> ResponseFuture {
            let response = handler(&request);
            Box::pin(async move { response })
        })
        .await
    }

    /// Starts a fake whose answers are futures, so one slow answer (a fake
    /// that hangs on purpose) does not hold up the others. The request is
    /// in [`FakeServer::requests`] as soon as it has arrived, before the
    /// answer is ready.
    pub async fn start_async(
        handler: impl Fn(RecordedRequest) -> ResponseFuture + Send + Sync + 'static,
    ) -> Result<Self, KitError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<AsyncHandler> = Arc::new(handler);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task_log = log.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let handler = handler.clone();
                        let log = task_log.clone();
                        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let handler = handler.clone();
                            let log = log.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let recorded = RecordedRequest {
                                    method: parts.method,
                                    uri: parts.uri,
                                    headers: parts.headers,
                                    body,
                                };
                                if let Ok(mut log) = log.lock() {
                                    log.push(recorded.clone());
                                }
                                let response = handler(recorded).await;
                                Ok::<_, Infallible>(response.map(Full::new))
                            }
                        });
                        tokio::spawn(async move {
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                                .ok();
                        });
                    }
                }
            }
        });
        Ok(Self {
            addr,
            log,
            stop: Some(stop),
        })
    }

    /// A fake that answers 200 with `body` to everything.
    pub async fn answering(status: u16, body: &'static str) -> Result<Self, KitError> {
        Self::start(move |_| {
            let mut r = http::Response::new(Bytes::from_static(body.as_bytes()));
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
            r
        })
        .await
    }

    /// `http://127.0.0.1:<port>` (no trailing slash, no path: usable as a
    /// base URL variable and as an `allowed_outbound_hosts` entry).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

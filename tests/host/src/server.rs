//! The HTTP listener: hyper 1 (HTTP/1.1 and HTTP/2) on a given socket, each
//! request handed to the application, with a graceful stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::AppInner;

/// A running server. Dropping it stops accepting connections; call
/// [`RunningServer::stop`] to also wait for open connections to finish.
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets open connections finish (up to 5 s), stops the
    /// cron scheduler.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.scheduler.take() {
            s.abort();
        }
        if let Some(tx) = self.stop.take() {
            // The server may already have stopped on its own.
            tx.send(()).ok();
        }
        if let Some(task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(6), task)
                .await
                .is_err()
        {
            eprintln!("outpost-host: server did not stop in time");
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(s) = self.scheduler.take() {
            s.abort();
        }
        if let Some(tx) = self.stop.take() {
            tx.send(()).ok();
        }
    }
}

/// Serves `app` on `listener` until stopped.
pub(crate) fn start(
    app: Arc<AppInner>,
    listener: TcpListener,
    scheduler: Option<JoinHandle<()>>,
) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
            TokioExecutor::new(),
        ));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                _ = &mut stop_rx => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            eprintln!("outpost-host: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    stream.set_nodelay(true).ok();
                    let app = app.clone();
                    let service = hyper::service::service_fn(move |req| {
                        let app = app.clone();
                        async move {
                            let req = crate::drain::DrainOnDrop::wrap(req);
                            Ok::<_, std::convert::Infallible>(app.handle(req, peer).await)
                        }
                    });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let conn = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .into_owned();
                        // A client going away mid-request is not worth a log line.
                        watcher.watch(conn).await.ok();
                    });
                }
            }
        }
        drop(listener);
        if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
            .await
            .is_err()
        {
            eprintln!("outpost-host: some connections were still open at shutdown");
        }
    });
    Ok(RunningServer {
        addr,
        stop: Some(stop_tx),
        task: Some(task),
        scheduler,
    })
}

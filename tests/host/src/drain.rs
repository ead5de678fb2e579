//! Request bodies that are drained, not abandoned, when the answer does not
//! read them to the end.
//!
//! A component that refuses a request before reading its body (a 413 on the
//! announced `Content-Length`, say) answers while the sender is still
//! writing. If the server then closed the connection with unread bytes in
//! its receive buffer, the kernel would send a reset, and a sender that does
//! not use `Expect: 100-continue` would often see "connection reset"
//! instead of the answer (real Spin 4.0.2 does exactly that). So when a
//! request body is dropped unfinished, the rest is read and discarded in the
//! background, up to [`DRAIN_LIMIT_BYTES`] and [`DRAIN_LIMIT_TIME`], while
//! the sender keeps sending (a pause of [`DRAIN_IDLE_TIME`] ends it); past
//! those bounds, or when the announced length is over the byte bound, the
//! connection is closed unread as before. A request sent with
//! `Expect: 100-continue` whose body was never asked for is not drained:
//! asking for it would make hyper send `100 Continue` after the final
//! answer, and such a sender does not send the body unasked.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The most bytes read and discarded after the answer (16 MiB). A body
/// whose announced remaining length is larger is not drained at all.
pub const DRAIN_LIMIT_BYTES: usize = 16 << 20;

/// The longest a body is drained after the answer.
pub const DRAIN_LIMIT_TIME: Duration = Duration::from_secs(30);

/// A sender that sends nothing for this long is not waited for.
pub const DRAIN_IDLE_TIME: Duration = Duration::from_secs(1);

/// An incoming request body that drains itself when dropped unfinished.
pub struct DrainOnDrop {
    inner: Option<Incoming>,
    expect_continue: bool,
    polled: bool,
    ended: bool,
}

impl DrainOnDrop {
    /// Wraps `body`; `expect_continue` is whether the request carried
    /// `Expect: 100-continue`.
    pub fn new(body: Incoming, expect_continue: bool) -> Self {
        Self {
            inner: Some(body),
            expect_continue,
            polled: false,
            ended: false,
        }
    }

    /// Wraps the body of `request`, noting its `Expect` header.
    pub fn wrap(request: hyper::Request<Incoming>) -> hyper::Request<Self> {
        let expect_continue = request
            .headers()
            .get(http::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        request.map(|body| Self::new(body, expect_continue))
    }
}

impl Body for DrainOnDrop {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        let Some(body) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.ended || body.is_end_stream() || (self.expect_continue && !self.polled) {
            return;
        }
        if body.size_hint().lower() > DRAIN_LIMIT_BYTES as u64 {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body));
        }
    }
}

/// Reads and discards the rest of `body`, within the bounds.
async fn drain(mut body: Incoming) {
    let read = async {
        let mut seen = 0usize;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(DRAIN_IDLE_TIME, body.frame()).await {
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > DRAIN_LIMIT_BYTES {
                    break;
                }
            }
        }
    };
    // Past the bounds the body is dropped and hyper closes the connection.
    tokio::time::timeout(DRAIN_LIMIT_TIME, read).await.ok();
}

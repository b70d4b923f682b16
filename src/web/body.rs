//! A response body that keeps a guard alive until it is finished or dropped: how stream
//! permits and the listener's count of requests in progress end with the response, not
//! with the handler.

use axum::body::Body;
use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};

/// `inner`, keeping `guard` alive until the body is finished or dropped.
pub fn holding<G: Send + Sync + Unpin + 'static>(inner: Body, guard: G) -> Body {
    Body::new(Held {
        inner,
        _guard: guard,
    })
}

struct Held<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Sync + Unpin + 'static> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    // Delegated so that a JSON answer keeps its Content-Length.
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

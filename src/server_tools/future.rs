use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::rounds::boxed;
use crate::BoxError;
use crate::route::BoxBody;

type Rounds<E> = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, E>> + Send>>;

pin_project! {
    /// Response future of [`ServerTools`](super::ServerTools).
    pub struct ResponseFuture<F, E> {
        #[pin]
        kind: Kind<F, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, E> {
        // No catalog tool: the inner service's answer, as it is.
        Direct { #[pin] fut: F },
        // The rounds (boxed: not the hot path).
        Rounds { fut: Rounds<E> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    pub(super) fn direct(fut: F) -> Self {
        Self {
            kind: Kind::Direct { fut },
        }
    }

    pub(super) fn rounds(fut: Rounds<E>) -> Self {
        Self {
            kind: Kind::Rounds { fut },
        }
    }
}

impl<F, E> fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<BoxBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Direct { fut } => Poll::Ready(ready!(fut.poll(cx)).map(boxed)),
            KindProj::Rounds { fut } => fut.as_mut().poll(cx),
        }
    }
}

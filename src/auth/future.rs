use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::Service;

use super::LookupFuture;
use super::service::admit;
use crate::body::ResponseBody;

pin_project! {
    /// Response future of [`Auth`](super::Auth): a refusal, a key lookup in progress, or the
    /// inner service's future.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<B>>,
    {
        Reject { response: Option<Response<Full<Bytes>>> },
        Lookup { lookup: LookupFuture, inner: Option<S>, request: Option<Request<B>> },
        Inner { #[pin] future: S::Future },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn reject(response: Response<Full<Bytes>>) -> Self {
        Self {
            kind: Kind::Reject {
                response: Some(response),
            },
        }
    }

    pub(super) fn inner(future: S::Future) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(super) fn lookup(lookup: LookupFuture, inner: S, request: Request<B>) -> Self {
        Self {
            kind: Kind::Lookup {
                lookup,
                inner: Some(inner),
                request: Some(request),
            },
        }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Reject { response } => {
                    let res = response.take().expect("future polled after completion");
                    return Poll::Ready(Ok(ResponseBody::from_full(res)));
                }
                KindProj::Lookup {
                    lookup,
                    inner,
                    request,
                } => {
                    let result = ready!(lookup.as_mut().poll(cx));
                    let mut req = request.take().expect("future polled after completion");
                    let mut inner = inner.take().expect("future polled after completion");
                    let next = match admit(result, &mut req) {
                        Ok(()) => Kind::Inner {
                            future: inner.call(req),
                        },
                        Err(refusal) => Kind::Reject {
                            response: Some(refusal.response()),
                        },
                    };
                    kind.set(next);
                }
                KindProj::Inner { future } => {
                    let res = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                }
            }
        }
    }
}

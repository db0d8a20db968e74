//! [`ModelAccessLayer`]: 403 when the caller's key may not use the requested model.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{Principal, errors};
use crate::body::ResponseBody;
use crate::validate::ValidatedRequest;

/// Applies [`ModelAccess`]: mount it inside [`ValidateLayer`](crate::ValidateLayer) and in front
/// of the router. See the [module docs](crate::auth#model-access-403).
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelAccessLayer {
    _p: (),
}

impl ModelAccessLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _p: () }
    }
}

impl<S> Layer<S> for ModelAccessLayer {
    type Service = ModelAccess<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ModelAccess::new(inner)
    }
}

/// Answers 403 `model_not_allowed` when the request's [`Principal`] may not use the requested
/// model ([`KeyRecord::allows_model`](super::KeyRecord::allows_model)); a request without a
/// principal (no auth layer mounted) passes. See the [module docs](crate::auth#model-access-403).
#[derive(Clone, Debug)]
pub struct ModelAccess<S> {
    inner: S,
}

impl<S> ModelAccess<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A [`ModelAccessLayer`].
    pub const fn layer() -> ModelAccessLayer {
        ModelAccessLayer::new()
    }

    crate::macros::define_inner_service_accessors!();
}

impl<S, ResBody> Service<Request<ValidatedRequest>> for ModelAccess<S>
where
    S: Service<Request<ValidatedRequest>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = AccessFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ValidatedRequest>) -> Self::Future {
        if let Some(principal) = req.extensions().get::<Principal>() {
            let model = &req.body().request().model;
            if !principal.key().allows_model(model) {
                return AccessFuture {
                    kind: Kind::Forbidden {
                        response: Some(errors::model_not_allowed(model)),
                    },
                };
            }
        }
        AccessFuture {
            kind: Kind::Inner {
                future: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// Response future of [`ModelAccess`].
    pub struct AccessFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Forbidden { response: Option<Response<Full<Bytes>>> },
        Inner { #[pin] future: F },
    }
}

impl<F> std::fmt::Debug for AccessFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessFuture").finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for AccessFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Forbidden { response } => {
                let res = response.take().expect("future polled after completion");
                Poll::Ready(Ok(ResponseBody::from_full(res)))
            }
            KindProj::Inner { future } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(res.map(ResponseBody::inner)))
            }
        }
    }
}

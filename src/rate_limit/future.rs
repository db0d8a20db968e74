use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::Service;

use super::backend::{BackendError, Decision, Status};
use super::headers::{insert_status, too_many_requests, unavailable};
use super::service::{RateLimitBody, scopes_of};
use super::settle::{Settlement, SettlementSlot, UsageWatch};
use super::{LimitBackend, RateLimitConfig, Scope};
use crate::BoxError;
use crate::auth::Principal;
use crate::body::{OnEndBody, ResponseBody};
use crate::validate::ValidatedRequest;

type AdmitFuture = Pin<Box<dyn Future<Output = Result<Decision, BackendError>> + Send + 'static>>;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit).
    pub struct ResponseFuture<S>
    where
        S: Service<Request<ValidatedRequest>>,
    {
        #[pin]
        kind: Kind<S>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S>
    where
        S: Service<Request<ValidatedRequest>>,
    {
        Early { response: Option<Response<Full<Bytes>>> },
        Admitting {
            admit: AdmitFuture,
            req: Option<Request<ValidatedRequest>>,
            inner: Option<S>,
            backend: Arc<dyn LimitBackend>,
            config: Arc<RateLimitConfig>,
        },
        Calling {
            #[pin] future: S::Future,
            settlement: Option<Settlement>,
            status: Option<Status>,
            max_body: usize,
        },
    }
}

impl<S> std::fmt::Debug for ResponseFuture<S>
where
    S: Service<Request<ValidatedRequest>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<Request<ValidatedRequest>>,
{
    fn early(response: Response<Full<Bytes>>) -> Self {
        Self {
            kind: Kind::Early {
                response: Some(response),
            },
        }
    }

    pub(super) fn calling(
        future: S::Future,
        settlement: Option<Settlement>,
        status: Option<Status>,
        config: &RateLimitConfig,
    ) -> Self {
        Self {
            kind: Kind::Calling {
                future,
                settlement,
                status,
                max_body: config.max_usage_body,
            },
        }
    }

    pub(super) fn admitting(
        admit: AdmitFuture,
        req: Request<ValidatedRequest>,
        inner: S,
        backend: Arc<dyn LimitBackend>,
        config: Arc<RateLimitConfig>,
    ) -> Self {
        Self {
            kind: Kind::Admitting {
                admit,
                req: Some(req),
                inner: Some(inner),
                backend,
                config,
            },
        }
    }

    /// Acts on a backend's decision: calls `inner` or answers.
    pub(super) fn decided(
        decision: Result<Decision, BackendError>,
        mut req: Request<ValidatedRequest>,
        inner: &mut S,
        backend: &Arc<dyn LimitBackend>,
        config: &RateLimitConfig,
    ) -> Self {
        match decision {
            Ok(Decision::Admitted(ticket, status)) => {
                let settlement = Settlement::new(Arc::clone(backend), ticket);
                req.extensions_mut().insert(settlement.clone());
                // A layer in front reads the exact usage: it settles, the body is not read here.
                let watched = match req.extensions().get::<SettlementSlot>() {
                    Some(slot) => slot.put_if_armed(settlement).err(),
                    None => Some(settlement),
                };
                Self::calling(inner.call(req), watched, Some(status), config)
            }
            Ok(Decision::Unchecked) => Self::calling(inner.call(req), None, None, config),
            Ok(Decision::Refused(refusal)) => {
                let scopes = scopes_of(&req, config);
                let key = req.extensions().get::<Principal>();
                let scope = match (refusal.limit.is_budget(), key) {
                    (true, Some(p)) => Scope::Key { id: &p.key().id }.to_string(),
                    _ => scopes
                        .get(refusal.scope)
                        .map_or_else(|| "this caller".to_owned(), |(s, _)| s.to_string()),
                };
                Self::early(too_many_requests(&refusal, &scope))
            }
            Err(_) => Self::early(unavailable()),
        }
    }
}

impl<S, ResBody> Future for ResponseFuture<S>
where
    S: Service<Request<ValidatedRequest>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<RateLimitBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Early { response } => {
                    let res = response.take().expect("future polled after completion");
                    return Poll::Ready(Ok(ResponseBody::from_full(res)));
                }
                KindProj::Admitting {
                    admit,
                    req,
                    inner,
                    backend,
                    config,
                } => {
                    let decision = ready!(admit.as_mut().poll(cx));
                    let req = req.take().expect("future polled after completion");
                    let mut inner = inner.take().expect("future polled after completion");
                    let next = Self::decided(decision, req, &mut inner, backend, config);
                    kind.set(next.kind);
                }
                KindProj::Calling {
                    future,
                    settlement,
                    status,
                    max_body,
                } => {
                    let res = ready!(future.poll(cx))?;
                    let (mut head, body) = res.into_parts();
                    if let Some(status) = status.take() {
                        insert_status(&mut head.headers, &status);
                    }
                    let watch = settlement
                        .take()
                        .map(|s| UsageWatch::new(s, &head, *max_body));
                    let body = ResponseBody::inner(OnEndBody::new(body, watch));
                    return Poll::Ready(Ok(Response::from_parts(head, body)));
                }
            }
        }
    }
}

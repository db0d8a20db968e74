//! [`Usage`] (outer) and [`UsageMeter`] (inner).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::mpsc::error::TrySendError;
use tower::Service;

use super::UsageHandle;
use super::body::MeterBody;
use super::draft::Draft;
use super::future::{MeterFuture, ResponseFuture};
use super::sink::{Msg, Overflow};
use crate::BoxError;
use crate::auth::Principal;
use crate::rate_limit::SettlementSlot;
use crate::request_id::RequestId;
use crate::validate::ValidatedRequest;

type Reserve = Pin<
    Box<
        dyn Future<Output = Result<OwnedPermit<Msg>, tokio::sync::mpsc::error::SendError<()>>>
            + Send,
    >,
>;

/// The outer usage service ([`UsageLayer`](super::UsageLayer)).
pub struct Usage<S> {
    inner: S,
    handle: UsageHandle,
    permit: Option<OwnedPermit<Msg>>,
    // A `Mutex` only to be `Sync`: it is reached through `&mut self`.
    reserving: Option<Mutex<Reserve>>,
}

impl<S: fmt::Debug> fmt::Debug for Usage<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Usage")
            .field("inner", &self.inner)
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<S: Clone> Clone for Usage<S> {
    fn clone(&self) -> Self {
        // A reserved place belongs to the request this service will call, not to the clone.
        Self::new(self.inner.clone(), self.handle.clone())
    }
}

impl<S> Usage<S> {
    /// Wraps `inner`, sending records to `handle`.
    pub fn new(inner: S, handle: UsageHandle) -> Self {
        Self {
            inner,
            handle,
            permit: None,
            reserving: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for Usage<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<crate::body::OnEndBody<ResBody, super::UsageEnd>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if self.handle.overflow() == Overflow::Wait && self.permit.is_none() {
            if self.reserving.is_none() {
                match self.handle.shared.tx.clone().try_reserve_owned() {
                    Ok(p) => self.permit = Some(p),
                    Err(TrySendError::Full(tx)) => {
                        self.reserving = Some(Mutex::new(Box::pin(tx.reserve_owned())));
                    }
                    // Closed: the record will be counted as dropped.
                    Err(TrySendError::Closed(_)) => {}
                }
            }
            if let Some(r) = &mut self.reserving {
                let fut = r
                    .get_mut()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(p) => {
                        self.permit = p.ok();
                        self.reserving = None;
                    }
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.as_str().to_owned());
        let span = super::trace::span(request_id.as_deref(), req.headers());
        let draft = Arc::new(Draft::new(
            self.handle.clone(),
            self.permit.take(),
            request_id,
            span.clone(),
        ));
        if let Some(p) = req.extensions().get::<Principal>() {
            draft.outer().key_id = Some(p.id().to_owned());
        }
        // The record goes to the meter inside as the rate limiter's settlement slot: one
        // extension for both (the limiter uses it once the meter arms it).
        req.extensions_mut().insert(draft.settlement_slot());
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture::new(future, draft, span)
    }
}

/// The inner usage service ([`UsageMeterLayer`](super::UsageMeterLayer)).
///
/// The inner service's response body must be `Unpin` (boxed bodies, hyper's `Incoming` and
/// `Full` are): a non-streamed answer is read from it in place, without boxing it first.
#[derive(Clone, Debug)]
pub struct UsageMeter<S> {
    inner: S,
    max_body: usize,
}

impl<S> UsageMeter<S> {
    /// Wraps `inner`; non-streamed bodies of up to `max_body` bytes are read for their usage.
    pub fn new(inner: S, max_body: usize) -> Self {
        Self { inner, max_body }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ResBody> Service<Request<ValidatedRequest>> for UsageMeter<S>
where
    S: Service<Request<ValidatedRequest>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<MeterBody<ResBody>>;
    type Error = S::Error;
    type Future = MeterFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ValidatedRequest>) -> Self::Future {
        // The outer layer's record, found through the slot it put in the request.
        let draft = req
            .extensions()
            .get::<SettlementSlot>()
            .and_then(SettlementSlot::holder)
            .and_then(|h| h.into_any().downcast::<Draft>().ok())
            .filter(|d| !d.inner().metered);
        let Some(draft) = draft else {
            return MeterFuture::new(self.inner.call(req), None, false, self.max_body);
        };
        let hide_usage = {
            let request = req.body().request();
            request.is_stream() && !request.include_usage()
        };
        if hide_usage {
            // Before the snapshot below is taken: an edit of a request no one else holds is
            // made in place (after it, the whole typed request would be copied first).
            req.body_mut().set_include_usage(true);
        }
        let request = req.body().shared();
        {
            // Armed: the rate limiter inside leaves its settlement in the slot rather than
            // read the body again.
            let mut i = draft.inner();
            i.metered = true;
            i.key_id = req
                .extensions()
                .get::<Principal>()
                .map(|p| p.id().to_owned());
            i.request = Some(request);
        }
        MeterFuture::new(self.inner.call(req), Some(draft), hide_usage, self.max_body)
    }
}

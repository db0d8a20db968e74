use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use tower::Service;

use super::future::ResponseFuture;
use super::header::{Presented, presented_key};
use super::{AuthLayer, KeyDigest, KeyStore, Lookup, LookupResult, Principal, errors};
use crate::body::ResponseBody;

/// Checks the request's API key before `S` sees it. See the [module docs](crate::auth).
///
/// On success `S` gets the request with a [`Principal`] in its extensions and without its
/// `Authorization` header.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    store: Arc<dyn KeyStore>,
}

impl<S> Auth<S> {
    /// Wraps `inner`, checking keys against `store`.
    pub fn new(inner: S, store: impl KeyStore) -> Self {
        Self::from_shared(inner, Arc::new(store))
    }

    /// Wraps `inner`, checking keys against a shared store.
    pub fn from_shared(inner: S, store: Arc<dyn KeyStore>) -> Self {
        Self { inner, store }
    }

    /// An [`AuthLayer`] over `store`.
    pub fn layer(store: impl KeyStore) -> AuthLayer {
        AuthLayer::new(store)
    }

    crate::macros::define_inner_service_accessors!();
}

impl<S: std::fmt::Debug> std::fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Why a presented key is refused.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    /// 401.
    Invalid,
    /// 503: the store could not answer.
    Unavailable,
}

impl Refusal {
    pub(super) fn response(self) -> Response<Full<Bytes>> {
        match self {
            Self::Invalid => errors::invalid_key(),
            Self::Unavailable => errors::store_unavailable(),
        }
    }
}

/// Admits the request (principal in, `Authorization` out) or says why it is refused.
pub(super) fn admit<B>(result: LookupResult, req: &mut Request<B>) -> Result<(), Refusal> {
    match result {
        Ok(Some(key)) if key.is_active(SystemTime::now()) => {
            // Never forwarded, whatever the inner service does with headers.
            req.headers_mut().remove(header::AUTHORIZATION);
            req.extensions_mut().insert(Principal(key));
            Ok(())
        }
        // Unknown, disabled and expired keys get the same answer: a caller learns nothing
        // about which keys exist.
        Ok(_) => Err(Refusal::Invalid),
        Err(_) => Err(Refusal::Unavailable),
    }
}

impl<S, B, ResBody> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let digest = match presented_key(req.headers()) {
            Presented::Missing => return ResponseFuture::reject(errors::missing_key()),
            Presented::Malformed => return ResponseFuture::reject(errors::invalid_key()),
            Presented::Key(key) => KeyDigest::of(key),
        };
        match self.store.lookup(&digest) {
            Lookup::Ready(result) => match admit(result, &mut req) {
                Ok(()) => ResponseFuture::inner(self.inner.call(req)),
                Err(refusal) => ResponseFuture::reject(refusal.response()),
            },
            Lookup::Pending(lookup) => {
                // The service that was made ready is the one that gets the request (tower's
                // "be careful when cloning inner services").
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::lookup(lookup, inner, req)
            }
        }
    }
}

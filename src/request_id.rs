//! Request ids and the client's address: [`RequestIdLayer`] gives every request a
//! [`RequestId`] (the client's `x-request-id` when it is sane, else a new one), puts it in the
//! request extensions and the request's `x-request-id` header (so an upstream sees the same id),
//! and sends it back as `x-request-id` on every response, errors included.
//! [`gateway::serve`](crate::gateway::serve) mounts it outermost and also puts the connection's
//! [`PeerAddr`] in the extensions.
//!
//! A client id is kept when it is 1 to 128 bytes of letters, digits and `-_.:/+=@`; anything
//! else (empty, too long, spaces, control or non-ASCII bytes) is replaced by a generated id: 32
//! hex digits, unique within the process and unpredictable across processes.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use chatgate::request_id::{RequestId, RequestIdLayer, X_REQUEST_ID};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(RequestIdLayer::new())
//!     .service_fn(|req: Request<Full<Bytes>>| async move {
//!         let id = req.extensions().get::<RequestId>().expect("set").as_str().to_owned();
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(id))))
//!     });
//! let req = Request::get("/").header(X_REQUEST_ID, "abc-1").body(Full::default()).unwrap();
//! let res = svc.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.headers()[X_REQUEST_ID], "abc-1");
//!
//! let req = Request::get("/").header(X_REQUEST_ID, "no spaces please").body(Full::default()).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.headers()[X_REQUEST_ID].len(), 32);
//! # }
//! ```

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// The `x-request-id` header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of one request, in the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id as text (always visible ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// A new id: 32 hex digits, unique within the process.
    pub fn generate() -> Self {
        static SEED: OnceLock<(u64, u64)> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (a, b) = *SEED.get_or_init(|| {
            let s = RandomState::new();
            (s.hash_one(1u8), s.hash_one(2u8))
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // A bijection of the counter (so ids never repeat), keyed per process.
        let mixed = mix(n ^ b).wrapping_add(a);
        let mut text = [0u8; 32];
        hex(a ^ mix(b.wrapping_add(n)), &mut text[..16]);
        hex(mixed, &mut text[16..]);
        Self(HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0")))
    }

    /// The client's id, if it is sane (see the [module docs](self)).
    pub fn from_client(value: &HeaderValue) -> Option<Self> {
        let b = value.as_bytes();
        let sane = !b.is_empty()
            && b.len() <= MAX_REQUEST_ID_LEN
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=@".contains(c));
        sane.then(|| Self(value.clone()))
    }
}

/// An invertible 64-bit mix (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hex(mut x: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for c in out.iter_mut().rev() {
        *c = DIGITS[(x & 15) as usize];
        x >>= 4;
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client's address (the TCP peer), in the request extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Applies [`SetRequestId`]. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer {
    _p: (),
}

impl RequestIdLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _p: () }
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId { inner }
    }
}

/// Gives each request a [`RequestId`] and echoes it on the response. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct SetRequestId<S> {
    inner: S,
}

impl<S> SetRequestId<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self { inner }
    }

    crate::macros::define_inner_service_accessors!();
}

impl<S, B, ResBody> Service<Request<B>> for SetRequestId<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = req
            .headers()
            .get(X_REQUEST_ID)
            .and_then(RequestId::from_client)
            .unwrap_or_else(RequestId::generate);
        req.headers_mut().insert(X_REQUEST_ID, id.0.clone());
        let header = id.0.clone();
        req.extensions_mut().insert(id);
        ResponseFuture {
            future: self.inner.call(req),
            id: Some(header),
        }
    }
}

pin_project! {
    /// Response future of [`SetRequestId`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.future.poll(cx))?;
        if let Some(id) = this.id.take() {
            res.headers_mut().insert(X_REQUEST_ID, id);
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| RequestId::generate().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|i| i.len() == 32 && i.bytes().all(|c| c.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn client_ids_are_checked() {
        let ok = |s: &str| RequestId::from_client(&HeaderValue::from_str(s).expect("hv")).is_some();
        assert!(ok("req-1:a/b+c=d@e_f.g"));
        assert!(ok(&"a".repeat(128)));
        assert!(!ok(&"a".repeat(129)));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!ok("quote\""));
        assert!(
            RequestId::from_client(&HeaderValue::from_bytes(b"caf\xc3\xa9").expect("hv")).is_none()
        );
    }
}

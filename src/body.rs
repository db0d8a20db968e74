//! Response bodies shared by the layers: [`ResponseBody`] (the inner service's body, or a
//! complete body of the layer's own) and the one end-of-response hook, [`OnEnd`] with
//! [`OnEndBody`].

use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::BoxError;

pin_project! {
    /// Either the inner service's body, or a body the layer wrote (an error, usually).
    ///
    /// The error type is the inner body's: the layer's own bodies never fail.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Full { data: Option<Bytes> },
        Inner { #[pin] body: B },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A complete body.
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// A complete body of this type from a complete body of another (no inner body).
    pub(crate) fn retype<C>(other: ResponseBody<C>) -> Self {
        match other.kind {
            Kind::Full { data } => Self {
                kind: Kind::Full { data },
            },
            Kind::Inner { .. } => Self::full(Bytes::new()),
        }
    }

    /// Converts a layer's own `Full` response into this body type.
    pub(crate) fn from_full(res: http::Response<Full<Bytes>>) -> http::Response<Self> {
        res.map(|full| {
            // `Full` holds its data until polled; taking it out without polling keeps this
            // synchronous and allocation-free.
            let data = full_into_bytes(full);
            Self::full(data)
        })
    }
}

/// The bytes of a `Full` body, taken without an executor.
pub(crate) fn full_into_bytes(full: Full<Bytes>) -> Bytes {
    use std::task::Waker;
    let mut full = full;
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut full).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Inner { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
        }
    }
}

// ---- the end-of-response hook ------------------------------------------------------------------

/// How a response body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndKind {
    /// The body ended cleanly: every frame was sent.
    Complete,
    /// The body failed (an error frame): the client got what came before.
    Failed,
    /// The body was dropped before its end: the client went away, or the server gave up.
    Dropped,
}

/// What an [`OnEnd`] handler learns when the body ends.
#[derive(Debug)]
pub struct End<'a> {
    /// How it ended.
    pub kind: EndKind,
    /// The error, when it failed.
    pub error: Option<&'a (dyn std::error::Error + Send + Sync + 'static)>,
    /// Data bytes that went through (before anything the handler appends).
    pub bytes: u64,
    /// When the wrapper was made (usually when the response head was ready).
    pub started: Instant,
    /// When the first data frame went through, if one did.
    pub first_byte: Option<Instant>,
}

impl End<'_> {
    /// Time from the start to the first data frame.
    pub fn time_to_first_byte(&self) -> Option<Duration> {
        self.first_byte
            .map(|t| t.saturating_duration_since(self.started))
    }
}

/// The one end-of-response hook: a handler that [`OnEndBody`] calls **exactly once**, when its
/// body ends, fails or is dropped early, after seeing every data frame go by.
///
/// Everything that must act when a response is over uses it: passive health accounting of an
/// upstream replica, the contract's stream ending (`[DONE]` or an error event, see
/// [`SseEnding`](crate::sse::SseEnding)), and the rate-limit settlement and usage records built
/// on top. Closures `FnOnce(&End<'_>)` are handlers too, and `Option<H>` is a handler that does
/// nothing when `None`.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use bytes::Bytes;
/// use chatgate::body::{End, EndKind, OnEndBody};
/// use http_body_util::{BodyExt, Full};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let seen = Arc::new(Mutex::new(None));
/// let record = Arc::clone(&seen);
/// let body = OnEndBody::new(Full::new(Bytes::from("hello")), move |end: &End<'_>| {
///     *record.lock().unwrap() = Some((end.kind, end.bytes));
/// });
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
/// assert_eq!(*seen.lock().unwrap(), Some((EndKind::Complete, 5)));
/// # }
/// ```
pub trait OnEnd: Send + 'static {
    /// Whether [`on_end`](Self::on_end) may return a frame to append. When `false`, the body
    /// keeps the inner body's size hint (and so its `Content-Length`).
    const APPENDS: bool = false;

    /// Sees each data frame as it passes (default: nothing).
    fn on_data(&mut self, _data: &Bytes) {}

    /// Called once. On [`Complete`](EndKind::Complete) or [`Failed`](EndKind::Failed) it may
    /// return a last data frame to send; on `Failed`, returning one (even empty) ends the body
    /// cleanly after it instead of passing the error on. Ignored on `Dropped`.
    fn on_end(self, end: &End<'_>) -> Option<Bytes>;
}

impl<F> OnEnd for F
where
    F: FnOnce(&End<'_>) + Send + 'static,
{
    fn on_end(self, end: &End<'_>) -> Option<Bytes> {
        self(end);
        None
    }
}

impl<H: OnEnd> OnEnd for Option<H> {
    const APPENDS: bool = H::APPENDS;

    fn on_data(&mut self, data: &Bytes) {
        if let Some(h) = self {
            h.on_data(data);
        }
    }

    fn on_end(self, end: &End<'_>) -> Option<Bytes> {
        self.and_then(|h| h.on_end(end))
    }
}

/// Two handlers, the first called first (its appended frame, if any, goes first).
impl<A: OnEnd, B: OnEnd> OnEnd for (A, B) {
    const APPENDS: bool = A::APPENDS || B::APPENDS;

    fn on_data(&mut self, data: &Bytes) {
        self.0.on_data(data);
        self.1.on_data(data);
    }

    fn on_end(self, end: &End<'_>) -> Option<Bytes> {
        match (self.0.on_end(end), self.1.on_end(end)) {
            (None, None) => None,
            (Some(a), None) => Some(a),
            (None, Some(b)) => Some(b),
            (Some(a), Some(b)) => {
                let mut both = bytes::BytesMut::with_capacity(a.len() + b.len());
                both.extend_from_slice(&a);
                both.extend_from_slice(&b);
                Some(both.freeze())
            }
        }
    }
}

pin_project! {
    /// A body that calls its [`OnEnd`] handler exactly once: when it ends, fails or is dropped.
    /// Frames pass through unchanged. See [`OnEnd`].
    pub struct OnEndBody<B: Body, H: OnEnd> {
        #[pin]
        inner: B,
        handler: Option<H>,
        bytes: u64,
        started: Instant,
        first_byte: Option<Instant>,
        // A frame the handler appended, sent before the end.
        last: Option<Bytes>,
        done: bool,
    }

    impl<B: Body, H: OnEnd> PinnedDrop for OnEndBody<B, H> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(h) = this.handler.take() {
                // A body the server did not poll to its end because it said it had ended.
                let kind = if this.inner.is_end_stream() {
                    EndKind::Complete
                } else {
                    EndKind::Dropped
                };
                let end = End {
                    kind,
                    error: None,
                    bytes: *this.bytes,
                    started: *this.started,
                    first_byte: *this.first_byte,
                };
                let _ = h.on_end(&end);
            }
        }
    }
}

impl<B: Body, H: OnEnd> std::fmt::Debug for OnEndBody<B, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnEndBody")
            .field("bytes", &self.bytes)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<B: Body, H: OnEnd> OnEndBody<B, H> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: B, handler: H) -> Self {
        Self::started_at(inner, handler, Instant::now())
    }

    /// Wraps `inner`, with the clock started at `started`.
    pub fn started_at(inner: B, handler: H, started: Instant) -> Self {
        Self {
            inner,
            handler: Some(handler),
            bytes: 0,
            started,
            first_byte: None,
            last: None,
            done: false,
        }
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B, H> Body for OnEndBody<B, H>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    H: OnEnd,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(last) = this.last.take() {
            return Poll::Ready(Some(Ok(Frame::data(last))));
        }
        if *this.done {
            return Poll::Ready(None);
        }
        let frame = match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        let (kind, error) = match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if this.first_byte.is_none() && !data.is_empty() {
                        *this.first_byte = Some(Instant::now());
                    }
                    *this.bytes += data.len() as u64;
                    if let Some(h) = this.handler.as_mut() {
                        h.on_data(data);
                    }
                }
                if !this.inner.is_end_stream() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                // The last frame: the server may not poll again.
                let end = End {
                    kind: EndKind::Complete,
                    error: None,
                    bytes: *this.bytes,
                    started: *this.started,
                    first_byte: *this.first_byte,
                };
                *this.done = true;
                if let Some(h) = this.handler.take() {
                    *this.last = h.on_end(&end).filter(|b| !b.is_empty());
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            None => (EndKind::Complete, None),
            Some(Err(e)) => (EndKind::Failed, Some(e.into())),
        };
        *this.done = true;
        let end = End {
            kind,
            error: error.as_deref(),
            bytes: *this.bytes,
            started: *this.started,
            first_byte: *this.first_byte,
        };
        let appended = this.handler.take().and_then(|h| h.on_end(&end));
        match (appended, error) {
            (Some(b), _) if !b.is_empty() => Poll::Ready(Some(Ok(Frame::data(b)))),
            (Some(_), _) | (None, None) => Poll::Ready(None),
            (None, Some(e)) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return self.last.is_none();
        }
        // A handler that never appends keeps the inner body's answer (the end is then reported
        // when the body is dropped, see `PinnedDrop`).
        !H::APPENDS && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            let n = self.last.as_ref().map_or(0, |b| b.len() as u64);
            return SizeHint::with_exact(n);
        }
        let inner = self.inner.size_hint();
        if !H::APPENDS {
            return inner;
        }
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower());
        hint
    }
}

//! Response bodies shared by the layers: [`ResponseBody`] (the inner service's body, or a
//! complete body of the layer's own) and the one end-of-response hook, [`OnEnd`] with
//! [`OnEndBody`].

use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::{Bytes, BytesMut};
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

/// Data frames gathered into one: the first kept as it came (no copy; a body in one frame, the
/// usual case, is never copied), later ones concatenated after it.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    one: Option<Bytes>,
    many: BytesMut,
}

impl Gathered {
    /// The bytes gathered.
    pub(crate) fn len(&self) -> usize {
        self.one.as_ref().map_or(self.many.len(), Bytes::len)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match self.one.take() {
            None if self.many.is_empty() => self.one = Some(data),
            None => self.many.extend_from_slice(&data),
            Some(first) => {
                // A burst: room for a few dozen typical events before growing.
                self.many
                    .reserve((2 * (first.len() + data.len())).max(16 * 1024));
                self.many.extend_from_slice(&first);
                self.many.extend_from_slice(&data);
            }
        }
    }

    /// What was gathered, as one `Bytes`; empty again.
    pub(crate) fn take(&mut self) -> Bytes {
        match self.one.take() {
            Some(b) => b,
            None => std::mem::take(&mut self.many).freeze(),
        }
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
    /// Whether [`on_end`](Self::on_end) may return a frame to append (asked once, when the
    /// body is wrapped). When `false`, the body keeps the inner body's size hint (and so its
    /// `Content-Length`) and end-of-stream answer, and a handler may be called as the last
    /// frame goes out. When `true`, it is called on the poll after the last frame: bodies
    /// further out have seen every frame by then.
    fn appends(&self) -> bool {
        false
    }

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
    fn appends(&self) -> bool {
        self.as_ref().is_some_and(OnEnd::appends)
    }

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
    fn appends(&self) -> bool {
        self.0.appends() || self.1.appends()
    }

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
        appends: bool,
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
            appends: handler.appends(),
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
                // A handler that may append acts on the next poll, which the server makes
                // (this body's end is not reported before): bodies further out have then
                // seen every frame (an observer that took over the stream ending's scanning,
                // see `SseEnding`, relies on it).
                if *this.appends || !this.inner.is_end_stream() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                // The last frame, and a handler that appends nothing: the server may not poll
                // again.
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
        !self.appends && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            let n = self.last.as_ref().map_or(0, |b| b.len() as u64);
            return SizeHint::with_exact(n);
        }
        let inner = self.inner.size_hint();
        if !self.appends {
            return inner;
        }
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower());
        hint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// Frames and errors in order; `Pending` once before each.
    struct Script(VecDeque<Result<&'static str, &'static str>>, bool);

    impl Body for Script {
        type Data = Bytes;
        type Error = String;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
            self.1 = !self.1;
            if self.1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(self.0.pop_front().map(|p| {
                p.map(|s| Frame::data(Bytes::from_static(s.as_bytes())))
                    .map_err(str::to_owned)
            }))
        }
    }

    type Log = Arc<Mutex<Vec<(EndKind, u64, bool, Option<String>)>>>;

    /// Records its one call; appends `append` on a clean end or a failure.
    struct Recorder(Log, Option<&'static str>);

    impl OnEnd for Recorder {
        fn appends(&self) -> bool {
            true
        }
        fn on_end(self, end: &End<'_>) -> Option<Bytes> {
            self.0.lock().unwrap().push((
                end.kind,
                end.bytes,
                end.first_byte.is_some(),
                end.error.map(|e| e.to_string()),
            ));
            self.1.map(|s| Bytes::from_static(s.as_bytes()))
        }
    }

    fn script(parts: Vec<Result<&'static str, &'static str>>) -> Script {
        Script(parts.into(), false)
    }

    #[tokio::test]
    async fn complete_once_with_bytes_and_first_byte() {
        let log = Log::default();
        let body = OnEndBody::new(
            script(vec![Ok("ab"), Ok("cde")]),
            Recorder(log.clone(), None),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abcde");
        assert_eq!(*log.lock().unwrap(), [(EndKind::Complete, 5, true, None)]);
    }

    #[tokio::test]
    async fn an_appended_frame_goes_last() {
        let log = Log::default();
        let body = OnEndBody::new(script(vec![Ok("ab")]), Recorder(log.clone(), Some("!")));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ab!");
        // Also when the inner body says it has ended with its last frame.
        let body = OnEndBody::new(
            Full::new(Bytes::from("xy")),
            Recorder(log.clone(), Some("!")),
        );
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "xy!");
        assert_eq!(log.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_failure_is_passed_on_or_replaced() {
        let log = Log::default();
        let body = OnEndBody::new(
            script(vec![Ok("ab"), Err("reset")]),
            Recorder(log.clone(), None),
        );
        let err = body.collect().await.unwrap_err();
        assert_eq!(err.to_string(), "reset");
        let body = OnEndBody::new(
            script(vec![Ok("ab"), Err("reset")]),
            Recorder(log.clone(), Some("[gone]")),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ab[gone]");
        assert_eq!(
            *log.lock().unwrap(),
            [
                (EndKind::Failed, 2, true, Some("reset".into())),
                (EndKind::Failed, 2, true, Some("reset".into()))
            ]
        );
    }

    #[tokio::test]
    async fn dropped_early_is_reported_once() {
        let log = Log::default();
        let mut body = OnEndBody::new(
            script(vec![Ok("ab"), Ok("cd")]),
            Recorder(log.clone(), None),
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        drop(body);
        assert_eq!(*log.lock().unwrap(), [(EndKind::Dropped, 2, true, None)]);
        // Never polled at all.
        drop(OnEndBody::new(
            script(vec![Ok("ab")]),
            Recorder(log.clone(), None),
        ));
        assert_eq!(log.lock().unwrap()[1], (EndKind::Dropped, 0, false, None));
    }

    #[tokio::test]
    async fn a_handler_that_never_appends_keeps_the_size_and_end() {
        let ends = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&ends);
        let body = OnEndBody::new(Full::new(Bytes::from("hello")), move |e: &End<'_>| {
            record.lock().unwrap().push(e.kind);
        });
        assert_eq!(body.size_hint().exact(), Some(5));
        // Empty and ended from the start: a server may never poll it.
        let record = Arc::clone(&ends);
        let empty = OnEndBody::new(Full::new(Bytes::new()), move |e: &End<'_>| {
            record.lock().unwrap().push(e.kind);
        });
        assert!(empty.is_end_stream());
        drop(empty);
        drop(body);
        assert_eq!(*ends.lock().unwrap(), [EndKind::Complete, EndKind::Dropped]);
    }
}

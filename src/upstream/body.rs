use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::error::{FailureKind, UpstreamFailure};
use crate::BoxError;
use crate::body::Gathered;

/// Largest frame [`UpstreamBody`] builds by coalescing the upstream's frames.
const MAX_COALESCED: usize = 64 * 1024;

/// Polls in a row that find no new upstream data before held data is returned.
const QUIET_POLLS: u8 = 2;

pin_project! {
    /// The response body of [`Upstream`](super::Upstream): the upstream's body streamed through
    /// as it arrives, or an error the gateway wrote itself.
    ///
    /// Frames the upstream connection has already received are coalesced into one frame, so
    /// that a burst of SSE events costs the client one write rather than one per event. It never
    /// waits for data to do so: after taking a frame it lets the upstream connection run once
    /// (one turn of the scheduler) to hand over what it has already read, and yields the frame as
    /// soon as nothing more is ready. Each event therefore still reaches the client as soon as it
    /// arrives.
    ///
    /// While streaming it enforces the idle and total timeouts; a failure (reset, garbage,
    /// timeout) ends the body with an [`UpstreamFailure`] error, after the data that came before
    /// it. The contract's stream ending (`[DONE]`, or a final error event) is not this body's
    /// business: [`Upstream`](super::Upstream) wraps event streams in
    /// [`SseEnding`](crate::sse::SseEnding), the end-of-response hook.
    ///
    /// Dropping the body drops the upstream response, which cancels the upstream request.
    #[derive(Debug)]
    pub struct UpstreamBody {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind {
        Full { data: Option<Bytes> },
        Stream {
            #[pin]
            inner: Incoming,
            // Made on the first wait (a body that is complete at once never needs one). Boxed,
            // so that the body is `Unpin` and can be read ahead before the head is sent.
            timer: Option<Pin<Box<Sleep>>>,
            idle: Duration,
            deadline: Instant,
            // The timer runs for the current wait (set when `inner` first returned `Pending`
            // after a frame), so a client that reads slowly does not count as an idle upstream.
            waiting: bool,
            sse: bool,
            // Data taken from `inner` and not yet returned.
            held: Held,
            // A frame read ahead by `poll_prefetch`, returned first.
            prefetched: Option<Result<Frame<Bytes>, BoxError>>,
            // Polls of `poll_prefetch` that found nothing.
            prefetch_polls: u8,
            tail: Tail,
        },
    }
}

#[derive(Debug)]
enum Tail {
    /// Forwarding the upstream's frames.
    Open,
    /// A non-data frame (trailers) that came after held data: returned next.
    Trailers(Frame<Bytes>),
    /// The body failed after held data: the failure is returned next.
    Failing(UpstreamFailure),
    /// Finished.
    Ended,
}

/// Data taken from the upstream and not yet returned: one frame as it came (no copy), or
/// several concatenated.
#[derive(Debug, Default)]
struct Held {
    data: Gathered,
    /// Polls in a row that found nothing new while holding data.
    quiet: u8,
}

impl Held {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn push(&mut self, data: Bytes) {
        self.data.push(data);
    }

    fn take(&mut self) -> Bytes {
        self.quiet = 0;
        self.data.take()
    }

    /// The held data as a frame, if any.
    fn frame(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        (!self.is_empty()).then(|| Ok(Frame::data(self.take())))
    }
}

impl UpstreamBody {
    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn stream(inner: Incoming, idle: Duration, deadline: Instant, sse: bool) -> Self {
        Self {
            kind: Kind::Stream {
                inner,
                timer: None,
                idle,
                deadline,
                waiting: false,
                sse,
                held: Held::default(),
                prefetched: None,
                prefetch_polls: 0,
                tail: Tail::Open,
            },
        }
    }

    /// Reads ahead what the upstream connection already has of an event stream, so that the
    /// server can write it together with the response head: `Ready` once a frame is read ahead, the body has ended,
    /// or nothing is ready (never waiting for data; see [`UpstreamBody`]).
    pub(crate) fn poll_prefetch(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_event_stream() {
            // Only event streams: other bodies keep their exact size hint.
            return Poll::Ready(());
        }
        let frame = Pin::new(&mut *self).poll_frame(cx);
        let Kind::Stream {
            held,
            prefetched,
            prefetch_polls,
            ..
        } = &mut self.kind
        else {
            return Poll::Ready(());
        };
        match frame {
            Poll::Ready(frame) => {
                *prefetched = frame;
                Poll::Ready(())
            }
            // Coalescing is under way (the body yields by itself).
            Poll::Pending if !held.is_empty() => Poll::Pending,
            Poll::Pending => {
                // The first poll only asks the upstream connection for data: let it run, and
                // give up after `QUIET_POLLS` more polls that find nothing (as when coalescing).
                *prefetch_polls += 1;
                if *prefetch_polls > QUIET_POLLS {
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    /// Puts `data`, read from the start of this body, back in front of what is left of it.
    pub(crate) fn unread(&mut self, data: Bytes) {
        match &mut self.kind {
            Kind::Stream { prefetched, .. } => {
                debug_assert!(prefetched.is_none(), "one frame unread at most");
                *prefetched = Some(Ok(Frame::data(data)));
            }
            Kind::Full { data: full } => {
                debug_assert!(full.is_none(), "a full body is read in one frame");
                *full = Some(data);
            }
        }
    }

    /// Whether this is a `text/event-stream` body.
    pub fn is_event_stream(&self) -> bool {
        matches!(&self.kind, Kind::Stream { sse: true, .. })
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (mut inner, timer, idle, deadline, waiting, held, tail) =
            match self.project().kind.project() {
                KindProj::Full { data } => {
                    return Poll::Ready(data.take().map(|d| Ok(Frame::data(d))));
                }
                KindProj::Stream {
                    inner,
                    timer,
                    idle,
                    deadline,
                    waiting,
                    held,
                    prefetched,
                    tail,
                    ..
                } => {
                    if let Some(frame) = prefetched.take() {
                        return Poll::Ready(Some(frame));
                    }
                    (inner, timer, *idle, *deadline, waiting, held, tail)
                }
            };
        match std::mem::replace(tail, Tail::Open) {
            Tail::Open => {}
            Tail::Trailers(frame) => return Poll::Ready(Some(Ok(frame))),
            Tail::Failing(failure) => {
                *tail = Tail::Ended;
                return Poll::Ready(Some(Err(failure.into())));
            }
            Tail::Ended => {
                *tail = Tail::Ended;
                return Poll::Ready(None);
            }
        }
        // Whether this call took data from `inner`.
        let mut progress = false;
        let failure = loop {
            match inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    *waiting = false;
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => {
                            // Trailers: whatever is held goes first.
                            if let Some(data) = held.frame() {
                                *tail = Tail::Trailers(frame);
                                return Poll::Ready(Some(data));
                            }
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    };
                    held.push(data);
                    progress = true;
                    if inner.is_end_stream() || held.len() >= MAX_COALESCED {
                        return Poll::Ready(held.frame());
                    }
                }
                Poll::Ready(None) => {
                    *tail = Tail::Ended;
                    return Poll::Ready(held.frame());
                }
                Poll::Ready(Some(Err(e))) => {
                    break UpstreamFailure::new(FailureKind::Protocol, e.to_string());
                }
                Poll::Pending if !held.is_empty() => {
                    // The upstream connection may have more already read: let it run (this task
                    // goes to the back of the run queue) before writing. Only polls that find
                    // nothing new twice in a row end the wait, since the server may poll the
                    // body again before the scheduler has run anything else (hyper's HTTP/1
                    // server does, after a flush).
                    held.quiet = if progress { 0 } else { held.quiet + 1 };
                    if held.quiet < QUIET_POLLS {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    return Poll::Ready(held.frame());
                }
                Poll::Pending => {
                    if !*waiting {
                        *waiting = true;
                        let at = (Instant::now() + idle).min(deadline);
                        match timer {
                            Some(t) => t.as_mut().reset(at),
                            None => *timer = Some(Box::pin(tokio::time::sleep_until(at))),
                        }
                    }
                    if let Some(t) = timer {
                        ready!(t.as_mut().poll(cx));
                    }
                    break if Instant::now() >= deadline {
                        UpstreamFailure::new(FailureKind::TotalTimeout, "")
                    } else {
                        UpstreamFailure::new(
                            FailureKind::IdleTimeout,
                            format!("no data for {} ms", idle.as_millis()),
                        )
                    };
                }
            }
        };
        match held.frame() {
            Some(data) => {
                *tail = Tail::Failing(failure);
                Poll::Ready(Some(data))
            }
            None => {
                *tail = Tail::Ended;
                Poll::Ready(Some(Err(failure.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Stream {
                inner,
                held,
                prefetched,
                tail,
                ..
            } => match tail {
                _ if prefetched.is_some() => false,
                Tail::Ended => true,
                // The upstream's body is complete and nothing is held.
                Tail::Open => held.is_empty() && inner.is_end_stream(),
                Tail::Trailers(_) | Tail::Failing(_) => false,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream {
                inner,
                sse,
                held,
                prefetched,
                ..
            } => match *sse {
                true => SizeHint::default(),
                false => {
                    let inner = inner.size_hint();
                    let unread = match prefetched {
                        Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
                        _ => 0,
                    };
                    let held = (held.len() + unread) as u64;
                    let mut hint = SizeHint::new();
                    hint.set_lower(inner.lower() + held);
                    if let Some(upper) = inner.upper() {
                        hint.set_upper(upper + held);
                    }
                    hint
                }
            },
        }
    }
}

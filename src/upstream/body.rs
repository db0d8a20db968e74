use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::error::{FailureKind, UpstreamFailure};
use crate::BoxError;
use crate::error::ApiError;
use crate::sse::{self, EventScanner};

pin_project! {
    /// The response body of [`Upstream`](super::Upstream): the upstream's body streamed through
    /// chunk by chunk, or an error the gateway wrote itself.
    ///
    /// While streaming it enforces the idle and total timeouts. For `text/event-stream`
    /// responses it also keeps the contract's stream ending (CONTRACT.md §5.2): a stream that
    /// ends cleanly without `data: [DONE]` gets exactly one; a stream that fails (reset, garbage,
    /// timeout) gets one final `data: {"error":{…}}` event in the OpenAI envelope and ends
    /// without `[DONE]`. A failing non-SSE body ends with an [`UpstreamFailure`] error instead.
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
            #[pin]
            timer: Sleep,
            idle: Duration,
            deadline: Instant,
            // The timer runs for the current wait (set when `inner` first returned `Pending`
            // after a frame), so a client that reads slowly does not count as an idle upstream.
            waiting: bool,
            sse: Option<EventScanner>,
            tail: Tail,
        },
    }
}

#[derive(Debug)]
enum Tail {
    /// Forwarding the upstream's frames.
    Open,
    /// Finished.
    Ended(Outcome),
}

/// How a streamed body ended, for passive health checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Complete,
    Failed,
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
        let first = (Instant::now() + idle).min(deadline);
        Self {
            kind: Kind::Stream {
                inner,
                timer: tokio::time::sleep_until(first),
                idle,
                deadline,
                waiting: true,
                sse: sse.then(EventScanner::new),
                tail: Tail::Open,
            },
        }
    }

    /// How the stream ended, once it has.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        match &self.kind {
            Kind::Full { data } => data.is_none().then_some(Outcome::Complete),
            Kind::Stream { tail, .. } => match tail {
                Tail::Ended(o) => Some(*o),
                _ => None,
            },
        }
    }
}

fn error_event(failure: &UpstreamFailure, prefix: &[u8]) -> Bytes {
    let err = if failure.is_timeout() {
        ApiError::upstream_timeout(failure.message())
    } else {
        ApiError::bad_gateway(failure.message())
    };
    let event = sse::data(&err.to_bytes());
    if prefix.is_empty() {
        return event;
    }
    let mut b = BytesMut::with_capacity(prefix.len() + event.len());
    b.put_slice(prefix);
    b.put_slice(&event);
    b.freeze()
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (mut inner, mut timer, idle, deadline, waiting, sse, tail) =
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
                    sse,
                    tail,
                } => (inner, timer, *idle, *deadline, waiting, sse, tail),
            };
        match tail {
            Tail::Open => {}
            Tail::Ended(_) => return Poll::Ready(None),
        }
        let failure = match inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(scanner)) = (frame.data_ref(), sse.as_mut()) {
                    scanner.feed(data);
                }
                *waiting = false;
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(None) => {
                let Some(scanner) = sse.as_ref() else {
                    *tail = Tail::Ended(Outcome::Complete);
                    return Poll::Ready(None);
                };
                if scanner.saw_done() || scanner.saw_error() {
                    *tail = Tail::Ended(Outcome::Complete);
                    return Poll::Ready(None);
                }
                let term = scanner.terminator();
                let mut b = BytesMut::with_capacity(term.len() + sse::DONE.len());
                b.put_slice(term);
                b.put_slice(sse::DONE);
                *tail = Tail::Ended(Outcome::Complete);
                return Poll::Ready(Some(Ok(Frame::data(b.freeze()))));
            }
            Poll::Ready(Some(Err(e))) => UpstreamFailure::new(FailureKind::Protocol, e.to_string()),
            Poll::Pending => {
                if !*waiting {
                    *waiting = true;
                    timer.as_mut().reset((Instant::now() + idle).min(deadline));
                }
                ready!(timer.as_mut().poll(cx));
                if Instant::now() >= deadline {
                    UpstreamFailure::new(FailureKind::TotalTimeout, "")
                } else {
                    UpstreamFailure::new(
                        FailureKind::IdleTimeout,
                        format!("no data for {} ms", idle.as_millis()),
                    )
                }
            }
        };
        match sse.as_ref() {
            Some(scanner) if !scanner.saw_done() && !scanner.saw_error() => {
                *tail = Tail::Ended(Outcome::Failed);
                Poll::Ready(Some(Ok(Frame::data(error_event(
                    &failure,
                    scanner.terminator(),
                )))))
            }
            Some(_) => {
                // The stream already ended (for the client) with `[DONE]` or an error event.
                *tail = Tail::Ended(Outcome::Failed);
                Poll::Ready(None)
            }
            None => {
                *tail = Tail::Ended(Outcome::Failed);
                Poll::Ready(Some(Err(failure.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Stream { tail, .. } => matches!(tail, Tail::Ended(_)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { inner, sse, .. } => match sse {
                Some(_) => SizeHint::default(),
                None => inner.size_hint(),
            },
        }
    }
}

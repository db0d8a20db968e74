//! The mock's one response body type.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, oneshot};

use super::sse::{Phase, Sse};

/// A response body of the mock: complete bytes, ready frames, a stream fed from a channel (an
/// `Err` item aborts the connection; `on_drop` fires when hyper drops the body), or the scripted
/// mock's SSE stream written frame by frame.
#[derive(Debug)]
pub(crate) struct MockBody(Kind);

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Frames(VecDeque<Bytes>),
    Channel {
        rx: mpsc::Receiver<Result<Bytes, String>>,
        on_drop: Option<oneshot::Sender<()>>,
        ended: bool,
    },
    Sse(Box<Sse>),
}

impl MockBody {
    /// One buffer.
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        Self(Kind::Full(Some(b.into())))
    }

    /// A body of several frames, all ready at once.
    pub(crate) fn frames(frames: impl IntoIterator<Item = Bytes>) -> Self {
        Self(Kind::Frames(frames.into_iter().collect()))
    }

    /// A streamed body: the sender feeds it, the receiver fires when it is dropped.
    pub(crate) fn channel() -> (
        mpsc::Sender<Result<Bytes, String>>,
        oneshot::Receiver<()>,
        Self,
    ) {
        let (tx, rx) = mpsc::channel(1);
        let (dtx, drx) = oneshot::channel();
        let body = Self(Kind::Channel {
            rx,
            on_drop: Some(dtx),
            ended: false,
        });
        (tx, drx, body)
    }

    pub(super) fn sse(sse: Sse) -> Self {
        Self(Kind::Sse(Box::new(sse)))
    }
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if let Kind::Channel { on_drop, .. } = &mut self.0
            && let Some(tx) = on_drop.take()
        {
            let _ = tx.send(());
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let next = match &mut self.get_mut().0 {
            Kind::Full(data) => Poll::Ready(data.take().map(Ok)),
            Kind::Frames(frames) => Poll::Ready(frames.pop_front().map(Ok)),
            Kind::Channel { rx, ended, .. } => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(b))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(io::Error::other(e)))),
                Poll::Ready(None) => {
                    *ended = true;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
            Kind::Sse(sse) => sse.poll_next(cx).map(|b| b.map(Ok)),
        };
        next.map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(data) => data.is_none(),
            Kind::Frames(frames) => frames.is_empty(),
            Kind::Channel { ended, .. } => *ended,
            Kind::Sse(sse) => sse.phase == Phase::End,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

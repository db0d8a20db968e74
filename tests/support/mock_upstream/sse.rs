//! The scripted mock's SSE stream: chunk events written frame by frame, with the configured
//! delay between them.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use super::scripted::{DONE_EVENT, Shared, chunk_index};

/// Where a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Chunks,
    Usage,
    Done,
    End,
}

#[derive(Debug)]
pub(super) struct Sse {
    pub(super) shared: Arc<Shared>,
    pub(super) total: usize,
    pub(super) next: usize,
    pub(super) include_usage: bool,
    pub(super) phase: Phase,
    /// The timer between chunks, allocated on first use and reset afterwards.
    pub(super) sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` must elapse before the next chunk.
    pub(super) waiting: bool,
}

impl Sse {
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            match self.phase {
                Phase::Chunks if self.next < self.total => {
                    if self.waiting {
                        if let Some(sleep) = &mut self.sleep {
                            ready!(sleep.as_mut().poll(cx));
                        }
                        self.waiting = false;
                    }
                    let (first, last) = (self.next == 0, self.next + 1 == self.total);
                    let event =
                        self.shared.chunks[chunk_index(self.include_usage, first, last)].clone();
                    self.next += 1;
                    let delay = self.shared.chunk_delay;
                    if !last && !delay.is_zero() {
                        let deadline = Instant::now() + delay;
                        match &mut self.sleep {
                            Some(sleep) => sleep.as_mut().reset(deadline),
                            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                        self.waiting = true;
                    }
                    return Poll::Ready(Some(event));
                }
                Phase::Chunks => self.phase = Phase::Usage,
                Phase::Usage => {
                    self.phase = Phase::Done;
                    if self.include_usage {
                        return Poll::Ready(Some(self.shared.usage_event(self.total)));
                    }
                }
                Phase::Done => {
                    self.phase = Phase::End;
                    return Poll::Ready(Some(Bytes::from_static(DONE_EVENT)));
                }
                Phase::End => return Poll::Ready(None),
            }
        }
    }
}

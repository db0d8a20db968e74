//! The bodies and end-of-response handlers of the usage layers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::draft::{Draft, Observed, error_code};
use crate::BoxError;
use crate::body::{End, OnEnd};
use crate::route::BoxBody;
use crate::sse::Event;

/// The end-of-response handler of [`Usage`](super::Usage): notes how and when the response
/// ended (and the error code of an error response) in the request's record.
#[derive(Debug)]
pub struct UsageEnd {
    draft: Arc<Draft>,
    /// The first bytes of an error body, for its code.
    error_body: Option<Vec<u8>>,
}

/// The most bytes of an error body kept to read its code.
const MAX_ERROR_BODY: usize = 4096;

impl UsageEnd {
    pub(crate) fn new(draft: Arc<Draft>, error: bool) -> Self {
        Self {
            draft,
            error_body: error.then(Vec::new),
        }
    }
}

impl OnEnd for UsageEnd {
    fn on_data(&mut self, data: &Bytes) {
        if let Some(b) = &mut self.error_body
            && b.len() + data.len() <= MAX_ERROR_BODY
        {
            b.extend_from_slice(data);
        }
    }

    fn on_end(self, end: &End<'_>) -> Option<Bytes> {
        let mut o = self.draft.outer();
        o.end = Some(end.kind);
        o.first_byte = end.first_byte;
        o.ended = Some(Instant::now());
        o.ended_at = Some(SystemTime::now());
        if let Some(b) = &self.error_body
            && o.error.is_none()
        {
            o.error = error_code(b);
        }
        None
    }
}

/// Watches a stream's events for the meter; hands what it saw to the record when the body
/// goes (also when it is dropped early).
pub(crate) struct Tally {
    pub(crate) observed: Observed,
    draft: Arc<Draft>,
}

impl Tally {
    pub(crate) fn new(draft: Arc<Draft>) -> Self {
        Self {
            observed: Observed::default(),
            draft,
        }
    }

    /// Notes an event; whether it is a usage-only chunk.
    pub(crate) fn event(&mut self, e: &Event<'_>) -> bool {
        self.observed.event(e)
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let observed = std::mem::take(&mut self.observed);
        self.draft.inner().observed = observed;
    }
}

pin_project_lite::pin_project! {
    /// Bytes already read, then the rest of a body.
    pub(crate) struct Prefixed {
        prefix: Option<Bytes>,
        #[pin]
        rest: BoxBody,
    }
}

impl Prefixed {
    pub(crate) fn new(prefix: Bytes, rest: BoxBody) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(p) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        this.rest.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let n = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + n);
        if let Some(u) = rest.upper() {
            hint.set_upper(u + n);
        }
        hint
    }
}

//! The bodies and end-of-response handlers of the usage layers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::draft::{Draft, Observed, error_code};
use super::scan::FrameTemplate;
use crate::BoxError;
use crate::body::{End, OnEnd};
use crate::route::BoxBody;
use crate::sse::{Event, EventPredicate, SseObserver};

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
///
/// Events shaped like one learnt from the stream ([`FrameTemplate`]) are counted without
/// decoding them.
pub(crate) struct Tally {
    pub(crate) observed: Observed,
    template: Option<FrameTemplate>,
    /// Looks left to learn a template.
    tries: u8,
    /// Looks in a row the template missed.
    misses: u8,
    draft: Arc<Draft>,
}

/// Event boundaries a stream's template is looked for at.
const TEMPLATE_TRIES: u8 = 4;
/// Looks in a row a template may miss before it is given up (and another learnt).
const TEMPLATE_MISSES: u8 = 8;

impl Tally {
    pub(crate) fn new(draft: Arc<Draft>) -> Self {
        Self {
            observed: Observed::default(),
            template: None,
            tries: TEMPLATE_TRIES,
            misses: 0,
            draft,
        }
    }

    /// Notes an event; whether it is a usage-only chunk.
    pub(crate) fn event(&mut self, e: &Event<'_>) -> bool {
        self.observed.event(e)
    }

    /// Counts the events at the start of `bytes` (at an event boundary) that have the
    /// stream's usual shape, without decoding them; how many bytes they take.
    pub(crate) fn whole_events(&mut self, bytes: &[u8], max_event_bytes: usize) -> usize {
        if !self.observed.parsed_a_chunk() {
            return 0;
        }
        if self.template.is_none() {
            if self.tries == 0 {
                return 0;
            }
            self.tries -= 1;
            self.template = FrameTemplate::learn(bytes);
        }
        let Some(template) = &self.template else {
            return 0;
        };
        let (taken, deltas) = template.take(bytes, max_event_bytes);
        if taken > 0 {
            self.misses = 0;
            self.observed.content_deltas(deltas);
        } else {
            self.misses += 1;
            if self.misses >= TEMPLATE_MISSES {
                self.template = None;
                self.misses = 0;
            }
        }
        taken
    }
}

impl SseObserver for Tally {
    fn on_event(&mut self, event: &Event<'_>) {
        self.event(event);
    }

    fn on_whole_events(&mut self, bytes: &[u8], max_event_bytes: usize) -> usize {
        self.whole_events(bytes, max_event_bytes)
    }

    fn takes_whole_events(&self) -> bool {
        true
    }
}

impl EventPredicate for Tally {
    fn drop_event(&mut self, event: &Event<'_>) -> bool {
        self.event(event)
    }

    fn keep_whole_events(&mut self, bytes: &[u8], max_event_bytes: usize) -> usize {
        self.whole_events(bytes, max_event_bytes)
    }

    fn takes_whole_events(&self) -> bool {
        true
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

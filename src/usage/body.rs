//! The bodies and end-of-response handlers of the usage layers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::draft::{Draft, Observed, error_code};
use super::scan::FrameTemplate;
use crate::BoxError;
use crate::body::{End, OnEnd};
use crate::sse::{EndingWatch, Event, EventPredicate, SseObserver};

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
        // When this handler holds the record's last reference, the record is made as it goes
        // (right after this), and reads the clock then; else the end is noted now.
        if Arc::strong_count(&self.draft) > 1 {
            o.ended = Some(Instant::now());
        }
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
    /// Templates left to learn (from chunks the quick look read).
    tries: u8,
    /// Looks in a row the template missed.
    misses: u8,
    /// Looks the template matched.
    hits: u32,
    /// Cut `,"usage":null` from the chunks (a client that did not ask for usage gets none).
    pub(crate) cut_usage_null: bool,
    draft: Arc<Draft>,
    /// The scanning of the stream's ending inside, taken over (see [`EndingHandoff`]).
    ///
    /// [`EndingHandoff`]: crate::sse::EndingHandoff
    pub(crate) ending: Option<EndingWatch>,
}

/// Templates a stream may learn.
const TEMPLATE_TRIES: u8 = 6;
/// Looks in a row a template may miss before it is given up (and another learnt).
const TEMPLATE_MISSES: u8 = 8;

impl Tally {
    pub(crate) fn new(draft: Arc<Draft>) -> Self {
        Self {
            observed: Observed::default(),
            template: None,
            tries: TEMPLATE_TRIES,
            misses: 0,
            hits: 0,
            cut_usage_null: false,
            draft,
            ending: None,
        }
    }

    /// Bytes about to be decoded.
    fn decoded_bytes(&mut self, bytes: &[u8]) {
        if let Some(w) = &mut self.ending {
            w.decoded(bytes);
        }
    }

    /// Notes an event; whether it is a usage-only chunk. A content delta that the quick look
    /// read may become the stream's template.
    pub(crate) fn event(&mut self, e: &Event<'_>) -> bool {
        let usage_only = self.observed.event(e);
        if self.observed.last_was_delta && self.template.is_none() && self.tries > 0 {
            self.tries -= 1;
            self.template = FrameTemplate::of_delta(e.data());
            self.hits = 0;
        }
        usage_only
    }

    /// Whether events may still be taken by a template: once the stream has used up its
    /// templates, frames are decoded whole (not event by event, looking for boundaries).
    fn may_take(&self) -> bool {
        self.template.is_some() || self.tries > 0
    }

    /// Counts the events at the start of `bytes` (at an event boundary) that have the shape of
    /// the stream's template, without decoding them; how many bytes they take.
    /// With `cuts`, where their `,"usage":null` is goes there (see
    /// [`FrameTemplate::take_cutting`]).
    pub(crate) fn whole_events(
        &mut self,
        bytes: &[u8],
        max_event_bytes: usize,
        cuts: Option<&mut Vec<std::ops::Range<usize>>>,
    ) -> usize {
        let Some(template) = &self.template else {
            return 0;
        };
        let (taken, deltas) = template.take_cutting(bytes, max_event_bytes, cuts);
        if taken > 0 {
            if let Some(w) = &mut self.ending {
                w.taken(&bytes[..taken]);
            }
            self.misses = 0;
            self.hits += 1;
            self.observed.content_deltas(deltas);
        } else {
            self.misses += 1;
            // A template that never matched (say, learnt from the first chunk, which also
            // carries the role) goes at once; one that did, after a run of misses.
            if self.hits == 0 || self.misses >= TEMPLATE_MISSES {
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
        self.whole_events(bytes, max_event_bytes, None)
    }

    fn takes_whole_events(&self) -> bool {
        self.may_take()
    }

    fn on_decoded_bytes(&mut self, bytes: &[u8]) {
        self.decoded_bytes(bytes);
    }
}

impl EventPredicate for Tally {
    fn drop_event(&mut self, event: &Event<'_>) -> bool {
        self.event(event)
    }

    fn keep_whole_events(&mut self, bytes: &[u8], max_event_bytes: usize) -> usize {
        self.whole_events(bytes, max_event_bytes, None)
    }

    fn keep_whole_events_cutting(
        &mut self,
        bytes: &[u8],
        max_event_bytes: usize,
        cuts: &mut Vec<std::ops::Range<usize>>,
    ) -> usize {
        let cuts = self.cut_usage_null.then_some(cuts);
        self.whole_events(bytes, max_event_bytes, cuts)
    }

    fn cut_from_event(&mut self, event: &Event<'_>) -> Option<std::ops::Range<usize>> {
        if !self.cut_usage_null || event.is_done() || event.is_error() {
            return None;
        }
        super::scan::trailing_usage_null(event.data())
    }

    fn takes_whole_events(&self) -> bool {
        self.may_take()
    }

    fn on_decoded_bytes(&mut self, bytes: &[u8]) {
        self.decoded_bytes(bytes);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let observed = std::mem::take(&mut self.observed);
        self.draft.inner().observed = observed;
    }
}

pin_project_lite::pin_project! {
    /// The response body of [`UsageMeter`](super::UsageMeter): the inner service's body as it
    /// came, a non-streamed answer read whole (or the gateway's own error), or a stream
    /// watched for its usage as it passes. Typed, not boxed: no allocation and no dynamic call
    /// per frame on the way out.
    pub struct MeterBody<B: Body> {
        #[pin]
        kind: MeterKind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = MeterKindProj]
    enum MeterKind<B: Body> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
        // Boxed: a stream's watcher is large, and the response is moved through each layer's
        // future on its way out (a box is one allocation per stream, as a boxed body was).
        Observed { body: Pin<Box<crate::sse::Observed<B, Tally>>> },
        Filtered { body: Pin<Box<crate::sse::Filtered<B, Tally>>> },
        Prefixed { prefix: Option<Bytes>, #[pin] rest: B },
    }
}

impl<B: Body> MeterBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: MeterKind::Inner { body },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: MeterKind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// A stream watched by `tally`; `hide`: its usage-only chunk dropped, and the
    /// `"usage":null` of its other chunks cut.
    pub(crate) fn stream(body: B, mut tally: Tally, hide: bool) -> Self
    where
        B: Body<Data = Bytes>,
    {
        Self {
            kind: if hide {
                MeterKind::Filtered {
                    body: Box::pin(crate::sse::Filtered::new(body, {
                        tally.cut_usage_null = true;
                        tally
                    })),
                }
            } else {
                MeterKind::Observed {
                    body: Box::pin(crate::sse::Observed::new(body, tally)),
                }
            },
        }
    }

    /// `prefix` (bytes already read from `rest`), then the rest of it.
    pub(crate) fn prefixed(prefix: Bytes, rest: B) -> Self {
        Self {
            kind: MeterKind::Prefixed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                rest,
            },
        }
    }
}

impl<B: Body> std::fmt::Debug for MeterBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            MeterKind::Inner { .. } => "Inner",
            MeterKind::Full { .. } => "Full",
            MeterKind::Observed { .. } => "Observed",
            MeterKind::Filtered { .. } => "Filtered",
            MeterKind::Prefixed { .. } => "Prefixed",
        };
        f.debug_struct("MeterBody").field("kind", &kind).finish()
    }
}

fn map_frame<E: Into<BoxError>>(
    p: Poll<Option<Result<Frame<Bytes>, E>>>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    p.map(|f| f.map(|r| r.map_err(Into::into)))
}

impl<B> Body for MeterBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            MeterKindProj::Inner { body } => map_frame(body.poll_frame(cx)),
            MeterKindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            MeterKindProj::Observed { body } => map_frame(body.as_mut().poll_frame(cx)),
            MeterKindProj::Filtered { body } => map_frame(body.as_mut().poll_frame(cx)),
            MeterKindProj::Prefixed { prefix, rest } => match prefix.take() {
                Some(p) => Poll::Ready(Some(Ok(Frame::data(p)))),
                None => map_frame(rest.poll_frame(cx)),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            MeterKind::Inner { body } => body.is_end_stream(),
            MeterKind::Full { data } => data.is_none(),
            MeterKind::Observed { body } => body.is_end_stream(),
            MeterKind::Filtered { body } => body.is_end_stream(),
            MeterKind::Prefixed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            MeterKind::Inner { body } => body.size_hint(),
            MeterKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            MeterKind::Observed { body } => body.size_hint(),
            MeterKind::Filtered { body } => body.size_hint(),
            MeterKind::Prefixed { prefix, rest } => {
                let n = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + n);
                if let Some(u) = rest.upper() {
                    hint.set_upper(u + n);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::*;
    use crate::sse::{EventDecoder, Filtered, Observed as ObservedBody};
    use crate::usage::UsageHandle;

    /// A body that yields the given frames, then fails (`fail`); `eager`: it says it has ended
    /// with its last frame (so the stream ending acts before bodies outside see that frame).
    struct Script {
        frames: VecDeque<Bytes>,
        eager: bool,
        fail: bool,
    }

    impl Body for Script {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(match self.frames.pop_front() {
                Some(b) => Some(Ok(Frame::data(b))),
                None if std::mem::take(&mut self.fail) => Some(Err("reset".into())),
                None => None,
            })
        }

        fn is_end_stream(&self) -> bool {
            self.eager && !self.fail && self.frames.is_empty()
        }
    }

    fn chunk(delta: &str, finish: &str) -> String {
        format!(
            r#"data: {{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}],"usage":null}}

"#
        )
    }

    /// A stream as upstreams write it: the role, content deltas (some with escapes, one
    /// empty), the finish reason, the usage chunk, `[DONE]`.
    fn stream() -> String {
        let mut s = chunk(r#"{"role":"assistant","content":""}"#, "null");
        for (i, text) in ["Hello", " wor", "ld", "", r#" \"q\""#, "\\n", " é", "!"]
            .iter()
            .enumerate()
        {
            s.push_str(&chunk(&format!(r#"{{"content":"{text}"}}"#), "null"));
            if i == 3 {
                s.push_str(": a comment\n\n");
            }
        }
        s.push_str(&chunk("{}", r#""stop""#));
        s.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":7,\"total_tokens\":11}}\n\n");
        s.push_str("data: [DONE]\n\n");
        s
    }

    /// What the meter sees of `frames`, through the body the meter uses (`hide`: the filter
    /// that drops the usage chunk and cuts `"usage":null`); and what reaches the client.
    async fn tally(frames: Vec<Bytes>, hide: bool) -> (Observed, Bytes) {
        let handle = UsageHandle::builder().build();
        let draft = Arc::new(Draft::new(handle, None, None, tracing::Span::none()));
        let body = Script {
            frames: frames.into(),
            eager: false,
            fail: false,
        };
        let tally = Tally::new(Arc::clone(&draft));
        let out = MeterBody::stream(body, tally, hide).collect().await;
        let out = out.unwrap().to_bytes();
        let observed = std::mem::take(&mut draft.inner().observed);
        (observed, out)
    }

    #[tokio::test]
    async fn the_template_counts_what_decoding_finds_however_the_stream_is_cut() {
        let s = stream();
        // Every event decoded and read without a template.
        let mut want = Observed::default();
        EventDecoder::new().feed(s.as_bytes(), |e| {
            want.event(&e);
        });
        assert_eq!(want.deltas, 7);
        let bytes = Bytes::from(s.clone());
        // What a client that did not ask for usage gets: no usage chunk, no `"usage":null`.
        let without_usage = s
            .replace(
                "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":7,\"total_tokens\":11}}\n\n",
                "",
            )
            .replace(",\"usage\":null", "");
        assert!(!without_usage.contains("usage"));
        for hide in [false, true] {
            // Whole, then cut in two anywhere, then in 97-byte frames.
            let mut cuts: Vec<Vec<Bytes>> = vec![vec![bytes.clone()]];
            for at in 1..bytes.len() {
                cuts.push(vec![bytes.slice(..at), bytes.slice(at..)]);
            }
            cuts.push(bytes.chunks(97).map(Bytes::copy_from_slice).collect());
            for frames in cuts {
                let sizes: Vec<usize> = frames.iter().map(Bytes::len).collect();
                let (got, out) = tally(frames, hide).await;
                assert_eq!(got.deltas, want.deltas, "{sizes:?}");
                assert_eq!(got.finish_reasons, ["stop"], "{sizes:?}");
                assert_eq!(got.response_model.as_deref(), Some("m"));
                assert_eq!(got.usage.and_then(|u| u.completion_tokens), Some(7));
                assert!(got.saw_done && got.first_content.is_some());
                let expected = if hide { &without_usage } else { &s };
                assert_eq!(String::from_utf8_lossy(&out), *expected, "{sizes:?}");
            }
        }
    }

    /// What reaches the client of `frames` through the stream ending and the meter's body,
    /// with the ending's scanning taken over by the meter (`handed`) or not.
    async fn ended(frames: Vec<Bytes>, eager: bool, fail: bool, hide: bool, handed: bool) -> Bytes {
        let handle = UsageHandle::builder().build();
        let draft = Arc::new(Draft::new(handle, None, None, tracing::Span::none()));
        let mut tally = Tally::new(draft);
        let (ending, handoff) = crate::sse::SseEnding::handing_off();
        if handed {
            tally.ending = handoff.claim();
            assert!(tally.ending.is_some());
        }
        let script = Script {
            frames: frames.into(),
            eager,
            fail,
        };
        let body = crate::body::OnEndBody::new(script, ending);
        let out = if hide {
            Filtered::new(body, tally).collect().await
        } else {
            ObservedBody::new(body, tally).collect().await
        };
        out.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_stream_ending_taken_over_by_the_meter_ends_streams_as_its_own_scanning_does() {
        let s = stream();
        let cut = s.len() - 40;
        let streams = [
            s.clone(),
            s.replace("data: [DONE]\n\n", ""),
            // Cut mid-line, and just after a line.
            s[..cut].to_owned(),
            s.replace("data: [DONE]\n\n", "data: [DONE]\n"),
            format!(
                "{}data: {{\"error\":{{\"message\":\"x\"}}}}\n\n",
                &s[..s.len() / 2].rsplit_once("\n\n").unwrap().0
            ),
            s.replace('\n', "\r\n"),
            s.replace('\n', "\r"),
            String::new(),
        ];
        for (i, text) in streams.iter().enumerate() {
            let bytes = Bytes::from(text.clone());
            let mut cuts: Vec<Vec<Bytes>> = vec![vec![bytes.clone()]];
            let step = if i == 0 { 1 } else { 5 };
            for at in (1..bytes.len()).step_by(step) {
                cuts.push(vec![bytes.slice(..at), bytes.slice(at..)]);
            }
            cuts.push(bytes.chunks(97).map(Bytes::copy_from_slice).collect());
            for frames in cuts {
                let sizes: Vec<usize> = frames.iter().map(Bytes::len).collect();
                for (eager, fail, hide) in [
                    (false, false, false),
                    (true, false, false),
                    (false, true, false),
                    (false, false, true),
                    (true, false, true),
                    (false, true, true),
                ] {
                    let own = ended(frames.clone(), eager, fail, hide, false).await;
                    let handed = ended(frames.clone(), eager, fail, hide, true).await;
                    assert_eq!(
                        String::from_utf8_lossy(&handed),
                        String::from_utf8_lossy(&own),
                        "stream {i}, frames {sizes:?}, eager {eager}, fail {fail}, hide {hide}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn streams_whose_chunks_all_differ_are_decoded_and_counted() {
        // A field after the text that changes in every chunk (as OpenAI's `obfuscation`):
        // no template matches twice, the stream is decoded.
        let mut s = String::new();
        for i in 0..30 {
            s.push_str(&format!(
                "data: {{\"id\":\"c\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}},\"finish_reason\":null}}],\"obfuscation\":\"{}\"}}\n\n",
                "x".repeat(i % 7)
            ));
        }
        s.push_str("data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        let bytes = Bytes::from(s.clone());
        for hide in [false, true] {
            for frames in [
                vec![bytes.clone()],
                bytes.chunks(61).map(Bytes::copy_from_slice).collect(),
                s.split_inclusive("\n\n")
                    .map(|e| Bytes::copy_from_slice(e.as_bytes()))
                    .collect(),
            ] {
                let (got, out) = tally(frames, hide).await;
                assert_eq!(got.deltas, 30);
                assert_eq!(got.finish_reasons, ["stop"]);
                assert_eq!(out, bytes);
            }
        }
    }
}

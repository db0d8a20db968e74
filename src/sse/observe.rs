//! [`Observed`]: an event-stream body passed through unchanged while an observer sees its events.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::{Event, EventDecoder};

/// Sees the events of a stream that passes through an [`Observed`] body.
///
/// Any `FnMut(&Event<'_>) + Send` closure is one.
pub trait SseObserver: Send {
    /// An event went by (also an [oversized](Event::is_oversized) one, without its data).
    fn on_event(&mut self, event: &Event<'_>);

    /// The stream ended: cleanly (`failed == false`) or with an error of the inner body. The
    /// decoder tells how: [`saw_done`](EventDecoder::saw_done),
    /// [`saw_error`](EventDecoder::saw_error), [`is_mid_event`](EventDecoder::is_mid_event).
    /// Called at most once; not called when the body is dropped before its end.
    fn on_end(&mut self, decoder: &EventDecoder, failed: bool) {
        let _ = (decoder, failed);
    }

    /// A look at the bytes of a frame from an event boundary on
    /// ([`EventDecoder::is_at_boundary`]), before they are decoded: the observer may take the
    /// events at their start itself, for less than decoding them costs, and returns how many
    /// bytes it took. Those bytes are not decoded and [`on_event`](Self::on_event) is not called
    /// for their events; the rest is decoded as usual, and offered again after each event it
    /// has to decode.
    ///
    /// Take only whole events, each ended by its blank line and no longer than
    /// `max_event_bytes` (as the decoder counts), none of them `[DONE]` nor an
    /// [error](Event::is_error): the decoder then stays as it was. The default takes nothing.
    /// Offered only when [`takes_whole_events`](Self::takes_whole_events) says so.
    fn on_whole_events(&mut self, bytes: &[u8], max_event_bytes: usize) -> usize {
        let _ = (bytes, max_event_bytes);
        0
    }

    /// Whether to offer [`on_whole_events`](Self::on_whole_events) (default `false`: frames
    /// are decoded whole, without looking for event boundaries first).
    fn takes_whole_events(&self) -> bool {
        false
    }

    /// The bytes the decoder is about to decode, in order: with the bytes taken by
    /// [`on_whole_events`](Self::on_whole_events), the whole stream. The default does
    /// nothing.
    fn on_decoded_bytes(&mut self, bytes: &[u8]) {
        let _ = bytes;
    }
}

impl<F> SseObserver for F
where
    F: FnMut(&Event<'_>) + Send,
{
    fn on_event(&mut self, event: &Event<'_>) {
        self(event)
    }
}

pin_project_lite::pin_project! {
    /// An event-stream body that passes every frame of the inner body through unchanged (the
    /// same `Bytes`, not copied) while an [`SseObserver`] sees each event, decoded by an
    /// [`EventDecoder`] from the frames as they go by.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use chatgate::sse::{Event, Observed};
    /// use http_body_util::{BodyExt, Full};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let upstream = Full::new(Bytes::from_static(b"data: {\"a\":1}\n\ndata: [DONE]\n\n"));
    /// let mut events = 0;
    /// let mut body = Observed::new(upstream, |_: &Event<'_>| events += 1);
    /// let frame = body.frame().await.unwrap().unwrap();
    /// assert_eq!(&frame.into_data().unwrap()[..], b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
    /// assert!(body.frame().await.is_none());
    /// assert!(body.decoder().saw_done());
    /// drop(body);
    /// assert_eq!(events, 2);
    /// # });
    /// ```
    pub struct Observed<B, O> {
        #[pin]
        inner: B,
        decoder: EventDecoder,
        observer: O,
        ended: bool,
    }
}

impl<B, O> Observed<B, O> {
    /// Wraps an event-stream body; events of up to
    /// [`DEFAULT_MAX_EVENT_BYTES`](super::DEFAULT_MAX_EVENT_BYTES) are decoded.
    pub const fn new(inner: B, observer: O) -> Self {
        Self::with_decoder(inner, EventDecoder::new(), observer)
    }

    /// Wraps an event-stream body, decoding it with `decoder` (e.g. with another bound).
    pub const fn with_decoder(inner: B, decoder: EventDecoder, observer: O) -> Self {
        Self {
            inner,
            decoder,
            observer,
            ended: false,
        }
    }

    /// The decoder, with the state of the stream so far.
    pub const fn decoder(&self) -> &EventDecoder {
        &self.decoder
    }

    /// The observer.
    pub const fn observer(&self) -> &O {
        &self.observer
    }

    /// The inner body and the observer.
    pub fn into_parts(self) -> (B, O) {
        (self.inner, self.observer)
    }
}

impl<B: fmt::Debug, O> fmt::Debug for Observed<B, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("inner", &self.inner)
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

/// Decodes `data` for `observer`, offering it the bytes from each event boundary on (see
/// [`SseObserver::on_whole_events`]).
fn feed<O: SseObserver>(decoder: &mut EventDecoder, observer: &mut O, data: &[u8]) {
    if !observer.takes_whole_events() {
        observer.on_decoded_bytes(data);
        decoder.feed(data, |e| observer.on_event(&e));
        return;
    }
    let max = decoder.max_event_bytes();
    let mut rest = data;
    while !rest.is_empty() {
        if decoder.is_at_boundary() {
            let taken = observer.on_whole_events(rest, max).min(rest.len());
            rest = &rest[taken..];
            if rest.is_empty() {
                break;
            }
        }
        // One event (up to a blank line written `\n\n`) at a time, or all of the rest.
        let end = super::find_blank_line(rest).map_or(rest.len(), |i| i + 2);
        observer.on_decoded_bytes(&rest[..end]);
        decoder.feed(&rest[..end], |e| observer.on_event(&e));
        rest = &rest[end..];
    }
}

impl<B, O> Body for Observed<B, O>
where
    B: Body<Data = Bytes>,
    O: SseObserver,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let item = ready!(this.inner.poll_frame(cx));
        match &item {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    feed(this.decoder, this.observer, data);
                }
            }
            Some(Err(_)) | None => {
                if !std::mem::replace(this.ended, true) {
                    this.observer.on_end(this.decoder, item.is_some());
                }
            }
        }
        Poll::Ready(item)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    /// A body that yields the given frames, then maybe an error.
    struct Script(VecDeque<Result<Bytes, &'static str>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::data)))
        }
    }

    #[derive(Default)]
    struct Log {
        events: Vec<String>,
        end: Option<(bool, bool, bool, bool)>,
    }

    impl SseObserver for Log {
        fn on_event(&mut self, event: &Event<'_>) {
            self.events
                .push(String::from_utf8_lossy(event.data()).into_owned());
        }
        fn on_end(&mut self, d: &EventDecoder, failed: bool) {
            assert!(self.end.is_none(), "on_end once");
            self.end = Some((failed, d.saw_done(), d.saw_error(), d.is_mid_event()));
        }
    }

    #[tokio::test]
    async fn frames_pass_through_unchanged_and_events_are_seen() {
        let stream: &'static [u8] = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        for cut in 0..=stream.len() {
            let frames = [
                Bytes::from_static(&stream[..cut]),
                Bytes::from_static(&stream[cut..]),
            ];
            let ptrs: Vec<_> = frames.iter().map(|b| b.as_ptr()).collect();
            let mut body =
                Observed::new(Script(frames.into_iter().map(Ok).collect()), Log::default());
            for ptr in ptrs {
                let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
                assert_eq!(data.as_ptr(), ptr, "the same bytes");
            }
            assert!(body.frame().await.is_none());
            let (_, log) = body.into_parts();
            assert_eq!(
                log.events,
                ["{\"a\":1}", "{\"b\":2}", "[DONE]"],
                "cut {cut}"
            );
            assert_eq!(log.end, Some((false, true, false, false)));
        }
    }

    #[tokio::test]
    async fn the_end_state_is_reported_once() {
        let script = Script(
            [
                Ok(Bytes::from_static(b"data: {\"error\":{}}\n\ndata: {")),
                Err("reset"),
            ]
            .into(),
        );
        let mut body = Observed::new(script, Log::default());
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
        assert!(body.frame().await.is_none());
        assert!(body.decoder().saw_error());
        assert_eq!(body.observer().end, Some((true, false, true, true)));
    }

    /// Takes the `data: skip…` events at the start of what it is offered; logs what it was
    /// offered.
    #[derive(Default)]
    struct Skipper {
        offered: Vec<String>,
        events: Vec<String>,
    }

    impl SseObserver for Skipper {
        fn on_event(&mut self, event: &Event<'_>) {
            self.events
                .push(String::from_utf8_lossy(event.data()).into_owned());
        }
        fn on_whole_events(&mut self, bytes: &[u8], max: usize) -> usize {
            self.offered
                .push(String::from_utf8_lossy(bytes).into_owned());
            // Takes `data: skip…` events written plainly, no longer than the bound.
            let mut taken = 0;
            while let Some(rest) = bytes[taken..].strip_prefix(b"data: skip") {
                let Some(end) = memchr::memmem::find(rest, b"\n\n") else {
                    break;
                };
                let len = b"data: skip".len() + end + 2;
                if len - 1 > max || rest[..end].contains(&b'\n') {
                    break;
                }
                taken += len;
            }
            taken
        }
        fn takes_whole_events(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn events_are_offered_from_each_event_boundary() {
        const LONG: &[u8] =
            b"data: skip 3, which is longer than the sixty-four bytes of the bound\n\n";
        let frames = [
            &b"data: a\n\n"[..],
            b"data: skip 1\n\ndata: x\n\ndata: skip 2\n\n",
            b"data: b\n",
            b"data: skip mid-event\n\n",
            b"data: c\r",
            b"\ndata: skip after cr\n\n",
            // Over the decoder's bound: not taken, decoded (an oversized event).
            LONG,
        ];
        let script = Script(frames.iter().map(|f| Ok(Bytes::from_static(f))).collect());
        let mut body = Observed::with_decoder(
            script,
            EventDecoder::with_max_event_bytes(64),
            Skipper::default(),
        );
        while let Some(f) = body.frame().await {
            f.unwrap();
        }
        let (_, s) = body.into_parts();
        // Never at the start of the stream (a BOM may start it), nor where an event is
        // pending; otherwise after each event decoded.
        assert_eq!(
            s.offered,
            [
                "data: skip 1\n\ndata: x\n\ndata: skip 2\n\n",
                "data: skip 2\n\n",
                "data: b\n",
                "data: c\r",
                std::str::from_utf8(LONG).unwrap(),
            ]
        );
        assert_eq!(
            s.events,
            ["a", "x", "b\nskip mid-event", "c\nskip after cr", ""]
        );
    }
}

//! [`EventFilter`] and [`Filtered`]: drop chosen events from an event stream, at event boundaries
//! inside frames; and [`is_usage_only_chunk`], the usual choice.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};

use super::{Event, EventDecoder};

/// Whether an event's payload is an OpenAI `chat.completion.chunk` that carries only usage:
/// `"choices":[]` and a non-null `"usage"` — the last chunk of a stream made with
/// `stream_options.include_usage`, which a client that did not ask for it should not see.
///
/// Only payloads that contain `"usage"` are parsed (with `serde_json`, skipping the values it
/// does not need); anything that is not such a chunk, garbage included, is `false`.
///
/// ```
/// use chatgate::sse::is_usage_only_chunk;
/// assert!(is_usage_only_chunk(br#"{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"total_tokens":9}}"#));
/// assert!(!is_usage_only_chunk(br#"{"object":"chat.completion.chunk","choices":[{"index":0}],"usage":{"total_tokens":9}}"#));
/// assert!(!is_usage_only_chunk(br#"{"object":"chat.completion.chunk","choices":[],"usage":null}"#));
/// assert!(!is_usage_only_chunk(b"[DONE]"));
/// ```
pub fn is_usage_only_chunk(data: &[u8]) -> bool {
    use serde::de::IgnoredAny;
    use std::borrow::Cow;

    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow)]
        object: Cow<'a, str>,
        // `IgnoredAny` has no size: the vector never allocates.
        choices: Vec<IgnoredAny>,
        usage: Option<IgnoredAny>,
    }

    // `memmem::find` would build its searcher on every call.
    static USAGE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    if USAGE.find(data).is_none() {
        return false;
    }
    serde_json::from_slice::<Chunk<'_>>(data).is_ok_and(|c| {
        c.object == "chat.completion.chunk" && c.choices.is_empty() && c.usage.is_some()
    })
}

/// Chooses the events an [`EventFilter`] drops. Any `FnMut(&Event<'_>) -> bool` closure is one.
pub trait EventPredicate {
    /// Whether to drop this event.
    fn drop_event(&mut self, event: &Event<'_>) -> bool;

    /// A look at the bytes of a frame from an event boundary on
    /// ([`EventDecoder::is_at_boundary`]), before they are decoded: the predicate may take the
    /// events at their start itself, as events to keep, for less than decoding them costs, and
    /// returns how many bytes it took. Those bytes are forwarded without being decoded and
    /// [`drop_event`](Self::drop_event) is not asked about their events; the rest is decoded
    /// as usual, and offered again after each event it has to decode.
    ///
    /// Take only whole events, each ended by its blank line and no longer than
    /// `max_event_bytes` (as the decoder counts), none of them `[DONE]` nor an
    /// [error](Event::is_error). The default takes nothing. Offered only when
    /// [`takes_whole_events`](Self::takes_whole_events) says so.
    fn keep_whole_events(&mut self, bytes: &[u8], max_event_bytes: usize) -> usize {
        let _ = (bytes, max_event_bytes);
        0
    }

    /// [`keep_whole_events`](Self::keep_whole_events), and ranges of the bytes taken to cut
    /// out of what is forwarded, appended to `cuts` in order (relative to `bytes`, each inside
    /// one taken event). The default cuts nothing.
    fn keep_whole_events_cutting(
        &mut self,
        bytes: &[u8],
        max_event_bytes: usize,
        cuts: &mut Vec<Range<usize>>,
    ) -> usize {
        let _ = cuts;
        self.keep_whole_events(bytes, max_event_bytes)
    }

    /// For an event that is kept: a range of its [data](Event::data) to cut out of what is
    /// forwarded (say, a member the client did not ask for). The default cuts nothing.
    ///
    /// The cut is made when the event's last line is a `data:` line that holds the data from
    /// the range on, with no line end in that part (the usual one-line event); else the event
    /// is forwarded as it is. A frame an event is cut from is forwarded as one new buffer (a
    /// copy of what it keeps).
    fn cut_from_event(&mut self, event: &Event<'_>) -> Option<Range<usize>> {
        let _ = event;
        None
    }

    /// Whether to offer [`keep_whole_events`](Self::keep_whole_events) (default `false`).
    fn takes_whole_events(&self) -> bool {
        false
    }

    /// The bytes the decoder is about to decode, in order: with the bytes taken by
    /// [`keep_whole_events`](Self::keep_whole_events), the whole stream. The default does
    /// nothing.
    fn on_decoded_bytes(&mut self, bytes: &[u8]) {
        let _ = bytes;
    }
}

impl<F> EventPredicate for F
where
    F: FnMut(&Event<'_>) -> bool,
{
    fn drop_event(&mut self, event: &Event<'_>) -> bool {
        self(event)
    }
}

/// A sans-IO filter that drops chosen events from an event stream, at event boundaries inside
/// frames, and forwards everything else byte for byte.
///
/// Feed it the stream's frames with [`push`](Self::push), which returns what to forward now; at
/// the end of the stream, [`finish`](Self::finish) returns what it still holds. `drop` is asked
/// about every complete event (decoded by an [`EventDecoder`]) and returns `true` to drop it:
/// its bytes are removed, from the end of the previous blank line to the end of its own (so a
/// comment line just before the event goes with it).
///
/// A frame that drops nothing and ends on an event boundary is forwarded as it is (the same
/// `Bytes`). The bytes of an event whose end has not arrived yet are held back until it does
/// (only that event's: what comes before it is forwarded with [`Bytes::slice`]). A frame that
/// completes a held event, or in which an event is dropped, is forwarded as a new buffer by
/// [`push`](Self::push), and as slices of the held bytes and of the frame, without a copy, by
/// [`push_parts`](Self::push_parts). Held
/// bytes are bounded by the decoder's [`max_event_bytes`](EventDecoder::max_event_bytes): an
/// event that goes over is forwarded as it comes and never dropped. Oversized events are never
/// dropped, and `drop` is not asked about them.
///
/// ```
/// use bytes::Bytes;
/// use chatgate::sse::{EventFilter, is_usage_only_chunk};
/// let mut f = EventFilter::new(|e: &chatgate::sse::Event<'_>| is_usage_only_chunk(e.data()));
/// let out = f.push(Bytes::from_static(
///     b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{}}\n\ndata: [DONE]\n\n",
/// ));
/// assert_eq!(out.as_deref(), Some(&b"data: [DONE]\n\n"[..]));
/// assert_eq!(f.dropped(), 1);
/// assert_eq!(f.finish(), None);
/// ```
pub struct EventFilter<P> {
    decoder: EventDecoder,
    drop: P,
    /// The start of the current event, when it began in an earlier frame.
    held: BytesMut,
    /// The current event went over the bound: it is forwarded as it comes.
    passing: bool,
    /// The last frame ended with the `\r` of a blank line: a `\n` first in the next frame belongs
    /// to that event, which was dropped (`Some(true)`) or kept.
    lf_of: Option<bool>,
    dropped: u64,
    /// Ranges of the frame being filtered to remove (kept to serve again: no allocation per
    /// frame).
    drops: Vec<Range<usize>>,
}

impl<P> fmt::Debug for EventFilter<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventFilter")
            .field("decoder", &self.decoder)
            .field("held", &self.held.len())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl<P> EventFilter<P>
where
    P: EventPredicate,
{
    /// A filter that drops the events for which `drop` returns `true`; events of up to
    /// [`DEFAULT_MAX_EVENT_BYTES`](super::DEFAULT_MAX_EVENT_BYTES) can be dropped.
    pub fn new(drop: P) -> Self {
        Self::with_decoder(EventDecoder::new(), drop)
    }

    /// A filter that decodes the stream with `decoder` (e.g. with another bound).
    pub fn with_decoder(decoder: EventDecoder, drop: P) -> Self {
        Self {
            decoder,
            drop,
            held: BytesMut::new(),
            passing: false,
            lf_of: None,
            dropped: 0,
            drops: Vec::new(),
        }
    }

    /// The next frame of the stream; returns what to forward now, if anything: one buffer,
    /// made anew (a copy) when the frame completes a held event or drops one. See
    /// [`push_parts`](Self::push_parts) for the same without copies.
    pub fn push(&mut self, frame: Bytes) -> Option<Bytes> {
        let mut first: Option<Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        self.push_with(frame, |part| {
            if let Some(j) = &mut joined {
                j.extend_from_slice(&part);
            } else if let Some(f) = first.take() {
                let mut j = BytesMut::with_capacity(f.len() + part.len());
                j.extend_from_slice(&f);
                j.extend_from_slice(&part);
                joined = Some(j);
            } else {
                first = Some(part);
            }
        });
        match joined {
            Some(j) => Some(j.freeze()),
            None => first,
        }
    }

    /// The next frame of the stream; appends what to forward now to `out`, in order, as
    /// slices of the frame and of the held bytes (no copy): one part when the frame drops
    /// nothing and completes no held event, else up to one for the held bytes and one for
    /// each kept range of the frame. Nothing is appended for a frame that is all held or
    /// dropped.
    pub fn push_parts(&mut self, frame: Bytes, out: &mut impl Extend<Bytes>) {
        self.push_with(frame, |part| out.extend(Some(part)));
    }

    /// [`push_parts`](Self::push_parts), handing each part (never empty) to `emit`.
    fn push_with(&mut self, frame: Bytes, mut emit: impl FnMut(Bytes)) {
        if frame.is_empty() {
            return;
        }
        let max = self.decoder.max_event_bytes();
        let Self {
            decoder,
            drop: pred,
            held,
            passing,
            lf_of,
            dropped,
            drops,
        } = self;
        // Ranges of `frame` to remove, in order.
        drops.clear();
        // Some of them are cuts inside events that are kept: what is kept is joined into one
        // buffer (an event would otherwise go out in pieces).
        let mut cut = false;
        // Where the current event starts in `frame`.
        let mut start = 0;
        if let Some(was_dropped) = lf_of.take()
            && frame[0] == b'\n'
        {
            if was_dropped {
                drops.push(0..1);
            }
            start = 1;
        }
        // What becomes of `held` (the start of the first event in this frame), if it ends here.
        let had_held = !held.is_empty();
        let mut held_dropped = None;
        let whole = pred.takes_whole_events();
        // Where decoding is in `frame`: with `whole`, one event at a time, offering the
        // predicate the rest at each event boundary.
        let mut base = 0;
        while base < frame.len() {
            if whole && !*passing && decoder.is_at_boundary() {
                // The predicate's cuts go straight into `drops`, then are moved to where the
                // bytes it was offered start in `frame`.
                let before = drops.len();
                let taken = pred
                    .keep_whole_events_cutting(&frame[base..], max, drops)
                    .min(frame.len() - base);
                let mut kept = before;
                for i in before..drops.len() {
                    let r = drops[i].clone();
                    if r.start < r.end && r.end <= taken {
                        drops[kept] = base + r.start..base + r.end;
                        kept += 1;
                    }
                }
                drops.truncate(kept);
                cut |= kept > before;
                base += taken;
                start = base;
                if base == frame.len() {
                    break;
                }
            }
            let to = if whole {
                super::find_blank_line(&frame[base..]).map_or(frame.len(), |i| base + i + 2)
            } else {
                frame.len()
            };
            pred.on_decoded_bytes(&frame[base..to]);
            decoder.feed_blocks(&frame[base..to], |end, event| {
                let end = base + end;
                // The `\n` of a `\r\n` belongs to this event.
                let end = if frame[end - 1] == b'\r' && frame.get(end) == Some(&b'\n') {
                    end + 1
                } else {
                    end
                };
                let event = event.filter(|e| !*passing && !e.is_oversized());
                let drop_it = event.as_ref().is_some_and(|e| pred.drop_event(e));
                // The event's bytes so far: `held` too when it began in an earlier frame.
                let in_held = had_held && held_dropped.is_none();
                if drop_it {
                    *dropped += 1;
                    drops.push(start..end);
                } else if let Some(e) = &event
                    && let Some(r) = pred.cut_from_event(e)
                {
                    let held_len = if in_held { held.len() } else { 0 };
                    let raw: std::borrow::Cow<'_, [u8]> = if in_held {
                        let mut joined = held.to_vec();
                        joined.extend_from_slice(&frame[start..end]);
                        joined.into()
                    } else {
                        frame[start..end].into()
                    };
                    if let Some(c) = raw_cut(&raw, e.data(), r) {
                        cut = true;
                        if c.end <= held_len {
                            let rest = held.split_off(c.end);
                            held.truncate(c.start);
                            held.extend_from_slice(&rest);
                        } else {
                            let from = c.start.max(held_len);
                            if c.start < held_len {
                                held.truncate(c.start);
                            }
                            drops.push(start + from - held_len..start + c.end - held_len);
                        }
                    }
                }
                if in_held {
                    held_dropped = Some(drop_it);
                }
                if end == frame.len() && frame[end - 1] == b'\r' {
                    *lf_of = Some(drop_it);
                }
                *passing = false;
                start = end;
            });
            base = to;
        }
        // `frame[start..]` is the start of an event that has not ended yet (or the rest of
        // `held`'s, if nothing ended in this frame). The held bytes to forward first, if any:
        let mut prefix = 0;
        match held_dropped {
            Some(true) => held.clear(),
            Some(false) => prefix = held.len(),
            None => {}
        }
        let mut keep_end = frame.len();
        if start < frame.len() && !*passing {
            if held.len() - prefix + (frame.len() - start) > max {
                // Too long to hold: forward it as it comes.
                *passing = true;
                prefix = held.len();
            } else {
                keep_end = start;
            }
        }
        if cut {
            // One buffer: the held bytes, then the kept ranges of `frame`.
            let removed: usize = drops.iter().map(|r| r.len()).sum();
            let mut out = BytesMut::with_capacity(prefix + keep_end.saturating_sub(removed));
            out.extend_from_slice(&held[..prefix]);
            held.clear();
            if keep_end < frame.len() {
                held.extend_from_slice(&frame[keep_end..]);
            }
            let mut at = 0;
            for r in drops.iter() {
                if at < r.start {
                    out.extend_from_slice(&frame[at..r.start.min(keep_end)]);
                }
                at = r.end;
            }
            if at < keep_end {
                out.extend_from_slice(&frame[at..keep_end]);
            }
            if !out.is_empty() {
                emit(out.freeze());
            }
            return;
        }
        if prefix == 0 && drops.is_empty() {
            if keep_end < frame.len() {
                held.extend_from_slice(&frame[keep_end..]);
            }
            match keep_end {
                0 => {}
                n if n == frame.len() => emit(frame),
                n => emit(frame.slice(..n)),
            }
            return;
        }
        // The held bytes, then the kept ranges of `frame`, each as it is (no copy).
        if prefix > 0 {
            emit(held.split_to(prefix).freeze());
        }
        held.clear();
        if keep_end < frame.len() {
            held.extend_from_slice(&frame[keep_end..]);
        }
        let mut at = 0;
        for r in drops.iter() {
            if at < r.start {
                emit(frame.slice(at..r.start));
            }
            at = r.end;
        }
        if at < keep_end {
            emit(frame.slice(at..keep_end));
        }
    }

    /// The end of the stream: returns the bytes of an event that had not ended, if any, to be
    /// forwarded as they are.
    pub fn finish(&mut self) -> Option<Bytes> {
        (!self.held.is_empty()).then(|| self.held.split().freeze())
    }

    /// How many events were dropped.
    pub const fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The decoder, with the state of the stream so far.
    pub const fn decoder(&self) -> &EventDecoder {
        &self.decoder
    }
}

/// Where the cut `r` of an event's `data` is in the event's bytes `raw` (its lines and the
/// blank line after them), when its last line is a `data:` line that holds `data[r.start..]`.
fn raw_cut(raw: &[u8], data: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    let tail = data.get(r.start..)?;
    if r.start >= r.end || r.end > data.len() || memchr::memchr2(b'\n', b'\r', tail).is_some() {
        return None;
    }
    // The last line, without the line ends after it.
    let content = raw.len()
        - raw
            .iter()
            .rev()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
    let line_start = memchr::memrchr2(b'\n', b'\r', &raw[..content]).map_or(0, |i| i + 1);
    let value = raw[line_start..content].strip_prefix(b"data:")?;
    let value = value.strip_prefix(b" ").unwrap_or(value);
    if !value.ends_with(tail) {
        return None;
    }
    let start = content - tail.len();
    Some(start..start + (r.end - r.start))
}

pin_project_lite::pin_project! {
    /// An event-stream body with the events that a predicate chooses dropped (see
    /// [`EventFilter`]); everything else is forwarded byte for byte, and frames that drop
    /// nothing and end on an event boundary as they are. A frame an event is dropped from goes
    /// out as the parts around it, each a slice of the frame (no copy; see
    /// [`EventFilter::push_parts`]).
    ///
    /// At the end of the inner body (or before its trailers or its error), the bytes of an event
    /// that had not ended are forwarded as they are. The size hint is unknown (bytes may be
    /// dropped).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use chatgate::sse::{Event, Filtered, is_usage_only_chunk};
    /// use http_body_util::{BodyExt, Full};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let upstream = Full::new(Bytes::from_static(
    ///     b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{}}\n\ndata: [DONE]\n\n",
    /// ));
    /// let body = Filtered::new(upstream, |e: &Event<'_>| is_usage_only_chunk(e.data()));
    /// assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"data: [DONE]\n\n");
    /// # });
    /// ```
    pub struct Filtered<B: Body, P> {
        #[pin]
        inner: B,
        filter: EventFilter<P>,
        // Parts of a frame not returned yet (the filter cuts a frame into parts instead of
        // copying what it keeps into a new buffer; it allocates only when a frame is cut).
        parts: VecDeque<Bytes>,
        // Trailers or an error of `inner`, returned after the held bytes.
        after: Option<Result<Frame<Bytes>, B::Error>>,
        ended: bool,
    }
}

impl<B: Body, P> Filtered<B, P>
where
    P: EventPredicate,
{
    /// Wraps an event-stream body; `drop` returns `true` for the events to drop.
    pub fn new(inner: B, drop: P) -> Self {
        Self::with_filter(inner, EventFilter::new(drop))
    }

    /// Wraps an event-stream body with a filter (e.g. one made with another bound).
    pub fn with_filter(inner: B, filter: EventFilter<P>) -> Self {
        Self {
            inner,
            filter,
            parts: VecDeque::new(),
            after: None,
            ended: false,
        }
    }

    /// The filter, with the state of the stream so far.
    pub fn filter(&self) -> &EventFilter<P> {
        &self.filter
    }
}

impl<B: Body + fmt::Debug, P> fmt::Debug for Filtered<B, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filtered")
            .field("inner", &self.inner)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl<B, P> Body for Filtered<B, P>
where
    B: Body<Data = Bytes>,
    P: EventPredicate,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if let Some(part) = this.parts.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(part))));
        }
        if let Some(after) = this.after.take() {
            return Poll::Ready(Some(after));
        }
        if *this.ended {
            return Poll::Ready(None);
        }
        loop {
            let item = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.filter.push_parts(data, this.parts);
                        match this.parts.pop_front() {
                            Some(part) => return Poll::Ready(Some(Ok(Frame::data(part)))),
                            None => continue,
                        }
                    }
                    Err(frame) => Ok(frame),
                },
                Some(Err(e)) => Err(e),
                None => {
                    *this.ended = true;
                    return Poll::Ready(this.filter.finish().map(|b| Ok(Frame::data(b))));
                }
            };
            // Trailers or an error: after what is held.
            return Poll::Ready(Some(match this.filter.finish() {
                Some(held) => {
                    *this.after = Some(item);
                    Ok(Frame::data(held))
                }
                None => item,
            }));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
            && self.after.is_none()
            && (self.ended || (self.inner.is_end_stream() && self.filter.held.is_empty()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    const CHUNK: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
    const USAGE: &str = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

    fn usage_filter(max: usize) -> EventFilter<impl FnMut(&Event<'_>) -> bool> {
        EventFilter::with_decoder(EventDecoder::with_max_event_bytes(max), |e: &Event<'_>| {
            is_usage_only_chunk(e.data())
        })
    }

    /// Pushes `parts` in order (with [`EventFilter::push_parts`] when `as_parts`, else
    /// [`EventFilter::push`]), checking the bound on held bytes; all that is forwarded.
    fn run_with<P: EventPredicate>(
        f: &mut EventFilter<P>,
        parts: &[&[u8]],
        as_parts: bool,
    ) -> Vec<u8> {
        let max = f.decoder().max_event_bytes();
        let mut out = Vec::new();
        for p in parts {
            let frame = Bytes::copy_from_slice(p);
            let mut got = VecDeque::new();
            if as_parts {
                f.push_parts(frame, &mut got);
            } else {
                got.extend(f.push(frame));
            }
            for b in got {
                assert!(!b.is_empty());
                out.extend_from_slice(&b);
            }
            assert!(f.held.len() <= max);
        }
        if let Some(b) = f.finish() {
            out.extend_from_slice(&b);
        }
        out
    }

    fn run<P: EventPredicate>(f: &mut EventFilter<P>, parts: &[&[u8]]) -> Vec<u8> {
        run_with(f, parts, false)
    }

    fn run_parts<P: EventPredicate>(f: &mut EventFilter<P>, parts: &[&[u8]]) -> Vec<u8> {
        run_with(f, parts, true)
    }

    #[test]
    fn parts_are_slices_of_the_frame_around_the_dropped_event() {
        let head = format!("data: {CHUNK}\n\n");
        let stream = format!("{head}data: {USAGE}\n\ndata: [DONE]\n\n");
        let frame = Bytes::from(stream.clone());
        let mut f = usage_filter(1 << 20);
        let mut parts = VecDeque::new();
        f.push_parts(frame.clone(), &mut parts);
        assert_eq!(f.dropped(), 1);
        let parts: Vec<Bytes> = parts.into();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0][..], head.as_bytes());
        assert_eq!(&parts[1][..], b"data: [DONE]\n\n");
        // No copy: both point into the frame.
        assert_eq!(parts[0].as_ptr(), frame.as_ptr());
        assert_eq!(parts[1].as_ptr(), frame[stream.len() - 14..].as_ptr());
    }

    #[test]
    fn drops_the_usage_chunk_from_a_coalesced_frame_split_anywhere() {
        let stream = format!("data: {CHUNK}\n\ndata: {USAGE}\n\ndata: [DONE]\n\n");
        let expected = format!("data: {CHUNK}\n\ndata: [DONE]\n\n");
        let stream = stream.as_bytes();
        let mut f = usage_filter(1 << 20);
        let frame = Bytes::copy_from_slice(stream);
        assert_eq!(f.push(frame).as_deref(), Some(expected.as_bytes()));
        assert_eq!(f.dropped(), 1);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut f = usage_filter(1 << 20);
                let out = run(&mut f, &[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(out, expected.as_bytes(), "split {i} {j}");
                assert_eq!(f.dropped(), 1);
                assert!(f.decoder().saw_done());
                let mut f = usage_filter(1 << 20);
                let out = run_parts(&mut f, &[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(out, expected.as_bytes(), "parts, split {i} {j}");
                assert_eq!(f.dropped(), 1);
            }
        }
    }

    /// Runs `stream` cut into three frames at every pair of points, pushed whole and as parts,
    /// through a filter from `filter`; each time the output must be `expected` and `dropped`
    /// events dropped, and `[DONE]` seen.
    fn split_anywhere<P: EventPredicate>(
        stream: &[u8],
        expected: &[u8],
        dropped: u64,
        filter: impl Fn() -> EventFilter<P>,
    ) {
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                for as_parts in [false, true] {
                    let mut f = filter();
                    let out = run_with(
                        &mut f,
                        &[&stream[..i], &stream[i..j], &stream[j..]],
                        as_parts,
                    );
                    assert_eq!(
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(expected),
                        "split {i} {j}, parts {as_parts}"
                    );
                    assert_eq!(f.dropped(), dropped, "split {i} {j}, parts {as_parts}");
                    assert!(f.decoder().saw_done(), "split {i} {j}, parts {as_parts}");
                }
            }
        }
    }

    #[test]
    fn line_ends_comments_and_crlf_split_anywhere() {
        let stream: &[u8] = b": hi\r\ndata: keep1\r\n\r\ndata: drop\r\n\r\ndata: keep2\r\r\
            data: drop\n\n: note\nevent: x\ndata: drop\r\n\r\n\r\ndata: [DONE]\r\n\r\n";
        let expected: &[u8] = b": hi\r\ndata: keep1\r\n\r\ndata: keep2\r\r\r\ndata: [DONE]\r\n\r\n";
        split_anywhere(stream, expected, 3, || {
            EventFilter::new(|e: &Event<'_>| e.data() == b"drop")
        });
    }

    /// Drops `data: drop` events; keeps `data: keep` events without decoding them where it is
    /// offered them (counting how often it was offered bytes and took some).
    struct Keeper {
        offered: usize,
        taken: usize,
    }

    impl EventPredicate for Keeper {
        fn drop_event(&mut self, e: &Event<'_>) -> bool {
            e.data() == b"drop"
        }
        fn keep_whole_events(&mut self, bytes: &[u8], max: usize) -> usize {
            self.offered += 1;
            let mut taken = 0;
            while bytes[taken..].starts_with(b"data: keep\n\n") && 11 <= max {
                taken += 12;
            }
            self.taken += usize::from(taken > 0);
            taken
        }
        fn takes_whole_events(&self) -> bool {
            true
        }
    }

    #[test]
    fn frames_kept_whole_by_the_predicate_are_forwarded_and_the_rest_filtered() {
        let stream: &[u8] =
            b"data: keep\n\ndata: drop\n\ndata: keep\n\ndata: keep\n\ndata: [DONE]\n\n";
        let expected: &[u8] = b"data: keep\n\ndata: keep\n\ndata: keep\n\ndata: [DONE]\n\n";
        let mut took_some = false;
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut f = EventFilter::new(Keeper {
                    offered: 0,
                    taken: 0,
                });
                let out = run(&mut f, &[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(expected),
                    "split {i} {j}"
                );
                assert_eq!(f.dropped(), 1, "split {i} {j}");
                took_some |= f.drop.taken > 0;
                let mut f = EventFilter::new(Keeper {
                    offered: 0,
                    taken: 0,
                });
                let out = run_parts(&mut f, &[&stream[..i], &stream[i..j], &stream[j..]]);
                assert_eq!(out, expected, "parts, split {i} {j}");
            }
        }
        assert!(took_some);
        // At an event boundary only; a frame taken whole is forwarded as the same bytes.
        let mut f = EventFilter::new(Keeper {
            offered: 0,
            taken: 0,
        });
        assert!(
            f.push(Bytes::from_static(b"data: drop\n\ndata: ke"))
                .is_none()
        );
        assert_eq!((f.drop.offered, f.drop.taken), (1, 0));
        let out = f.push(Bytes::from_static(b"ep\n\n")).unwrap();
        assert_eq!(&out[..], b"data: keep\n\n");
        let frame = Bytes::from_static(b"data: keep\n\ndata: keep\n\n");
        assert_eq!(f.push(frame.clone()).unwrap().as_ptr(), frame.as_ptr());
        assert_eq!((f.drop.offered, f.drop.taken), (2, 1));
        // Taken, dropped and taken again in one frame.
        let out = f
            .push(Bytes::from_static(
                b"data: keep\n\ndata: drop\n\ndata: keep\n\n",
            ))
            .unwrap();
        assert_eq!(&out[..], b"data: keep\n\ndata: keep\n\n");
        assert_eq!((f.drop.offered, f.drop.taken), (4, 3));
        assert_eq!(f.dropped(), 2);
    }

    /// Drops `data: drop` events, cuts the first `XY` out of the others' data, and takes
    /// `data: keepXY` events whole, cutting their `XY` too.
    struct Cutter;

    impl EventPredicate for Cutter {
        fn drop_event(&mut self, e: &Event<'_>) -> bool {
            e.data() == b"drop"
        }
        fn keep_whole_events_cutting(
            &mut self,
            bytes: &[u8],
            max: usize,
            cuts: &mut Vec<Range<usize>>,
        ) -> usize {
            let mut taken = 0;
            while bytes[taken..].starts_with(b"data: keepXY\n\n") && 13 <= max {
                cuts.push(taken + 10..taken + 12);
                taken += 14;
            }
            taken
        }
        fn takes_whole_events(&self) -> bool {
            true
        }
        fn cut_from_event(&mut self, e: &Event<'_>) -> Option<Range<usize>> {
            memchr::memmem::find(e.data(), b"XY").map(|i| i..i + 2)
        }
    }

    #[test]
    fn cuts_inside_kept_events_split_anywhere() {
        let stream: &[u8] = b"data: aXYb\n\ndata: drop\n\ndata: keepXY\n\ndata: keepXY\n\n\
            : c\ndata: 1\ndata: 2XY\r\n\r\nid: 7\ndata:XY\n\ndata: zXY\nid: 9\n\n\
            data: XY\rdata: qXY\r\rdata: [DONE]\n\n";
        // The last line of `zXY`'s event is not its data line, and the cut of `XY\nqXY` would
        // take a line end: both go as they are.
        let expected: &[u8] = b"data: ab\n\ndata: keep\n\ndata: keep\n\n\
            : c\ndata: 1\ndata: 2\r\n\r\nid: 7\ndata:\n\ndata: zXY\nid: 9\n\n\
            data: XY\rdata: qXY\r\rdata: [DONE]\n\n";
        split_anywhere(stream, expected, 1, || EventFilter::new(Cutter));
        // A frame with a cut goes out as one buffer.
        let mut f = EventFilter::new(Cutter);
        let mut parts = VecDeque::new();
        f.push_parts(
            Bytes::from_static(b"data: aXYb\n\ndata: drop\n\ndata: keepXY\n\ndata: c"),
            &mut parts,
        );
        assert_eq!(parts.len(), 1);
        assert_eq!(&parts[0][..], b"data: ab\n\ndata: keep\n\n");
    }

    #[test]
    fn frames_with_nothing_dropped_are_the_same_bytes() {
        let mut f = usage_filter(1 << 20);
        let frame = Bytes::from(format!("data: {CHUNK}\n\ndata: {CHUNK}\n\n"));
        let out = f.push(frame.clone()).unwrap();
        assert_eq!((out.as_ptr(), out.len()), (frame.as_ptr(), frame.len()));
        // Ending inside an event: what comes before it is a slice of the frame.
        let frame = Bytes::from(format!("data: {CHUNK}\n\ndata: {{\"par"));
        let out = f.push(frame.clone()).unwrap();
        assert_eq!(out.as_ptr(), frame.as_ptr());
        assert_eq!(out.len(), CHUNK.len() + 8);
        // A frame that is all inside one event: nothing yet.
        assert_eq!(f.push(Bytes::from_static(b"tial\":")), None);
        assert_eq!(
            f.push(Bytes::from_static(b"1}\n\n")).as_deref(),
            Some(&b"data: {\"partial\":1}\n\n"[..])
        );
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn events_over_the_bound_pass_through_undropped() {
        let long = format!("data: {USAGE}\n\n");
        let max = long.len() / 2;
        let stream = format!("data: {CHUNK}\n\n{long}data: [DONE]\n\n");
        let stream = stream.as_bytes();
        let mut f = usage_filter(max);
        // In one frame: the decoder reports it oversized, it is not dropped.
        assert_eq!(run(&mut f, &[stream]), stream);
        for i in 0..=stream.len() {
            let mut f = usage_filter(max);
            assert_eq!(
                run(&mut f, &[&stream[..i], &stream[i..]]),
                stream,
                "split {i}"
            );
            assert_eq!(f.dropped(), 0);
        }
        // With a bound that fits, it is dropped.
        let mut f = usage_filter(long.len());
        let out = run(&mut f, &[&stream[..40], &stream[40..200], &stream[200..]]);
        assert_eq!(out, format!("data: {CHUNK}\n\ndata: [DONE]\n\n").as_bytes());
    }

    #[test]
    fn usage_only_chunks() {
        assert!(is_usage_only_chunk(USAGE.as_bytes()));
        assert!(!is_usage_only_chunk(CHUNK.as_bytes()));
        let cases: &[&[u8]] = &[
            br#"{"object":"chat.completion","choices":[],"usage":{}}"#,
            br#"{"choices":[],"usage":{}}"#,
            br#"{"object":"chat.completion.chunk","choices":[],"usage":null}"#,
            br#"{"object":"chat.completion.chunk","choices":[]}"#,
            br#"{"object":"chat.completion.chunk","choices":[],"usage":{},"usage":{}}"#,
            br#"{"object":"chat.completion.chunk","choices":[],"usage":{}"#,
            br#"["usage"]"#,
            b"\"usage\"",
            b"\xff\"usage\"\xfe",
            b"",
        ];
        for c in cases {
            assert!(!is_usage_only_chunk(c), "{}", String::from_utf8_lossy(c));
        }
        assert!(is_usage_only_chunk(
            br#" {"object":"chat.\u0063ompletion.chunk","choices":[ ],"usage":{"x":[1,{"y":null}]},"extra":1} "#
        ));
        // Every prefix of a usage chunk: no panic, and no match until it is whole.
        for i in 0..USAGE.len() {
            assert!(!is_usage_only_chunk(&USAGE.as_bytes()[..i]));
        }
    }

    /// A body that yields the given frames, trailers or errors, in order.
    struct Script(VecDeque<Result<Frame<Bytes>, &'static str>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = &'static str;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn data(b: &'static [u8]) -> Result<Frame<Bytes>, &'static str> {
        Ok(Frame::data(Bytes::from_static(b)))
    }

    #[tokio::test]
    async fn filtered_body_forwards_held_bytes_before_trailers_and_errors() {
        let drop_x = |e: &Event<'_>| e.data() == b"x";
        let script = Script(
            [
                data(b"data: a\n\ndata: x\n\nda"),
                data(b""),
                data(b"ta"),
                Ok(Frame::trailers(http::HeaderMap::new())),
            ]
            .into(),
        );
        let mut body = Filtered::new(script, drop_x);
        let next = |f: Option<Result<Frame<Bytes>, &str>>| f.unwrap().unwrap();
        assert_eq!(
            &next(body.frame().await).into_data().unwrap()[..],
            b"data: a\n\n"
        );
        assert_eq!(&next(body.frame().await).into_data().unwrap()[..], b"data");
        assert!(next(body.frame().await).is_trailers());
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());

        let script = Script([data(b"data: x\n\ndata: {"), Err("reset")].into());
        let mut body = Filtered::new(script, drop_x);
        assert_eq!(
            &next(body.frame().await).into_data().unwrap()[..],
            b"data: {"
        );
        assert_eq!(body.frame().await.unwrap().unwrap_err(), "reset");
        assert_eq!(body.filter().dropped(), 1);
    }
}

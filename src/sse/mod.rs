//! Server-sent events as the contract frames them (docs/contract.md, streaming): `data: <json>\n\n`, and
//! a final `data: [DONE]\n\n`; and [`EventScanner`], which watches a stream pass through.
//!
//! For observers that need whole events (usage accounting), [`EventDecoder`] decodes a stream
//! cut at any byte without keeping it, [`Observed`] runs one beside a pass-through body, and
//! [`EventFilter`] / [`Filtered`] drop chosen events (e.g. [`is_usage_only_chunk`]) inside
//! coalesced frames. Why not `eventsource-stream` or `sse-stream`: they turn the bytes into owned
//! events, which a proxy would have to re-encode, with unbounded buffers and no byte positions
//! (details on [`EventDecoder`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};

mod decoder;
pub use decoder::{DEFAULT_MAX_EVENT_BYTES, Event, EventDecoder};
mod observe;
pub use observe::{Observed, SseObserver};
mod filter;
pub use filter::{EventFilter, EventPredicate, Filtered, is_usage_only_chunk};

/// The event that ends a successful stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Where the first `\n\n` (the end of an event written with `\n` line ends) starts in `bytes`.
///
/// A `memchr` for each line end: `memmem::find` would build its searcher on every call, which
/// costs more than the search on an event's few lines.
pub(crate) fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &bytes[from..]) {
        let at = from + i;
        if bytes.get(at + 1) == Some(&b'\n') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Frames one JSON payload as an event.
///
/// ```
/// assert_eq!(&chatgate::sse::data(b"{}")[..], b"data: {}\n\n");
/// ```
pub fn data(json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(json);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// A sans-IO scanner that watches an SSE byte stream pass by without holding on to it.
///
/// It does not decode events: a proxy forwards the upstream's bytes untouched and only needs to
/// know three things, which this answers while the bytes stream through in chunks of any size:
/// whether the stream has carried `data: [DONE]` ([`saw_done`](Self::saw_done)), whether it carried
/// an in-band error event (a `data:` payload starting with `{"error"`,
/// [`saw_error`](Self::saw_error)), and what must be written to close an event cut off mid-way
/// ([`terminator`](Self::terminator)). Line endings may be `\n`, `\r\n` or `\r` (WHATWG SSE).
///
/// Why not a crate: `eventsource-stream` and `sse-stream` parse a `Stream`/`Body` into owned
/// events, which a pass-through proxy would then have to re-serialize, and they keep buffers
/// proportional to the event size. This scanner keeps a fixed 16-byte window of each line
/// (enough to classify it) and never copies the stream.
///
/// ```
/// use chatgate::sse::EventScanner;
/// let mut s = EventScanner::new();
/// s.feed(b"data: {\"a\":1}\n\nda");
/// assert!(!s.saw_done());
/// assert_eq!(s.terminator(), b"\n\n");
/// s.feed(b"ta: [DONE]\r\n\r\n");
/// assert!(s.saw_done());
/// assert_eq!(s.terminator(), b"");
/// ```
#[derive(Clone, Debug, Default)]
pub struct EventScanner {
    /// The first bytes of the current line.
    head: [u8; 16],
    /// How many bytes of the current line were seen (saturating; only `head.len()` are kept).
    len: usize,
    /// The previous byte was `\r` (a following `\n` belongs to the same line end).
    after_cr: bool,
    /// The current event has at least one line.
    in_event: bool,
    done: bool,
    error: bool,
}

impl EventScanner {
    /// A scanner at the start of a stream.
    pub const fn new() -> Self {
        Self {
            head: [0; 16],
            len: 0,
            after_cr: false,
            in_event: false,
            done: false,
            error: false,
        }
    }

    /// Watches the next chunk of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        // Line ends are found with `memchr`; only the first bytes of each line are looked at.
        while let Some((&first, rest)) = chunk.split_first() {
            if self.after_cr && first == b'\n' {
                // The `\n` of a `\r\n` line end.
                self.after_cr = false;
                chunk = rest;
                continue;
            }
            let Some(i) = memchr::memchr2(b'\n', b'\r', chunk) else {
                self.line_bytes(chunk);
                return;
            };
            self.line_bytes(&chunk[..i]);
            self.after_cr = chunk[i] == b'\r';
            self.end_line();
            chunk = &chunk[i + 1..];
        }
    }

    /// Bytes of the current line, none of them a line end.
    fn line_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.after_cr = false;
        if self.len < self.head.len() {
            let n = (self.head.len() - self.len).min(bytes.len());
            self.head[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        }
        self.len = self.len.saturating_add(bytes.len());
    }

    fn end_line(&mut self) {
        if self.len == 0 {
            // A blank line dispatches the event.
            self.in_event = false;
            return;
        }
        self.in_event = true;
        let kept = &self.head[..self.len.min(self.head.len())];
        if let Some(value) = kept.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            let complete = self.len <= self.head.len();
            if complete && value.trim_ascii_end() == b"[DONE]" {
                self.done = true;
            } else if value.trim_ascii_start().starts_with(b"{") {
                let rest = value.trim_ascii_start()[1..].trim_ascii_start();
                if rest.starts_with(b"\"error\"") {
                    self.error = true;
                }
            }
        }
        self.len = 0;
    }

    /// Whether the stream so far ends on an event boundary: no line open, no line of an event
    /// since the last blank line, not just after a `\r`. Whole events (`data:` lines, then a
    /// blank line) that are neither `[DONE]` nor an error leave such a scanner as it was.
    pub(crate) const fn is_at_boundary(&self) -> bool {
        self.len == 0 && !self.in_event && !self.after_cr
    }

    /// Whether a `data: [DONE]` line went by.
    pub fn saw_done(&self) -> bool {
        self.done
    }

    /// Whether an in-band error event (`data: {"error"…`) went by.
    pub fn saw_error(&self) -> bool {
        self.error
    }

    /// What to write so that the stream so far ends on an event boundary: nothing, `\n` (the
    /// last line ended but the event did not) or `\n\n` (cut mid-line).
    pub fn terminator(&self) -> &'static [u8] {
        if self.len > 0 {
            b"\n\n"
        } else if self.in_event {
            b"\n"
        } else {
            b""
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::EventScanner;

    #[test]
    fn a_blank_line_is_found_where_a_substring_search_finds_it() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..5_000 {
            let len = (x % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    [b'\n', b'\r', b'a', b'\n'][(x % 4) as usize]
                })
                .collect();
            assert_eq!(
                super::find_blank_line(&bytes),
                memchr::memmem::find(&bytes, b"\n\n"),
                "{bytes:?}"
            );
        }
    }

    fn scan(chunks: &[&[u8]]) -> EventScanner {
        let mut s = EventScanner::new();
        for c in chunks {
            s.feed(c);
        }
        s
    }

    /// The byte-at-a-time definition `feed` must agree with.
    #[derive(Debug, Default, PartialEq)]
    struct Reference {
        head: Vec<u8>,
        len: usize,
        after_cr: bool,
        in_event: bool,
        done: bool,
        error: bool,
    }

    impl Reference {
        fn feed(&mut self, chunk: &[u8]) {
            for &b in chunk {
                match b {
                    b'\n' if self.after_cr => self.after_cr = false,
                    b'\n' | b'\r' => {
                        self.after_cr = b == b'\r';
                        if self.len == 0 {
                            self.in_event = false;
                            continue;
                        }
                        self.in_event = true;
                        let mut probe = EventScanner::new();
                        probe.feed(&self.head);
                        probe.feed(if self.len <= 16 { b"\n" } else { b"...\n" });
                        self.done |= probe.saw_done();
                        self.error |= probe.saw_error();
                        self.head.clear();
                        self.len = 0;
                    }
                    _ => {
                        self.after_cr = false;
                        if self.head.len() < 16 {
                            self.head.push(b);
                        }
                        self.len += 1;
                    }
                }
            }
        }
    }

    #[test]
    fn feed_agrees_with_byte_at_a_time_scanning_across_splits() {
        let stream: &[u8] =
            b"data: {\"a\":1}\r\n\r\n: comment line that is long\r\rdata:{\"error\":1}\n\n\
            \ndata: [DONE]\r\ndata: [DONE] plus a long tail\n\ndata: {";
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut s = EventScanner::new();
                let mut r = Reference::default();
                for part in [&stream[..i], &stream[i..j], &stream[j..]] {
                    s.feed(part);
                    r.feed(part);
                    assert_eq!(s.after_cr, r.after_cr, "split {i} {j}");
                    assert_eq!(s.len, r.len, "split {i} {j}");
                    assert_eq!(&s.head[..s.len.min(16)], &r.head[..], "split {i} {j}");
                    assert_eq!(s.in_event, r.in_event, "split {i} {j}");
                    assert_eq!((s.done, s.error), (r.done, r.error), "split {i} {j}");
                }
            }
        }
    }

    #[test]
    fn done_is_found_across_any_split() {
        let stream = b"data: {\"x\":1}\n\ndata: [DONE]\n\n";
        for i in 0..stream.len() {
            for j in i..stream.len() {
                let s = scan(&[&stream[..i], &stream[i..j], &stream[j..]]);
                assert!(s.saw_done(), "split {i} {j}");
                assert!(!s.saw_error());
                assert_eq!(s.terminator(), b"");
            }
        }
    }

    #[test]
    fn variants_of_done() {
        assert!(scan(&[b"data:[DONE]\n\n"]).saw_done());
        assert!(scan(&[b"data: [DONE]\r\n\r\n"]).saw_done());
        assert!(scan(&[b"data: [DONE]\r\r"]).saw_done());
        assert!(!scan(&[b"data: [DONE]x\n\n"]).saw_done());
        assert!(!scan(&[b"data: \"[DONE]\"\n\n"]).saw_done());
        assert!(!scan(&[b": data: [DONE]\n\n"]).saw_done());
        assert!(!scan(&[b"data: [DONE] and a very long tail\n\n"]).saw_done());
    }

    #[test]
    fn error_events() {
        assert!(scan(&[b"data: {\"error\":{\"message\":\"x\"}}\n\n"]).saw_error());
        assert!(scan(&[b"data:{ \"error\": 1}\n\n"]).saw_error());
        assert!(!scan(&[b"data: {\"choices\":[],\"error\":1}\n\n"]).saw_error());
    }

    #[test]
    fn terminators() {
        assert_eq!(scan(&[]).terminator(), b"");
        assert_eq!(scan(&[b"data: {}\n\n"]).terminator(), b"");
        assert_eq!(scan(&[b"data: {}\n"]).terminator(), b"\n");
        assert_eq!(scan(&[b"data: {}\r\n"]).terminator(), b"\n");
        assert_eq!(scan(&[b"data: {"]).terminator(), b"\n\n");
        // A CR at the very end already ended the line.
        assert_eq!(scan(&[b"data: {}\r"]).terminator(), b"\n");
    }
}

/// The contract's stream ending (docs/contract.md, streaming) as an end-of-response handler
/// ([`OnEnd`](crate::body::OnEnd)): when the body ends cleanly without `data: [DONE]`, exactly
/// one is appended (after whatever ends an unterminated last event); when the body fails, one
/// final `data: {"error":{…}}` event in the OpenAI envelope is sent and the stream ends, without
/// `[DONE]` (`upstream_timeout` or `bad_gateway` for an
/// [`UpstreamFailure`](crate::upstream::UpstreamFailure), else `internal_error`). Frames pass
/// through unchanged, as they come.
///
/// [`ModelRouter`](crate::route::ModelRouter) wraps the `text/event-stream` responses of its
/// routes with it ([`ending`]).
///
/// An observer further out that decodes the stream anyway (usage accounting) may take the
/// scanning over (it finds the offer in the response's extensions): the stream is then scanned
/// once, not twice.
#[derive(Clone, Debug, Default)]
pub struct SseEnding {
    scanner: EventScanner,
    /// Shared with an observer that may take the scanning over.
    handoff: Option<Arc<Handoff>>,
    /// The observer took it: this handler scans nothing.
    handed: bool,
}

impl SseEnding {
    /// A handler at the start of a stream.
    pub const fn new() -> Self {
        Self {
            scanner: EventScanner::new(),
            handoff: None,
            handed: false,
        }
    }

    /// A handler whose scanning an observer further out may take over, through the returned
    /// [`EndingHandoff`] (put in the response's extensions), before the first data frame.
    pub(crate) fn handing_off() -> (Self, EndingHandoff) {
        let shared = Arc::new(Handoff::default());
        let ending = Self {
            scanner: EventScanner::new(),
            handoff: Some(Arc::clone(&shared)),
            handed: false,
        };
        (ending, EndingHandoff(shared))
    }

    /// What the stream so far ended with: this handler's own scanner, or the one of the
    /// observer that took the scanning over.
    fn scanned(self, end: &crate::body::End<'_>) -> EventScanner {
        let Some(shared) = self.handoff else {
            return self.scanner;
        };
        let h = lock(&shared.state);
        if !h.claimed {
            return self.scanner;
        }
        // The observer is outside this body, and this handler acts on the poll after the last
        // frame (it appends): the observer has seen every frame.
        let seen = shared.seen.load(Relaxed);
        debug_assert_eq!(
            seen, end.bytes,
            "an observer that took over a stream's ending missed frames"
        );
        if seen != end.bytes {
            tracing::warn!(
                seen,
                passed = end.bytes,
                "the usage meter saw another stream than the stream ending inside it (a layer \
                 between them changes the stream's frames)"
            );
        }
        h.scanner.clone()
    }
}

/// What an [`SseEnding`] shares with an observer that may take its scanning over.
#[derive(Debug, Default)]
struct Handoff {
    state: Mutex<Handed>,
    /// Data bytes the observer saw. Written by the observer alone, read by the ending at the
    /// end of the body: outside the lock, so that a frame of whole events taken without
    /// decoding (most frames) costs the observer a store, not a lock.
    seen: AtomicU64,
}

/// The part of a [`Handoff`] behind its lock.
#[derive(Debug, Default)]
struct Handed {
    /// The ending saw data first: it scans, the observer may no longer take over.
    started: bool,
    /// An observer took the scanning over (before any data).
    claimed: bool,
    /// The observer's scanner: every byte it saw, but whole events it took without decoding.
    scanner: EventScanner,
}

fn lock(m: &Mutex<Handed>) -> std::sync::MutexGuard<'_, Handed> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An offer, found in the extensions of an event-stream response, to take over the scanning of
/// the [`SseEnding`] inside it: an observer that decodes the stream anyway ([`EndingWatch`])
/// then feeds the ending's scanner, which costs it little, and the ending scans nothing.
///
/// The observer must see every data frame of the body as it passes, in order, without
/// holding frames back: the ending acts on the poll after the last frame (see
/// [`OnEndBody`](crate::body::OnEndBody)), and relies on the observer's scanner then.
#[derive(Clone, Debug)]
pub(crate) struct EndingHandoff(Arc<Handoff>);

impl EndingHandoff {
    /// Takes the scanning over; `None` when the ending already saw data (it scans itself).
    pub(crate) fn claim(self) -> Option<EndingWatch> {
        let mut h = lock(&self.0.state);
        if h.started || h.claimed {
            return None;
        }
        h.claimed = true;
        drop(h);
        Some(EndingWatch {
            shared: self.0,
            at_boundary: true,
        })
    }
}

/// The scanning of an [`SseEnding`], taken over by an observer of the stream.
#[derive(Debug)]
pub(crate) struct EndingWatch {
    shared: Arc<Handoff>,
    /// Whether the shared scanner is at an event boundary (only this watch feeds it).
    at_boundary: bool,
}

impl EndingWatch {
    fn saw(&self, bytes: &[u8]) {
        // This watch is the count's only writer: a load and a store, no read-modify-write.
        let seen = &self.shared.seen;
        seen.store(seen.load(Relaxed) + bytes.len() as u64, Relaxed);
    }

    /// Bytes of the stream that the observer decodes: scanned.
    pub(crate) fn decoded(&mut self, bytes: &[u8]) {
        let mut h = lock(&self.shared.state);
        h.scanner.feed(bytes);
        self.at_boundary = h.scanner.is_at_boundary();
        drop(h);
        self.saw(bytes);
    }

    /// Bytes of the stream that the observer took as whole events without decoding them (see
    /// [`SseObserver::on_whole_events`]): they leave a scanner at an event boundary as it was
    /// (no lock taken), and are scanned only when it is not at one.
    pub(crate) fn taken(&mut self, bytes: &[u8]) {
        if !self.at_boundary {
            self.decoded(bytes);
            return;
        }
        self.saw(bytes);
    }
}

/// `body` with the contract's stream ending ([`SseEnding`]).
pub fn ending<B: http_body::Body>(body: B) -> crate::body::OnEndBody<B, SseEnding> {
    crate::body::OnEndBody::new(body, SseEnding::new())
}

/// The error event that ends a failed stream.
pub(crate) fn error_event(
    error: Option<&(dyn std::error::Error + Send + Sync + 'static)>,
) -> Bytes {
    use crate::error::ApiError;
    use crate::upstream::UpstreamFailure;
    let err = match error {
        Some(e) => match e.downcast_ref::<UpstreamFailure>() {
            Some(f) if f.is_timeout() => ApiError::upstream_timeout(f.message()),
            Some(f) => ApiError::bad_gateway(f.message()),
            None => ApiError::internal(format!("The stream failed: {e}")),
        },
        None => ApiError::internal("The stream failed."),
    };
    data(&err.to_bytes())
}

impl crate::body::OnEnd for SseEnding {
    fn appends(&self) -> bool {
        true
    }

    fn on_data(&mut self, data: &Bytes) {
        if let Some(shared) = &self.handoff
            && !self.handed
        {
            // The first data: taken over, or scanned here from now on.
            let mut h = lock(&shared.state);
            self.handed = h.claimed;
            h.started = !h.claimed;
            drop(h);
            if !self.handed {
                self.handoff = None;
            }
        }
        if !self.handed {
            self.scanner.feed(data);
        }
    }

    fn on_end(self, end: &crate::body::End<'_>) -> Option<Bytes> {
        use crate::body::EndKind;
        if end.kind == EndKind::Dropped {
            return None;
        }
        let s = &self.scanned(end);
        let closed = s.saw_done() || s.saw_error();
        let event = if closed {
            // Already ended for the client: nothing to add (a failure after it is not passed on).
            return Some(Bytes::new());
        } else if end.kind == EndKind::Complete {
            Bytes::from_static(DONE)
        } else {
            error_event(end.error)
        };
        let mut b = BytesMut::with_capacity(event.len() + 2);
        b.put_slice(s.terminator());
        b.put_slice(&event);
        Some(b.freeze())
    }
}

#[cfg(test)]
mod ending_tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    /// A body that yields the given frames, or errors, in order.
    struct Script(VecDeque<Result<&'static [u8], &'static str>>);

    impl http_body::Body for Script {
        type Data = Bytes;
        type Error = String;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, String>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|p| {
                p.map(|b| http_body::Frame::data(Bytes::from_static(b)))
                    .map_err(str::to_owned)
            }))
        }
    }

    fn body(
        parts: Vec<Result<&'static [u8], &'static str>>,
    ) -> crate::body::OnEndBody<Script, SseEnding> {
        ending(Script(parts.into()))
    }

    async fn text(b: crate::body::OnEndBody<Script, SseEnding>) -> String {
        let bytes = b.collect().await.expect("no error left").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn appends_done_once() {
        assert_eq!(
            text(body(vec![Ok(b"data: {}\n\n")])).await,
            "data: {}\n\ndata: [DONE]\n\n"
        );
        // Already there: nothing added.
        assert_eq!(
            text(body(vec![Ok(b"data: {}\n\ndata: [DONE]\n\n")])).await,
            "data: {}\n\ndata: [DONE]\n\n"
        );
        // An unterminated last event is ended first.
        assert_eq!(
            text(body(vec![Ok(b"data: {}")])).await,
            "data: {}\n\ndata: [DONE]\n\n"
        );
    }

    #[tokio::test]
    async fn an_ending_that_saw_data_is_not_taken_over() {
        let (mut ending, handoff) = SseEnding::handing_off();
        crate::body::OnEnd::on_data(&mut ending, &Bytes::from_static(b"data: [DONE]\n\n"));
        assert!(handoff.clone().claim().is_none());
        // It scanned the data itself: nothing to add.
        let end = crate::body::End {
            kind: crate::body::EndKind::Complete,
            error: None,
            bytes: 14,
            started: tokio::time::Instant::now(),
            first_byte: None,
        };
        assert_eq!(crate::body::OnEnd::on_end(ending, &end), Some(Bytes::new()));
        // Taken over before any data: once only.
        let (_ending, handoff) = SseEnding::handing_off();
        assert!(handoff.clone().claim().is_some());
        assert!(handoff.claim().is_none());
    }

    #[tokio::test]
    async fn a_failure_becomes_an_error_event_without_done() {
        let out = text(body(vec![Ok(b"data: {}\n\n"), Err("reset")])).await;
        assert!(out.starts_with("data: {}\n\ndata: {\"error\":"), "{out}");
        assert!(out.ends_with("}\n\n") && !out.contains("[DONE]"), "{out}");
    }
}

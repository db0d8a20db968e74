//! [`EventDecoder`]: whole events out of an SSE byte stream, for observers of a pass-through.

use std::fmt;

/// The default bound on one event's size ([`EventDecoder::max_event_bytes`]): 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// The UTF-8 byte order mark, which WHATWG strips (once) from the start of a stream.
const BOM: &[u8; 3] = b"\xEF\xBB\xBF";

/// One dispatched event, borrowed from the chunk that completed it or from the decoder.
///
/// ```
/// use chatgate::sse::Event;
/// let e = Event::new(b"{\"error\":{\"message\":\"overloaded\"}}", None);
/// assert!(e.is_error() && !e.is_done() && !e.is_oversized());
/// assert!(Event::new(b"[DONE]", None).is_done());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    data: &'a [u8],
    name: Option<&'a [u8]>,
    oversized: bool,
}

impl<'a> Event<'a> {
    /// An event with this data payload and event name (`None`: no `event:` field, the default
    /// `message` type).
    pub const fn new(data: &'a [u8], name: Option<&'a [u8]>) -> Self {
        Self {
            data,
            name,
            oversized: false,
        }
    }

    const OVERSIZED: Event<'static> = Event {
        data: b"",
        name: None,
        oversized: true,
    };

    /// The data payload: the values of the event's `data:` lines joined by `\n` (WHATWG), without
    /// the optional space after the colon. Empty for an oversized event.
    pub const fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The value of the event's last `event:` field, if it had a non-empty one.
    pub const fn name(&self) -> Option<&'a [u8]> {
        self.name
    }

    /// Whether the event went over [`EventDecoder::max_event_bytes`]: then it was skipped, and
    /// [`data`](Self::data) and [`name`](Self::name) are empty. Reported for any block of lines
    /// over the bound, even one without `data:` lines.
    pub const fn is_oversized(&self) -> bool {
        self.oversized
    }

    /// Whether this is the `data: [DONE]` that ends a successful stream.
    pub fn is_done(&self) -> bool {
        self.data.trim_ascii_end() == b"[DONE]"
    }

    /// Whether the payload is an in-band error: a JSON object whose first key is `"error"`.
    pub fn is_error(&self) -> bool {
        self.data
            .trim_ascii_start()
            .strip_prefix(b"{")
            .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"error\""))
    }
}

impl fmt::Debug for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Event");
        d.field("data", &String::from_utf8_lossy(self.data));
        if let Some(name) = self.name {
            d.field("name", &String::from_utf8_lossy(name));
        }
        if self.oversized {
            d.field("oversized", &true);
        }
        d.finish()
    }
}

/// Where a piece of the current event (its data or its name) is, while a chunk is decoded.
#[derive(Clone, Copy)]
enum Piece {
    /// None yet.
    None,
    /// In the current chunk, at this range: the zero-copy case.
    Chunk(usize, usize),
    /// In the decoder's buffer.
    Owned,
}

/// A sans-IO decoder of an SSE byte stream into whole events, for observers of a stream that
/// passes through unchanged.
///
/// Feed it the stream in chunks of any size, cut at any byte; it calls back once per complete
/// event (WHATWG dispatch: a blank line after at least one `data:` line) with the event's
/// [`data`](Event::data) and [`name`](Event::name). Line ends may be `\n`, `\r\n` or `\r`, also
/// with the `\r\n` cut between chunks; one UTF-8 BOM at the start of the stream is skipped;
/// comment lines (`:`), `id:`, `retry:` and unknown fields are skipped. The payload is bytes: the
/// stream is not checked for UTF-8.
///
/// It does not keep the stream. An event that lies within one chunk and has one `data:` line is
/// handed out as a slice of that chunk; only the part of an event that spans chunks, and the data
/// of an event with several `data:` lines (which must be joined), is copied into the decoder's
/// buffers. These are bounded: an event whose lines, counting one byte per line end, come to
/// more than [`max_event_bytes`](Self::max_event_bytes) is not kept but reported as
/// [oversized](Event::is_oversized) when it ends. Line ends are found with `memchr`.
///
/// Why not a crate: `eventsource-stream` and `sse-stream` decode a `Stream` or `Body` of bytes
/// into owned events (`String`s per event, so also a UTF-8 check), which is what a client needs,
/// but a proxy forwards the upstream's bytes: it would have to re-encode every event (and could
/// not keep the upstream's framing), or decode a copy of the stream next to it. Their line
/// buffers have no bound, and they cannot tell where an event's bytes are, which
/// [`EventFilter`](super::EventFilter) needs to drop one inside a frame. This decoder borrows the
/// chunks the proxy forwards anyway and copies only what spans them.
///
/// ```
/// use chatgate::sse::EventDecoder;
/// let mut d = EventDecoder::new();
/// let mut seen = Vec::new();
/// let mut on = |e: chatgate::sse::Event<'_>| seen.push(String::from_utf8_lossy(e.data()).into_owned());
/// d.feed(b"data: {\"a\":1}\n\nevent: ping\ndata: x\ndata: y\r\n\r\nda", &mut on);
/// d.feed(b"ta: [DONE]\n\n", &mut on);
/// assert_eq!(seen, ["{\"a\":1}", "x\ny", "[DONE]"]);
/// assert!(d.saw_done() && !d.is_mid_event());
/// ```
#[derive(Clone)]
pub struct EventDecoder {
    max_event_bytes: usize,
    /// BOM bytes matched at the start of the stream; 3 once there is no more to match.
    bom: u8,
    /// The last line ended with `\r` (a `\n` next belongs to the same line end).
    after_cr: bool,
    /// The kept bytes of a line cut by the end of a chunk (none once the event is oversized).
    line: Vec<u8>,
    /// The length of that line so far (also when its bytes are not kept); 0: no line is open.
    line_len: usize,
    /// The size of the current event's complete lines, one byte per line end.
    size: usize,
    oversized: bool,
    /// The current event has a `data:` line, and its data is in `data`.
    has_data: bool,
    data: Vec<u8>,
    /// The current event's name, if any (empty: none).
    name: Vec<u8>,
    done: bool,
    error: bool,
}

impl Default for EventDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventDecoder")
            .field("max_event_bytes", &self.max_event_bytes)
            .field("mid_event", &self.is_mid_event())
            .field("done", &self.done)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl EventDecoder {
    /// A decoder at the start of a stream, with the default bound of
    /// [`DEFAULT_MAX_EVENT_BYTES`] per event.
    pub const fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder at the start of a stream that keeps events of up to `max` bytes (their lines,
    /// one byte per line end; the blank line that ends an event is not counted).
    pub const fn with_max_event_bytes(max: usize) -> Self {
        Self {
            max_event_bytes: max,
            bom: 0,
            after_cr: false,
            line: Vec::new(),
            line_len: 0,
            size: 0,
            oversized: false,
            has_data: false,
            data: Vec::new(),
            name: Vec::new(),
            done: false,
            error: false,
        }
    }

    /// The bound on one event's size.
    pub const fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Decodes the next chunk of the stream, calling `on_event` for each event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        self.feed_blocks(chunk, |_, event| {
            if let Some(event) = event {
                on_event(event);
            }
        });
    }

    /// Whether an event with the payload `[DONE]` went by.
    pub const fn saw_done(&self) -> bool {
        self.done
    }

    /// Whether an in-band error event ([`Event::is_error`]) went by.
    pub const fn saw_error(&self) -> bool {
        self.error
    }

    /// Whether the stream so far ends inside an event (lines after the last blank line): at
    /// the end of the stream, such an event is not dispatched (WHATWG).
    pub const fn is_mid_event(&self) -> bool {
        self.size > 0 || self.line_len > 0 || (self.bom > 0 && self.bom < 3)
    }

    /// What to write so that the stream so far ends on an event boundary: nothing, `\n` (the
    /// last line ended but the event did not) or `\n\n` (cut mid-line).
    pub const fn terminator(&self) -> &'static [u8] {
        if self.line_len > 0 || (self.bom > 0 && self.bom < 3) {
            b"\n\n"
        } else if self.size > 0 {
            b"\n"
        } else {
            b""
        }
    }

    /// [`feed`](Self::feed), also reporting every blank line: `f(end, event)` where `end` is
    /// the offset in `chunk` just after the blank line's line end (after its `\r` for `\r\n`),
    /// and `event` the event it dispatched, if any.
    pub(crate) fn feed_blocks<F>(&mut self, chunk: &[u8], mut f: F)
    where
        F: FnMut(usize, Option<Event<'_>>),
    {
        let mut pos = 0;
        while self.bom < 3 {
            let Some(&b) = chunk.get(pos) else {
                // All of it may still be a BOM.
                return;
            };
            if b == BOM[usize::from(self.bom)] {
                self.bom += 1;
                pos += 1;
            } else {
                // Not a BOM: what matched starts the first line.
                let matched = usize::from(self.bom);
                self.bom = 3;
                self.open_line(&BOM[..matched]);
            }
        }
        let mut data = if self.has_data {
            Piece::Owned
        } else {
            Piece::None
        };
        let mut name = if self.name.is_empty() {
            Piece::None
        } else {
            Piece::Owned
        };
        while pos < chunk.len() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[pos] == b'\n' {
                    pos += 1;
                    continue;
                }
            }
            let Some(i) = memchr::memchr2(b'\n', b'\r', &chunk[pos..]) else {
                self.open_line(&chunk[pos..]);
                break;
            };
            let end = pos + i;
            self.after_cr = chunk[end] == b'\r';
            if self.line_len == 0 {
                if i == 0 {
                    self.dispatch(chunk, &mut data, &mut name, end + 1, &mut f);
                } else {
                    self.line(chunk, &chunk[pos..end], Some(pos), &mut data, &mut name);
                }
            } else {
                // The line began in an earlier chunk.
                self.open_line(&chunk[pos..end]);
                let len = std::mem::take(&mut self.line_len);
                if self.oversized {
                    self.size += len + 1;
                } else {
                    let line = std::mem::take(&mut self.line);
                    self.line(chunk, &line, None, &mut data, &mut name);
                    self.line = line;
                    self.line.clear();
                }
            }
            pos = end + 1;
        }
        // Keep what the current event has so far: the chunk is gone after this call.
        if self.oversized {
            (data, name) = (Piece::None, Piece::None);
        }
        match data {
            Piece::None => self.has_data = false,
            Piece::Chunk(a, b) => {
                self.data.clear();
                self.data.extend_from_slice(&chunk[a..b]);
                self.has_data = true;
            }
            Piece::Owned => self.has_data = true,
        }
        match name {
            Piece::None => self.name.clear(),
            Piece::Chunk(a, b) => {
                self.name.clear();
                self.name.extend_from_slice(&chunk[a..b]);
            }
            Piece::Owned => {}
        }
    }

    /// Bytes of a line that has not ended yet (none of them a line end).
    fn open_line(&mut self, bytes: &[u8]) {
        self.line_len += bytes.len();
        if self.oversized {
            return;
        }
        if self.size + self.line_len > self.max_event_bytes {
            self.set_oversized();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn set_oversized(&mut self) {
        self.oversized = true;
        self.has_data = false;
        self.data.clear();
        self.name.clear();
        self.line.clear();
    }

    /// A complete, non-blank line: `offset` is its place in `chunk`, if it lies there.
    fn line(
        &mut self,
        chunk: &[u8],
        line: &[u8],
        offset: Option<usize>,
        data: &mut Piece,
        name: &mut Piece,
    ) {
        self.size += line.len() + 1;
        if !self.oversized && self.size > self.max_event_bytes {
            self.set_oversized();
        }
        if self.oversized {
            *data = Piece::None;
            *name = Piece::None;
            return;
        }
        let (field, value) = if let Some(value) = line.strip_prefix(b"data:") {
            (&b"data"[..], value)
        } else {
            match memchr::memchr(b':', line) {
                Some(0) => return, // a comment
                Some(c) => (&line[..c], &line[c + 1..]),
                None => (line, &line[line.len()..]),
            }
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // Where `value` is in `chunk`, if the line is there.
        let range = offset.map(|o| {
            let start = o + (line.len() - value.len());
            (start, start + value.len())
        });
        match field {
            b"data" => match (*data, range) {
                (Piece::None, Some((a, b))) => *data = Piece::Chunk(a, b),
                (Piece::None, None) => {
                    self.data.clear();
                    self.data.extend_from_slice(value);
                    *data = Piece::Owned;
                }
                (Piece::Chunk(a, b), _) => {
                    self.data.clear();
                    self.data.extend_from_slice(&chunk[a..b]);
                    self.data.push(b'\n');
                    self.data.extend_from_slice(value);
                    *data = Piece::Owned;
                }
                (Piece::Owned, _) => {
                    self.data.push(b'\n');
                    self.data.extend_from_slice(value);
                }
            },
            b"event" => {
                self.name.clear();
                *name = match range {
                    _ if value.is_empty() => Piece::None,
                    Some((a, b)) => Piece::Chunk(a, b),
                    None => {
                        self.name.extend_from_slice(value);
                        Piece::Owned
                    }
                };
            }
            _ => {}
        }
    }

    /// A blank line: dispatches the event, if any, and starts the next one.
    fn dispatch<F>(
        &mut self,
        chunk: &[u8],
        data: &mut Piece,
        name: &mut Piece,
        end: usize,
        f: &mut F,
    ) where
        F: FnMut(usize, Option<Event<'_>>),
    {
        let event = if self.oversized {
            Some(Event::OVERSIZED)
        } else {
            let data = match *data {
                Piece::None => None,
                Piece::Chunk(a, b) => Some(&chunk[a..b]),
                Piece::Owned => Some(&self.data[..]),
            };
            let name = match *name {
                Piece::None => None,
                Piece::Chunk(a, b) => Some(&chunk[a..b]),
                Piece::Owned => Some(&self.name[..]),
            };
            data.map(|data| Event::new(data, name))
        };
        if let Some(e) = &event {
            self.done |= e.is_done();
            self.error |= e.is_error();
        }
        f(end, event);
        *data = Piece::None;
        *name = Piece::None;
        self.data.clear();
        self.name.clear();
        self.size = 0;
        if self.oversized {
            self.oversized = false;
            // Do not keep an oversized event's memory for the rest of the stream.
            for buf in [&mut self.data, &mut self.name, &mut self.line] {
                if buf.capacity() > 64 * 1024 {
                    *buf = Vec::new();
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An event as the tests compare them: (data, name, oversized).
    type Owned = (Vec<u8>, Option<Vec<u8>>, bool);

    fn owned(e: &Event<'_>) -> Owned {
        (
            e.data().to_vec(),
            e.name().map(<[u8]>::to_vec),
            e.is_oversized(),
        )
    }

    /// The byte-at-a-time definition (WHATWG's "interpret an event stream", on bytes) that
    /// [`EventDecoder`] must agree with: every blank line is reported with its end offset in
    /// the stream and the event it dispatched.
    #[derive(Default)]
    struct Reference {
        max: usize,
        offset: usize,
        bom: Vec<u8>,
        bom_done: bool,
        after_cr: bool,
        line: Vec<u8>,
        lines: Vec<Vec<u8>>,
        out: Vec<(usize, Option<Owned>)>,
    }

    impl Reference {
        fn new(max: usize) -> Self {
            Self {
                max,
                ..Self::default()
            }
        }

        fn feed(&mut self, chunk: &[u8]) {
            for &b in chunk {
                self.offset += 1;
                if !self.bom_done {
                    self.bom.push(b);
                    if BOM.starts_with(&self.bom) {
                        if self.bom.len() == 3 {
                            self.bom_done = true;
                        }
                        continue;
                    }
                    self.bom_done = true;
                    let mut bytes = std::mem::take(&mut self.bom);
                    let last = bytes.pop().unwrap();
                    self.line.extend(bytes);
                    self.byte(last);
                    continue;
                }
                self.byte(b);
            }
        }

        fn byte(&mut self, b: u8) {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if !line.is_empty() {
                        self.lines.push(line);
                        return;
                    }
                    let lines = std::mem::take(&mut self.lines);
                    let size: usize = lines.iter().map(|l| l.len() + 1).sum();
                    let event = if size > self.max {
                        Some((Vec::new(), None, true))
                    } else {
                        let mut data: Option<Vec<u8>> = None;
                        let mut name = None;
                        for l in &lines {
                            if l[0] == b':' {
                                continue;
                            }
                            let (field, value) = match l.iter().position(|&c| c == b':') {
                                Some(c) => (&l[..c], &l[c + 1..]),
                                None => (&l[..], &b""[..]),
                            };
                            let value = value.strip_prefix(b" ").unwrap_or(value);
                            match field {
                                b"data" => match &mut data {
                                    Some(d) => {
                                        d.push(b'\n');
                                        d.extend(value);
                                    }
                                    None => data = Some(value.to_vec()),
                                },
                                b"event" => {
                                    name = (!value.is_empty()).then(|| value.to_vec());
                                }
                                _ => {}
                            }
                        }
                        data.map(|d| (d, name, false))
                    };
                    self.out.push((self.offset, event));
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
    }

    /// Decodes `parts` in order; blank lines with their offsets in the whole stream.
    fn decode(d: &mut EventDecoder, parts: &[&[u8]]) -> Vec<(usize, Option<Owned>)> {
        let mut out = Vec::new();
        let mut base = 0;
        for part in parts {
            d.feed_blocks(part, |end, e| out.push((base + end, e.as_ref().map(owned))));
            base += part.len();
        }
        out
    }

    fn events(parts: &[&[u8]]) -> Vec<Owned> {
        let mut d = EventDecoder::new();
        let mut out = Vec::new();
        for part in parts {
            d.feed(part, |e| out.push(owned(&e)));
        }
        out
    }

    fn ev(data: &str) -> Owned {
        (data.as_bytes().to_vec(), None, false)
    }

    const STREAM: &[u8] = b"\xEF\xBB\xBFdata: {\"a\":1}\r\n\r\n: a comment\r\rdata:{\"error\":1}\n\n\
        \nevent: usage\ndata: one\r\ndata:  two\ndata\nid: 7\nretry: 10\n\n\
        event: ping\n\nevent: x\nevent:\ndata:\n\ndata: a long payload that goes over the bound of sixty bytes, in one line\n\n\
        data: [DONE]\r\n\r\ndata: {";

    fn agree(stream: &[u8], max: usize) {
        let mut whole = Reference::new(max);
        whole.feed(stream);
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let mut r = Reference::new(max);
                let mut d = EventDecoder::with_max_event_bytes(max);
                let parts = [&stream[..i], &stream[i..j], &stream[j..]];
                for p in parts {
                    r.feed(p);
                }
                assert_eq!(decode(&mut d, &parts), r.out, "split {i} {j}");
                assert_eq!(r.out, whole.out, "split {i} {j}");
                let mid = !r.line.is_empty() || !r.lines.is_empty() || !r.bom_done;
                assert_eq!(d.is_mid_event(), mid, "split {i} {j}");
                assert!(d.data.len() <= max && d.line.len() <= max && d.name.len() <= max);
            }
        }
    }

    #[test]
    fn feed_agrees_with_byte_at_a_time_decoding_across_splits() {
        agree(STREAM, DEFAULT_MAX_EVENT_BYTES);
        // Small enough that some events are oversized.
        agree(STREAM, 60);
        agree(STREAM, 30);
        agree(STREAM, 14);
    }

    #[test]
    fn the_reference_decodes_the_test_stream() {
        let mut r = Reference::new(60);
        r.feed(STREAM);
        let got: Vec<Owned> = r.out.into_iter().filter_map(|(_, e)| e).collect();
        assert_eq!(
            got,
            [
                ev("{\"a\":1}"),
                ev("{\"error\":1}"),
                (b"one\n two\n".to_vec(), Some(b"usage".to_vec()), false),
                ev(""),
                (Vec::new(), None, true),
                ev("[DONE]"),
            ]
        );
    }

    #[test]
    fn bom_only_once_and_only_at_the_start() {
        assert_eq!(events(&[b"\xEF\xBB\xBFdata: x\n\n"]), [ev("x")]);
        assert_eq!(events(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]), [ev("x")]);
        // A second BOM is part of the line: an unknown field.
        assert_eq!(events(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"]), []);
        // Not a BOM: the bytes start the first line.
        assert_eq!(events(&[b"\xEF", b"data: x\n\n"]), []);
        assert_eq!(events(&[b"\xEF\xBB"]), []);
        let mut d = EventDecoder::new();
        d.feed(b"\xEF\xBB", |_| {});
        assert!(d.is_mid_event());
        assert_eq!(d.terminator(), b"\n\n");
    }

    #[test]
    fn crlf_split_between_chunks() {
        let stream: &[u8] = b"data: a\r\n\r\ndata: b\r\n\r\n";
        for i in 0..=stream.len() {
            assert_eq!(
                events(&[&stream[..i], &stream[i..]]),
                [ev("a"), ev("b")],
                "split {i}"
            );
        }
        // `\r` then `\n` in the next chunk is one line end, not two.
        assert_eq!(events(&[b"data: a\r", b"\ndata: b\n\n"]), [ev("a\nb")]);
    }

    #[test]
    fn zero_copy_within_a_chunk() {
        let chunk: &[u8] = b"data: {\"a\":1}\n\nevent: e\ndata: x\n\ndata: y\ndata: z\n\n";
        let range = chunk.as_ptr_range();
        let mut d = EventDecoder::new();
        let mut n = 0;
        d.feed(chunk, |e| {
            let inside = range.contains(&e.data().as_ptr());
            // Multi-line data is joined in the decoder's buffer.
            assert_eq!(inside, e.data() != b"y\nz", "{e:?}");
            if let Some(name) = e.name() {
                assert!(range.contains(&name.as_ptr()));
            }
            n += 1;
        });
        assert_eq!(n, 3);
        assert!(d.data.capacity() < 64);
    }

    #[test]
    fn oversized_events_are_reported_and_skipped_with_bounded_memory() {
        let max = 1000;
        let mut d = EventDecoder::with_max_event_bytes(max);
        let mut got = Vec::new();
        d.feed(b"data: ok\n\ndata: ", |e| got.push(owned(&e)));
        for _ in 0..100 {
            d.feed(&[b'x'; 997], |e| got.push(owned(&e)));
            assert!(d.line.capacity() <= 2 * max && d.data.capacity() <= 2 * max);
        }
        d.feed(b"\ndata: more\n\ndata: [DONE]\n\n", |e| got.push(owned(&e)));
        assert_eq!(got, [ev("ok"), (Vec::new(), None, true), ev("[DONE]")]);
        assert!(d.saw_done() && !d.is_mid_event());
        // At the bound exactly: kept ("data: " + 993 bytes + the line end = 1000).
        let payload = "y".repeat(993);
        let stream = format!("data: {payload}\n\n");
        let mut d = EventDecoder::with_max_event_bytes(max);
        let mut got = Vec::new();
        d.feed(stream.as_bytes(), |e| got.push(owned(&e)));
        d.feed(format!("data: {payload}y\n\n").as_bytes(), |e| {
            got.push(owned(&e))
        });
        assert_eq!(got, [ev(&payload), (Vec::new(), None, true)]);
    }

    #[test]
    fn state_at_the_end() {
        let mut d = EventDecoder::new();
        d.feed(
            b"data: {\"error\":{\"message\":\"x\"}}\n\ndata: {\"a\"",
            |_| {},
        );
        assert!(d.saw_error() && !d.saw_done());
        assert!(d.is_mid_event());
        assert_eq!(d.terminator(), b"\n\n");
        d.feed(b":1}\n", |_| {});
        assert_eq!(d.terminator(), b"\n");
        d.feed(b"\n", |_| {});
        assert_eq!(d.terminator(), b"");
        assert!(!d.is_mid_event());
    }

    #[test]
    fn event_predicates() {
        assert!(Event::new(b"[DONE]", None).is_done());
        assert!(!Event::new(b"\"[DONE]\"", None).is_done());
        assert!(Event::new(b" { \"error\": 1}", None).is_error());
        assert!(!Event::new(b"{\"choices\":[],\"error\":1}", None).is_error());
        assert!(!Event::OVERSIZED.is_done() && !Event::OVERSIZED.is_error());
    }
}

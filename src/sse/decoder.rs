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

    /// Whether the stream so far ends exactly on an event boundary, with nothing of the next
    /// event (not even a BOM or half a `\r\n`) seen: bytes that are whole events can be skipped
    /// here without changing what the decoder makes of the rest.
    pub const fn is_at_boundary(&self) -> bool {
        self.bom == 3
            && !self.after_cr
            && self.line_len == 0
            && self.size == 0
            && !self.has_data
            && !self.oversized
            && self.name.is_empty()
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
#[path = "decoder_tests.rs"]
mod tests;

//! Tests of the event decoder.

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

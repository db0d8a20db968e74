//! A quick look at a stream chunk's bytes, before (instead of) parsing it.
//!
//! Nearly every chunk of a stream carries one content delta and nothing the record needs beyond
//! "a delta was here": no usage, no finish reason. Parsing each with serde cost about as much as
//! the rest of the gateway's work on the chunk (`BENCHMARKS.md`, "Usage"), so the meter looks for
//! a few keys with `memchr`'s SIMD substring search and parses only the chunks where one of them says
//! there is more to read.
//!
//! Why byte searches are sound here: inside a JSON string every `"` is escaped, so the bytes
//! `"usage"` followed by `:` can only be a key, never text a model wrote. Letters of a key can be
//! disguised only with a `\u` escape, so a chunk holding `\u` anywhere is always parsed. Whenever
//! a look is not conclusive, the answer is [`Quick::Parse`]: a false alarm costs a parse, never a
//! wrong record. The unit tests compare both paths on chunks built to mislead the searchers.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// What the quick look found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quick {
    /// No usage, no `\\u` escapes, finish reasons only as plain strings: whether a delta
    /// carried content (text, reasoning text or tool calls).
    Delta { content: bool },
    /// Something the record needs (or something unclear): parse the chunk.
    Parse,
}

/// Whether `data` holds a `\u` escape.
fn has_unicode_escape(data: &[u8]) -> bool {
    memchr::memchr_iter(b'\\', data).any(|i| data.get(i + 1) == Some(&b'u'))
}

/// The value after the key that ends just before `at`: past whitespace, `:` and whitespace.
/// `None` when no `:` follows (the match was not a key).
fn value_after(data: &[u8], at: usize) -> Option<&[u8]> {
    data.get(at..)?
        .trim_ascii_start()
        .strip_prefix(b":")
        .map(<[u8]>::trim_ascii_start)
}

static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static FINISH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
// Ends both `"content"` and `"reasoning_content"` (the match is checked to be one of them).
static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"content\""));
static TOOL_CALLS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"tool_calls\""));

/// Where `finder`'s needle occurs in `data`, in order, without overlaps: `Finder::find_iter`'s
/// answers, without the copy of the searcher it makes for each iterator.
fn positions<'a>(data: &'a [u8], finder: &'a Finder<'a>) -> impl Iterator<Item = usize> + 'a {
    let len = finder.needle().len();
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = from + finder.find(data.get(from..)?)?;
        from = at + len;
        Some(at)
    })
}

/// The values of every occurrence of the key `finder` looks for.
fn values<'a>(data: &'a [u8], finder: &'a Finder<'a>) -> impl Iterator<Item = Option<&'a [u8]>> {
    let len = finder.needle().len();
    positions(data, finder).map(move |at| value_after(data, at + len))
}

/// Whether a value is `null`.
fn is_null(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| v.starts_with(b"null"))
}

/// Whether a value is a non-empty string.
fn is_text(value: Option<&[u8]>) -> bool {
    value
        .and_then(|v| v.strip_prefix(b"\""))
        .is_some_and(|s| !s.starts_with(b"\""))
}

/// Whether a value is a non-empty array.
fn is_items(value: Option<&[u8]>) -> bool {
    value
        .and_then(|v| v.strip_prefix(b"["))
        .is_some_and(|s| !s.trim_ascii_start().starts_with(b"]"))
}

/// Whether some `"content"` or `"reasoning_content"` key has a non-empty string.
fn some_text(data: &[u8]) -> bool {
    let len = CONTENT.needle().len();
    positions(data, &CONTENT).any(|at| {
        let before = &data[..at];
        (before.ends_with(b"\"") || before.ends_with(b"\"reasoning_"))
            && is_text(value_after(data, at + len))
    })
}

/// The text of a plain JSON string value (starting at its opening quote): no escapes, no
/// control characters, valid UTF-8. `None` for anything else (then the chunk is parsed).
fn plain_string(value: Option<&[u8]>) -> Option<&str> {
    let text = value?.strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', text)?;
    if text[end] != b'"' || text[..end].iter().any(|&b| b < 0x20) {
        return None;
    }
    std::str::from_utf8(&text[..end]).ok()
}

/// The range of `,"usage":null` (from its comma to the end of `null`, with whatever whitespace
/// is between) when it is the last member of the JSON object `data` ends with: what a chunk
/// carries when the gateway asked for usage on a client's behalf (OpenAI writes `"usage":null`
/// in every chunk but the last once `include_usage` is on), cut before the client sees it.
///
/// Sound without parsing: the last `}` of a JSON text that is an object closes that object, so
/// a member right before it is one of its own; and `,"` cannot occur inside a string (a quote
/// in one is escaped), so the comma and the key are the JSON's own.
pub(crate) fn trailing_usage_null(data: &[u8]) -> Option<std::ops::Range<usize>> {
    let inner = data.trim_ascii_end().strip_suffix(b"}")?;
    let end = inner.trim_ascii_end().len();
    let start = inner[..end]
        .strip_suffix(b"null")?
        .trim_ascii_end()
        .strip_suffix(b":")?
        .trim_ascii_end()
        .strip_suffix(b"\"usage\"")?
        .trim_ascii_end()
        .strip_suffix(b",")?
        .len();
    Some(start..end)
}

static MODEL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"model\""));

/// The chunk's `model`, when the key occurs once and its value is a [plain string](plain_string).
pub(crate) fn model(data: &[u8]) -> Option<&str> {
    let mut models = values(data, &MODEL);
    let model = plain_string(models.next()?)?;
    models.next().is_none().then_some(model)
}

/// A quick look at the JSON of one chunk: `memchr::memmem` searches (SIMD) for the keys that
/// matter. (One pass over every quote with `memchr` was measured slower: a chunk has dozens of
/// quotes and each search pays a call.)
///
/// Finish reasons written as [plain strings](plain_string) are appended to `finish_reasons`, in
/// the order they appear (the order of the choices); any other non-null one makes it
/// [`Quick::Parse`].
pub(crate) fn quick(data: &[u8], finish_reasons: &mut Vec<String>) -> Quick {
    if has_unicode_escape(data) || !values(data, &USAGE).all(is_null) {
        return Quick::Parse;
    }
    // One search: what was appended goes again if a later one is not plain.
    let before = finish_reasons.len();
    for v in values(data, &FINISH) {
        if is_null(v) {
            continue;
        }
        let Some(reason) = plain_string(v) else {
            finish_reasons.truncate(before);
            return Quick::Parse;
        };
        finish_reasons.push(reason.to_owned());
    }
    Quick::Delta {
        content: some_text(data) || values(data, &TOOL_CALLS).any(is_items),
    }
}

/// The usual frame of a stream, learnt from one: `data: ` and a chunk of one content delta, up
/// to the opening quote of its text (`prefix`), and from the closing quote to the blank line
/// (`suffix`).
///
/// Upstreams write every delta of a stream alike (the same id, creation time, model and keys in
/// the same order): only the text changes. A frame that is `prefix`, then text without `"`,
/// `\\` or control characters (so without `\n` or `\r`), then `suffix` (any number of times over)
/// is therefore the learnt chunk with other text: the same JSON but for that string, since the
/// text cannot end the string early or start a line. Its events need neither the event decoder
/// nor the [quick look](quick): one content delta each when the text is not empty. Anything
/// else (another shape, escapes, a second choice, the finish reason) misses and is decoded as
/// before.
#[derive(Debug)]
pub(crate) struct FrameTemplate {
    prefix: Box<[u8]>,
    suffix: Box<[u8]>,
    /// Where `,"usage":null` is in `suffix` ([`trailing_usage_null`]), when it is there.
    usage_null: Option<std::ops::Range<usize>>,
}

/// Where a JSON string that starts at `data[0]` (just after its opening quote) ends: the index
/// of its closing quote.
fn string_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        match b {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

impl FrameTemplate {
    /// The template of the first event of `frame`, when it is `data: ` and a chunk whose quick
    /// look is a delta with text (see [`of_delta`](Self::of_delta)), then a blank line.
    #[cfg(test)]
    pub(crate) fn learn(frame: &[u8]) -> Option<Self> {
        let end = memchr::memmem::find(frame, b"\n\n")? + 2;
        let json = frame[..end]
            .strip_prefix(b"data: ")?
            .strip_suffix(b"\n\n")?;
        if crate::sse::Event::new(json, None).is_error()
            || quick(json, &mut Vec::new()) != (Quick::Delta { content: true })
        {
            return None;
        }
        Self::of_delta(json)
    }

    /// The template of the event `data: {json}` followed by a blank line, where `json` is a
    /// chunk (not an error) whose [quick look](quick) was a delta with text: when it holds
    /// exactly one content key, no tool calls, no finish reason and no line end.
    pub(crate) fn of_delta(json: &[u8]) -> Option<Self> {
        if memchr::memchr2(b'\n', b'\r', json).is_some()
            || !values(json, &FINISH).all(is_null)
            || TOOL_CALLS.find(json).is_some()
        {
            return None;
        }
        let mut keys = positions(json, &CONTENT);
        let at = keys.next()?;
        if keys.next().is_some() {
            return None;
        }
        let before = &json[..at];
        if !(before.ends_with(b"\"") || before.ends_with(b"\"reasoning_")) {
            return None;
        }
        let value = value_after(json, at + CONTENT.needle().len())?;
        let text = value.strip_prefix(b"\"")?;
        let start = json.len() - text.len();
        let end = start + string_end(text)?;
        let mut prefix = Vec::with_capacity(6 + start);
        prefix.extend_from_slice(b"data: ");
        prefix.extend_from_slice(&json[..start]);
        let mut suffix = Vec::with_capacity(json.len() - end + 2);
        suffix.extend_from_slice(&json[end..]);
        suffix.extend_from_slice(b"\n\n");
        Some(Self {
            prefix: prefix.into(),
            usage_null: trailing_usage_null(&json[end..]),
            suffix: suffix.into(),
        })
    }

    /// The events of the template's shape at the start of `bytes`, each no longer than
    /// `max_event_bytes` (as the event decoder counts): how many bytes they take, and how many
    /// of them are content deltas (their text is not empty).
    #[cfg(test)]
    pub(crate) fn take(&self, bytes: &[u8], max_event_bytes: usize) -> (usize, u64) {
        self.take_cutting(bytes, max_event_bytes, None)
    }

    /// [`take`](Self::take); with `cuts`, the range of each taken event's `,"usage":null`
    /// (relative to `bytes`, in order) is appended to it.
    pub(crate) fn take_cutting(
        &self,
        bytes: &[u8],
        max_event_bytes: usize,
        mut cuts: Option<&mut Vec<std::ops::Range<usize>>>,
    ) -> (usize, u64) {
        let mut rest = bytes;
        let mut deltas = 0;
        while let Some(text) = rest.strip_prefix(&*self.prefix) {
            // Its end: the first `"`, `\\` or control character (eight bytes at a time).
            let Some(len) = super::answer::next_special(text) else {
                break;
            };
            let Some(after) = text[len..].strip_prefix(&*self.suffix) else {
                break;
            };
            // The event's line and its line end (the blank line is not counted).
            if self.prefix.len() + len + self.suffix.len() - 1 > max_event_bytes {
                break;
            }
            deltas += u64::from(len > 0);
            if let (Some(cuts), Some(r)) = (cuts.as_deref_mut(), &self.usage_null) {
                let at = bytes.len() - rest.len() + self.prefix.len() + len;
                cuts.push(at + r.start..at + r.end);
            }
            rest = after;
        }
        (bytes.len() - rest.len(), deltas)
    }

    /// The number of content deltas in `frame`, when every event in it has the template's
    /// shape; `None` otherwise.
    #[cfg(test)]
    pub(crate) fn deltas(&self, frame: &[u8]) -> Option<u64> {
        let (n, deltas) = self.take(frame, usize::MAX);
        (n == frame.len()).then_some(deltas)
    }
}

/// A small deterministic generator (xorshift) for the tests' generated chunks.
#[cfg(test)]
pub(crate) fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn delta(content: bool) -> Quick {
        Quick::Delta { content }
    }

    fn look(c: &[u8]) -> Quick {
        quick(c, &mut Vec::new())
    }

    #[test]
    fn positions_are_find_iters_answers() {
        let mut next = super::xorshift(0x9E37_79B9_7F4A_7C15);
        let pieces: [&[u8]; 6] = [b"content\"", b"content", b"\"", b"x", b"\"usage\"", b"t"];
        for _ in 0..2000 {
            let mut data = Vec::new();
            for _ in 0..(next() % 12) {
                data.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            for finder in [&*CONTENT, &*USAGE] {
                let got: Vec<usize> = positions(&data, finder).collect();
                let want: Vec<usize> = finder.find_iter(&data).collect();
                assert_eq!(got, want, "{}", String::from_utf8_lossy(&data));
            }
        }
    }

    #[test]
    fn plain_deltas_are_not_parsed() {
        let c = br#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(look(c), delta(true));
        let c = br#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#;
        assert_eq!(look(c), delta(true));
        let c = br#"{"choices" : [ { "delta" : { "content" : "" } , "finish_reason" : null } ] }"#;
        assert_eq!(look(c), delta(false));
        let c = br#"{"choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}"#;
        assert_eq!(look(c), delta(false));
        let c = br#"{"choices":[{"delta":{"reasoning_content":"hm","content":null}}]}"#;
        assert_eq!(look(c), delta(true));
        let c =
            br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#;
        assert_eq!(look(c), delta(true));
        let c = br#"{"choices":[{"delta":{"tool_calls":[ ]}}]}"#;
        assert_eq!(look(c), delta(false));
        // Other keys that end in "content" are not the delta's content.
        let c = br#"{"choices":[{"delta":{"my_content":"x","content":""}}]}"#;
        assert_eq!(look(c), delta(false));
    }

    #[test]
    fn usage_escapes_and_unusual_finish_reasons_are_parsed() {
        for c in [
            &br#"{"choices":[],"usage":{"prompt_tokens":1}}"#[..],
            // A key spelt with an escape.
            br#"{"choices":[],"\u0075sage":{"prompt_tokens":1}}"#,
            // Text that merely holds an escape: parsed too (never wrong, only slower).
            br#"{"choices":[{"delta":{"content":"caf\u00e9"}}]}"#,
            // Finish reasons that are not plain strings.
            br#"{"choices":[{"delta":{},"finish_reason":"st\"op"}]}"#,
            br#"{"choices":[{"delta":{},"finish_reason":7}]}"#,
            b"{\"choices\":[{\"finish_reason\":\"a\x01\"}]}",
            // Not followed by a colon: not conclusive.
            br#"["usage"]"#,
            br#"{"usage""#,
            br#"{"finish_reason""#,
        ] {
            assert_eq!(look(c), Quick::Parse, "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn plain_finish_reasons_are_read_in_choice_order() {
        for (c, reasons) in [
            (&br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#[..], &["stop"][..]),
            (br#"{"choices":[{"delta":{},"finish_reason" : "length"}]}"#, &["length"]),
            (
                br#"{"choices":[{"finish_reason":null},{"finish_reason":"stop"},{"finish_reason":"tool_calls"}]}"#,
                &["stop", "tool_calls"],
            ),
        ] {
            let mut found = Vec::new();
            assert_eq!(quick(c, &mut found), delta(false));
            assert_eq!(found, reasons);
        }
        // Nothing is appended when the chunk must be parsed.
        let mut found = Vec::new();
        let c = br#"{"choices":[{"finish_reason":"stop"},{"finish_reason":"st\u006fp"}]}"#;
        assert_eq!(quick(c, &mut found), Quick::Parse);
        assert!(found.is_empty());
    }

    #[test]
    fn the_model_is_read_when_it_is_plain_and_alone() {
        assert_eq!(
            model(br#"{"id":"x","model" : "m-1","choices":[]}"#),
            Some("m-1")
        );
        for c in [
            &br#"{"model":"m\"1"}"#[..],
            br#"{"model":null}"#,
            br#"{"model":"a","x":{"model":"b"}}"#,
            br#"{"choices":[]}"#,
            br#"{"content":"\"model\":\"fake\""}"#,
        ] {
            assert_eq!(model(c), None, "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn keys_written_by_the_model_do_not_fool_it() {
        // The model's text holds the key names, quoted as JSON text always is (escaped).
        let c = br#"{"choices":[{"delta":{"content":"\"usage\":{\"prompt_tokens\":9},\"finish_reason\":\"stop\""},"finish_reason":null}]}"#;
        assert_eq!(look(c), delta(true));
        let c =
            br#"{"choices":[{"delta":{"content":"say \"content\":\"x\""},"finish_reason":null}]}"#;
        assert_eq!(look(c), delta(true));
        // Only the escaped quotes spell "content" here: the delta's own content is empty.
        let c = br#"{"choices":[{"delta":{"content":"","refusal":"\"content\":\"x\""},"finish_reason":null}]}"#;
        assert_eq!(look(c), delta(false));
    }

    fn frame(chunk: &str) -> Vec<u8> {
        format!("data: {chunk}\n\n").into_bytes()
    }

    const LEARNT: &str = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}"#;

    fn with_text(text: &str) -> String {
        LEARNT.replace(r#""content":"Hi""#, &format!(r#""content":"{text}""#))
    }

    #[test]
    fn a_template_is_learnt_from_a_plain_delta_only() {
        assert!(FrameTemplate::learn(&frame(LEARNT)).is_some());
        for not in [
            // No text, a finish reason, usage, tool calls, two content keys, an error.
            with_text(""),
            LEARNT.replace(r#""finish_reason":null"#, r#""finish_reason":"stop""#),
            LEARNT.replace(r#""usage":null"#, r#""usage":{"prompt_tokens":1}"#),
            LEARNT.replace(r#""content":"Hi""#, r#""content":"Hi","tool_calls":[]"#),
            LEARNT.replace(
                r#""content":"Hi""#,
                r#""reasoning_content":"a","content":"Hi""#,
            ),
            r#"{"error":{"content":"x"}}"#.to_owned(),
        ] {
            assert!(FrameTemplate::learn(&frame(&not)).is_none(), "{not}");
        }
        // The first event of a frame is learnt from.
        let mut two = frame(LEARNT);
        two.extend_from_slice(b"data: [DONE]\n\n");
        let t = FrameTemplate::learn(&two).unwrap();
        assert_eq!(t.deltas(&frame(LEARNT)), Some(1));
        // Not an event written plainly.
        for f in [
            format!("data:{LEARNT}\n\n").into_bytes(),
            format!("data: {LEARNT}\r\n\r\n").into_bytes(),
            format!("event: x\ndata: {LEARNT}\n\n").into_bytes(),
            format!("data: {LEARNT}\n").into_bytes(),
        ] {
            assert!(
                FrameTemplate::learn(&f).is_none(),
                "{}",
                String::from_utf8_lossy(&f)
            );
        }
        // Escapes in the learnt text are fine: only what is around it is kept.
        let t = FrameTemplate::learn(&frame(&with_text(r#"a\"b\\"#))).unwrap();
        assert_eq!(t.deltas(&frame(&with_text("x"))), Some(1));
    }

    #[test]
    fn frames_of_the_template_are_counted_and_others_missed() {
        let t = FrameTemplate::learn(&frame(LEARNT)).unwrap();
        assert_eq!(t.deltas(&frame(&with_text("lorem "))), Some(1));
        assert_eq!(t.deltas(&frame(&with_text(""))), Some(0));
        let mut three = frame(&with_text("a"));
        three.extend_from_slice(&frame(&with_text("")));
        three.extend_from_slice(&frame(&with_text("b c")));
        assert_eq!(t.deltas(&three), Some(2));
        for f in [
            // Text that could change the shape, or the frame's framing.
            frame(&with_text(r#"a\"b"#)),
            frame(&with_text(r#"\u0022"#)),
            frame(&with_text("\"},\"finish_reason\":\"stop")),
            format!("data: {}\n\n", with_text("a\nb")).into_bytes(),
            format!("data: {}\n\n", with_text("a\rb")).into_bytes(),
            // A raw control character (not valid JSON text): left to the decoder.
            format!("data: {}\n\n", with_text("a\tb")).into_bytes(),
            // Another shape, or an event cut by the end of the frame.
            frame(&LEARNT.replace(r#""finish_reason":null"#, r#""finish_reason":"stop""#)),
            frame(&LEARNT.replace(r#""model":"m""#, r#""model":"n""#)),
            frame(LEARNT)[..20].to_vec(),
            frame(LEARNT)[..frame(LEARNT).len() - 1].to_vec(),
            b"data: [DONE]\n\n".to_vec(),
        ] {
            assert_eq!(t.deltas(&f), None, "{}", String::from_utf8_lossy(&f));
        }
        // A frame of the template followed by anything else misses as a whole.
        let mut mixed = frame(&with_text("a"));
        mixed.extend_from_slice(b"data: [DONE]\n\n");
        assert_eq!(t.deltas(&mixed), None);
    }

    #[test]
    fn a_trailing_usage_null_is_found_only_as_the_last_member() {
        let cut = |data: &str| {
            trailing_usage_null(data.as_bytes())
                .map(|r| format!("{}{}", &data[..r.start], &data[r.end..]))
        };
        assert_eq!(
            cut(r#"{"choices":[{"delta":{"content":"a"}}],"usage":null}"#).as_deref(),
            Some(r#"{"choices":[{"delta":{"content":"a"}}]}"#)
        );
        // Python's separators, and whitespace anywhere JSON allows it.
        assert_eq!(
            cut("{\"choices\": [], \"usage\" :\tnull }\r\n").as_deref(),
            Some("{\"choices\": [] }\r\n")
        );
        for kept in [
            r#"{"usage":null}"#,
            r#"{"choices":[],"usage":{"total_tokens":1}}"#,
            r#"{"usage":null,"choices":[]}"#,
            r#"{"choices":[{"delta":{"content":"a","usage":null}}]}"#,
            r#"{"choices":[],"usage":nullx}"#,
            r#"{"choices":[],"my_usage":null}"#,
            r#"{"choices":["usage",null]}"#,
            r#"{"choices":[],"usage":null]"#,
            "",
            "}",
        ] {
            assert_eq!(cut(kept), None, "{kept}");
        }
    }

    #[test]
    fn the_template_says_where_each_taken_event_has_its_usage_null() {
        let t = FrameTemplate::learn(&frame(LEARNT)).unwrap();
        let mut three = frame(&with_text("a"));
        three.extend_from_slice(&frame(&with_text("")));
        three.extend_from_slice(&frame(&with_text("b c")));
        let mut cuts = Vec::new();
        assert_eq!(
            t.take_cutting(&three, usize::MAX, Some(&mut cuts)),
            (three.len(), 2)
        );
        assert_eq!(cuts.len(), 3);
        let mut kept = Vec::new();
        let mut at = 0;
        for r in cuts {
            assert_eq!(&three[r.clone()], br#","usage":null"#);
            kept.extend_from_slice(&three[at..r.start]);
            at = r.end;
        }
        kept.extend_from_slice(&three[at..]);
        let plain = |text: &str| frame(&with_text(text).replace(r#","usage":null"#, ""));
        assert_eq!(kept, [plain("a"), plain(""), plain("b c")].concat());
        // A stream without it: nothing to cut.
        let t = FrameTemplate::learn(&plain("x")).unwrap();
        let mut cuts = Vec::new();
        assert_eq!(
            t.take_cutting(&plain("y"), usize::MAX, Some(&mut cuts)).1,
            1
        );
        assert!(cuts.is_empty());
    }

    #[test]
    fn what_the_template_counts_is_what_decoding_and_parsing_find() {
        use crate::sse::EventDecoder;
        use crate::usage::draft::Observed;
        let mut next = super::xorshift(0x2545_F491_4F6C_DD1D);
        let pieces = [
            "a",
            " b",
            "\"",
            "\\",
            "\n",
            "\r",
            "\u{1}",
            "é",
            "\"},\"finish_reason\":\"stop",
            "\"usage\":{",
            "content\"",
            "[DONE]",
        ];
        let t = FrameTemplate::learn(&frame(LEARNT)).unwrap();
        let first = frame(LEARNT);
        let mut hits = 0;
        for _ in 0..3000 {
            let mut f = Vec::new();
            for _ in 0..=(next() % 3) {
                let mut text = String::new();
                for _ in 0..(next() % 4) {
                    text.push_str(pieces[(next() % pieces.len() as u64) as usize]);
                }
                // The text as JSON writes it, in the learnt chunk.
                let json = serde_json::to_string(&text).unwrap();
                let chunk = LEARNT.replace(r#""Hi""#, &json);
                f.extend_from_slice(&frame(&chunk));
            }
            let Some(n) = t.deltas(&f) else { continue };
            hits += 1;
            // Decoded and parsed whole, after a first chunk that gives the model.
            let mut o = Observed::default();
            let mut d = EventDecoder::new();
            d.feed(&first, |e| {
                o.event(&e);
            });
            let before = o.deltas;
            d.feed(&f, |e| {
                assert!(!e.is_done() && !e.is_error());
                o.event(&e);
            });
            assert!(d.is_at_boundary());
            assert_eq!(o.deltas - before, n, "{}", String::from_utf8_lossy(&f));
            assert!(o.finish_reasons.is_empty() && o.usage.is_none());
        }
        assert!(hits > 500, "only {hits} frames had the template's shape");
    }
}

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
    /// No usage, no finish reason, no escapes: only whether a delta carried content (text,
    /// reasoning text or tool calls).
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

/// The values of every occurrence of the key `finder` looks for.
fn values<'a>(data: &'a [u8], finder: &'a Finder<'a>) -> impl Iterator<Item = Option<&'a [u8]>> {
    let len = finder.needle().len();
    finder
        .find_iter(data)
        .map(move |at| value_after(data, at + len))
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
    CONTENT.find_iter(data).any(|at| {
        let before = &data[..at];
        (before.ends_with(b"\"") || before.ends_with(b"\"reasoning_"))
            && is_text(value_after(data, at + len))
    })
}

/// A quick look at the JSON of one chunk: four `memchr::memmem` searches (SIMD) for the keys that
/// matter. (One pass over every quote with `memchr` was measured slower: a chunk has dozens of
/// quotes and each search pays a call.)
pub(crate) fn quick(data: &[u8]) -> Quick {
    if has_unicode_escape(data)
        || !values(data, &USAGE).all(is_null)
        || !values(data, &FINISH).all(is_null)
    {
        return Quick::Parse;
    }
    Quick::Delta {
        content: some_text(data) || values(data, &TOOL_CALLS).any(is_items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(content: bool) -> Quick {
        Quick::Delta { content }
    }

    #[test]
    fn plain_deltas_are_not_parsed() {
        let c = br#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(quick(c), delta(true));
        let c = br#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#;
        assert_eq!(quick(c), delta(true));
        let c = br#"{"choices" : [ { "delta" : { "content" : "" } , "finish_reason" : null } ] }"#;
        assert_eq!(quick(c), delta(false));
        let c = br#"{"choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}"#;
        assert_eq!(quick(c), delta(false));
        let c = br#"{"choices":[{"delta":{"reasoning_content":"hm","content":null}}]}"#;
        assert_eq!(quick(c), delta(true));
        let c =
            br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#;
        assert_eq!(quick(c), delta(true));
        let c = br#"{"choices":[{"delta":{"tool_calls":[ ]}}]}"#;
        assert_eq!(quick(c), delta(false));
        // Other keys that end in "content" are not the delta's content.
        let c = br#"{"choices":[{"delta":{"my_content":"x","content":""}}]}"#;
        assert_eq!(quick(c), delta(false));
    }

    #[test]
    fn usage_finish_reasons_and_escapes_are_parsed() {
        for c in [
            &br#"{"choices":[],"usage":{"prompt_tokens":1}}"#[..],
            br#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            br#"{"choices":[{"delta":{},"finish_reason" : "length"}]}"#,
            // A second choice's finish reason.
            br#"{"choices":[{"finish_reason":null},{"finish_reason":"stop"}]}"#,
            // A key spelt with an escape.
            br#"{"choices":[],"\u0075sage":{"prompt_tokens":1}}"#,
            // Text that merely holds an escape: parsed too (never wrong, only slower).
            br#"{"choices":[{"delta":{"content":"caf\u00e9"}}]}"#,
            // Not followed by a colon: not conclusive.
            br#"["usage"]"#,
            br#"{"usage""#,
        ] {
            assert_eq!(quick(c), Quick::Parse, "{}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn keys_written_by_the_model_do_not_fool_it() {
        // The model's text holds the key names, quoted as JSON text always is (escaped).
        let c = br#"{"choices":[{"delta":{"content":"\"usage\":{\"prompt_tokens\":9},\"finish_reason\":\"stop\""},"finish_reason":null}]}"#;
        assert_eq!(quick(c), delta(true));
        let c =
            br#"{"choices":[{"delta":{"content":"say \"content\":\"x\""},"finish_reason":null}]}"#;
        assert_eq!(quick(c), delta(true));
        // Only the escaped quotes spell "content" here: the delta's own content is empty.
        let c = br#"{"choices":[{"delta":{"content":"","refusal":"\"content\":\"x\""},"finish_reason":null}]}"#;
        assert_eq!(quick(c), delta(false));
    }
}

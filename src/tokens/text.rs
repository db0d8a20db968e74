//! Counting one text: exact up to a cap, sampled beyond it, estimated for unknown families.

use bpe_openai::Tokenizer;

use super::Family;

/// Texts up to this many bytes are counted exactly.
pub const EXACT_LIMIT: usize = 32 * 1024;

/// A longer text is counted exactly on this many windows, spread over it …
const WINDOWS: usize = 4;
/// … of this many bytes each (so at most [`EXACT_LIMIT`] bytes are tokenized per text).
const WINDOW: usize = EXACT_LIMIT / WINDOWS;

fn tokenizer(family: Family) -> Option<&'static Tokenizer> {
    match family {
        // Both are `LazyLock` statics of bpe-openai: loaded once per process, then shared
        // (`Tokenizer` is `Sync`; counting takes `&self`).
        Family::O200k => Some(bpe_openai::o200k_base()),
        Family::Cl100k => Some(bpe_openai::cl100k_base()),
        Family::Unknown => None,
    }
}

/// Loads the vocabulary of `family` now instead of on first use.
///
/// The vocabularies are embedded in the binary and deserialized once per process on first use:
/// about 60–150 ms for o200k and 25–55 ms for cl100k on the project's machine. Call this at
/// startup so that no request pays it. [`Family::Unknown`] has nothing to load.
pub fn preload(family: Family) {
    if let Some(t) = tokenizer(family) {
        let _ = t.count("");
    }
}

/// Number of tokens of `text` for `family`, as an estimate of what the upstream will count.
///
/// * [`Family::O200k`], [`Family::Cl100k`]: the real tokenizer (`bpe-openai`, the same encoding
///   as OpenAI's `tiktoken`, without special tokens: `<|endoftext|>` in a text counts as the
///   ordinary text it is). Texts up to [`EXACT_LIMIT`] bytes (32 KiB) are counted **exactly**.
///   A longer text is counted exactly on 4 windows of 8 KiB (its head, tail and two evenly
///   spaced windows between), and the tokens-per-byte of the windows is applied to the whole
///   length. This bounds the work per text to 32 KiB of tokenization, whatever its size or
///   content: a 4 MiB run of one character costs well under a millisecond, the worst input
///   measured (random letters without spaces, ~2 bytes per token) a few milliseconds
///   (`BENCHMARKS.md`, "Tokenizer"). The sampled estimate is within a few percent on
///   homogeneous text, and coarser on a text whose parts differ (a long prose message with a
///   pasted blob in a part no window sees).
/// * [`Family::Unknown`]: no tokenizer; the estimate is
///   `ceil(ascii_bytes / 4) + non_ascii_chars`: four ASCII bytes per token, and one token per
///   non-ASCII character (CJK text is about one token per character; accented Latin letters
///   are over-counted). Measured against o200k (unit test `unknown_estimate_error`): −2.3% on
///   40 KB of English technical prose, −3.2% on 31 KB of Rust, −6.2% on 4 KB of Python; i.e.
///   it reads slightly low on English and code. Unknown models have other vocabularies
///   anyway (Llama, Claude, Gemini), so treat it as a ±25% figure.
///
/// ```
/// use chatgate::tokens::{count_text, Family};
/// assert_eq!(count_text(Family::O200k, "hello world"), 2);
/// assert_eq!(count_text(Family::Unknown, "hello world"), 3);
/// ```
pub fn count_text(family: Family, text: &str) -> u64 {
    match tokenizer(family) {
        Some(t) => count_bounded(t, text),
        None => estimate(text),
    }
}

/// Exact up to [`EXACT_LIMIT`], sampled beyond.
fn count_bounded(t: &Tokenizer, text: &str) -> u64 {
    if text.len() <= EXACT_LIMIT {
        return t.count(text) as u64;
    }
    let len = text.len();
    let (mut tokens, mut bytes) = (0u64, 0u64);
    for i in 0..WINDOWS {
        // Starts at 0, (len - WINDOW) / 3, 2 (len - WINDOW) / 3, len - WINDOW.
        let start = floor_char_boundary(text, (len - WINDOW) * i / (WINDOWS - 1));
        let end = floor_char_boundary(text, start + WINDOW);
        let w = &text[start..end];
        tokens += t.count(w) as u64;
        bytes += w.len() as u64;
    }
    // tokens / bytes, applied to the whole length; `bytes` ≥ WINDOW·WINDOWS − 3·WINDOWS > 0.
    (tokens * len as u64).div_ceil(bytes.max(1))
}

/// The largest char boundary ≤ `i` (`str::floor_char_boundary`, stable-Rust version).
fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The [`Family::Unknown`] estimate: `ceil(ascii_bytes / 4) + non_ascii_chars`.
fn estimate(text: &str) -> u64 {
    let ascii = text.bytes().filter(u8::is_ascii).count() as u64;
    // Every non-ASCII char has exactly one leading byte that is not a continuation byte.
    let non_ascii = text
        .bytes()
        .filter(|b| !b.is_ascii() && (b & 0xC0) != 0x80)
        .count() as u64;
    ascii.div_ceil(4) + non_ascii
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// 40 KB of English prose (with some markdown): this repository's contract and README.
    pub(in crate::tokens) fn english() -> String {
        [
            include_str!("../../docs/contract.md"),
            include_str!("../../README.md"),
        ]
        .concat()
    }

    /// The first `n` bytes of `s`, cut at a char boundary.
    pub(in crate::tokens) fn prefix(s: &str, n: usize) -> &str {
        &s[..floor_char_boundary(s, n)]
    }

    fn exact(family: Family, text: &str) -> u64 {
        tokenizer(family).expect("a tokenizer").count(text) as u64
    }

    #[test]
    fn known_counts() {
        // Verified literals (tiktoken gives the same).
        for f in [Family::O200k, Family::Cl100k] {
            assert_eq!(count_text(f, ""), 0);
            assert_eq!(count_text(f, "hello world"), 2);
            assert_eq!(count_text(f, "Hello, world!"), 4);
        }
        // tiktoken's README example.
        assert_eq!(count_text(Family::Cl100k, "tiktoken is great!"), 6);
        // Special tokens are plain text.
        assert!(count_text(Family::O200k, "<|endoftext|>") > 1);
    }

    #[test]
    fn short_texts_are_exact() {
        let english = english();
        let code = include_str!("../json/mod.rs");
        for f in [Family::O200k, Family::Cl100k] {
            for text in [
                prefix(&english, EXACT_LIMIT),
                prefix(code, 20_000),
                "émoji 😀 中文",
            ] {
                assert_eq!(count_text(f, text), exact(f, text));
            }
        }
    }

    #[test]
    fn long_texts_are_sampled_within_a_few_percent() {
        let english = english();
        assert!(english.len() > EXACT_LIMIT);
        let code = [
            include_str!("../json/mod.rs"),
            include_str!("../contract/request.rs"),
        ]
        .concat();
        assert!(code.len() > EXACT_LIMIT);
        for (f, text) in [Family::O200k, Family::Cl100k]
            .into_iter()
            .flat_map(|f| [(f, english.as_str()), (f, code.as_str())])
        {
            let (got, want) = (count_text(f, text), exact(f, text));
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err < 0.05, "{f}: sampled {got}, exact {want}");
        }
    }

    #[test]
    fn hostile_inputs_finish_with_plausible_counts() {
        const N: usize = 4 << 20;
        let run = "a".repeat(N);
        let spaces = " ".repeat(N);
        let emoji = "😀".repeat(N / 4);
        let mut seed = 7u64;
        let random: String = (0..N)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (b'a' + ((seed >> 33) % 26) as u8) as char
            })
            .collect();
        for f in [Family::O200k, Family::Cl100k] {
            // tiktoken-rs panics on this one (regex backtracking stack overflow); bpe-openai's
            // automaton counts it whole.
            let n = exact(f, &spaces[..1 << 20]);
            assert!((1..=(1 << 20) / 8).contains(&n), "{f}: {n}");
            // One token per 8 'a's in both vocabularies.
            let n = count_text(f, &run);
            assert!((N as u64 / 9..=N as u64 / 7).contains(&n), "{f}: {n}");
            // Long space runs merge into long space tokens.
            let n = count_text(f, &spaces);
            assert!((1..=N as u64 / 8).contains(&n), "{f}: {n}");
            // An emoji is 1 or 2 tokens.
            let n = count_text(f, &emoji);
            assert!((N as u64 / 4..=N as u64 / 2).contains(&n), "{f}: {n}");
            // Random letters: roughly 2 bytes per token.
            let n = count_text(f, &random);
            assert!((N as u64 / 3..=N as u64).contains(&n), "{f}: {n}");
        }
    }

    #[test]
    fn unknown_estimate() {
        assert_eq!(count_text(Family::Unknown, ""), 0);
        assert_eq!(count_text(Family::Unknown, "abcd"), 1);
        assert_eq!(count_text(Family::Unknown, "abcde"), 2);
        assert_eq!(count_text(Family::Unknown, "中文"), 2);
        assert_eq!(count_text(Family::Unknown, "é😀ab"), 3);
    }

    /// The Unknown estimate against o200k on this repository's own prose and code
    /// (`cargo test --lib tokens -- --nocapture` prints the figures quoted in BENCHMARKS.md).
    #[test]
    fn unknown_estimate_error() {
        for (name, text) in [
            ("english (docs/contract.md + README.md)", english().as_str()),
            ("rust (src/json/mod.rs)", include_str!("../json/mod.rs")),
            (
                "python (tests/conformance)",
                include_str!("../../tests/conformance/openai_client.py"),
            ),
        ] {
            let (est, real) = (estimate(text), exact(Family::O200k, text));
            let err = (est as f64 - real as f64) / real as f64;
            println!(
                "{name}: estimate {est}, o200k {real}, error {:+.1}%",
                err * 100.0
            );
            assert!(err.abs() < 0.25, "{name}: {err}");
        }
    }
}

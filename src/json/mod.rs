//! A zero-copy JSON reader that keeps what the validator needs and `serde_json` does not give.
//!
//! The validator must answer like Python's `json` module answers FastAPI: the error offset is a
//! *character* offset, the messages are Python's (`Expecting value`, `Expecting ',' delimiter`…),
//! duplicate object keys are an error at the second key, nesting is capped, and `NaN` / `Infinity`
//! are rejected. It also needs the byte span of every value, so that a coerced value can be patched
//! into the original body instead of re-serializing it. `serde_json` reports line/column and its own
//! messages, keeps the last duplicate silently and allocates every key, so chatgate reads the bytes
//! once into a flat arena of [`Node`]s (no allocation per key or string) and builds typed values
//! from that.

use std::borrow::Cow;
use std::hash::{BuildHasher, RandomState};

/// Objects up to this many keys are checked for duplicates pairwise; larger ones by hash.
const PAIRWISE_KEYS: usize = 16;

/// What a [`Node`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    /// A number; the text is the span.
    Number,
    /// A string; the span includes the quotes. `true` when it contains a backslash escape.
    String(bool),
    Array,
    Object,
}

/// One value in the arena. Containers are followed by their children (for objects: key node,
/// value node, key node, …); `next` is the index just past the whole subtree.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) next: u32,
}

/// A parsed document: the source text and the arena. Node 0 is the root.
#[derive(Debug)]
pub(crate) struct Doc<'a> {
    pub(crate) src: &'a str,
    pub(crate) nodes: Vec<Node>,
    /// The decoded text of every string that had escapes, back to back.
    decoded: String,
    /// `(node, start, end)` into `decoded`, in node order.
    spans: Vec<(u32, u32, u32)>,
}

/// Why the bytes are not acceptable JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// Python's message, without the `: line … column …` suffix.
    pub(crate) msg: Cow<'static, str>,
    /// Character (not byte) offset into the text, as Python reports it.
    pub(crate) char_offset: usize,
}

/// Reads `src` into a [`Doc`]; `max_depth` caps array/object nesting.
pub(crate) fn parse(src: &str, max_depth: usize) -> Result<Doc<'_>, SyntaxError> {
    let mut p = Parser {
        src,
        b: src.as_bytes(),
        pos: 0,
        // Typical requests hold a node per ~40 bytes; long texts far fewer. Grows as needed.
        nodes: Vec::with_capacity((src.len() / 40).clamp(16, 1024)),
        max_depth,
        decoded: String::new(),
        spans: Vec::new(),
    };
    p.ws();
    match p.value(0) {
        Ok(()) => {}
        Err(e) => return Err(e.into_syntax(src)),
    }
    p.ws();
    if p.pos != p.b.len() {
        return Err(Fail::at("Extra data", p.pos).into_syntax(src));
    }
    Ok(Doc {
        src,
        nodes: p.nodes,
        decoded: p.decoded,
        spans: p.spans,
    })
}

struct Fail {
    msg: Cow<'static, str>,
    byte: usize,
}

impl Fail {
    fn at(msg: &'static str, byte: usize) -> Self {
        Self {
            msg: Cow::Borrowed(msg),
            byte,
        }
    }
    fn into_syntax(self, src: &str) -> SyntaxError {
        let byte = self.byte.min(src.len());
        // The offset always lies on a char boundary: errors are raised at ASCII bytes or at the
        // start of a character.
        let char_offset = src
            .get(..byte)
            .map_or(byte, |prefix| prefix.chars().count());
        SyntaxError {
            msg: self.msg,
            char_offset,
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    max_depth: usize,
    decoded: String,
    spans: Vec<(u32, u32, u32)>,
}

impl Parser<'_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn push(&mut self, kind: Kind, start: usize) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Node {
            kind,
            start: start as u32,
            end: start as u32,
            next: i as u32 + 1,
        });
        i
    }

    fn value(&mut self, depth: usize) -> Result<(), Fail> {
        let start = self.pos;
        match self.b.get(self.pos) {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                let escaped = self.string()?;
                let i = self.push(Kind::String(escaped), start);
                self.nodes[i].end = self.pos as u32;
                Ok(())
            }
            Some(b'n') if self.b[self.pos..].starts_with(b"null") => self.lit(Kind::Null, 4),
            Some(b't') if self.b[self.pos..].starts_with(b"true") => self.lit(Kind::Bool(true), 4),
            Some(b'f') if self.b[self.pos..].starts_with(b"false") => {
                self.lit(Kind::Bool(false), 5)
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Fail::at("Expecting value", self.pos)),
        }
    }

    fn lit(&mut self, kind: Kind, len: usize) -> Result<(), Fail> {
        let i = self.push(kind, self.pos);
        self.pos += len;
        self.nodes[i].end = self.pos as u32;
        Ok(())
    }

    fn number(&mut self) -> Result<(), Fail> {
        // Python's NUMBER_RE: -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?; a part that does not match
        // ends the number and the next byte is judged by the caller.
        let start = self.pos;
        let b = self.b;
        let mut p = self.pos;
        if b[p] == b'-' {
            p += 1;
        }
        match b.get(p) {
            Some(b'0') => p += 1,
            Some(b'1'..=b'9') => {
                while matches!(b.get(p), Some(b'0'..=b'9')) {
                    p += 1;
                }
            }
            // "-" alone, or "-Infinity": not a value.
            _ => return Err(Fail::at("Expecting value", start)),
        }
        if b.get(p) == Some(&b'.') && matches!(b.get(p + 1), Some(b'0'..=b'9')) {
            p += 2;
            while matches!(b.get(p), Some(b'0'..=b'9')) {
                p += 1;
            }
        }
        if matches!(b.get(p), Some(b'e' | b'E')) {
            let mut q = p + 1;
            if matches!(b.get(q), Some(b'+' | b'-')) {
                q += 1;
            }
            if matches!(b.get(q), Some(b'0'..=b'9')) {
                while matches!(b.get(q), Some(b'0'..=b'9')) {
                    q += 1;
                }
                p = q;
            }
        }
        self.pos = p;
        let i = self.push(Kind::Number, start);
        self.nodes[i].end = p as u32;
        Ok(())
    }

    /// Scans a string starting at the opening quote; returns whether it had escapes. A string
    /// with escapes is decoded in the same pass, into `decoded`, for the node pushed next.
    fn string(&mut self) -> Result<bool, Fail> {
        let begin = self.pos;
        let b = self.b;
        let mut p = skip_plain(b, self.pos + 1);
        if b.get(p) == Some(&b'"') {
            self.pos = p + 1;
            return Ok(false);
        }
        if self.decoded.capacity() == 0 {
            // Decoded text is never longer than the source left, so this is the only allocation.
            self.decoded.reserve(b.len() - begin);
        }
        let dec_start = self.decoded.len();
        let mut run = self.pos + 1;
        loop {
            match b.get(p) {
                None => return Err(Fail::at("Unterminated string starting at", begin)),
                Some(b'"') => {
                    self.decoded.push_str(&self.src[run..p]);
                    self.pos = p + 1;
                    let node = self.nodes.len() as u32;
                    self.spans
                        .push((node, dec_start as u32, self.decoded.len() as u32));
                    return Ok(true);
                }
                Some(b'\\') => {
                    self.decoded.push_str(&self.src[run..p]);
                    p = self.escape(begin, p)?;
                    run = p;
                }
                Some(_) => return Err(Fail::at("Invalid control character at", p)),
            }
            p = skip_plain(b, p);
        }
    }

    /// Decodes the escape at `p` (a backslash) into `decoded`; returns the index after it.
    fn escape(&mut self, begin: usize, p: usize) -> Result<usize, Fail> {
        let b = self.b;
        let out = &mut self.decoded;
        let simple = |c: char, out: &mut String| {
            out.push(c);
            Ok(p + 2)
        };
        match b.get(p + 1) {
            Some(b'"') => simple('"', out),
            Some(b'\\') => simple('\\', out),
            Some(b'/') => simple('/', out),
            Some(b'b') => simple('\u{8}', out),
            Some(b'f') => simple('\u{c}', out),
            Some(b'n') => simple('\n', out),
            Some(b'r') => simple('\r', out),
            Some(b't') => simple('\t', out),
            Some(b'u') => {
                let hex = |at: usize| {
                    b.get(at..at + 4)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                        .and_then(|h| u16::from_str_radix(str_of(h, 0, 4), 16).ok())
                };
                let Some(hi) = hex(p + 2) else {
                    return Err(Fail::at("Invalid \\uXXXX escape", p + 1));
                };
                let mut next = p + 6;
                if (0xD800..0xDC00).contains(&hi)
                    && b.get(next) == Some(&b'\\')
                    && b.get(next + 1) == Some(&b'u')
                    && let Some(lo) = hex(next + 2)
                    && (0xDC00..0xE000).contains(&lo)
                {
                    next += 6;
                    let cp = 0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                } else {
                    // A lone surrogate, which Python accepts, becomes U+FFFD.
                    out.push(char::from_u32(u32::from(hi)).unwrap_or('\u{FFFD}'));
                }
                Ok(next)
            }
            None => Err(Fail::at("Unterminated string starting at", begin)),
            Some(_) => {
                let esc: String = self.text_at(p + 1).chars().take(1).collect();
                Err(Fail {
                    msg: Cow::Owned(format!("Invalid \\escape: {esc:?}")),
                    byte: p,
                })
            }
        }
    }

    fn text_at(&self, p: usize) -> &str {
        std::str::from_utf8(&self.b[p..]).unwrap_or("")
    }

    fn too_deep(&self, depth: usize) -> Result<(), Fail> {
        if depth > self.max_depth {
            return Err(Fail {
                msg: Cow::Owned(format!(
                    "Maximum nesting depth of {} exceeded",
                    self.max_depth
                )),
                byte: self.pos,
            });
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<(), Fail> {
        self.too_deep(depth)?;
        let i = self.push(Kind::Array, self.pos);
        self.pos += 1;
        self.ws();
        if self.b.get(self.pos) == Some(&b']') {
            self.pos += 1;
        } else {
            loop {
                self.value(depth)?;
                self.ws();
                match self.b.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        self.ws();
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Fail::at("Expecting ',' delimiter", self.pos)),
                }
            }
        }
        self.nodes[i].end = self.pos as u32;
        self.nodes[i].next = self.nodes.len() as u32;
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<(), Fail> {
        self.too_deep(depth)?;
        let i = self.push(Kind::Object, self.pos);
        self.pos += 1;
        self.ws();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
        } else {
            // Duplicate keys: compared pairwise while the object is small; past that, by hash
            // (pairwise only on a hash match), so a huge object costs linear time, not quadratic.
            let mut keys = 0usize;
            let mut hashes: Option<(std::collections::HashSet<u64>, RandomState)> = None;
            loop {
                if self.b.get(self.pos) != Some(&b'"') {
                    return Err(Fail::at(
                        "Expecting property name enclosed in double quotes",
                        self.pos,
                    ));
                }
                let key_start = self.pos;
                let escaped = self.string()?;
                let k = self.push(Kind::String(escaped), key_start);
                self.nodes[k].end = self.pos as u32;
                keys += 1;
                if keys <= PAIRWISE_KEYS {
                    self.check_duplicate(i, k)?;
                } else {
                    let (set, state) = hashes.get_or_insert_with(|| {
                        let state = RandomState::new();
                        let mut set = std::collections::HashSet::with_capacity(64);
                        let mut j = i + 1;
                        while j < k {
                            set.insert(state.hash_one(self.key_text(j)));
                            j = self.nodes[j + 1].next as usize;
                        }
                        (set, state)
                    });
                    if !set.insert(state.hash_one(self.key_text(k))) {
                        self.check_duplicate(i, k)?;
                    }
                }
                self.ws();
                if self.b.get(self.pos) != Some(&b':') {
                    return Err(Fail::at("Expecting ':' delimiter", self.pos));
                }
                self.pos += 1;
                self.ws();
                self.value(depth)?;
                self.ws();
                match self.b.get(self.pos) {
                    Some(b',') => {
                        self.pos += 1;
                        self.ws();
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Fail::at("Expecting ',' delimiter", self.pos)),
                }
            }
        }
        self.nodes[i].end = self.pos as u32;
        self.nodes[i].next = self.nodes.len() as u32;
        Ok(())
    }

    /// The decoded text of key node `k` (escaped keys were decoded by [`Self::string`]).
    fn key_text(&self, k: usize) -> &str {
        let n = self.nodes[k];
        match n.kind {
            Kind::String(true) => {
                match self
                    .spans
                    .binary_search_by_key(&(k as u32), |&(node, _, _)| node)
                {
                    Ok(at) => {
                        let (_, start, end) = self.spans[at];
                        &self.decoded[start as usize..end as usize]
                    }
                    Err(_) => str_of(self.b, n.start as usize + 1, n.end as usize - 1),
                }
            }
            _ => str_of(self.b, n.start as usize + 1, n.end as usize - 1),
        }
    }

    /// Compares key `k` with the earlier keys of object `obj` (decoded, so `"a"` and `"\u0061"`
    /// are the same key).
    fn check_duplicate(&self, obj: usize, k: usize) -> Result<(), Fail> {
        let key = self.nodes[k];
        let raw = &self.b[key.start as usize..key.end as usize];
        let mut j = obj + 1;
        while j < k {
            let other = self.nodes[j];
            let same = match (key.kind, other.kind) {
                (Kind::String(false), Kind::String(false)) => {
                    raw == &self.b[other.start as usize..other.end as usize]
                }
                _ => {
                    let s = |n: Node| {
                        unescape(str_of(self.b, n.start as usize + 1, n.end as usize - 1))
                    };
                    s(key) == s(other)
                }
            };
            if same {
                let name = unescape(str_of(self.b, key.start as usize + 1, key.end as usize - 1));
                return Err(Fail {
                    msg: Cow::Owned(format!("Duplicate object key {name:?}")),
                    byte: key.start as usize,
                });
            }
            // Skip the value that follows key j.
            j = self.nodes[j + 1].next as usize;
        }
        Ok(())
    }
}

/// Index of the first byte at or after `p` that is `"`, `\\` or a control character (or the
/// end). Sixteen bytes per step as two SWAR words (no `unsafe`, no platform intrinsics): the
/// tests may flag a byte falsely only after a true hit, and the byte loop settles it. Inline and
/// branch-light, it beats a SIMD `memchr2` call per escape on text whose escapes are dense.
#[inline]
fn skip_plain(b: &[u8], mut p: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn special(w: u64) -> u64 {
        let quote = w ^ (ONES * u64::from(b'"'));
        let slash = w ^ (ONES * u64::from(b'\\'));
        ((quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGH
    }
    while let Some(chunk) = b.get(p..p + 16) {
        let (lo, hi) = chunk.split_at(8);
        let lo = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        let hi = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
        if special(lo) | special(hi) != 0 {
            break;
        }
        p += 16;
    }
    while let Some(&c) = b.get(p) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        p += 1;
    }
    p
}

fn str_of(b: &[u8], start: usize, end: usize) -> &str {
    std::str::from_utf8(&b[start..end]).unwrap_or("")
}

/// Decodes the inside of a JSON string (between the quotes) that the parser accepted. A lone
/// surrogate escape, which Python accepts, becomes U+FFFD.
pub(crate) fn unescape(inner: &str) -> Cow<'_, str> {
    let bytes = inner.as_bytes();
    // Inside an accepted string the only special byte left is the backslash.
    let first = skip_plain(bytes, 0);
    if first == bytes.len() {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut at = 0;
    let mut esc = first;
    loop {
        // Plain text up to the backslash at `esc`.
        out.push_str(&inner[at..esc]);
        let Some(&e) = bytes.get(esc + 1) else { break };
        at = esc + 2;
        match e {
            b'n' => out.push('\n'),
            b't' => out.push('\t'),
            b'r' => out.push('\r'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'u' => {
                let hex = |from: usize| {
                    inner
                        .get(from..from + 4)
                        .and_then(|h| u16::from_str_radix(h, 16).ok())
                };
                let Some(hi) = hex(esc + 2) else { break };
                at = esc + 6;
                if (0xD800..0xDC00).contains(&hi)
                    && bytes.get(at) == Some(&b'\\')
                    && bytes.get(at + 1) == Some(&b'u')
                    && let Some(lo) = hex(at + 2)
                    && (0xDC00..0xE000).contains(&lo)
                {
                    at += 6;
                    let cp = 0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                    out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                } else {
                    out.push(char::from_u32(u32::from(hi)).unwrap_or('\u{FFFD}'));
                }
            }
            // `"`, `\\`, `/`: the character itself.
            other => out.push(char::from(other)),
        }
        esc = skip_plain(bytes, at);
        if esc >= bytes.len() {
            out.push_str(&inner[at..]);
            break;
        }
    }
    Cow::Owned(out)
}

impl<'a> Doc<'a> {
    /// The node at `i`.
    #[inline]
    pub(crate) fn node(&self, i: usize) -> Node {
        self.nodes[i]
    }

    /// The raw text of node `i`.
    #[inline]
    pub(crate) fn raw(&self, i: usize) -> &'a str {
        let n = self.nodes[i];
        &self.src[n.start as usize..n.end as usize]
    }

    /// The decoded value of string node `i`.
    pub(crate) fn str(&self, i: usize) -> Cow<'_, str> {
        let n = self.nodes[i];
        match n.kind {
            Kind::String(false) => {
                Cow::Borrowed(&self.src[n.start as usize + 1..n.end as usize - 1])
            }
            _ => {
                let at = self
                    .spans
                    .binary_search_by_key(&(i as u32), |&(node, _, _)| node);
                match at {
                    Ok(k) => {
                        let (_, start, end) = self.spans[k];
                        Cow::Borrowed(&self.decoded[start as usize..end as usize])
                    }
                    Err(_) => unescape(&self.src[n.start as usize + 1..n.end as usize - 1]),
                }
            }
        }
    }

    /// Children of array node `i`.
    pub(crate) fn items(&self, i: usize) -> Items<'_, 'a> {
        Items {
            doc: self,
            at: i + 1,
            end: self.nodes[i].next as usize,
        }
    }

    /// `(key node, value node)` pairs of object node `i`.
    pub(crate) fn members(&self, i: usize) -> Members<'_, 'a> {
        Members {
            doc: self,
            at: i + 1,
            end: self.nodes[i].next as usize,
        }
    }

    /// The raw key text (with quotes) compared to `name` without decoding when possible.
    pub(crate) fn key_is(&self, k: usize, name: &str) -> bool {
        let n = self.nodes[k];
        match n.kind {
            Kind::String(false) => &self.src[n.start as usize + 1..n.end as usize - 1] == name,
            _ => self.str(k) == name,
        }
    }
}

/// Iterator over array children.
pub(crate) struct Items<'d, 'a> {
    doc: &'d Doc<'a>,
    at: usize,
    end: usize,
}

impl Iterator for Items<'_, '_> {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        (self.at < self.end).then(|| {
            let i = self.at;
            self.at = self.doc.nodes[i].next as usize;
            i
        })
    }
}

/// Iterator over object members.
pub(crate) struct Members<'d, 'a> {
    doc: &'d Doc<'a>,
    at: usize,
    end: usize,
}

impl Iterator for Members<'_, '_> {
    type Item = (usize, usize);
    #[inline]
    fn next(&mut self) -> Option<(usize, usize)> {
        (self.at < self.end).then(|| {
            let k = self.at;
            let v = k + 1;
            self.at = self.doc.nodes[v].next as usize;
            (k, v)
        })
    }
}

#[cfg(test)]
mod tests;

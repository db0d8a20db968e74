//! Reading the presented key from `Authorization`.

use http::{HeaderMap, header};

/// What the `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// No header, an empty one, or `Bearer` without a token.
    Missing,
    /// Something that cannot be a key: several headers, non-ASCII bytes, another scheme
    /// (`Basic …`), a token with spaces in it.
    Malformed,
    /// The key.
    Key(&'a str),
}

/// The key of `Authorization: Bearer <key>` (scheme in any case, any run of spaces or tabs
/// after it) or of a bare `Authorization: <key>`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Presented<'_> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Presented::Missing;
    };
    if all.next().is_some() {
        return Presented::Malformed;
    }
    // Visible ASCII, spaces and tabs only.
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    let value = value.trim_matches([' ', '\t']);
    if value.is_empty() {
        return Presented::Missing;
    }
    let is_space = |c: char| c == ' ' || c == '\t';
    let key = match value.split_once(is_space) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            rest.trim_start_matches([' ', '\t'])
        }
        Some(_) => return Presented::Malformed,
        None if value.eq_ignore_ascii_case("bearer") => return Presented::Missing,
        None => value,
    };
    if key.contains(is_space) {
        return Presented::Malformed;
    }
    Presented::Key(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(values: &[&[u8]]) -> Presented<'static> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(v).expect("header value"),
            );
        }
        // Leak for a 'static result in a test: simplest way to return the borrow.
        let h: &'static HeaderMap = Box::leak(Box::new(h));
        presented_key(h)
    }

    #[test]
    fn bearer_and_bare() {
        assert_eq!(parse(&[b"Bearer sk-1"]), Presented::Key("sk-1"));
        assert_eq!(parse(&[b"bearer sk-1"]), Presented::Key("sk-1"));
        assert_eq!(parse(&[b"BEARER sk-1"]), Presented::Key("sk-1"));
        assert_eq!(parse(&[b"Bearer   \tsk-1  "]), Presented::Key("sk-1"));
        assert_eq!(parse(&[b"  sk-1 "]), Presented::Key("sk-1"));
        assert_eq!(parse(&[b"sk-1"]), Presented::Key("sk-1"));
    }

    #[test]
    fn missing_and_malformed() {
        assert_eq!(parse(&[]), Presented::Missing);
        assert_eq!(parse(&[b""]), Presented::Missing);
        assert_eq!(parse(&[b"   "]), Presented::Missing);
        assert_eq!(parse(&[b"Bearer"]), Presented::Missing);
        assert_eq!(parse(&[b"Bearer   "]), Presented::Missing);
        assert_eq!(parse(&[b"Basic dXNlcjpwYXNz"]), Presented::Malformed);
        assert_eq!(parse(&[b"Bearer a b"]), Presented::Malformed);
        assert_eq!(parse(&["Bearer sk-é".as_bytes()]), Presented::Malformed);
        assert_eq!(parse(&[b"Bearer sk-\xff"]), Presented::Malformed);
        assert_eq!(parse(&[b"Bearer a", b"Bearer b"]), Presented::Malformed);
    }
}

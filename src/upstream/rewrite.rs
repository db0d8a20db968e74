//! Rewriting the top-level `model` of a JSON body as a byte patch.

use bytes::{BufMut, Bytes, BytesMut};

use crate::json::{self, Kind};

/// Deepest nesting read while looking for `model` (the validator caps it lower).
const MAX_DEPTH: usize = 1024;

/// The body with its top-level `"model"` value replaced by `model_json` (an encoded JSON string
/// whose decoded value is `model`); `None` when the body already names `model` or is not a JSON
/// object. A body without `model` gets it as its first member. Every other byte is kept.
pub(crate) fn rewrite_model(body: &Bytes, model: &str, model_json: &str) -> Option<Bytes> {
    let src = std::str::from_utf8(body).ok()?;
    let doc = json::parse(src, MAX_DEPTH).ok()?;
    let root = doc.node(0);
    if root.kind != Kind::Object {
        return None;
    }
    let found = doc.members(0).find(|&(k, _)| doc.key_is(k, "model"));
    let (start, end, insert) = match found {
        Some((_, v)) => {
            let n = doc.node(v);
            if matches!(n.kind, Kind::String(_)) && doc.str(v) == model {
                return None;
            }
            (n.start as usize, n.end as usize, false)
        }
        None => {
            let at = root.start as usize + 1;
            (at, at, true)
        }
    };
    let empty = doc.members(0).next().is_none();
    let mut out = BytesMut::with_capacity(body.len() + model_json.len() + 10);
    out.put_slice(&body[..start]);
    if insert {
        out.put_slice(b"\"model\":");
    }
    out.put_slice(model_json.as_bytes());
    if insert && !empty {
        out.put_u8(b',');
    }
    out.put_slice(&body[end..]);
    Some(out.freeze())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::rewrite_model;
    use bytes::Bytes;

    fn rw(body: &str, model: &str) -> Option<String> {
        let enc = serde_json::to_string(model).unwrap();
        rewrite_model(&Bytes::from(body.to_owned()), model, &enc)
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn replaces_only_the_top_level_model() {
        assert_eq!(
            rw(r#"{"messages":[{"model":"x"}], "model" : "a","n":1}"#, "b").as_deref(),
            Some(r#"{"messages":[{"model":"x"}], "model" : "b","n":1}"#)
        );
        assert_eq!(rw(r#"{"model":"b"}"#, "b"), None);
        assert_eq!(
            rw(r#"{"mod\u0065l":"a"}"#, "b").as_deref(),
            Some(r#"{"mod\u0065l":"b"}"#)
        );
        assert_eq!(
            rw(r#"{"model":"a"}"#, "q\"\u{e9}").as_deref(),
            Some("{\"model\":\"q\\\"\u{e9}\"}")
        );
    }

    #[test]
    fn inserts_when_absent() {
        assert_eq!(
            rw(r#"{"n":1}"#, "b").as_deref(),
            Some(r#"{"model":"b","n":1}"#)
        );
        assert_eq!(rw(r#" {}"#, "b").as_deref(), Some(r#" {"model":"b"}"#));
        assert_eq!(rw(r#"[1]"#, "b"), None);
        assert_eq!(rw(r#"{"#, "b"), None);
    }
}

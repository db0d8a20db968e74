//! Schema validation: JSON arena → typed request, with pydantic's errors and lax coercions.
//!
//! Every violation is collected (pydantic does not stop at the first), with FastAPI's `loc`,
//! `type`, `msg` and `ctx`. Coerced values and written-in defaults are recorded as byte patches
//! on the original body, so the forwarded bytes are the client's own where nothing changed
//! (apart from a leading UTF-8 byte-order mark, which is dropped).

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::contract::*;
use crate::error::{ErrorDetail, Loc, ValidationErrors};
use crate::json::{self, Doc, Kind};

use super::ValidateConfig;
use super::request::{Patch, Spans};

mod message;
mod request;
mod scalar;
#[cfg(test)]
mod tests;
mod tools;

/// A path segment; key nodes are decoded only when an error is reported.
#[derive(Clone, Copy)]
enum Seg {
    Key(&'static str),
    Index(usize),
    /// An object key taken from the document (node index).
    DocKey(usize),
}

const CONTENT_LIST: &str = "list[tagged-union[TextContentPart,ImageContentPart,AudioContentPart]]";
const PARAM_LITERAL: &str =
    "literal['string','number','integer','object','array','boolean','null']";
const PARAM_LIST: &str =
    "list[literal['string','number','integer','object','array','boolean','null']]";
const CHOICE_LITERAL: &str = "literal['none','auto','required']";

/// The result of validating one body.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) request: ChatCompletionRequest,
    /// The client's body (after a byte-order mark, if any).
    pub(crate) original: Bytes,
    /// Coercions and defaults, as patches on `original` (applied when the body is sent).
    pub(crate) patches: Vec<Patch>,
    /// Where the editable members are.
    pub(crate) spans: Spans,
}

/// Validates `body` (already known to be within the size limit).
pub(crate) fn validate_bytes(
    body: Bytes,
    json_content: bool,
    cfg: &ValidateConfig,
) -> Result<Outcome, ValidationErrors> {
    if body.is_empty() {
        return Err(single(
            vec![Loc::from("body")],
            "missing",
            "Field required",
            raw("null"),
            None,
        ));
    }
    if !json_content {
        // FastAPI hands non-JSON bytes to the model validator as a string.
        let s = String::from_utf8_lossy(&body);
        let input = serde_json::to_string(&s).unwrap_or_else(|_| "null".into());
        return Err(single(
            vec![Loc::from("body")],
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            raw(&input),
            None,
        ));
    }
    // A UTF-8 byte-order mark is skipped, as Python's `json.loads(bytes)` does (it decodes with
    // `utf-8-sig`), and not forwarded: upstreams get plain JSON and error offsets count from
    // after the mark. A body of just the mark is therefore `json_invalid` at 0, not `missing`.
    let body = if body.starts_with(b"\xEF\xBB\xBF") {
        body.slice(3..)
    } else {
        body
    };
    // simdutf8's fast path only says "invalid"; std's error gives the position.
    let text = match simdutf8::basic::from_utf8(&body).or_else(|_| std::str::from_utf8(&body)) {
        Ok(t) => t,
        Err(e) => {
            let at = String::from_utf8_lossy(&body[..e.valid_up_to()])
                .chars()
                .count();
            return Err(json_invalid(at, "Invalid UTF-8 in request body"));
        }
    };
    let doc = json::parse(text, cfg.max_depth).map_err(|e| json_invalid(e.char_offset, &e.msg))?;
    let root = doc.node(0);
    match root.kind {
        Kind::Object => {}
        Kind::Null => {
            return Err(single(
                vec![Loc::from("body")],
                "missing",
                "Field required",
                raw("null"),
                None,
            ));
        }
        _ => {
            return Err(single(
                vec![Loc::from("body")],
                "model_attributes_type",
                "Input should be a valid dictionary or object to extract fields from",
                raw(doc.raw(0)),
                None,
            ));
        }
    }
    let mut cx = Cx {
        doc: &doc,
        path: Vec::with_capacity(16),
        errors: Vec::new(),
        patches: Vec::new(),
    };
    let request = cx.request(0, cfg.apply_defaults);
    if !cx.errors.is_empty() {
        return Err(ValidationErrors { detail: cx.errors });
    }
    let request = request.expect("no errors means a request");
    let spans = Spans::find(&doc);
    let patches = std::mem::take(&mut cx.patches);
    drop(cx);
    drop(doc);
    Ok(Outcome {
        request,
        original: body,
        patches,
        spans,
    })
}

#[cfg(test)]
impl Outcome {
    /// The forwarded bytes.
    pub(crate) fn body(&self) -> Bytes {
        super::ValidatedRequest::from_parts(
            self.request.clone(),
            self.original.clone(),
            self.patches.clone(),
            self.spans.clone(),
        )
        .to_bytes()
    }
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap_or_else(|_| empty_object())
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("valid JSON")
}

fn single(
    loc: Vec<Loc>,
    kind: &'static str,
    msg: &'static str,
    input: Box<RawValue>,
    ctx: Option<Map<String, Value>>,
) -> ValidationErrors {
    ValidationErrors {
        detail: vec![ErrorDetail {
            kind,
            loc,
            msg: Cow::Borrowed(msg),
            input,
            ctx,
        }],
    }
}

fn json_invalid(char_offset: usize, error: &str) -> ValidationErrors {
    let mut ctx = Map::new();
    ctx.insert("error".into(), Value::String(error.to_owned()));
    single(
        vec![Loc::from("body"), Loc::Index(char_offset)],
        "json_invalid",
        "JSON decode error",
        empty_object(),
        Some(ctx),
    )
}

fn ctx1(key: &str, v: Value) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    m.insert(key.to_owned(), v);
    Some(m)
}

fn literal_expected(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("'{o}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

struct Cx<'d, 'a> {
    doc: &'d Doc<'a>,
    path: Vec<Seg>,
    errors: Vec<ErrorDetail>,
    patches: Vec<Patch>,
}

/// Field slots of one object: the value node of each known key, and the extras.
struct Fields<const N: usize> {
    slots: [Option<usize>; N],
    extra: Vec<(String, Box<RawValue>)>,
}

impl<'a> Cx<'_, 'a> {
    // ---- error reporting -------------------------------------------------------------------

    fn loc(&self, suffix: &[Seg]) -> Vec<Loc> {
        let mut loc = Vec::with_capacity(self.path.len() + suffix.len() + 1);
        loc.push(Loc::from("body"));
        for s in self.path.iter().chain(suffix) {
            loc.push(match *s {
                Seg::Key(k) => Loc::Key(Cow::Borrowed(k)),
                Seg::Index(i) => Loc::Index(i),
                Seg::DocKey(n) => Loc::Key(Cow::Owned(self.doc.str(n).into_owned())),
            });
        }
        loc
    }

    fn err(
        &mut self,
        suffix: &[Seg],
        kind: &'static str,
        msg: impl Into<Cow<'static, str>>,
        input: usize,
        ctx: Option<Map<String, Value>>,
    ) {
        let loc = self.loc(suffix);
        self.errors.push(ErrorDetail {
            kind,
            loc,
            msg: msg.into(),
            input: raw(self.doc.raw(input)),
            ctx,
        });
    }

    fn missing(&mut self, suffix: &[Seg], obj: usize) {
        self.err(suffix, "missing", "Field required", obj, None);
    }

    fn model_attributes(&mut self, suffix: &[Seg], v: usize) {
        self.err(
            suffix,
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
            v,
            None,
        );
    }

    fn literal(&mut self, suffix: &[Seg], v: usize, options: &[&str]) {
        let expected = literal_expected(options);
        self.err(
            suffix,
            "literal_error",
            format!("Input should be {expected}"),
            v,
            ctx1("expected", Value::String(expected)),
        );
    }

    fn patch(&mut self, v: usize, text: impl Into<Cow<'static, str>>) {
        let n = self.doc.node(v);
        self.patches
            .push((n.start as usize..n.end as usize, text.into()));
    }

    // ---- objects --------------------------------------------------------------------------

    /// Sorts the members of object `obj` into slots by `names`; everything else is an extra.
    fn fields<const N: usize>(&self, obj: usize, names: [&str; N]) -> Fields<N> {
        let mut f = Fields {
            slots: [None; N],
            extra: Vec::new(),
        };
        for (k, v) in self.doc.members(obj) {
            match names.iter().position(|n| self.doc.key_is(k, n)) {
                Some(i) => f.slots[i] = Some(v),
                None => f
                    .extra
                    .push((self.doc.str(k).into_owned(), raw(self.doc.raw(v)))),
            }
        }
        f
    }

    fn is_null(&self, v: Option<usize>) -> bool {
        v.is_none_or(|v| self.doc.node(v).kind == Kind::Null)
    }

    /// Runs `f` with `seg` pushed on the path.
    fn at<T>(&mut self, seg: Seg, f: impl FnOnce(&mut Self) -> T) -> T {
        self.path.push(seg);
        let r = f(self);
        self.path.pop();
        r
    }
}

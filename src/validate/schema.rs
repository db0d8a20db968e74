//! Schema validation: JSON arena → typed request, with pydantic's errors and lax coercions.
//!
//! Every violation is collected (pydantic does not stop at the first), with FastAPI's `loc`,
//! `type`, `msg` and `ctx`. Coerced values and written-in defaults are recorded as byte patches
//! on the original body, so the forwarded bytes are the client's own where nothing changed.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::contract::*;
use crate::error::{ErrorDetail, Loc, ValidationErrors};
use crate::json::{self, Doc, Kind};

use super::ValidateConfig;

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
    pub(crate) body: Bytes,
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
    let body = if cx.patches.is_empty() {
        body
    } else {
        apply(&body, &mut cx.patches)
    };
    Ok(Outcome { request, body })
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

/// Applies non-overlapping patches (sorted here) to `body`.
fn apply(body: &[u8], patches: &mut [(Range<usize>, Cow<'static, str>)]) -> Bytes {
    patches.sort_by_key(|(r, _)| r.start);
    let extra: usize = patches.iter().map(|(_, s)| s.len()).sum();
    let mut out = BytesMut::with_capacity(body.len() + extra);
    let mut at = 0;
    for (r, s) in patches.iter() {
        out.extend_from_slice(&body[at..r.start]);
        out.extend_from_slice(s.as_bytes());
        at = r.end;
    }
    out.extend_from_slice(&body[at..]);
    out.freeze()
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
    patches: Vec<(Range<usize>, Cow<'static, str>)>,
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

    // ---- scalars --------------------------------------------------------------------------

    fn string(&mut self, v: usize) -> Option<String> {
        match self.doc.node(v).kind {
            Kind::String(_) => Some(self.doc.str(v).into_owned()),
            _ => {
                self.err(
                    &[],
                    "string_type",
                    "Input should be a valid string",
                    v,
                    None,
                );
                None
            }
        }
    }

    /// A required string field.
    fn req_string(
        &mut self,
        obj: usize,
        slot: Option<usize>,
        name: &'static str,
    ) -> Option<String> {
        match slot {
            None => {
                self.missing(&[Seg::Key(name)], obj);
                None
            }
            Some(v) => self.at(Seg::Key(name), |cx| cx.string(v)),
        }
    }

    /// An optional string field (`null` allowed).
    fn opt_string(
        &mut self,
        slot: Option<usize>,
        name: &'static str,
    ) -> Result<Option<String>, ()> {
        if self.is_null(slot) {
            return Ok(None);
        }
        let v = slot.expect("not null");
        self.at(Seg::Key(name), |cx| cx.string(v))
            .map(Some)
            .ok_or(())
    }

    fn float(&mut self, v: usize) -> Option<f64> {
        let n = self.doc.node(v);
        match n.kind {
            Kind::Number => self.doc.raw(v).parse::<f64>().ok(),
            Kind::Bool(b) => {
                self.patch(v, if b { "1.0" } else { "0.0" });
                Some(if b { 1.0 } else { 0.0 })
            }
            Kind::String(_) => match parse_float_str(&self.doc.str(v)) {
                Some(x) => {
                    self.patch(v, float_text(x));
                    Some(x)
                }
                None => {
                    self.err(
                        &[],
                        "float_parsing",
                        "Input should be a valid number, unable to parse string as a number",
                        v,
                        None,
                    );
                    None
                }
            },
            _ => {
                self.err(&[], "float_type", "Input should be a valid number", v, None);
                None
            }
        }
    }

    fn int(&mut self, v: usize) -> Option<i128> {
        let n = self.doc.node(v);
        let from_float = |cx: &mut Self, x: f64| -> Option<i128> {
            if x.fract() != 0.0 || !x.is_finite() {
                cx.err(
                    &[],
                    "int_from_float",
                    "Input should be a valid integer, got a number with a fractional part",
                    v,
                    None,
                );
                None
            } else {
                Some(x as i128)
            }
        };
        match n.kind {
            Kind::Number => {
                let text = self.doc.raw(v);
                if let Ok(i) = text.parse::<i128>() {
                    return Some(i);
                }
                let x = text.parse::<f64>().unwrap_or(f64::NAN);
                let i = from_float(self, x)?;
                self.patch(v, i.to_string());
                Some(i)
            }
            Kind::Bool(b) => {
                self.patch(v, if b { "1" } else { "0" });
                Some(i128::from(b))
            }
            Kind::String(_) => {
                let s = self.doc.str(v);
                let t = s.trim().replace('_', "");
                let parsed = t.parse::<i128>().ok().or_else(|| {
                    t.strip_suffix(".0")
                        .or_else(|| t.strip_suffix('.'))
                        .and_then(|t| t.parse::<i128>().ok())
                });
                match parsed {
                    Some(i) => {
                        self.patch(v, i.to_string());
                        Some(i)
                    }
                    None => {
                        self.err(
                            &[],
                            "int_parsing",
                            "Input should be a valid integer, unable to parse string as an integer",
                            v,
                            None,
                        );
                        None
                    }
                }
            }
            _ => {
                self.err(&[], "int_type", "Input should be a valid integer", v, None);
                None
            }
        }
    }

    fn bool(&mut self, v: usize) -> Option<bool> {
        let n = self.doc.node(v);
        let parsed = match n.kind {
            Kind::Bool(b) => return Some(b),
            Kind::Number => match self.doc.raw(v).parse::<f64>() {
                Ok(0.0) => Some(false),
                Ok(1.0) => Some(true),
                _ => None,
            },
            Kind::String(_) => {
                let s = self.doc.str(v).to_ascii_lowercase();
                match s.as_str() {
                    "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
                    "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
                    _ => None,
                }
            }
            _ => {
                self.err(&[], "bool_type", "Input should be a valid boolean", v, None);
                return None;
            }
        };
        match parsed {
            Some(b) => {
                self.patch(v, if b { "true" } else { "false" });
                Some(b)
            }
            None => {
                self.err(
                    &[],
                    "bool_parsing",
                    "Input should be a valid boolean, unable to interpret input",
                    v,
                    None,
                );
                None
            }
        }
    }

    fn opt_bool(&mut self, slot: Option<usize>, name: &'static str) -> Result<Option<bool>, ()> {
        if self.is_null(slot) {
            return Ok(None);
        }
        let v = slot.expect("not null");
        self.at(Seg::Key(name), |cx| cx.bool(v)).map(Some).ok_or(())
    }

    /// A non-negative integer with `ge` bound.
    fn int_ge(&mut self, v: usize, ge: i128) -> Option<i128> {
        let i = self.int(v)?;
        if i < ge {
            self.err(
                &[],
                "greater_than_equal",
                format!("Input should be greater than or equal to {ge}"),
                v,
                ctx1("ge", Value::from(ge as i64)),
            );
            return None;
        }
        Some(i)
    }

    fn list(&mut self, v: usize) -> bool {
        if self.doc.node(v).kind == Kind::Array {
            true
        } else {
            self.err(&[], "list_type", "Input should be a valid list", v, None);
            false
        }
    }

    fn too_short(&mut self, v: usize, min: usize, actual: usize) {
        let mut ctx = Map::new();
        ctx.insert("field_type".into(), Value::from("List"));
        ctx.insert("min_length".into(), Value::from(min));
        ctx.insert("actual_length".into(), Value::from(actual));
        let item = if min == 1 { "item" } else { "items" };
        self.err(
            &[],
            "too_short",
            format!("List should have at least {min} {item} after validation, not {actual}"),
            v,
            Some(ctx),
        );
    }

    fn string_list(&mut self, v: usize) -> Option<Vec<String>> {
        if !self.list(v) {
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in self.doc.items(v).enumerate() {
            match self.at(Seg::Index(i), |cx| cx.string(item)) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    // ---- the request ----------------------------------------------------------------------

    fn request(&mut self, obj: usize, defaults: bool) -> Option<ChatCompletionRequest> {
        let f = self.fields(
            obj,
            [
                "temperature",
                "n",
                "stop",
                "max_tokens",
                "stream",
                "stream_options",
                "model",
                "messages",
                "tools",
                "seed",
                "tool_choice",
            ],
        );
        let [
            temperature,
            n,
            stop,
            max_tokens,
            stream,
            stream_options,
            model,
            messages,
            tools,
            seed,
            tool_choice,
        ] = f.slots;
        let mut ok = true;

        let temperature = if self.is_null(temperature) {
            None
        } else {
            let v = temperature.expect("not null");
            let r = self.at(Seg::Key("temperature"), |cx| {
                let x = cx.float(v)?;
                if x.is_nan() || x < 0.0 {
                    cx.err(
                        &[],
                        "greater_than_equal",
                        "Input should be greater than or equal to 0",
                        v,
                        ctx1("ge", Value::from(0.0)),
                    );
                    None
                } else if x > 2.0 {
                    cx.err(
                        &[],
                        "less_than_equal",
                        "Input should be less than or equal to 2",
                        v,
                        ctx1("le", Value::from(2.0)),
                    );
                    None
                } else {
                    Some(x)
                }
            });
            ok &= r.is_some();
            r
        };

        let n = match n.filter(|_| !self.is_null(n)) {
            None => None,
            Some(v) => {
                let r = self.at(Seg::Key("n"), |cx| cx.int_ge(v, 1));
                ok &= r.is_some();
                r.map(|i| u64::try_from(i).unwrap_or(u64::MAX))
            }
        };

        let stop = match stop.filter(|_| !self.is_null(stop)) {
            None => None,
            Some(v) => {
                let r = self.at(Seg::Key("stop"), |cx| {
                    let list = cx.string_list(v)?;
                    if list.is_empty() {
                        cx.too_short(v, 1, 0);
                        return None;
                    }
                    Some(list)
                });
                ok &= r.is_some();
                r
            }
        };

        let max_tokens = match max_tokens.filter(|_| !self.is_null(max_tokens)) {
            None => None,
            Some(v) => {
                let r = self.at(Seg::Key("max_tokens"), |cx| cx.int_ge(v, 1));
                ok &= r.is_some();
                r.map(|i| u64::try_from(i).unwrap_or(u64::MAX))
            }
        };

        let stream = match self.opt_bool(stream, "stream") {
            Ok(s) => s,
            Err(()) => {
                ok = false;
                None
            }
        };

        let stream_options = match stream_options.filter(|_| !self.is_null(stream_options)) {
            None => None,
            Some(v) => {
                let r = self.at(Seg::Key("stream_options"), |cx| {
                    if cx.doc.node(v).kind != Kind::Object {
                        cx.err(
                            &[],
                            "dict_type",
                            "Input should be a valid dictionary",
                            v,
                            None,
                        );
                        return None;
                    }
                    // Any object is accepted; include_usage is read, not validated.
                    let f = cx.fields(v, ["include_usage"]);
                    let include_usage = f.slots[0].and_then(|u| match cx.doc.node(u).kind {
                        Kind::Bool(b) => Some(b),
                        _ => None,
                    });
                    let mut extra = f.extra;
                    if include_usage.is_none()
                        && let Some(u) = f.slots[0]
                    {
                        extra.push(("include_usage".into(), raw(cx.doc.raw(u))));
                    }
                    Some(StreamOptions {
                        include_usage,
                        extra: Extra(extra),
                    })
                });
                ok &= r.is_some();
                r
            }
        };

        let model = self.req_string(obj, model, "model");
        ok &= model.is_some();

        let messages = match messages {
            None => {
                self.missing(&[Seg::Key("messages")], obj);
                None
            }
            Some(v) => self.at(Seg::Key("messages"), |cx| cx.messages(v)),
        };
        ok &= messages.is_some();

        let tools = match tools.filter(|_| !self.is_null(tools)) {
            None => None,
            Some(v) => {
                let r = self.at(Seg::Key("tools"), |cx| cx.tools(v));
                ok &= r.is_some();
                r
            }
        };

        let seed = match seed.filter(|_| !self.is_null(seed)) {
            None => None,
            Some(v) => {
                let r = self.at(Seg::Key("seed"), |cx| cx.int(v));
                ok &= r.is_some();
                r
            }
        };

        let tool_choice = match tool_choice.filter(|_| !self.is_null(tool_choice)) {
            None => None,
            Some(v) => {
                let r = self.at(Seg::Key("tool_choice"), |cx| cx.tool_choice(v));
                ok &= r.is_some();
                r
            }
        };

        if !ok {
            return None;
        }

        let mut req = ChatCompletionRequest {
            model: model?,
            messages: messages?,
            temperature,
            n,
            stop,
            max_tokens,
            stream,
            stream_options,
            tools,
            seed,
            tool_choice,
            extra: Extra(f.extra),
        };
        if defaults {
            self.default_in(obj, f.slots[0], "0.0", r#","temperature":0.0"#);
            self.default_in(obj, f.slots[1], "1", r#","n":1"#);
            req.temperature.get_or_insert(0.0);
            req.n.get_or_insert(1);
        }
        Some(req)
    }

    /// Writes `value` into the top-level object when the member is `null`, or appends `member`
    /// (`,"name":value`) when it is absent.
    fn default_in(
        &mut self,
        obj: usize,
        slot: Option<usize>,
        value: &'static str,
        member: &'static str,
    ) {
        match slot {
            Some(v) if self.doc.node(v).kind == Kind::Null => self.patch(v, value),
            Some(_) => {}
            None => {
                let end = self.doc.node(obj).end as usize - 1;
                // The object is non-empty: `model` and `messages` passed.
                self.patches.push((end..end, Cow::Borrowed(member)));
            }
        }
    }

    fn messages(&mut self, v: usize) -> Option<Vec<Message>> {
        if !self.list(v) {
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in self.doc.items(v).enumerate() {
            match self.at(Seg::Index(i), |cx| cx.message(item)) {
                Some(m) => out.push(m),
                None => ok = false,
            }
        }
        if ok && out.is_empty() {
            self.too_short(v, 1, 0);
            return None;
        }
        ok.then_some(out)
    }

    fn message(&mut self, v: usize) -> Option<Message> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(
            v,
            ["role", "content", "tool_calls", "refusal", "tool_call_id"],
        );
        let [role, content, tool_calls, refusal, tool_call_id] = f.slots;
        let role = self.req_string(v, role, "role");
        let mut ok = role.is_some();
        let content = match content.filter(|_| !self.is_null(content)) {
            None => None,
            Some(c) => {
                let r = self.at(Seg::Key("content"), |cx| cx.content(c));
                ok &= r.is_some();
                r
            }
        };
        let tool_calls = match tool_calls.filter(|_| !self.is_null(tool_calls)) {
            None => None,
            Some(t) => {
                let r = self.at(Seg::Key("tool_calls"), |cx| {
                    if !cx.list(t) {
                        return None;
                    }
                    let mut out = Vec::new();
                    let mut ok = true;
                    for (i, item) in cx.doc.items(t).enumerate() {
                        match cx.at(Seg::Index(i), |cx| cx.tool_call(item)) {
                            Some(c) => out.push(c),
                            None => ok = false,
                        }
                    }
                    ok.then_some(out)
                });
                ok &= r.is_some();
                r
            }
        };
        let refusal = self.opt_string(refusal, "refusal");
        let tool_call_id = self.opt_string(tool_call_id, "tool_call_id");
        if !ok || refusal.is_err() || tool_call_id.is_err() {
            return None;
        }
        Some(Message {
            role: role?,
            content,
            tool_calls,
            refusal: refusal.ok()?,
            tool_call_id: tool_call_id.ok()?,
            extra: Extra(f.extra),
        })
    }

    fn content(&mut self, v: usize) -> Option<MessageContent> {
        // `str | list[...]`, tried left to right; a failure reports both branches.
        if let Kind::String(_) = self.doc.node(v).kind {
            return Some(MessageContent::Text(self.doc.str(v).into_owned()));
        }
        let at = self.errors.len();
        let parts = self.at(Seg::Key(CONTENT_LIST), |cx| {
            if !cx.list(v) {
                return None;
            }
            let mut parts = Vec::new();
            let mut ok = true;
            for (i, item) in cx.doc.items(v).enumerate() {
                match cx.at(Seg::Index(i), |cx| cx.content_part(item)) {
                    Some(p) => parts.push(p),
                    None => ok = false,
                }
            }
            ok.then_some(MessageContent::Parts(parts))
        });
        if parts.is_none() {
            // Both branches failed: the `str` branch's error comes first, as pydantic lists it.
            self.err(
                &[Seg::Key("str")],
                "string_type",
                "Input should be a valid string",
                v,
                None,
            );
            let e = self.errors.pop().expect("just pushed");
            self.errors.insert(at, e);
        }
        parts
    }

    fn content_part(&mut self, v: usize) -> Option<ContentPart> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(v, ["type", "text", "image_url", "input_audio"]);
        let [tag, text, image_url, input_audio] = f.slots;
        let tag_value = tag.and_then(|t| match self.doc.node(t).kind {
            Kind::String(_) => Some(self.doc.str(t)),
            _ => None,
        });
        let Some(tag_value) = tag_value else {
            self.err(
                &[],
                "union_tag_not_found",
                "Unable to extract tag using discriminator 'type'",
                v,
                ctx1("discriminator", Value::from("'type'")),
            );
            return None;
        };
        // Members of the other variants are extras of this one.
        let mut extra = f.extra;
        let mut keep = |name: &str, slot: Option<usize>, doc: &Doc<'_>| {
            if let Some(s) = slot {
                extra.push((name.to_owned(), raw(doc.raw(s))));
            }
        };
        match &*tag_value {
            "text" => {
                keep("image_url", image_url, self.doc);
                keep("input_audio", input_audio, self.doc);
                let text = self.at(Seg::Key("text"), |cx| cx.req_string(v, text, "text"))?;
                Some(ContentPart::Text {
                    text,
                    extra: Extra(extra),
                })
            }
            "image_url" => {
                keep("text", text, self.doc);
                keep("input_audio", input_audio, self.doc);
                let image_url = self.at(Seg::Key("image_url"), |cx| match image_url {
                    None => {
                        cx.missing(&[Seg::Key("image_url")], v);
                        None
                    }
                    Some(i) => cx.at(Seg::Key("image_url"), |cx| cx.image_url(i)),
                })?;
                Some(ContentPart::ImageUrl {
                    image_url,
                    extra: Extra(extra),
                })
            }
            "input_audio" => {
                keep("text", text, self.doc);
                keep("image_url", image_url, self.doc);
                let input_audio = self.at(Seg::Key("input_audio"), |cx| match input_audio {
                    None => {
                        cx.missing(&[Seg::Key("input_audio")], v);
                        None
                    }
                    Some(i) => cx.at(Seg::Key("input_audio"), |cx| cx.input_audio(i)),
                })?;
                Some(ContentPart::InputAudio {
                    input_audio,
                    extra: Extra(extra),
                })
            }
            other => {
                let tag = other.to_owned();
                let mut ctx = Map::new();
                ctx.insert("discriminator".into(), Value::from("'type'"));
                ctx.insert("tag".into(), Value::from(tag.clone()));
                ctx.insert(
                    "expected_tags".into(),
                    Value::from("'text', 'image_url', 'input_audio'"),
                );
                self.err(
                    &[],
                    "union_tag_invalid",
                    format!(
                        "Input tag '{tag}' found using 'type' does not match any of the expected tags: 'text', 'image_url', 'input_audio'"
                    ),
                    v,
                    Some(ctx),
                );
                None
            }
        }
    }

    fn image_url(&mut self, v: usize) -> Option<ImageUrl> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(v, ["url", "detail"]);
        let [url, detail] = f.slots;
        let url = self.req_string(v, url, "url");
        let detail = match detail.filter(|_| !self.is_null(detail)) {
            None => Ok(None),
            Some(d) => {
                let value = match self.doc.node(d).kind {
                    Kind::String(_) => match &*self.doc.str(d) {
                        "auto" => Some(ImageDetail::Auto),
                        "low" => Some(ImageDetail::Low),
                        "high" => Some(ImageDetail::High),
                        _ => None,
                    },
                    _ => None,
                };
                match value {
                    Some(x) => Ok(Some(x)),
                    None => {
                        self.literal(&[Seg::Key("detail")], d, &["auto", "low", "high"]);
                        Err(())
                    }
                }
            }
        };
        Some(ImageUrl {
            url: url?,
            detail: detail.ok()?,
            extra: Extra(f.extra),
        })
    }

    fn input_audio(&mut self, v: usize) -> Option<InputAudio> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(v, ["data", "format"]);
        let [data, format] = f.slots;
        let data = self.req_string(v, data, "data");
        let format = match format {
            None => {
                self.missing(&[Seg::Key("format")], v);
                None
            }
            Some(x) => {
                let value = match self.doc.node(x).kind {
                    Kind::String(_) => match &*self.doc.str(x) {
                        "wav" => Some(AudioFormat::Wav),
                        "mp3" => Some(AudioFormat::Mp3),
                        _ => None,
                    },
                    _ => None,
                };
                if value.is_none() {
                    self.literal(&[Seg::Key("format")], x, &["wav", "mp3"]);
                }
                value
            }
        };
        Some(InputAudio {
            data: data?,
            format: format?,
            extra: Extra(f.extra),
        })
    }

    fn tool_call(&mut self, v: usize) -> Option<ToolCall> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(v, ["id", "type", "function"]);
        let [id, kind, function] = f.slots;
        let id = self.req_string(v, id, "id");
        let kind = match kind {
            None => Some("function".to_owned()),
            Some(k) => self.at(Seg::Key("type"), |cx| cx.string(k)),
        };
        let function = match function {
            None => {
                self.missing(&[Seg::Key("function")], v);
                None
            }
            Some(fv) => self.at(Seg::Key("function"), |cx| {
                if cx.doc.node(fv).kind != Kind::Object {
                    cx.model_attributes(&[], fv);
                    return None;
                }
                let f = cx.fields(fv, ["name", "arguments"]);
                let name = cx.req_string(fv, f.slots[0], "name");
                let arguments = cx.req_string(fv, f.slots[1], "arguments");
                Some(FunctionCall {
                    name: name?,
                    arguments: arguments?,
                    extra: Extra(f.extra),
                })
            }),
        };
        Some(ToolCall {
            id: id?,
            kind: kind?,
            function: function?,
            extra: Extra(f.extra),
        })
    }

    fn tools(&mut self, v: usize) -> Option<Vec<Tool>> {
        if !self.list(v) {
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in self.doc.items(v).enumerate() {
            match self.at(Seg::Index(i), |cx| cx.tool(item)) {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn tool(&mut self, v: usize) -> Option<Tool> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(v, ["type", "function", "uc_function"]);
        let [kind, function, uc_function] = f.slots;
        let kind = match kind {
            None => {
                self.missing(&[Seg::Key("type")], v);
                None
            }
            Some(k) => {
                let value = match self.doc.node(k).kind {
                    Kind::String(_) => match &*self.doc.str(k) {
                        "function" => Some(ToolType::Function),
                        "uc_function" => Some(ToolType::UcFunction),
                        _ => None,
                    },
                    _ => None,
                };
                if value.is_none() {
                    self.literal(&[Seg::Key("type")], k, &["function", "uc_function"]);
                }
                value
            }
        };
        let function = match function.filter(|_| !self.is_null(function)) {
            None => Ok(None),
            Some(fv) => self
                .at(Seg::Key("function"), |cx| cx.function_def(fv))
                .map(Some)
                .ok_or(()),
        };
        let uc_function = match uc_function.filter(|_| !self.is_null(uc_function)) {
            None => Ok(None),
            Some(u) => self
                .at(Seg::Key("uc_function"), |cx| {
                    if cx.doc.node(u).kind != Kind::Object {
                        cx.model_attributes(&[], u);
                        return None;
                    }
                    let f = cx.fields(u, ["name"]);
                    let name = cx.req_string(u, f.slots[0], "name")?;
                    Some(UcFunction {
                        name,
                        extra: Extra(f.extra),
                    })
                })
                .map(Some)
                .ok_or(()),
        };
        Some(Tool {
            kind: kind?,
            function: function.ok()?,
            uc_function: uc_function.ok()?,
            extra: Extra(f.extra),
        })
    }

    fn function_def(&mut self, v: usize) -> Option<FunctionDefinition> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(v, ["name", "description", "parameters", "strict"]);
        let [name, description, parameters, strict] = f.slots;
        let name = self.req_string(v, name, "name");
        let description = self.opt_string(description, "description");
        let parameters = match parameters.filter(|_| !self.is_null(parameters)) {
            None => Ok(None),
            Some(p) => self
                .at(Seg::Key("parameters"), |cx| cx.params(p))
                .map(Some)
                .ok_or(()),
        };
        let strict = self.opt_bool(strict, "strict");
        Some(FunctionDefinition {
            name: name?,
            description: description.ok()?,
            parameters: parameters.ok()?,
            strict: strict.ok()?,
            extra: Extra(f.extra),
        })
    }

    fn params(&mut self, v: usize) -> Option<FunctionParams> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(
            v,
            ["properties", "type", "required", "additionalProperties"],
        );
        let [properties, kind, required, additional] = f.slots;
        let properties = match properties {
            None => {
                self.missing(&[Seg::Key("properties")], v);
                None
            }
            Some(p) => self.at(Seg::Key("properties"), |cx| {
                if cx.doc.node(p).kind != Kind::Object {
                    cx.err(
                        &[],
                        "dict_type",
                        "Input should be a valid dictionary",
                        p,
                        None,
                    );
                    return None;
                }
                let mut out = Vec::new();
                let mut ok = true;
                for (k, pv) in cx.doc.members(p) {
                    match cx.at(Seg::DocKey(k), |cx| cx.param_property(pv)) {
                        Some(prop) => out.push((cx.doc.str(k).into_owned(), prop)),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }),
        };
        let kind = match kind.filter(|_| !self.is_null(kind)) {
            None => Ok(None),
            Some(k) => {
                if matches!(self.doc.node(k).kind, Kind::String(_)) && self.doc.str(k) == "object" {
                    Ok(Some("object".to_owned()))
                } else {
                    self.literal(&[Seg::Key("type")], k, &["object"]);
                    Err(())
                }
            }
        };
        let required = match required.filter(|_| !self.is_null(required)) {
            None => Ok(None),
            Some(r) => self
                .at(Seg::Key("required"), |cx| cx.string_list(r))
                .map(Some)
                .ok_or(()),
        };
        let additional = self.opt_bool(additional, "additionalProperties");
        Some(FunctionParams {
            properties: properties?,
            kind: kind.ok()?,
            required: required.ok()?,
            additional_properties: additional.ok()?,
            extra: Extra(f.extra),
        })
    }

    fn param_property(&mut self, v: usize) -> Option<ParamProperty> {
        if self.doc.node(v).kind != Kind::Object {
            self.model_attributes(&[], v);
            return None;
        }
        let f = self.fields(v, ["type", "description", "enum", "items"]);
        let [kind, description, enum_values, items] = f.slots;
        let kind = match kind.filter(|_| !self.is_null(kind)) {
            None => Ok(None),
            Some(k) => self
                .at(Seg::Key("type"), |cx| cx.param_types(k))
                .map(Some)
                .ok_or(()),
        };
        let description = self.opt_string(description, "description");
        let enum_values = match enum_values.filter(|_| !self.is_null(enum_values)) {
            None => Ok(None),
            Some(e) => self
                .at(Seg::Key("enum"), |cx| {
                    if !cx.list(e) {
                        return None;
                    }
                    let mut out = Vec::new();
                    let mut ok = true;
                    for (i, item) in cx.doc.items(e).enumerate() {
                        let scalar = matches!(
                            cx.doc.node(item).kind,
                            Kind::String(_) | Kind::Number | Kind::Bool(_)
                        );
                        if scalar {
                            out.push(serde_json::from_str(cx.doc.raw(item)).unwrap_or(Value::Null));
                        } else {
                            ok = false;
                            cx.at(Seg::Index(i), |cx| {
                                cx.err(
                                    &[Seg::Key("str")],
                                    "string_type",
                                    "Input should be a valid string",
                                    item,
                                    None,
                                );
                                cx.err(
                                    &[Seg::Key("int")],
                                    "int_type",
                                    "Input should be a valid integer",
                                    item,
                                    None,
                                );
                                cx.err(
                                    &[Seg::Key("float")],
                                    "float_type",
                                    "Input should be a valid number",
                                    item,
                                    None,
                                );
                                cx.err(
                                    &[Seg::Key("bool")],
                                    "bool_type",
                                    "Input should be a valid boolean",
                                    item,
                                    None,
                                );
                            });
                        }
                    }
                    ok.then_some(out)
                })
                .map(Some)
                .ok_or(()),
        };
        let items = match items.filter(|_| !self.is_null(items)) {
            None => Ok(None),
            Some(i) => self
                .at(Seg::Key("items"), |cx| cx.param_property(i))
                .map(|p| Some(Box::new(p)))
                .ok_or(()),
        };
        Some(ParamProperty {
            kind: kind.ok()?,
            description: description.ok()?,
            enum_values: enum_values.ok()?,
            items: items.ok()?,
            extra: Extra(f.extra),
        })
    }

    fn param_types(&mut self, v: usize) -> Option<ParamTypes> {
        let names: Vec<&str> = ParamType::ALL.iter().map(|(n, _)| *n).collect();
        let one = |cx: &Self, i: usize| -> Option<ParamType> {
            match cx.doc.node(i).kind {
                Kind::String(_) => {
                    let s = cx.doc.str(i);
                    ParamType::ALL
                        .iter()
                        .find(|(n, _)| *n == s)
                        .map(|(_, t)| *t)
                }
                _ => None,
            }
        };
        if let Some(t) = one(self, v) {
            return Some(ParamTypes::One(t));
        }
        if self.doc.node(v).kind == Kind::Array {
            let mut out = Vec::new();
            let mut bad = Vec::new();
            for (i, item) in self.doc.items(v).enumerate() {
                match one(self, item) {
                    Some(t) => out.push(t),
                    None => bad.push((i, item)),
                }
            }
            if bad.is_empty() {
                return Some(ParamTypes::Many(out));
            }
            self.literal(&[Seg::Key(PARAM_LITERAL)], v, &names);
            for (i, item) in bad {
                self.literal(&[Seg::Key(PARAM_LIST), Seg::Index(i)], item, &names);
            }
            return None;
        }
        self.literal(&[Seg::Key(PARAM_LITERAL)], v, &names);
        self.err(
            &[Seg::Key(PARAM_LIST)],
            "list_type",
            "Input should be a valid list",
            v,
            None,
        );
        None
    }

    fn tool_choice(&mut self, v: usize) -> Option<ToolChoice> {
        let options = ["none", "auto", "required"];
        if let Kind::String(_) = self.doc.node(v).kind {
            match &*self.doc.str(v) {
                "none" => return Some(ToolChoice::Mode(ToolChoiceMode::None)),
                "auto" => return Some(ToolChoice::Mode(ToolChoiceMode::Auto)),
                "required" => return Some(ToolChoice::Mode(ToolChoiceMode::Required)),
                _ => {}
            }
        }
        let before = self.errors.len();
        self.literal(&[Seg::Key(CHOICE_LITERAL)], v, &options);
        let named = self.at(Seg::Key("ToolChoice"), |cx| {
            if cx.doc.node(v).kind != Kind::Object {
                cx.model_attributes(&[], v);
                return None;
            }
            let f = cx.fields(v, ["type", "function"]);
            let [kind, function] = f.slots;
            let kind = match kind {
                None => Some("function".to_owned()),
                Some(k) => {
                    if matches!(cx.doc.node(k).kind, Kind::String(_)) && cx.doc.str(k) == "function"
                    {
                        Some("function".to_owned())
                    } else {
                        cx.literal(&[Seg::Key("type")], k, &["function"]);
                        None
                    }
                }
            };
            let function = match function {
                None => {
                    cx.missing(&[Seg::Key("function")], v);
                    None
                }
                Some(fv) => cx.at(Seg::Key("function"), |cx| {
                    if cx.doc.node(fv).kind != Kind::Object {
                        cx.model_attributes(&[], fv);
                        return None;
                    }
                    let f = cx.fields(fv, ["name"]);
                    let name = cx.req_string(fv, f.slots[0], "name")?;
                    Some(ToolChoiceFunction {
                        name,
                        extra: Extra(f.extra),
                    })
                }),
            };
            Some(NamedToolChoice {
                kind: kind?,
                function: function?,
                extra: Extra(f.extra),
            })
        });
        match named {
            Some(n) => {
                self.errors.truncate(before);
                Some(ToolChoice::Named(n))
            }
            None => None,
        }
    }
}

/// pydantic's float-from-string: surrounding whitespace and `_` separators allowed, plus
/// `inf`/`nan` spellings.
fn parse_float_str(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    let t: Cow<'_, str> = if t.contains('_') {
        Cow::Owned(t.replace('_', ""))
    } else {
        Cow::Borrowed(t)
    };
    t.parse::<f64>().ok()
}

/// A float as JSON text (`2` → `2.0`; non-finite values become `null`, which JSON requires).
fn float_text(x: f64) -> String {
    if !x.is_finite() {
        return "null".to_owned();
    }
    let mut s = x.to_string();
    if !s.contains(['.', 'e', 'E']) {
        s.push_str(".0");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ValidateConfig {
        ValidateConfig::default()
    }

    fn run(body: &str) -> Result<Outcome, ValidationErrors> {
        validate_bytes(Bytes::from(body.to_owned()), true, &cfg())
    }

    fn errs(body: &str) -> Vec<(Value, &'static str, String)> {
        let e = run(body).expect_err("should fail");
        e.detail
            .into_iter()
            .map(|d| {
                (
                    serde_json::to_value(&d.loc).expect("loc"),
                    d.kind,
                    d.msg.into_owned(),
                )
            })
            .collect()
    }

    fn one(body: &str) -> (Value, &'static str, String) {
        let mut e = errs(body);
        assert_eq!(e.len(), 1, "{e:?}");
        e.remove(0)
    }

    const MSG: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    #[test]
    fn transport_level_errors() {
        let e = validate_bytes(Bytes::new(), true, &cfg()).expect_err("empty");
        assert_eq!(e.detail[0].kind, "missing");
        let (loc, kind, _) = one("null");
        assert_eq!((loc, kind), (json!(["body"]), "missing"));
        let (loc, kind, _) = one("[1,2]");
        assert_eq!((loc, kind), (json!(["body"]), "model_attributes_type"));
        let (loc, kind, msg) = one(r#"{"model":"m","messages":["#);
        assert_eq!(
            (loc, kind, msg.as_str()),
            (json!(["body", 25]), "json_invalid", "JSON decode error")
        );
        let e = validate_bytes(Bytes::from_static(b"{}"), false, &cfg()).expect_err("text/plain");
        assert_eq!(e.detail[0].kind, "model_attributes_type");
        let e = validate_bytes(Bytes::from_static(b"{\"a\":\"\xff\"}"), true, &cfg())
            .expect_err("utf8");
        assert_eq!(e.detail[0].kind, "json_invalid");
    }

    #[test]
    fn json_invalid_carries_python_message_in_ctx() {
        let e = run(r#"{"model":"m" "messages":[]}"#).expect_err("bad");
        let d = &e.detail[0];
        assert_eq!(
            d.ctx.as_ref().expect("ctx")["error"],
            "Expecting ',' delimiter"
        );
        assert_eq!(d.input.get(), "{}");
    }

    #[test]
    fn duplicate_keys_and_depth_are_json_invalid() {
        let body = format!(r#"{{"model":"a",{MSG},"model":"b"}}"#);
        let (loc, kind, _) = one(&body);
        assert_eq!(kind, "json_invalid");
        assert_eq!(
            loc,
            json!(["body", body.rfind(r#""model""#).expect("second key")])
        );
        let deep = format!(
            r#"{{"model":"m",{MSG},"x":{}1{}}}"#,
            "[".repeat(80),
            "]".repeat(80)
        );
        let (_, kind, _) = one(&deep);
        assert_eq!(kind, "json_invalid");
        // NaN is not JSON.
        let (_, kind, _) = one(&format!(r#"{{"model":"m",{MSG},"temperature":NaN}}"#));
        assert_eq!(kind, "json_invalid");
    }

    #[test]
    fn required_fields() {
        let e = errs(r#"{}"#);
        let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
        assert_eq!(
            kinds,
            [
                (json!(["body", "model"]), "missing"),
                (json!(["body", "messages"]), "missing")
            ]
        );
        assert_eq!(e[0].2, "Field required");
        let (loc, kind, _) = one(r#"{"model":"m","messages":[{"content":"hi"}]}"#);
        assert_eq!(
            (loc, kind),
            (json!(["body", "messages", 0, "role"]), "missing")
        );
    }

    #[test]
    fn all_violations_are_reported_in_field_order() {
        let e =
            errs(r#"{"model":1,"messages":[],"temperature":3,"n":0,"stop":[],"stream":"maybe"}"#);
        let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
        assert_eq!(
            kinds,
            [
                (json!(["body", "temperature"]), "less_than_equal"),
                (json!(["body", "n"]), "greater_than_equal"),
                (json!(["body", "stop"]), "too_short"),
                (json!(["body", "stream"]), "bool_parsing"),
                (json!(["body", "model"]), "string_type"),
                (json!(["body", "messages"]), "too_short"),
            ]
        );
    }

    #[test]
    fn messages_and_ctx() {
        let e = run(r#"{"model":"m","messages":[]}"#).expect_err("empty");
        let d = &e.detail[0];
        assert_eq!(
            d.msg,
            "List should have at least 1 item after validation, not 0"
        );
        assert_eq!(
            serde_json::to_value(d.ctx.as_ref().expect("ctx")).expect("ctx"),
            json!({"field_type":"List","min_length":1,"actual_length":0})
        );
        let e = run(&format!(r#"{{"model":"m",{MSG},"temperature":2.5}}"#)).expect_err("le");
        assert_eq!(e.detail[0].msg, "Input should be less than or equal to 2");
        assert_eq!(e.detail[0].ctx.as_ref().expect("ctx")["le"], json!(2.0));
        assert_eq!(e.detail[0].input.get(), "2.5");
        let e = run(&format!(r#"{{"model":"m",{MSG},"n":0}}"#)).expect_err("ge");
        assert_eq!(
            e.detail[0].msg,
            "Input should be greater than or equal to 1"
        );
        assert_eq!(e.detail[0].ctx.as_ref().expect("ctx")["ge"], json!(1));
        let e = run(&format!(
            r#"{{"model":"m",{MSG},"tools":[{{"type":"x"}}]}}"#
        ))
        .expect_err("lit");
        assert_eq!(
            e.detail[0].msg,
            "Input should be 'function' or 'uc_function'"
        );
    }

    #[test]
    fn scalar_type_errors() {
        for (field, value, kind) in [
            ("temperature", r#""hot""#, "float_parsing"),
            ("temperature", "[1]", "float_type"),
            ("n", "1.5", "int_from_float"),
            ("n", r#""two""#, "int_parsing"),
            ("n", "{}", "int_type"),
            ("max_tokens", "0", "greater_than_equal"),
            ("seed", r#""abc""#, "int_parsing"),
            ("stream", "2", "bool_parsing"),
            ("stream", "[]", "bool_type"),
            ("stream_options", "true", "dict_type"),
            ("stop", r#""END""#, "list_type"),
        ] {
            let (loc, k, _) = one(&format!(r#"{{"model":"m",{MSG},"{field}":{value}}}"#));
            assert_eq!((loc, k), (json!(["body", field]), kind), "{field}={value}");
        }
    }

    #[test]
    fn coercions_are_patched_into_the_forwarded_body() {
        let body = format!(
            r#"{{"model":"m",{MSG},"n":"2","temperature":"0.5","stream":"no","max_tokens":8.0,"seed":"7"}}"#
        );
        let out = run(&body).expect("valid");
        assert_eq!(out.request.n, Some(2));
        assert_eq!(out.request.temperature, Some(0.5));
        assert_eq!(out.request.stream, Some(false));
        assert_eq!(out.request.max_tokens, Some(8));
        assert_eq!(out.request.seed, Some(7));
        let fwd: Value = serde_json::from_slice(&out.body).expect("forwarded JSON");
        assert_eq!(fwd["n"], json!(2));
        assert_eq!(fwd["temperature"], json!(0.5));
        assert_eq!(fwd["stream"], json!(false));
        assert_eq!(fwd["max_tokens"], json!(8));
        assert_eq!(fwd["seed"], json!(7));
        let out = run(&format!(r#"{{"model":"m",{MSG},"temperature":true}}"#)).expect("bool");
        assert_eq!(out.request.temperature, Some(1.0));
    }

    #[test]
    fn defaults_are_written_in_and_switchable() {
        let body = format!(r#"{{"model":"m",{MSG}}}"#);
        let out = run(&body).expect("valid");
        assert_eq!(
            &out.body[..],
            format!(r#"{{"model":"m",{MSG},"temperature":0.0,"n":1}}"#).as_bytes()
        );
        assert_eq!(
            (out.request.temperature, out.request.n),
            (Some(0.0), Some(1))
        );
        let off = ValidateConfig {
            apply_defaults: false,
            ..cfg()
        };
        let raw = Bytes::from(format!(r#"{{ "model" : "m", {MSG}, "top_p": 0.5 }}"#));
        let out = validate_bytes(raw.clone(), true, &off).expect("valid");
        // Nothing changed: the very same bytes go on.
        assert_eq!(out.body, raw);
        assert_eq!(out.body.as_ptr(), raw.as_ptr());
        assert_eq!(out.request.temperature, None);
    }

    #[test]
    fn unknown_members_are_kept_at_every_level() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"bob"}],"top_p":0.5,
            "tools":[{"type":"function","function":{"name":"f","x-extra":1},"cache":true}]}"#;
        let out = run(body).expect("valid");
        assert_eq!(out.request.extra.get("top_p").map(|r| r.get()), Some("0.5"));
        assert_eq!(
            out.request.messages[0].extra.get("name").map(|r| r.get()),
            Some(r#""bob""#)
        );
        let tool = &out.request.tools.as_ref().expect("tools")[0];
        assert!(tool.extra.get("cache").is_some());
        assert!(
            tool.function
                .as_ref()
                .expect("f")
                .extra
                .get("x-extra")
                .is_some()
        );
        // Re-serializing the typed request keeps them too.
        let again: Value = serde_json::to_value(&out.request).expect("serialize");
        assert_eq!(again["messages"][0]["name"], "bob");
        assert_eq!(again["tools"][0]["function"]["x-extra"], 1);
        let fwd: Value = serde_json::from_slice(&out.body).expect("json");
        assert_eq!(fwd["messages"][0]["name"], "bob");
    }

    #[test]
    fn content_union_reports_both_branches() {
        let e =
            errs(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#);
        let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
        assert_eq!(
            kinds,
            [
                (
                    json!(["body", "messages", 0, "content", "str"]),
                    "string_type"
                ),
                (
                    json!([
                        "body",
                        "messages",
                        0,
                        "content",
                        CONTENT_LIST,
                        0,
                        "image_url",
                        "image_url"
                    ]),
                    "missing"
                ),
            ]
        );
        let out = run(r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"input_audio","input_audio":{"data":"x","format":"mp3"}}]}]}"#)
            .expect("parts");
        assert_eq!(out.request.messages[0].text(), "a");
        let e = errs(r#"{"model":"m","messages":[{"role":"user","content":["x"]}]}"#);
        assert_eq!(
            e[1].0,
            json!(["body", "messages", 0, "content", CONTENT_LIST, 0])
        );
        assert_eq!(e[1].1, "model_attributes_type");
    }

    #[test]
    fn tools_and_tool_choice() {
        let e = errs(&format!(
            r#"{{"model":"m",{MSG},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"properties":{{"x":{{"type":["string","bogus"]}}}}}}}}}}]}}"#
        ));
        assert_eq!((e[0].1, e[1].1), ("literal_error", "literal_error"));
        assert_eq!(e[0].0[6], json!("x"));
        assert_eq!(e[1].0[9], json!(1), "the bad list item is named");
        let out = run(&format!(
            r#"{{"model":"m",{MSG},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"properties":{{"x":{{"type":["string","null"],"enum":["a",1,2.5,true],"items":{{"type":"integer"}}}}}}}}}}}}],"tool_choice":"required"}}"#
        ))
        .expect("valid");
        let tools = out.request.tools.expect("tools");
        let params = tools[0]
            .function
            .as_ref()
            .expect("f")
            .parameters
            .as_ref()
            .expect("p");
        assert_eq!(params.properties[0].0, "x");
        assert_eq!(
            out.request.tool_choice,
            Some(ToolChoice::Mode(ToolChoiceMode::Required))
        );
        let e = errs(&format!(
            r#"{{"model":"m",{MSG},"tool_choice":{{"type":"other","function":{{"name":"f"}}}}}}"#
        ));
        let kinds: Vec<_> = e.iter().map(|(l, k, _)| (l.clone(), *k)).collect();
        assert_eq!(
            kinds,
            [
                (
                    json!(["body", "tool_choice", CHOICE_LITERAL]),
                    "literal_error"
                ),
                (
                    json!(["body", "tool_choice", "ToolChoice", "type"]),
                    "literal_error"
                ),
            ]
        );
        let e = errs(&format!(
            r#"{{"model":"m",{MSG},"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"properties":{{"x":{{"enum":[null]}}}}}}}}}}]}}"#
        ));
        let kinds: Vec<_> = e.iter().map(|(_, k, _)| *k).collect();
        assert_eq!(
            kinds,
            ["string_type", "int_type", "float_type", "bool_type"]
        );
        assert_eq!(e[0].0.as_array().expect("loc").last(), Some(&json!("str")));
    }
}

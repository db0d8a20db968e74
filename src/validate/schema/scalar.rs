//! Scalars with pydantic's lax coercion: strings, floats, integers, booleans, lists.

use super::*;

impl Cx<'_, '_> {
    // ---- scalars --------------------------------------------------------------------------

    pub(super) fn string(&mut self, v: usize) -> Option<String> {
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
    pub(super) fn req_string(
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
    pub(super) fn opt_string(
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

    pub(super) fn float(&mut self, v: usize) -> Option<f64> {
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

    pub(super) fn int(&mut self, v: usize) -> Option<i128> {
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

    pub(super) fn bool(&mut self, v: usize) -> Option<bool> {
        let n = self.doc.node(v);
        let parsed = match n.kind {
            Kind::Bool(b) => return Some(b),
            // pydantic: an integer other than 0/1 is `bool_parsing`; a float must first be a
            // whole number within `i64` (else `bool_type`), then 0 or 1 (else `bool_parsing`).
            Kind::Number => {
                let text = self.doc.raw(v);
                let whole = if text.contains(['.', 'e', 'E']) {
                    text.parse::<f64>()
                        .ok()
                        .filter(|x| {
                            x.fract() == 0.0 && (i64::MIN as f64) < *x && *x < (i64::MAX as f64)
                        })
                        .map(|x| x as i64)
                } else {
                    text.parse::<i64>().ok()
                };
                match whole {
                    Some(0) => Some(false),
                    Some(1) => Some(true),
                    Some(_) => None,
                    None => {
                        self.err(&[], "bool_type", "Input should be a valid boolean", v, None);
                        return None;
                    }
                }
            }
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

    pub(super) fn opt_bool(
        &mut self,
        slot: Option<usize>,
        name: &'static str,
    ) -> Result<Option<bool>, ()> {
        if self.is_null(slot) {
            return Ok(None);
        }
        let v = slot.expect("not null");
        self.at(Seg::Key(name), |cx| cx.bool(v)).map(Some).ok_or(())
    }

    /// A non-negative integer with `ge` bound.
    pub(super) fn int_ge(&mut self, v: usize, ge: i128) -> Option<i128> {
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

    pub(super) fn list(&mut self, v: usize) -> bool {
        if self.doc.node(v).kind == Kind::Array {
            true
        } else {
            self.err(&[], "list_type", "Input should be a valid list", v, None);
            false
        }
    }

    pub(super) fn too_short(&mut self, v: usize, min: usize, actual: usize) {
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

    pub(super) fn string_list(&mut self, v: usize) -> Option<Vec<String>> {
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

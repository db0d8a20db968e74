//! Tool definitions (function and uc_function, parameter schemas) and `tool_choice`.

use super::*;

impl Cx<'_, '_> {
    pub(super) fn tools(&mut self, v: usize) -> Option<Vec<Tool>> {
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

    pub(super) fn tool(&mut self, v: usize) -> Option<Tool> {
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

    pub(super) fn function_def(&mut self, v: usize) -> Option<FunctionDefinition> {
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

    pub(super) fn params(&mut self, v: usize) -> Option<FunctionParams> {
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

    pub(super) fn param_property(&mut self, v: usize) -> Option<ParamProperty> {
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

    pub(super) fn param_types(&mut self, v: usize) -> Option<ParamTypes> {
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

    pub(super) fn tool_choice(&mut self, v: usize) -> Option<ToolChoice> {
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

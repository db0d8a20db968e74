//! Messages: role, content (string or tagged parts), tool calls.

use super::*;

impl Cx<'_, '_> {
    pub(super) fn messages(&mut self, v: usize) -> Option<Vec<Message>> {
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

    pub(super) fn message(&mut self, v: usize) -> Option<Message> {
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

    pub(super) fn content(&mut self, v: usize) -> Option<MessageContent> {
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

    pub(super) fn content_part(&mut self, v: usize) -> Option<ContentPart> {
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

    pub(super) fn image_url(&mut self, v: usize) -> Option<ImageUrl> {
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

    pub(super) fn input_audio(&mut self, v: usize) -> Option<InputAudio> {
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

    pub(super) fn tool_call(&mut self, v: usize) -> Option<ToolCall> {
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
                // `name` and `arguments` are optional (MLflow 3.8.1), strings when present.
                let f = cx.fields(fv, ["name", "arguments"]);
                let name = cx.opt_string(f.slots[0], "name");
                let arguments = cx.opt_string(f.slots[1], "arguments");
                Some(FunctionCall {
                    name: name.ok()?,
                    arguments: arguments.ok()?,
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
}

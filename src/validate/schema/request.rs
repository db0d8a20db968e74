//! The top-level request object and the defaults written into it.

use super::*;

impl Cx<'_, '_> {
    // ---- the request ----------------------------------------------------------------------

    pub(super) fn request(&mut self, obj: usize, defaults: bool) -> Option<ChatCompletionRequest> {
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

        // `temperature` and `n` carry a default but are not nullable: `null` is a type error.
        let temperature = if let Some(v) = temperature {
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
        } else {
            None
        };

        let n = match n {
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
                    // Any object is accepted; `include_usage` is a (lax) boolean when present.
                    let f = cx.fields(v, ["include_usage"]);
                    let include_usage = cx.opt_bool(f.slots[0], "include_usage").ok()?;
                    let mut extra = f.extra;
                    if include_usage.is_none()
                        && let Some(u) = f.slots[0]
                    {
                        // `null`: kept as the client sent it.
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
            self.default_in(obj, f.slots[0], r#","temperature":0.0"#);
            self.default_in(obj, f.slots[1], r#","n":1"#);
            req.temperature.get_or_insert(0.0);
            req.n.get_or_insert(1);
        }
        Some(req)
    }

    /// Appends `member` (`,"name":value`) to the top-level object when the member is absent.
    pub(super) fn default_in(&mut self, obj: usize, slot: Option<usize>, member: &'static str) {
        if slot.is_none() {
            let end = self.doc.node(obj).end as usize - 1;
            // The object is non-empty: `model` and `messages` passed.
            self.patches.push((end..end, Cow::Borrowed(member)));
        }
    }
}

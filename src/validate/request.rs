//! [`ValidatedRequest`]: the typed request and the bytes that represent it, kept in step.

use std::borrow::Cow;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::contract::{ChatCompletionRequest, Message, StreamOptions, Tool};
use crate::json::{Doc, Kind};

/// A byte patch on the client's body: the range is replaced by the text.
pub(crate) type Patch = (Range<usize>, Cow<'static, str>);

/// Top-level members that edits may replace, each with the byte span of its value in the
/// client's body (if present) and the patch that now stands for it (once edited).
#[derive(Clone, Debug, Default)]
struct Slot {
    span: Option<Range<usize>>,
    patch: Option<usize>,
}

/// Where the editable parts of the body are.
#[derive(Clone, Debug, Default)]
pub(crate) struct Spans {
    model: Slot,
    stream: Slot,
    stream_options: Slot,
    tools: Slot,
    messages: Slot,
    /// The `]` of `messages` (messages are appended before it).
    messages_close: usize,
    /// The `}` of the top-level object (new members are inserted before it).
    object_close: usize,
}

impl Spans {
    /// Finds the spans in a validated document (the root is an object with `model` and a
    /// non-empty `messages` array). Only the top-level members are visited.
    pub(crate) fn find(doc: &Doc<'_>) -> Self {
        let mut s = Spans {
            object_close: doc.node(0).end as usize - 1,
            ..Spans::default()
        };
        for (k, v) in doc.members(0) {
            let n = doc.node(v);
            let span = Some(n.start as usize..n.end as usize);
            let slot = if doc.key_is(k, "model") {
                &mut s.model
            } else if doc.key_is(k, "stream") {
                &mut s.stream
            } else if doc.key_is(k, "stream_options") {
                &mut s.stream_options
            } else if doc.key_is(k, "tools") {
                &mut s.tools
            } else if doc.key_is(k, "messages") {
                if n.kind == Kind::Array {
                    s.messages_close = n.end as usize - 1;
                }
                &mut s.messages
            } else {
                continue;
            };
            // Duplicate keys are rejected before this point, so each slot is seen once.
            slot.span = span;
        }
        s
    }
}

/// A chat-completions request that passed validation: the typed request and the bytes to
/// forward, which can never disagree.
///
/// [`ValidateLayer`](super::ValidateLayer) makes it the **body type** of the request it hands
/// on (`Request<ValidatedRequest>`), so a layer or service that needs the parsed request is a
/// `Service<Request<ValidatedRequest>>` and cannot be mounted where nothing validated the body:
/// the stack does not compile.
///
/// # Editing
///
/// Layers change the request through the edit methods ([`set_model`](Self::set_model),
/// [`set_stream`](Self::set_stream), [`set_include_usage`](Self::set_include_usage),
/// [`set_tools`](Self::set_tools), [`push_message`](Self::push_message),
/// [`set_messages`](Self::set_messages)). Each changes the
/// typed value and records a splice at the byte span the validator recorded; the forwarded
/// bytes are produced once, by [`to_bytes`](Self::to_bytes) (or by reading the body), as the
/// client's bytes with the splices applied. Nothing parses the JSON again, every member a
/// layer did not touch is forwarded byte for byte, and unknown members are kept.
///
/// It is also an [`http_body::Body`] that yields those bytes once, so a service written for
/// any body type can be a route.
///
/// ```
/// use bytes::Bytes;
/// use chatgate::validate::{validate, ValidateConfig};
///
/// let cfg = ValidateConfig { apply_defaults: false, ..ValidateConfig::default() };
/// let mut req = validate(
///     Bytes::from_static(br#"{"model":"m", "messages":[{"role":"user","content":"hi"}],"stream":true,"x":1}"#),
///     &cfg,
/// )
/// .unwrap();
/// req.set_model("llama-3");
/// req.set_include_usage(true);
/// assert_eq!(req.request().model, "llama-3");
/// assert!(req.request().include_usage());
/// assert_eq!(
///     req.to_bytes(),
///     r#"{"model":"llama-3", "messages":[{"role":"user","content":"hi"}],"stream":true,"x":1,"stream_options":{"include_usage":true}}"#
/// );
/// ```
#[derive(Clone, Debug)]
pub struct ValidatedRequest {
    request: Arc<ChatCompletionRequest>,
    original: Bytes,
    patches: Vec<Patch>,
    spans: Spans,
    /// The body has been read (as an `http_body::Body`).
    read: bool,
}

impl ValidatedRequest {
    pub(crate) fn from_parts(
        request: ChatCompletionRequest,
        original: Bytes,
        patches: Vec<Patch>,
        spans: Spans,
    ) -> Self {
        Self {
            request: Arc::new(request),
            original,
            patches,
            spans,
            read: false,
        }
    }

    /// A validated request made from a typed one (serialized, then validated without
    /// defaults); for tests and for services that make requests of their own.
    ///
    /// # Errors
    /// The request does not satisfy the schema (e.g. no messages).
    pub fn from_request(
        request: &ChatCompletionRequest,
    ) -> Result<Self, crate::error::ValidationErrors> {
        let body = serde_json::to_vec(request).unwrap_or_default();
        let cfg = super::ValidateConfig {
            apply_defaults: false,
            max_depth: usize::MAX,
            ..super::ValidateConfig::default()
        };
        super::validate(Bytes::from(body), &cfg)
    }

    /// The typed request (coercions, defaults and edits applied).
    pub fn request(&self) -> &ChatCompletionRequest {
        &self.request
    }

    /// A shared handle to the typed request (a snapshot: later edits make a new one).
    pub fn shared(&self) -> Arc<ChatCompletionRequest> {
        Arc::clone(&self.request)
    }

    /// The bytes to forward: the client's body with coercions, defaults and edits spliced in.
    /// Without any, the client's own bytes (no copy).
    pub fn to_bytes(&self) -> Bytes {
        self.render(None)
    }

    /// [`to_bytes`](Self::to_bytes) with the top-level `model` replaced by `model` when it
    /// differs: for a hop that knows the model by another name (an upstream's own name for
    /// it), without changing the request the other layers see.
    pub fn to_bytes_with_model(&self, model: &str) -> Bytes {
        if self.request.model == model {
            self.render(None)
        } else {
            self.render(Some(model))
        }
    }

    fn render(&self, model: Option<&str>) -> Bytes {
        let model_text = model.map(json_string);
        if self.patches.is_empty() && model_text.is_none() {
            return self.original.clone();
        }
        let mut list: Vec<(&Range<usize>, &str)> = Vec::with_capacity(self.patches.len() + 1);
        for (i, (r, t)) in self.patches.iter().enumerate() {
            let t = match (&model_text, self.spans.model.patch) {
                (Some(m), Some(j)) if i == j => m.as_str(),
                _ => t,
            };
            list.push((r, t));
        }
        if let (Some(m), None, Some(span)) = (
            &model_text,
            self.spans.model.patch,
            self.spans.model.span.as_ref(),
        ) {
            list.push((span, m));
        }
        // Stable: inserts at one place keep the order they were made in.
        list.sort_by_key(|(r, _)| r.start);
        let extra: usize = list.iter().map(|(_, t)| t.len()).sum();
        let src = &self.original[..];
        let mut out = BytesMut::with_capacity(src.len() + extra);
        let mut at = 0;
        for (r, text) in list {
            if r.start < at {
                // Only superseded (empty) patches can start inside a replaced span.
                continue;
            }
            out.extend_from_slice(&src[at..r.start]);
            out.extend_from_slice(text.as_bytes());
            at = r.end;
        }
        out.extend_from_slice(&src[at..]);
        out.freeze()
    }

    fn typed(&mut self) -> &mut ChatCompletionRequest {
        Arc::make_mut(&mut self.request)
    }

    /// Replaces the value of one top-level member (or inserts the member) with `json`.
    fn splice(&mut self, field: Field, json: String) {
        self.splice_text(field, |inserted| {
            Cow::Owned(if inserted {
                format!(",\"{}\":{json}", field.name())
            } else {
                json
            })
        });
    }

    /// As [`splice`](Self::splice), the text made by `text(inserted)`: the member
    /// (`,"name":value`) when the request had no such member, else the value alone.
    fn splice_text(&mut self, field: Field, text: impl FnOnce(bool) -> Cow<'static, str>) {
        let close = self.spans.object_close;
        let slot = match field {
            Field::Model => &mut self.spans.model,
            Field::Stream => &mut self.spans.stream,
            Field::StreamOptions => &mut self.spans.stream_options,
            Field::Tools => &mut self.spans.tools,
            Field::Messages => &mut self.spans.messages,
        };
        let text = text(slot.span.is_none());
        if let Some(i) = slot.patch {
            self.patches[i].1 = text;
            return;
        }
        let range = match &slot.span {
            Some(span) => {
                // Patches inside the replaced value (coercions, appended messages) are
                // superseded: emptied and moved to the start of the span, so that they sort
                // before the replacement (which is pushed after them).
                for (r, t) in &mut self.patches {
                    let inside = r.start >= span.start && r.end <= span.end;
                    let strictly = r.start > span.start && r.end < span.end;
                    if inside && (r.start != r.end || strictly) {
                        *r = span.start..span.start;
                        *t = Cow::Borrowed("");
                    }
                }
                span.clone()
            }
            None => close..close,
        };
        slot.patch = Some(self.patches.len());
        self.patches.push((range, text));
    }

    /// Sets the top-level `model`.
    pub fn set_model(&mut self, model: &str) {
        if self.request.model == model {
            return;
        }
        self.typed().model = model.to_owned();
        self.splice(Field::Model, json_string(model));
    }

    /// Sets `stream`. Turning streaming off also clears `stream_options` (sent as `null`),
    /// which OpenAI rejects on a request that does not stream.
    pub fn set_stream(&mut self, on: bool) {
        if self.request.stream != Some(on) {
            self.typed().stream = Some(on);
            self.splice(Field::Stream, on.to_string());
        }
        if !on && self.request.stream_options.is_some() {
            self.typed().stream_options = None;
            self.splice(Field::StreamOptions, "null".to_owned());
        }
    }

    /// Sets `stream_options.include_usage` (creating `stream_options` when absent); the other
    /// members of `stream_options` are kept.
    pub fn set_include_usage(&mut self, on: bool) {
        if self
            .request
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage == Some(on))
        {
            return;
        }
        let options = self
            .typed()
            .stream_options
            .get_or_insert_with(StreamOptions::default);
        options.include_usage = Some(on);
        if options.extra.is_empty() {
            // The usual case (a meter asking for usage on a stream whose client did not): no
            // serialising, no allocation.
            self.splice_text(Field::StreamOptions, |inserted| {
                Cow::Borrowed(match (inserted, on) {
                    (true, true) => r#","stream_options":{"include_usage":true}"#,
                    (true, false) => r#","stream_options":{"include_usage":false}"#,
                    (false, true) => r#"{"include_usage":true}"#,
                    (false, false) => r#"{"include_usage":false}"#,
                })
            });
            return;
        }
        let json = serde_json::to_string(&*options).unwrap_or_default();
        self.splice(Field::StreamOptions, json);
    }

    /// Replaces `tools` (`None` sends `null`, which means none).
    pub fn set_tools(&mut self, tools: Option<Vec<Tool>>) {
        let json = match &tools {
            Some(t) => serde_json::to_string(t).unwrap_or_else(|_| "null".to_owned()),
            None => "null".to_owned(),
        };
        self.typed().tools = tools;
        self.splice(Field::Tools, json);
    }

    /// Appends a message to the conversation.
    pub fn push_message(&mut self, message: Message) {
        let json = serde_json::to_string(&message).unwrap_or_default();
        self.typed().messages.push(message);
        if self.spans.messages.patch.is_some() {
            // The whole array was replaced: render it again.
            self.render_messages();
            return;
        }
        let at = self.spans.messages_close;
        self.patches.push((at..at, Cow::Owned(format!(",{json}"))));
    }

    /// Replaces the whole conversation (e.g. to rewrite earlier messages). The caller keeps it
    /// non-empty, as validation requires.
    pub fn set_messages(&mut self, messages: Vec<Message>) {
        self.typed().messages = messages;
        self.render_messages();
    }

    fn render_messages(&mut self) {
        let json = serde_json::to_string(&self.request.messages).unwrap_or_else(|_| "[]".into());
        self.splice(Field::Messages, json);
    }
}

#[derive(Clone, Copy)]
enum Field {
    Model,
    Stream,
    StreamOptions,
    Tools,
    Messages,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Model => "model",
            Field::Stream => "stream",
            Field::StreamOptions => "stream_options",
            Field::Tools => "tools",
            Field::Messages => "messages",
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

impl Body for ValidatedRequest {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.read {
            return Poll::Ready(None);
        }
        this.read = true;
        Poll::Ready(Some(Ok(Frame::data(this.to_bytes()))))
    }

    fn is_end_stream(&self) -> bool {
        self.read
    }

    fn size_hint(&self) -> SizeHint {
        if self.read {
            SizeHint::with_exact(0)
        } else if self.patches.is_empty() {
            SizeHint::with_exact(self.original.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{ValidateConfig, validate};
    use super::*;
    use crate::contract::MessageContent;
    use http_body_util::BodyExt;

    fn req(body: impl Into<Bytes>, defaults: bool) -> ValidatedRequest {
        let cfg = ValidateConfig {
            apply_defaults: defaults,
            ..ValidateConfig::default()
        };
        validate(body.into(), &cfg).unwrap()
    }

    /// The bytes parse to the typed request: they can never disagree.
    fn agree(r: &ValidatedRequest) {
        let from_bytes: ChatCompletionRequest = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(
            &from_bytes,
            r.request(),
            "{}",
            String::from_utf8_lossy(&r.to_bytes())
        );
    }

    #[test]
    fn unedited_is_the_clients_bytes() {
        let body =
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":1,"temperature":0}"#;
        let r = req(body, true);
        assert_eq!(r.to_bytes(), body);
        assert_eq!(r.to_bytes().as_ptr(), r.original.as_ptr());
        agree(&r);
    }

    #[test]
    fn every_edit_agrees_with_the_typed_value() {
        let mut r = req(
            r#"{ "stream" : "yes", "model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"uc_function","uc_function":{"name":"a.b.c"}}],"z":[1]}"#,
            true,
        );
        agree(&r);
        r.set_model("other \"quoted\"");
        agree(&r);
        r.set_include_usage(true);
        agree(&r);
        assert!(
            r.to_bytes()
                .ends_with(br#","stream_options":{"include_usage":true}}"#)
        );
        r.set_include_usage(false);
        agree(&r);
        let tool: Tool = serde_json::from_str(
            r#"{"type":"function","function":{"name":"f","parameters":{"properties":{}}}}"#,
        )
        .unwrap();
        r.set_tools(Some(vec![tool]));
        agree(&r);
        r.push_message(Message {
            role: "assistant".into(),
            content: Some(MessageContent::Text("ok".into())),
            ..Default::default()
        });
        r.push_message(Message {
            role: "tool".into(),
            content: Some(MessageContent::Text("42".into())),
            tool_call_id: Some("c1".into()),
            ..Default::default()
        });
        agree(&r);
        assert_eq!(r.request().messages.len(), 3);
        r.set_stream(false);
        agree(&r);
        assert!(r.request().stream_options.is_none());
        r.set_model("m");
        agree(&r);
        let text = String::from_utf8(r.to_bytes().to_vec()).unwrap();
        assert!(
            text.contains(r#""z":[1]"#) && text.starts_with(r#"{ "stream" : false, "model":"m""#),
            "{text}"
        );
    }

    #[test]
    fn set_messages_agrees_with_the_typed_value() {
        let mut r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi","tool_calls":[{"id":"a","type":"function","function":{}}]}],"tools":[{"type":"function","function":{"name":"f","strict":"yes","parameters":{"properties":{}}}}],"stream":"1"}"#,
            true,
        );
        agree(&r);
        let text = |role: &str, t: &str| Message {
            role: role.into(),
            content: Some(MessageContent::Text(t.into())),
            ..Default::default()
        };
        // Appended, then replaced, then appended to the replacement.
        r.push_message(text("assistant", "first"));
        agree(&r);
        r.set_messages(vec![text("system", "s"), text("user", "u \"q\"")]);
        agree(&r);
        assert_eq!(r.request().messages.len(), 2);
        r.push_message(text("assistant", "a"));
        agree(&r);
        r.set_messages(vec![text("user", "again")]);
        r.push_message(text("tool", "42"));
        agree(&r);
        assert_eq!(r.request().messages.len(), 2);
        // A coercion inside `tools` (`strict`) is superseded by `set_tools`.
        r.set_tools(None);
        agree(&r);
        r.set_stream(false);
        agree(&r);
        assert_eq!(
            r.to_bytes(),
            r#"{"model":"m","messages":[{"role":"user","content":"again"},{"role":"tool","content":"42"}],"tools":null,"stream":false,"temperature":0.0,"n":1}"#
        );
    }

    #[test]
    fn include_usage_is_set_in_every_form_stream_options_comes_in() {
        let body = |options: &str| {
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":true{options}}}"#
            )
        };
        for (options, on, then) in [
            ("", true, r#","stream_options":{"include_usage":true}"#),
            ("", false, r#","stream_options":{"include_usage":false}"#),
            (
                r#","stream_options":null"#,
                true,
                r#","stream_options":{"include_usage":true}"#,
            ),
            (
                r#","stream_options":{"include_usage":false}"#,
                true,
                r#","stream_options":{"include_usage":true}"#,
            ),
            (
                r#","stream_options":{}"#,
                false,
                r#","stream_options":{"include_usage":false}"#,
            ),
        ] {
            let mut r = req(body(options), false);
            r.set_include_usage(on);
            agree(&r);
            assert_eq!(r.to_bytes(), body(then), "{options} set to {on}");
            // And back: the patch is replaced, not added to.
            r.set_include_usage(!on);
            agree(&r);
            assert_eq!(r.request().include_usage(), !on);
        }
    }

    #[test]
    fn stream_options_object_is_edited_in_place() {
        let mut r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"other":1}}"#,
            false,
        );
        r.set_include_usage(true);
        agree(&r);
        assert_eq!(
            r.to_bytes(),
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true,"other":1}}"#
        );
    }

    #[test]
    fn model_for_a_hop_leaves_the_request_alone() {
        let mut r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            true,
        );
        assert_eq!(
            r.to_bytes_with_model("up"),
            r#"{"model":"up","messages":[{"role":"user","content":"hi"}],"temperature":0.0,"n":1}"#
        );
        assert_eq!(r.request().model, "m");
        r.set_model("x");
        assert_eq!(
            r.to_bytes_with_model("up"),
            r#"{"model":"up","messages":[{"role":"user","content":"hi"}],"temperature":0.0,"n":1}"#
        );
        assert_eq!(
            r.to_bytes_with_model("x"),
            r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0.0,"n":1}"#
        );
    }

    #[test]
    fn from_request_round_trips() {
        let r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"q":true}"#,
            true,
        );
        let again = ValidatedRequest::from_request(r.request()).unwrap();
        assert_eq!(again.request(), r.request());
    }

    #[tokio::test]
    async fn is_a_body_of_the_forwarded_bytes() {
        let mut r = req(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            false,
        );
        r.set_model("b");
        let bytes = r.clone().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, r.to_bytes());
    }
}

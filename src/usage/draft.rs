//! The record of one request while it is served: filled by the outer layer, the meter and the
//! body observers, and sent exactly once, when the last of them lets go of it (`Drop`).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::sync::mpsc::OwnedPermit;
use tokio::time::Instant;

use super::answer::CheckedAnswer;
use super::record::unix_ms;
use super::scan::{self, Quick};
use super::sink::Msg;
use super::{UsageHandle, UsageRecord};
use crate::body::EndKind;
use crate::contract::ChatCompletionRequest;
use crate::rate_limit::Used;
use crate::rate_limit::{Settlement, SettlementSlot, SlotCell};
use crate::sse::Event;

/// The usage the upstream reported (`usage` of a completion or of the last chunk).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub(crate) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) completion_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) total_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub(crate) completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) struct PromptDetails {
    #[serde(default)]
    pub(crate) cached_tokens: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) struct CompletionDetails {
    #[serde(default)]
    pub(crate) reasoning_tokens: Option<u64>,
}

/// What the meter learned from a response body.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub(crate) usage: Option<WireUsage>,
    pub(crate) response_model: Option<Arc<str>>,
    /// The route's model name (when known before the body is read): the response's model,
    /// when the same, is shared with it rather than copied.
    pub(crate) routed: Option<Arc<str>>,
    pub(crate) finish_reasons: Vec<String>,
    /// Streamed content deltas (a delta is about one token), over all choices.
    pub(crate) deltas: u64,
    /// Non-streamed: the text of the answers, for an estimate.
    pub(crate) completion_text: String,
    pub(crate) first_content: Option<Instant>,
    pub(crate) saw_done: bool,
    pub(crate) saw_error: Option<String>,
    pub(crate) oversized: bool,
    pub(crate) unknown: bool,
    pub(crate) invalid: bool,
    /// The first chunk was read (its model noted): later ones may be [looked at](super::scan)
    /// quickly.
    parsed_chunk: bool,
    /// The last event was a chunk, not the first, whose quick look found a delta with content.
    pub(crate) last_was_delta: bool,
}

#[derive(Deserialize)]
struct ChunkWire<'a> {
    #[serde(default, borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    choices: Option<Vec<ChunkChoiceWire<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChunkChoiceWire<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaWire<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaWire<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<IgnoredAny>>,
}

#[derive(Deserialize)]
struct ErrorWire<'a> {
    #[serde(borrow)]
    error: ErrorBody<'a>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

/// `code`, else `type`, of an OpenAI error envelope.
pub(crate) fn error_code(data: &[u8]) -> Option<String> {
    let e: ErrorWire<'_> = serde_json::from_slice(data).ok()?;
    e.error.code.or(e.error.kind).map(|c| c.into_owned())
}

impl Observed {
    /// One event of a stream; whether it is a usage-only chunk
    /// ([`is_usage_only_chunk`](crate::sse::is_usage_only_chunk)).
    pub(crate) fn event(&mut self, e: &Event<'_>) -> bool {
        self.last_was_delta = false;
        if e.is_oversized() {
            self.oversized = true;
            return false;
        }
        let data = e.data();
        if e.is_done() {
            self.saw_done = true;
            return false;
        }
        if e.is_error() {
            self.saw_error = Some(error_code(data).unwrap_or_else(|| "upstream_failed".into()));
            return false;
        }
        // The first chunk with a model gives the response's model: quickly when it is written
        // plainly.
        let first_model = if self.response_model.is_some() {
            None
        } else {
            scan::model(data)
        };
        if (self.parsed_chunk || first_model.is_some())
            && let Quick::Delta { content } = scan::quick(data, &mut self.finish_reasons)
        {
            // Not the first chunk: that one often also carries the role, unlike the rest.
            self.last_was_delta = content && first_model.is_none();
            if let Some(m) = first_model {
                self.response_model = Some(shared(m, self.routed.as_ref()));
                self.parsed_chunk = true;
            }
            if content {
                self.content_delta();
            }
            return false;
        }
        self.parse_chunk(data)
    }

    /// A chunk read whole; whether it is a usage-only chunk. A chunk without choices (the
    /// usage chunk) is read in one pass when it is plain, others with serde.
    fn parse_chunk(&mut self, data: &[u8]) -> bool {
        let Some(c) = super::answer::read_choiceless_chunk(data) else {
            return self.parse_chunk_serde(data);
        };
        self.parsed_chunk = true;
        if self.response_model.is_none()
            && let Some(m) = c.model
        {
            self.response_model = Some(shared(m, self.routed.as_ref()));
        }
        if c.usage.is_some() {
            self.usage = c.usage;
        }
        c.usage.is_some() && c.is_chunk
    }

    /// [`parse_chunk`](Self::parse_chunk) with serde.
    fn parse_chunk_serde(&mut self, data: &[u8]) -> bool {
        let Ok(chunk) = serde_json::from_slice::<ChunkWire<'_>>(data) else {
            return false;
        };
        self.parsed_chunk = true;
        let usage_only = chunk.usage.is_some()
            && chunk.choices.as_ref().is_some_and(Vec::is_empty)
            && chunk.object.as_deref() == Some("chat.completion.chunk");
        if self.response_model.is_none()
            && let Some(m) = chunk.model
        {
            self.response_model = Some(shared(&m, self.routed.as_ref()));
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        for c in chunk.choices.into_iter().flatten() {
            if let Some(d) = c.delta {
                let content = d.content.is_some_and(|s| !s.is_empty())
                    || d.reasoning_content.is_some_and(|s| !s.is_empty())
                    || d.tool_calls.is_some_and(|t| !t.is_empty());
                if content {
                    self.content_delta();
                }
            }
            if let Some(r) = c.finish_reason {
                self.finish_reasons.push(r.into_owned());
            }
        }
        usage_only
    }

    fn content_delta(&mut self) {
        self.content_deltas(1);
    }

    /// `n` content deltas went by.
    pub(crate) fn content_deltas(&mut self, n: u64) {
        self.deltas += n;
        if n > 0 && self.first_content.is_none() {
            self.first_content = Some(Instant::now());
        }
    }

    /// A whole non-streamed body; `false` when it is not a chat completion.
    pub(crate) fn completion(&mut self, body: Bytes) -> bool {
        match CheckedAnswer::check(body) {
            Some(a) => {
                self.answer(a);
                true
            }
            None => {
                self.invalid = true;
                false
            }
        }
    }

    /// A non-streamed answer already checked (by the upstream client, or by
    /// [`completion`](Self::completion)); its text is read (a second parse) only when the
    /// upstream reported no usage and the tokens must be estimated.
    pub(crate) fn answer(&mut self, a: CheckedAnswer) {
        self.response_model = a.model().map(|m| shared(m, self.routed.as_ref()));
        self.usage = a.usage;
        self.unknown |= a.unreadable;
        if self.usage.is_none() && !a.unreadable {
            self.completion_text = completion_text(a.body());
        }
        self.finish_reasons = a.finish_reasons;
    }
}

/// The text of a completion's answers (content and tool calls), for an estimate.
fn completion_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Texts {
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        #[serde(default)]
        message: Option<Message>,
    }
    #[derive(Deserialize)]
    struct Message {
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        tool_calls: Option<serde_json::Value>,
    }
    let mut text = String::new();
    let Ok(t) = serde_json::from_slice::<Texts>(body) else {
        return text;
    };
    for m in t.choices.into_iter().filter_map(|c| c.message) {
        if let Some(content) = m.content {
            text.push_str(&content);
        }
        if let Some(calls) = m.tool_calls {
            text.push_str(&calls.to_string());
        }
    }
    text
}

/// What the outer layer learned.
#[derive(Debug, Default)]
pub(crate) struct Outer {
    pub(crate) status: Option<u16>,
    pub(crate) end: Option<EndKind>,
    pub(crate) first_byte: Option<Instant>,
    pub(crate) ended: Option<Instant>,
    pub(crate) error: Option<String>,
    pub(crate) routed_model: Option<Arc<str>>,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) key_id: Option<String>,
}

/// What the meter learned from the request.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) metered: bool,
    /// The status of the answer the meter got from the services inside it.
    pub(crate) answered: Option<http::StatusCode>,
    pub(crate) request: Option<Arc<ChatCompletionRequest>>,
    pub(crate) streamed: bool,
    pub(crate) key_id: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) observed: Observed,
}

/// One request's record in the making.
pub(crate) struct Draft {
    handle: UsageHandle,
    permit: Mutex<Option<OwnedPermit<Msg>>>,
    pub(crate) request_id: Option<String>,
    started: Instant,
    started_at: SystemTime,
    pub(crate) outer: Mutex<Outer>,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) span: tracing::Span,
    /// Where the rate limiter leaves the request's settlement for the meter to settle (the
    /// cell of the [`SettlementSlot`] the meter puts in the request).
    settlement: Mutex<Option<Settlement>>,
}

impl SlotCell for Draft {
    fn cell(&self) -> &Mutex<Option<Settlement>> {
        &self.settlement
    }

    /// Once the meter took the request.
    fn armed(&self) -> bool {
        self.inner().metered
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

impl std::fmt::Debug for Draft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draft")
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Draft {
    // Inlined: the draft (~560 bytes) is made in place and copied once, into its `Arc`; not
    // returned first and copied twice.
    #[inline(always)]
    pub(crate) fn new(
        handle: UsageHandle,
        permit: Option<OwnedPermit<Msg>>,
        request_id: Option<String>,
        span: tracing::Span,
    ) -> Self {
        Self {
            handle,
            permit: Mutex::new(permit),
            request_id,
            started: Instant::now(),
            started_at: SystemTime::now(),
            outer: Mutex::default(),
            inner: Mutex::default(),
            span,
            settlement: Mutex::new(None),
        }
    }

    pub(crate) fn outer(&self) -> std::sync::MutexGuard<'_, Outer> {
        lock(&self.outer)
    }

    pub(crate) fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// When the request arrived.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The record, from what everyone learned.
    fn finish(&mut self) -> UsageRecord {
        // Taken a field at a time, not moved out whole (a copy of each part).
        let outer = self.outer.get_mut().unwrap_or_else(PoisonError::into_inner);
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        let obs = &mut inner.observed;
        let ended = outer.ended.unwrap_or_else(Instant::now);
        // The wall-clock end from the start and the monotonic time it took: one clock read.
        let took = ended.saturating_duration_since(self.started);
        // 0 before the epoch.
        let since_epoch = self
            .started_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ms = super::record::ms_of;
        let mut r = UsageRecord {
            request_id: self.request_id.take(),
            key_id: inner.key_id.take().or_else(|| outer.key_id.take()),
            model: inner
                .request
                .as_ref()
                .map(|q| shared(&q.model, outer.routed_model.as_ref())),
            response_model: obs.response_model.take(),
            routed_model: outer.routed_model.take(),
            upstream: outer.upstream.take(),
            streamed: inner.streamed,
            finish_reasons: std::mem::take(&mut obs.finish_reasons),
            started_at_ms: unix_ms(since_epoch),
            ended_at_ms: unix_ms(since_epoch + took),
            duration_ms: ms(took),
            ttft_ms: obs
                .first_content
                .or(outer.first_byte)
                .map(|t| ms(t.saturating_duration_since(self.started))),
            ..UsageRecord::default()
        };
        // Status, and how it ended.
        match outer.status {
            Some(s) => r.status = s,
            None => {
                r.status = 499;
                r.partial = inner.metered;
                r.error = Some("client_closed".into());
            }
        }
        let success = (200..300).contains(&r.status);
        match outer.end {
            Some(EndKind::Dropped) if success => {
                r.partial = true;
                r.error = Some("client_closed".into());
            }
            Some(EndKind::Failed) if success => {
                r.partial = true;
                r.error = Some("upstream_failed".into());
            }
            _ => {}
        }
        if success && inner.streamed && r.error.is_none() {
            if let Some(code) = obs.saw_error.take() {
                r.partial = true;
                r.error = Some(code);
            } else if !obs.saw_done && outer.end.is_some() {
                r.partial = true;
                r.error = Some("upstream_failed".into());
            }
        }
        if r.error.is_none() {
            r.error = inner.error.take().or_else(|| outer.error.take());
        }
        if !success && r.error.is_none() {
            r.error = Some(r.status.to_string());
        }
        // Tokens.
        let counter = self.handle.counter();
        if let Some(u) = obs.usage {
            r.prompt_tokens = u.prompt_tokens.unwrap_or(0);
            r.completion_tokens = u.completion_tokens.unwrap_or(0);
            r.total_tokens = u
                .total_tokens
                .unwrap_or(r.prompt_tokens + r.completion_tokens);
            r.cached_tokens = u.prompt_tokens_details.and_then(|d| d.cached_tokens);
            r.reasoning_tokens = u.completion_tokens_details.and_then(|d| d.reasoning_tokens);
        } else if obs.unknown || obs.oversized {
            r.usage_unknown = true;
        } else if success
            && inner.metered
            && !obs.invalid
            && let Some(req) = &inner.request
        {
            r.estimated = true;
            r.prompt_tokens = counter.count_prompt(req);
            r.completion_tokens = if inner.streamed {
                obs.deltas
            } else {
                counter.count_text(&req.model, &obs.completion_text)
            };
            r.total_tokens = r.prompt_tokens + r.completion_tokens;
        }
        let settlement = self.settlement.get_mut();
        if let Some(s) = settlement.unwrap_or_else(PoisonError::into_inner).take() {
            settle(&s, inner.answered, obs.usage);
        }
        if r.total_tokens > 0 {
            let prices = self.handle.prices();
            r.cost = r
                .model
                .as_deref()
                .and_then(|m| prices.cost(m, r.prompt_tokens, r.completion_tokens))
                .or_else(|| {
                    r.routed_model
                        .as_deref()
                        .and_then(|m| prices.cost(m, r.prompt_tokens, r.completion_tokens))
                });
        }
        r
    }
}

/// `name`, as `known` when that is the same name (the usual case: the model asked for, and the
/// one that answered, are the route's), else a new one.
fn shared(name: &str, known: Option<&Arc<str>>) -> Arc<str> {
    match known {
        Some(k) if **k == *name => Arc::clone(k),
        _ => Arc::from(name),
    }
}

/// Settles the rate limiter's reservation as the limiter would have from the body the meter
/// read: the whole reservation refunded for an error status, the reported usage charged, the
/// reservation kept when no usage was reported (an estimate is not charged).
fn settle(s: &Settlement, answered: Option<http::StatusCode>, usage: Option<WireUsage>) {
    match answered {
        Some(status) if status.is_client_error() || status.is_server_error() => {
            s.settle(0);
        }
        Some(_) => {
            let used =
                usage.and_then(|u| Used::of(u.prompt_tokens, u.completion_tokens, u.total_tokens));
            s.settle_with(used);
        }
        None => {
            s.keep_reservation();
        }
    }
}

impl Drop for Draft {
    fn drop(&mut self) {
        let record = Box::new(self.finish());
        super::trace::record(&self.span, &record);
        let permit = self
            .permit
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.handle.emit(record, permit);
    }
}

impl Draft {
    /// A slot for the rate limiter's settlement whose cell is this draft's.
    pub(crate) fn settlement_slot(self: &Arc<Self>) -> SettlementSlot {
        // Not the meter's until it arms it (`Inner::metered`).
        let weak: std::sync::Weak<dyn SlotCell> = Arc::downgrade(self) as _;
        SettlementSlot::within(weak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_equal_to_the_routes_are_shared() {
        let route: Arc<str> = Arc::from("qwen");
        assert!(Arc::ptr_eq(&shared("qwen", Some(&route)), &route));
        let other = shared("llama", Some(&route));
        assert_eq!(&*other, "llama");
        assert!(!Arc::ptr_eq(&other, &route));
        assert_eq!(&*shared("x", None), "x");
    }

    /// What a stream's chunks leave in `Observed`, looked at quickly where possible, and parsed
    /// with serde every time.
    fn both(chunks: &[&str]) -> (Observed, Observed) {
        let mut quick = Observed::default();
        let mut full = Observed::default();
        for c in chunks {
            let e = Event::new(c.as_bytes(), None);
            let a = quick.event(&e);
            let b = full.parse_chunk_serde(e.data());
            assert_eq!(a, b, "usage-only verdict differs on {c}");
        }
        (quick, full)
    }

    fn same(chunks: &[&str]) -> Observed {
        let (q, f) = both(chunks);
        assert_eq!(q.deltas, f.deltas, "deltas");
        assert_eq!(q.finish_reasons, f.finish_reasons, "finish reasons");
        assert_eq!(q.response_model, f.response_model, "model {chunks:?}");
        assert_eq!(
            q.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            f.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
            "usage"
        );
        assert_eq!(q.first_content.is_some(), f.first_content.is_some());
        q
    }

    #[test]
    fn the_quick_look_and_the_parse_agree() {
        let o = same(&[
            r#"{"object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}"#,
            r#"{"object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{"content":"He"},"finish_reason":null}],"usage":null}"#,
            r#"{"object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{"content":"\"usage\":{\"prompt_tokens\":99}"},"finish_reason":null}],"usage":null}"#,
            r#"{"object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{"content":"caf\u00e9"},"finish_reason":null}]}"#,
            r#"{"object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{"reasoning_content":"hmm"},"finish_reason":null}]}"#,
            r#"{"object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":null}]}"#,
            r#"{"object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            r#"{"object":"chat.completion.chunk","model":"m1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}"#,
        ]);
        assert_eq!(o.deltas, 5);
        assert_eq!(o.finish_reasons, ["stop"]);
        assert_eq!(o.usage.and_then(|u| u.completion_tokens), Some(5));
        assert_eq!(o.response_model.as_deref(), Some("m1"));
    }

    #[test]
    fn chunks_without_choices_are_read_as_serde_reads_them() {
        let first =
            r#"{"model":"m","choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}"#;
        let usages = [
            r#"{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}"#,
            r#"{"prompt_tokens":7,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":1}}"#,
            r#"{"prompt_tokens":7.0,"completion_tokens":5}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{}"#,
            "null",
            r#""x""#,
        ];
        let objects = [
            r#""object":"chat.completion.chunk","#,
            r#""object":"chat.completion","#,
            r#""object":null,"#,
            r#""object":1,"#,
            r#""object":"chat.completion.chunk","object":"chat.completion.chunk","#,
            "",
        ];
        let models = [
            r#""model":"m2","#,
            r#""model":"café","#,
            r#""model":null,"#,
            "",
        ];
        let choices = [
            r#""choices":[]"#,
            r#""choices" : [ ]"#,
            r#""choices":null"#,
            r#""choices":[],"choices":[]"#,
            r#""choices":[{"delta":{},"finish_reason":"stop"}]"#,
        ];
        for usage in usages {
            for object in objects {
                for model in models {
                    for choice in choices {
                        // A chunk with `"usage":null` takes the quick look, which checks neither
                        // duplicate keys nor the type of `object` (serde refuses both).
                        if usage == "null"
                            && (choice.contains("],")
                                || object.contains(":1")
                                || object.matches("object").count() > 1)
                        {
                            continue;
                        }
                        let chunk = format!(
                            r#"{{"id":"c",{object}{model}"created":1,{choice},"usage":{usage},"x":[{{"a":null}}]}}"#
                        );
                        let o = same(&[first, &chunk]);
                        // The first chunk's model stays.
                        assert_eq!(o.response_model.as_deref(), Some("m"));
                        same(&[&chunk, first]);
                    }
                }
            }
        }
        let mut o = Observed::default();
        let usage_only = r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}"#;
        assert!(o.event(&Event::new(usage_only.as_bytes(), None)));
        assert_eq!(o.usage.and_then(|u| u.total_tokens), Some(12));
    }

    #[test]
    fn usage_in_every_chunk_is_kept_from_the_last() {
        let o = same(&[
            r#"{"model":"m","choices":[{"delta":{"content":"a"},"finish_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#,
            r#"{"model":"m","choices":[{"delta":{"content":"b"},"finish_reason":null}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            r#"{"model":"m","choices":[{"delta":{"content":"c"},"finish_reason":"length"}],"usage" : {"prompt_tokens":3,"completion_tokens":3}}"#,
        ]);
        assert_eq!(o.usage.and_then(|u| u.completion_tokens), Some(3));
        assert_eq!(o.finish_reasons, ["length"]);
        assert_eq!(o.deltas, 3);
    }

    #[test]
    fn the_first_chunk_is_always_parsed_for_its_model() {
        let mut o = Observed::default();
        let c = r#"{"model":"first","choices":[{"delta":{"content":"a"},"finish_reason":null}]}"#;
        o.event(&Event::new(c.as_bytes(), None));
        let c = r#"{"model":"second","choices":[{"delta":{"content":"b"},"finish_reason":null}]}"#;
        o.event(&Event::new(c.as_bytes(), None));
        assert_eq!(o.response_model.as_deref(), Some("first"));
        assert_eq!(o.deltas, 2);
    }

    #[test]
    fn the_quick_look_agrees_with_the_parse_on_generated_chunks() {
        // A small deterministic generator (xorshift), and text full of quotes, backslashes, key
        // names and control characters, in chunks with and without usage and finish reasons.
        let mut next = crate::usage::scan::xorshift(0x9E37_79B9_7F4A_7C15);
        let pieces = [
            "a",
            "\"",
            "\\",
            "u",
            ":",
            "{",
            "}",
            "[",
            "]",
            "usage",
            "\"usage\":{",
            "finish_reason",
            "\"content\":\"x\"",
            "null",
            "é",
            "\n",
            "\u{1}",
            " ",
            "tool_calls",
            "\\u0075",
        ];
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..(next() % 6) {
                text.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let mut delta = serde_json::Map::new();
            match next() % 4 {
                0 => {}
                1 => {
                    delta.insert("content".into(), text.clone().into());
                }
                2 => {
                    delta.insert("reasoning_content".into(), text.clone().into());
                }
                _ => {
                    let calls = if next().is_multiple_of(2) {
                        serde_json::json!([])
                    } else {
                        serde_json::json!([{"index": 0, "function": {"arguments": text}}])
                    };
                    delta.insert("tool_calls".into(), calls);
                }
            }
            let finish = match next() % 6 {
                0 => serde_json::json!("stop"),
                1 => serde_json::json!(text),
                _ => serde_json::Value::Null,
            };
            let mut choices =
                vec![serde_json::json!({"index": 0, "delta": delta, "finish_reason": finish})];
            if next().is_multiple_of(4) {
                choices
                    .push(serde_json::json!({"index": 1, "delta": {}, "finish_reason": "length"}));
            }
            let mut chunk = serde_json::json!({
                "object": "chat.completion.chunk",
                "model": if next().is_multiple_of(3) { text.clone() } else { "m".to_owned() },
                "choices": choices,
            });
            if next().is_multiple_of(5) {
                chunk["metadata"] = serde_json::json!({"model": "nested"});
            }
            match next() % 3 {
                0 => {}
                1 => chunk["usage"] = serde_json::Value::Null,
                _ => {
                    chunk["usage"] =
                        serde_json::json!({"prompt_tokens": 2, "completion_tokens": next() % 9})
                }
            }
            let first =
                r#"{"model":"m","choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}"#;
            let chunk = chunk.to_string();
            same(&[first, &chunk]);
            // First in its stream: it gives the model.
            same(&[&chunk, first]);
        }
    }
}

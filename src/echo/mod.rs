//! [`EchoModel`]: an in-process, deterministic model that answers the contract.
//!
//! It is the bundled proxy's default model and the test double of every other layer.
//!
//! * **Bounds.** `n` above [`MAX_CHOICES`] (128) is answered 400 `invalid_request_error` on
//!   `n`, and more than [`MAX_STOP`] (4) stop sequences is a 400 on `stop`: validation accepts
//!   any, as MLflow does, but the model bounds its own work.
//! * **Text.** Each choice echoes the text of the last `user` message (string content, or its
//!   text parts joined by newlines). All `n` choices are identical.
//! * **`stop`.** The echo is cut before the earliest occurrence of any stop sequence
//!   (`finish_reason: "stop"`).
//! * **`max_tokens`.** The echo is cut after that many tokens (`finish_reason: "length"`).
//! * **Tool calls.** When the request has function tools and `tool_choice` is not `"none"`, the
//!   model calls a tool if (a) `tool_choice` is `"required"` (first function tool) or names a
//!   function, or (b) the last user message starts with `call NAME` where `NAME` is one of the
//!   tools; the rest of the message, if it is a JSON object, is the `arguments` (else `"{}"`).
//!   `finish_reason` is then `"tool_calls"`.
//! * **Usage** is counted with the model's own [tokenizer](tokenize): completion tokens are
//!   exactly the tokens emitted (a streamed response has one content chunk per token, and a
//!   tool call's arguments are counted the same way); prompt tokens follow OpenAI's recipe for
//!   chat prompts: 3 per message plus the tokens of its role and text, plus 3 for the reply's
//!   priming.
//! * **Streaming** (`stream: true`): per choice a role chunk, one chunk per token, a final chunk
//!   with `finish_reason`; then, with `stream_options.include_usage`, a chunk with
//!   `"choices":[]` and the usage (all other chunks carry `"usage":null`); then `data: [DONE]`.
//!   Chunks are produced one at a time as the client reads them.
//!
//! The model is a `Service<Request<ValidatedRequest>>`: it reads the typed request that
//! [`ValidateLayer`](crate::ValidateLayer) makes the request's body, so it cannot be mounted
//! without validation in front of it.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use chatgate::{echo::EchoModel, ValidateLayer};
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new().layer(ValidateLayer::new()).service(EchoModel::new());
//! let req = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from(r#"{"model":"echo","messages":[{"role":"user","content":"Hello there"}]}"#)))
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! let body: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! assert_eq!(body["choices"][0]["message"]["content"], "Hello there");
//! assert_eq!(body["usage"]["completion_tokens"], 2);
//! # }
//! ```

mod tokenizer;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;

pub use tokenizer::{Tokens, count_tokens, tokenize};

use crate::contract::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta, Extra,
    FinishReason, FunctionCall, FunctionCallDelta, ResponseMessage, ToolCall, ToolCallDelta,
    ToolChoice, ToolChoiceMode, ToolType, Usage,
};
use crate::error::ApiError;
use crate::sse;
use crate::validate::ValidatedRequest;

/// Most choices (`n`) the echo model answers, as OpenAI's limit; more is a 400 on `n`.
pub const MAX_CHOICES: u64 = 128;

/// Most stop sequences the echo model takes, as OpenAI's limit; more is a 400 on `stop` (each one
/// is searched in the whole text).
pub const MAX_STOP: usize = 4;

/// The deterministic in-process model. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoModel {
    _priv: (),
}

impl EchoModel {
    /// A new echo model.
    pub fn new() -> Self {
        Self::default()
    }

    /// The answer to `req`, as a plan that can be rendered whole or streamed.
    fn plan(req: &ChatCompletionRequest) -> Plan {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last_user = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.text())
            .unwrap_or_default();
        let prompt_tokens = 3 + req
            .messages
            .iter()
            .map(|m| 3 + count_tokens(&m.role) + count_tokens(&m.text()))
            .sum::<u64>();

        let answer = match tool_call(req, &last_user) {
            Some((name, arguments)) => {
                let tokens = count_tokens(&arguments);
                Answer::Tool {
                    id: format!("call_echo_{seq}"),
                    name,
                    arguments,
                    tokens,
                }
            }
            None => {
                let mut text = last_user.as_str();
                let mut finish = FinishReason::Stop;
                if let Some(stop) = &req.stop
                    && let Some(cut) = stop
                        .iter()
                        .filter(|s| !s.is_empty())
                        .filter_map(|s| text.find(s.as_str()))
                        .min()
                {
                    text = &text[..cut];
                }
                let mut ends: Vec<usize> = tokenize(text)
                    .scan(0, |at, t| {
                        *at += t.len();
                        Some(*at)
                    })
                    .collect();
                if let Some(max) = req.max_tokens
                    && ends.len() as u64 > max
                {
                    ends.truncate(max as usize);
                    finish = FinishReason::Length;
                }
                let len = ends.last().copied().unwrap_or(0);
                Answer::Text {
                    text: text[..len].to_owned(),
                    ends,
                    finish,
                }
            }
        };
        let n = req.choices().max(1);
        let per_choice = match &answer {
            Answer::Text { ends, .. } => ends.len() as u64,
            Answer::Tool { tokens, .. } => *tokens,
        };
        Plan {
            id: format!("chatcmpl-echo-{seq:016x}"),
            created,
            model: req.model.clone(),
            n: u32::try_from(n).unwrap_or(u32::MAX),
            answer,
            usage: Usage::new(prompt_tokens, per_choice.saturating_mul(n)),
            include_usage: req.include_usage(),
        }
    }
}

/// Decides whether the echo model calls a tool; returns `(name, arguments)`.
fn tool_call(req: &ChatCompletionRequest, last_user: &str) -> Option<(String, String)> {
    let functions: Vec<&str> = req
        .tools
        .iter()
        .flatten()
        .filter(|t| t.kind == ToolType::Function)
        .filter_map(|t| t.function.as_ref().map(|f| f.name.as_str()))
        .collect();
    if functions.is_empty() {
        return None;
    }
    let from_message = || {
        let rest = last_user.trim_start().strip_prefix("call ")?;
        let name_end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        let name = &rest[..name_end];
        functions.contains(&name).then(|| {
            let args = rest[name_end..].trim();
            let valid =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(args).is_ok();
            (
                name.to_owned(),
                if valid {
                    args.to_owned()
                } else {
                    "{}".to_owned()
                },
            )
        })
    };
    match &req.tool_choice {
        Some(ToolChoice::Mode(ToolChoiceMode::None)) => None,
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) => {
            from_message().or_else(|| Some((functions[0].to_owned(), "{}".to_owned())))
        }
        Some(ToolChoice::Named(named)) => {
            let forced = named.function.name.clone();
            Some(match from_message() {
                Some((name, args)) if name == forced => (name, args),
                _ => (forced, "{}".to_owned()),
            })
        }
        _ => from_message(),
    }
}

#[derive(Debug)]
enum Answer {
    Text {
        text: String,
        /// Byte offset where each token ends.
        ends: Vec<usize>,
        finish: FinishReason,
    },
    Tool {
        id: String,
        name: String,
        arguments: String,
        tokens: u64,
    },
}

#[derive(Debug)]
struct Plan {
    id: String,
    created: u64,
    model: String,
    n: u32,
    answer: Answer,
    usage: Usage,
    include_usage: bool,
}

impl Plan {
    fn completion(&self) -> ChatCompletion {
        let (message, finish) = match &self.answer {
            Answer::Text { text, finish, .. } => (
                ResponseMessage {
                    role: "assistant".into(),
                    content: Some(text.clone()),
                    tool_calls: None,
                    refusal: None,
                    extra: Extra::default(),
                },
                *finish,
            ),
            Answer::Tool {
                id,
                name,
                arguments,
                ..
            } => (
                ResponseMessage {
                    role: "assistant".into(),
                    content: None,
                    tool_calls: Some(vec![ToolCall {
                        id: id.clone(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: Some(name.clone()),
                            arguments: Some(arguments.clone()),
                            extra: Extra::default(),
                        },
                        extra: Extra::default(),
                    }]),
                    refusal: None,
                    extra: Extra::default(),
                },
                FinishReason::ToolCalls,
            ),
        };
        ChatCompletion {
            id: Some(self.id.clone()),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: (0..self.n)
                .map(|index| Choice {
                    index,
                    message: message.clone(),
                    finish_reason: Some(finish),
                    extra: Extra::default(),
                })
                .collect(),
            usage: Some(self.usage),
            extra: Extra::default(),
        }
    }

    /// Number of content events of one choice (between the role chunk and the finish chunk).
    fn content_events(&self) -> usize {
        match &self.answer {
            Answer::Text { ends, .. } => ends.len(),
            // The call header, then the arguments token by token.
            Answer::Tool { arguments, .. } => 1 + tokenize(arguments).count(),
        }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.include_usage.then_some(usage),
            extra: Extra::default(),
        }
    }

    /// Event `k` of choice `index`: 0 is the role chunk, then content, then the finish chunk.
    fn choice_event(&self, index: u32, k: usize) -> ChatCompletionChunk {
        let last = self.content_events() + 1;
        let mut delta = Delta::default();
        let mut finish = None;
        if k == 0 {
            delta.role = Some("assistant".into());
            if matches!(self.answer, Answer::Text { .. }) {
                delta.content = Some(String::new());
            }
        } else if k == last {
            finish = Some(match &self.answer {
                Answer::Text { finish, .. } => *finish,
                Answer::Tool { .. } => FinishReason::ToolCalls,
            });
        } else {
            match &self.answer {
                Answer::Text { text, ends, .. } => {
                    let start = if k >= 2 { ends[k - 2] } else { 0 };
                    delta.content = Some(text[start..ends[k - 1]].to_owned());
                }
                Answer::Tool {
                    id,
                    name,
                    arguments,
                    ..
                } => {
                    let call = if k == 1 {
                        ToolCallDelta {
                            index: 0,
                            id: Some(id.clone()),
                            kind: Some("function".into()),
                            function: FunctionCallDelta {
                                name: Some(name.clone()),
                                arguments: Some(String::new()),
                            },
                        }
                    } else {
                        ToolCallDelta {
                            index: 0,
                            id: None,
                            kind: None,
                            function: FunctionCallDelta {
                                name: None,
                                arguments: tokenize(arguments).nth(k - 2).map(str::to_owned),
                            },
                        }
                    };
                    delta.tool_calls = Some(vec![call]);
                }
            }
        }
        self.chunk(
            vec![ChunkChoice {
                index,
                delta,
                finish_reason: finish,
                extra: Extra::default(),
            }],
            None,
        )
    }
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// The echo model's response body: a whole JSON document or an SSE stream produced on demand.
#[derive(Debug)]
pub struct EchoBody {
    kind: BodyKind,
}

#[derive(Debug)]
enum BodyKind {
    Whole(Option<Bytes>),
    Stream {
        plan: Box<Plan>,
        choice: u32,
        event: usize,
        usage_sent: bool,
        done: bool,
    },
}

impl EchoBody {
    fn whole(bytes: Bytes) -> Self {
        Self {
            kind: BodyKind::Whole(Some(bytes)),
        }
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let data = match &mut this.kind {
            BodyKind::Whole(data) => data.take(),
            BodyKind::Stream {
                plan,
                choice,
                event,
                usage_sent,
                done,
            } => {
                if *choice < plan.n {
                    let chunk = plan.choice_event(*choice, *event);
                    *event += 1;
                    if *event > plan.content_events() + 1 {
                        *event = 0;
                        *choice += 1;
                    }
                    Some(sse::data(&to_json(&chunk)))
                } else if plan.include_usage && !*usage_sent {
                    *usage_sent = true;
                    Some(sse::data(&to_json(
                        &plan.chunk(Vec::new(), Some(plan.usage)),
                    )))
                } else if !*done {
                    *done = true;
                    Some(Bytes::from_static(sse::DONE))
                } else {
                    None
                }
            }
        };
        Poll::Ready(data.map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Whole(data) => data.is_none(),
            BodyKind::Stream { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Stream { .. } => SizeHint::default(),
        }
    }
}

impl tower::Service<Request<ValidatedRequest>> for EchoModel {
    type Response = Response<EchoBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<EchoBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ValidatedRequest>) -> Self::Future {
        let request = req.body().request();
        if request.choices() > MAX_CHOICES {
            // Faithful validation accepts any `n`; the model itself bounds the work it does.
            let res = ApiError::invalid_request(
                format!(
                    "The echo model answers at most {MAX_CHOICES} choices; `n` is {}.",
                    request.choices()
                ),
                "n",
            );
            return ready(Ok(error_response(res)));
        }
        if let Some(stop) = &request.stop
            && stop.len() > MAX_STOP
        {
            let res = ApiError::invalid_request(
                format!(
                    "The echo model takes at most {MAX_STOP} stop sequences; got {}.",
                    stop.len()
                ),
                "stop",
            );
            return ready(Ok(error_response(res)));
        }
        let plan = Self::plan(request);
        let mut res = if request.is_stream() {
            let mut res = Response::new(EchoBody {
                kind: BodyKind::Stream {
                    plan: Box::new(plan),
                    choice: 0,
                    event: 0,
                    usage_sent: false,
                    done: false,
                },
            });
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        } else {
            let mut res = Response::new(EchoBody::whole(to_json(&plan.completion())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        };
        *res.status_mut() = StatusCode::OK;
        ready(Ok(res))
    }
}

/// An error of the model's own, as an echo response.
fn error_response(e: ApiError) -> Response<EchoBody> {
    e.into_response()
        .map(|full| EchoBody::whole(crate::body::full_into_bytes(full)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{ValidateConfig, validate};
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    async fn answer(body: Value) -> (StatusCode, Bytes) {
        let v = validate(Bytes::from(body.to_string()), &ValidateConfig::default()).expect("valid");
        let res = EchoModel::new()
            .oneshot(Request::new(v))
            .await
            .expect("infallible");
        let status = res.status();
        (
            status,
            res.into_body().collect().await.expect("body").to_bytes(),
        )
    }

    async fn json_answer(body: Value) -> Value {
        let (status, bytes) = answer(body).await;
        assert_eq!(status, 200);
        serde_json::from_slice(&bytes).expect("json")
    }

    fn msgs(text: &str) -> Value {
        json!([{"role":"system","content":"be brief"},{"role":"user","content":text}])
    }

    #[tokio::test]
    async fn echoes_the_last_user_message_n_times() {
        let r = json_answer(json!({"model":"echo","messages":msgs("hello world"),"n":3})).await;
        assert_eq!(r["object"], "chat.completion");
        assert_eq!(r["model"], "echo");
        let choices = r["choices"].as_array().expect("choices");
        assert_eq!(choices.len(), 3);
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(c["index"], i);
            assert_eq!(c["message"]["content"], "hello world");
            assert_eq!(c["finish_reason"], "stop");
        }
        // 2 tokens per choice; prompt: 3 + (3 + 1 + 2) + (3 + 1 + 2).
        assert_eq!(
            r["usage"],
            json!({"prompt_tokens":15,"completion_tokens":6,"total_tokens":21})
        );
    }

    #[tokio::test]
    async fn max_tokens_and_stop() {
        let r =
            json_answer(json!({"model":"e","messages":msgs("one two three"),"max_tokens":2})).await;
        assert_eq!(r["choices"][0]["message"]["content"], "one two");
        assert_eq!(r["choices"][0]["finish_reason"], "length");
        assert_eq!(r["usage"]["completion_tokens"], 2);
        let r = json_answer(
            json!({"model":"e","messages":msgs("one two. three"),"stop":[".","three"]}),
        )
        .await;
        assert_eq!(r["choices"][0]["message"]["content"], "one two");
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
    }

    #[tokio::test]
    async fn tool_calls_by_message_and_by_choice() {
        let tools = json!([{"type":"function","function":{"name":"get_weather"}},{"type":"function","function":{"name":"other"}}]);
        let r = json_answer(json!({"model":"e","messages":msgs(r#"call get_weather {"city":"Oslo"}"#),"tools":tools})).await;
        let call = &r["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "get_weather");
        assert_eq!(call["function"]["arguments"], r#"{"city":"Oslo"}"#);
        assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");
        assert!(r["choices"][0]["message"]["content"].is_null());
        // tool_choice "none" wins over the message.
        let r = json_answer(json!({"model":"e","messages":msgs("call get_weather"),"tools":tools,"tool_choice":"none"})).await;
        assert_eq!(r["choices"][0]["message"]["content"], "call get_weather");
        // "required" calls the first function; a named choice calls that one.
        let r = json_answer(
            json!({"model":"e","messages":msgs("hi"),"tools":tools,"tool_choice":"required"}),
        )
        .await;
        assert_eq!(
            r["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        let r = json_answer(json!({"model":"e","messages":msgs("hi"),"tools":tools,
            "tool_choice":{"type":"function","function":{"name":"other"}}}))
        .await;
        assert_eq!(
            r["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "other"
        );
        // Unknown tool names in the message are just text.
        let r =
            json_answer(json!({"model":"e","messages":msgs("call nothing"),"tools":tools})).await;
        assert_eq!(r["choices"][0]["message"]["content"], "call nothing");
    }

    #[tokio::test]
    async fn too_many_choices_is_a_400_not_a_huge_answer() {
        let (status, body) =
            answer(json!({"model":"e","messages":msgs("hi"),"n":1_000_000_000u64})).await;
        assert_eq!(status, 400);
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["param"], "n");
        let (status, _) =
            answer(json!({"model":"e","messages":msgs("hi"),"stop":["a","b","c","d","e"]})).await;
        assert_eq!(status, 400);
        let r = json_answer(json!({"model":"e","messages":msgs("hi"),"n":128})).await;
        assert_eq!(r["choices"].as_array().expect("choices").len(), 128);
    }
}

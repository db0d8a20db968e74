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
//! * **`max_tokens` and `max_completion_tokens`.** The echo is cut after that many tokens
//!   (`finish_reason: "length"`). `max_completion_tokens` (the OpenAI SDK's current name, which
//!   the contract keeps among the extra fields) is honoured like `max_tokens`; when a request
//!   sets both, the smaller applies, so neither limit the client asked for is exceeded. A
//!   `max_completion_tokens` that is not a non-negative integer (or `null`) is a 400 on it.
//! * **Tool calls.** When the request has function tools and `tool_choice` is not `"none"`, the
//!   model calls a tool if (a) `tool_choice` is `"required"` (first function tool) or names a
//!   function, or (b) the last user message starts with `call NAME` where `NAME` is one of the
//!   tools; the rest of the message, if it is a JSON object, is the `arguments` (else `"{}"`).
//!   `finish_reason` is then `"tool_calls"`.
//! * **Tool results.** When the conversation ends with `tool` messages (the results of the calls
//!   it made), the model never calls a tool again, whatever `tool_choice` says: it answers with
//!   the text `The tool returned: <content>` (the contents of the trailing `tool` messages,
//!   joined by newlines), subject to `stop` and the token limits like any text. An agent loop
//!   against the echo model therefore ends after one round trip.
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

mod body;
mod plan;
#[cfg(test)]
mod tests;
mod tokenizer;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};

pub use body::EchoBody;
pub use tokenizer::{Tokens, count_tokens, tokenize};

use crate::contract::ChatCompletionRequest;
use crate::error::ApiError;
use crate::validate::ValidatedRequest;
use body::to_json;

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
}

/// The token limit of `req`: the smaller of `max_tokens` and `max_completion_tokens` (an extra
/// field of the contract), `None` without either.
fn token_limit(req: &ChatCompletionRequest) -> Result<Option<u64>, ApiError> {
    let completion = match req.extra.get("max_completion_tokens") {
        None => None,
        Some(raw) => serde_json::from_str::<Option<u64>>(raw.get()).map_err(|_| {
            ApiError::invalid_request(
                format!(
                    "`max_completion_tokens` must be a non-negative integer; got {}.",
                    raw.get()
                ),
                "max_completion_tokens",
            )
        })?,
    };
    Ok(match (req.max_tokens, completion) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// The model's whole answer to a validated request: a completion, a stream, or a 400 when the
/// request exceeds the model's own bounds.
fn respond(request: &ChatCompletionRequest) -> Response<EchoBody> {
    if request.choices() > MAX_CHOICES {
        // Faithful validation accepts any `n`; the model itself bounds the work it does.
        return error_response(ApiError::invalid_request(
            format!(
                "The echo model answers at most {MAX_CHOICES} choices; `n` is {}.",
                request.choices()
            ),
            "n",
        ));
    }
    if let Some(stop) = &request.stop
        && stop.len() > MAX_STOP
    {
        return error_response(ApiError::invalid_request(
            format!(
                "The echo model takes at most {MAX_STOP} stop sequences; got {}.",
                stop.len()
            ),
            "stop",
        ));
    }
    let max_tokens = match token_limit(request) {
        Ok(m) => m,
        Err(e) => return error_response(e),
    };
    let plan = plan::plan(request, max_tokens);
    let mut res = if request.is_stream() {
        let mut res = Response::new(EchoBody::stream(plan));
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
    res
}

impl tower::Service<Request<ValidatedRequest>> for EchoModel {
    type Response = Response<EchoBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<EchoBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ValidatedRequest>) -> Self::Future {
        ready(Ok(respond(req.body().request())))
    }
}

/// An error of the model's own, as an echo response.
fn error_response(e: ApiError) -> Response<EchoBody> {
    e.into_response()
        .map(|full| EchoBody::whole(crate::body::full_into_bytes(full)))
}

//! Server-side tools: `uc_function` tools that the gateway runs itself.
//!
//! A client may name a tool of MLflow's type `uc_function`
//! (`{"type":"uc_function","uc_function":{"name":"catalog.schema.fn"}}`). With
//! [`ServerToolsLayer`] installed (between the limits/usage layers and the
//! [`ModelRouter`](crate::route::ModelRouter)), the gateway does what MLflow's gateway does
//! against Databricks Unity Catalog, against any [`FunctionCatalog`]:
//!
//! 1. **Resolve.** Each `uc_function` tool is looked up in the catalogs (in order; the first
//!    that has the name runs it) and replaced by a `function` tool whose name is
//!    [`tool_name`] (`catalog__schema__fn`, the last 64 characters), with the catalog's
//!    description and JSON-schema parameters. An unknown name is **400**
//!    `invalid_request_error`, `param` `tools[k].uc_function.name`, `code`
//!    `function_not_found`; a catalog that cannot be asked is **502** `server_error`,
//!    `function_catalog_unavailable`. Server-side tools answer one choice: `n` > 1 is a 400
//!    on `n`.
//! 2. **Rounds.** The model (the inner service) is called with `stream: false`. When its
//!    answer calls catalog functions, they run concurrently, each bounded by
//!    [`call_timeout`](ServerToolsLayer::call_timeout); the assistant's tool-call message and
//!    one `tool` message per call are appended to the conversation and the model is called
//!    again. Each call runs the function it names (MLflow's loop runs the last resolved
//!    function for every call). Only the first choice is followed.
//! 3. **Results.** A function's result is text: a scalar as text, a table as CSV ([`csv`]).
//!    Anything that goes wrong in a call is the call's result, for the model to read, never an
//!    HTTP error: arguments that are not JSON or do not fit the schema (missing required or
//!    unknown parameters, wrong types), the function's own error, a timeout. Such results
//!    start with `Error: `.
//! 4. **Answer.** When the model answers without calling a catalog function, the answer goes
//!    to the client with what ran shown before its text, in MLflow's format (below), and with
//!    `usage` the **sum over all rounds**. The response extensions carry
//!    [`ServerToolRounds`] (how many times the model was called) next to the route's
//!    [`RoutedModel`](crate::route::RoutedModel). When one answer calls both catalog
//!    functions and client (`function`) tools, the catalog calls run and the answer goes back
//!    with the client's `tool_calls` only (`finish_reason: "tool_calls"`), as MLflow does.
//! 5. **Bounds.** After [`max_rounds`](ServerToolsLayer::max_rounds) (default 20, MLflow's)
//!    model calls that all asked for more catalog calls, the answer is **502** `server_error`,
//!    `code` `server_tools_round_limit`. Not a 400: the request was valid and another run may
//!    converge; not a 500: the gateway did not fail, the model it fronts did not produce an
//!    answer (MLflow answers 500 "Max iterations reached"). A model answer over
//!    [`max_answer_bytes`](ServerToolsLayer::max_answer_bytes) or that is not a chat
//!    completion is a 502 `bad_gateway`. A non-2xx answer of the model in any round is passed
//!    to the client as it is.
//! 6. **Streaming.** A request with `stream: true` runs its rounds without streaming; the
//!    final answer is then sent as an event stream: a role chunk, a content chunk (the blocks
//!    and the text), a tool-calls chunk when there are client calls, the finish chunk, the
//!    usage chunk with `stream_options.include_usage`, then `data: [DONE]`.
//!
//! Requests without `uc_function` tools are passed to the inner service untouched (no
//! allocation), except for the parsing back below.
//!
//! # What ran, in the answer
//!
//! For each call, MLflow's blocks (`json.dumps(…, indent=2)`), blocks separated by a blank
//! line, then a blank line and the model's text:
//!
//! ```text
//! <uc_function_call>
//! {
//!   "id": "call_1",
//!   "name": "main.tools.add",
//!   "arguments": "{\"a\": 1, \"b\": 2}"
//! }
//! </uc_function_call>
//!
//! <uc_function_result>
//! {
//!   "tool_call_id": "call_1",
//!   "content": "3"
//! }
//! </uc_function_result>
//!
//! 1 + 2 = 3
//! ```
//!
//! `content` is the tool result itself (MLflow wraps it in its own JSON,
//! `{"format":"SCALAR","value":"3"}`). A `<` inside the JSON is written `\u003c`, so no
//! value can end a block early.
//!
//! **Parsing back.** When a later request carries an assistant message with such blocks (the
//! client sends the conversation back), the blocks become the tool calls and `tool` messages
//! they stand for before the model sees them (by [`ValidatedRequest::set_messages`]): an
//! assistant message calling the functions (under their [`tool_name`]s), then their results,
//! then the remaining text as an assistant message; a message that also has its own
//! `tool_calls` becomes one assistant message with the catalog calls and its own calls,
//! followed by the catalog results. Both the pretty and the compact form are read, with
//! `tool_call_id` or `id` in the result. Nothing is run again. A message whose blocks do not
//! parse is left as it is.
//!
//! [`ValidatedRequest::set_messages`]: crate::validate::ValidatedRequest::set_messages
//!
//! # Example
//!
//! ```
//! use chatgate::server_tools::{HandlerCatalog, ServerToolsLayer};
//! use chatgate::{route::ModelRouter, EchoModel, ValidateLayer};
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use serde_json::{json, Value};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let catalog = HandlerCatalog::new().register(
//!     "main.tools.add",
//!     "Adds two integers.",
//!     json!({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}),
//!     |args: Value| async move { Ok((args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0)).to_string()) },
//! );
//! let router = ModelRouter::builder().service("echo", EchoModel::new()).build();
//! let svc = ServiceBuilder::new()
//!     .layer(ValidateLayer::new())
//!     .layer(ServerToolsLayer::new(catalog))
//!     .service(router);
//! let body = json!({
//!     "model": "echo",
//!     "messages": [{"role": "user", "content": "call main__tools__add {\"a\":1,\"b\":2}"}],
//!     "tools": [{"type": "uc_function", "uc_function": {"name": "main.tools.add"}}],
//! });
//! let req = Request::post("/v1/chat/completions").body(Full::new(bytes::Bytes::from(body.to_string()))).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! let answer: Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
//! assert!(content.starts_with("<uc_function_call>\n{\n  \"id\""));
//! assert!(content.ends_with("</uc_function_result>\n\nThe tool returned: 3"));
//! # }
//! ```

mod blocks;
mod catalog;
mod future;
mod layer;
#[cfg(feature = "postgres")]
mod postgres;
mod rounds;
mod schema;
mod service;
mod stream;
#[cfg(test)]
mod tests;

pub use catalog::{
    BoxFuture, CatalogError, FunctionCatalog, FunctionSpec, HandlerCatalog, csv, tool_name,
};
pub use future::ResponseFuture;
pub use layer::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_ANSWER_BYTES, DEFAULT_MAX_ROUNDS, ServerToolsLayer,
};
#[cfg(feature = "postgres")]
pub use postgres::{PgCatalog, PgCatalogConfig};
pub use service::ServerTools;

/// How many times the model was called for a response of [`ServerTools`] (in the response
/// extensions, for usage accounting: the response's `usage` is the sum over these rounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerToolRounds(pub u32);

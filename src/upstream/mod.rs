//! Upstream proxying: [`Upstream`] forwards a validated chat-completions request to an
//! OpenAI-compatible server and streams the answer back.
//!
//! * **Transport.** hyper-util's pooled client: HTTP/1.1 keep-alive, HTTP/2 when TLS
//!   negotiates it (or always, with [`UpstreamConfig::http2_only`], which is h2c prior
//!   knowledge for `http`); `https` through rustls (ring) with the bundled webpki roots. Each
//!   `Upstream` has its own pool; clones share it.
//! * **Private CAs.** [`UpstreamConfig::root_certificates`] (PEM) replaces the bundled roots
//!   for one upstream, e.g. vLLM or Ollama behind an internal TLS terminator; the PEM is checked
//!   by [`Upstream::new`]. A certificate the roots do not trust fails the handshake: a connect
//!   failure (502 `bad_gateway`, another replica may be tried), never a wait.
//! * **Target.** `POST <url>/chat/completions` (a query in the base URL is kept).
//! * **Credentials.** The client's `Authorization` is never forwarded; the upstream's own key
//!   ([`UpstreamConfig::api_key`]) is sent as `Authorization: Bearer <key>`.
//! * **Headers.** Hop-by-hop headers (`Connection` and the headers it names, `Keep-Alive`,
//!   `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`) are stripped both ways.
//!   `Accept-Encoding` is not forwarded, so that the stream arrives as text the gateway can watch.
//! * **Model.** When the upstream knows the model by another name
//!   ([`UpstreamConfig::upstream_model`]), or a [`RoutedModel`](crate::route::RoutedModel)
//!   names another route (after a fallback), the top-level `model` value is spliced into the
//!   forwarded bytes ([`ValidatedRequest::to_bytes_with_model`](crate::ValidatedRequest::to_bytes_with_model));
//!   every other byte of the validated body is forwarded as is.
//! * **Answers.** A non-streamed 2xx answer is read whole (up to
//!   [`max_answer_bytes`](UpstreamConfig::max_answer_bytes)) and checked to be a chat
//!   completion before its head is sent: a client never gets a 200 whose body is not one. The
//!   check keeps what a usage record needs (model, usage, finish reasons) for the
//!   [usage meter](crate::usage::UsageMeterLayer), so the answer is read once.
//! * **Streaming.** The response body is forwarded as it arrives (no buffering; backpressure
//!   holds because the server pulls the body). Frames the upstream connection has already read
//!   are coalesced into one, so a burst of SSE events costs one write to the client, not one
//!   per event; for event streams, what arrived with the response head leaves with it. Neither
//!   ever waits for data: each event still reaches the client as soon as it arrives (see
//!   [`UpstreamBody`]). Dropping the response
//!   body (a client that disconnects) drops the upstream response, which closes its stream or
//!   connection and so cancels the upstream request.
//!
//! # Timeouts and failures
//!
//! | when | what the client gets |
//! |---|---|
//! | connect fails (refused, unreachable, TLS) | 502 `bad_gateway` |
//! | [`connect_timeout`](UpstreamConfig::connect_timeout) | 504 `upstream_timeout` |
//! | no response headers within [`first_byte_timeout`](UpstreamConfig::first_byte_timeout) (or the total) | 504 `upstream_timeout` |
//! | reset or garbage before the headers | 502 `bad_gateway` |
//! | upstream 2xx, not streamed, whose body is not a chat completion (not JSON, or no `choices`) | 502 `bad_gateway` |
//! | upstream 4xx/5xx | passed through, status and body |
//! | SSE body: reset, garbage, [`idle_timeout`](UpstreamConfig::idle_timeout) or [`total_timeout`](UpstreamConfig::total_timeout) mid-stream | one final `data: {"error":{"message","type":"server_error","param":null,"code":"upstream_timeout"/"bad_gateway"}}` event, then the end (no `[DONE]`) |
//! | SSE body ends cleanly without `data: [DONE]` | one `data: [DONE]` is appended |
//! | non-SSE 2xx body fails mid-way | 502 `bad_gateway` (504 `upstream_timeout` for a timeout): the answer is read whole before anything is sent |
//! | non-SSE body fails mid-way otherwise (an error body, or an answer beyond [`max_answer_bytes`](UpstreamConfig::max_answer_bytes)) | the body ends with an [`UpstreamFailure`] error (the server aborts the response) |
//!
//! The gateway's own 502/504 responses carry the [`UpstreamFailure`] in their extensions, so a
//! router can tell them from an upstream's own 502 and retry another replica (see
//! [`ModelRouter`](crate::route::ModelRouter)).
//!
//! SSE is watched with [`EventScanner`](crate::sse::EventScanner), a fixed-size line scanner,
//! rather than an SSE crate: the crates on offer (`eventsource-stream`, `sse-stream`) decode
//! into owned events, which a pass-through proxy would have to re-encode.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use chatgate::upstream::{Upstream, UpstreamConfig};
//! use chatgate::ValidateLayer;
//! use http::Request;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A port nobody listens on: the connection is refused.
//! let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
//! let config = UpstreamConfig::new(format!("http://127.0.0.1:{port}/v1").parse().unwrap())
//!     .upstream_model("llama-3.1-8b")
//!     .api_key("upstream-key");
//! let upstream = Upstream::new(config).unwrap();
//! assert_eq!(upstream.endpoint().to_string(), format!("http://127.0.0.1:{port}/v1/chat/completions"));
//!
//! let svc = ServiceBuilder::new().layer(ValidateLayer::new()).service(upstream);
//! let req = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from(r#"{"model":"llama","messages":[{"role":"user","content":"hi"}]}"#)))
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 502);
//! # }
//! ```

mod body;
mod config;
mod error;
mod future;
mod headers;
mod probe;
mod service;
mod tls;

pub use body::UpstreamBody;
pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FIRST_BYTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_ANSWER_BYTES, DEFAULT_TOTAL_TIMEOUT, UpstreamConfig,
};
pub use error::{UpstreamConfigError, UpstreamFailure};
pub(crate) use future::SendFuture;
pub use future::{ResponseBody, ResponseFuture};
pub(crate) use probe::probe_path;
pub use service::Upstream;

/// Checks PEM bytes as [`UpstreamConfig::root_certificates`] would be checked; the error is
/// the reason alone, for callers that add where the bytes came from.
#[cfg(feature = "config")]
pub(crate) fn check_root_certificates(pem: &[u8]) -> Result<(), String> {
    tls::root_store(pem).map(drop)
}

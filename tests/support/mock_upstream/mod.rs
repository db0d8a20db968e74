//! The mock OpenAI-compatible upstream, for every integration test and the load benchmark.
//!
//! Integration tests reach it as `support::mock_upstream` (`mod support;`);
//! `examples/mock_upstream.rs` (the benchmark's upstream) includes this directory alone with
//! `#[path = "../tests/support/mock_upstream/mod.rs"]`. It has two faces over one body type
//! ([`MockBody`]) and one request record ([`RecordedRequest`]):
//!
//! * [`Mock::start`] (`handler.rs`): a closure answers each request, and every request is kept,
//!   for tests that steer or inspect each exchange (health probes, failover, streams held open
//!   on a channel); [`json`], [`completion`], [`sse`] and [`chunk`] build its answers.
//! * [`MockUpstream::builder`] (`scripted.rs`): configured once, cheap per request, described
//!   below.
//!
//! The scripted mock serves, over HTTP/1.1 and HTTP/2 on one port (hyper-util's auto builder):
//!
//! * `POST …/chat/completions`: a fixed `chat.completion` with usage, or, when the request has
//!   `"stream": true`, exactly N `chat.completion.chunk` events (N is the request's extra member
//!   `"mock_chunks"`, else [`Builder::default_chunks`], 50 unless set), then the usage chunk when
//!   `stream_options.include_usage` is true, then `data: [DONE]`; every event is its own body frame;
//! * `GET …/models`: a model list naming [`Builder::model`].
//!
//! Knobs for tests: a delay before the response head, a delay between chunks, an injected status or a
//! connection closed without an answer (optionally for the first N requests only), a request counter and
//! a copy of the last request.
//!
//! The per-request path is kept cheap, since the benchmark measures proxies against it: the response
//! bytes are built once by [`Builder::start`], a request costs one small JSON parse, and recording the
//! last request (a header map clone and a lock) can be switched off with [`Builder::record_requests`].
//!
//! # Example
//!
//! ```ignore
//! let (addr, mock) = MockUpstream::builder().chunk_delay(Duration::from_millis(5)).start("127.0.0.1:0").await?;
//! // … point the gateway at format!("http://{addr}/v1") …
//! assert_eq!(mock.request_count(), 1);
//! ```

// Every includer uses a different subset of the mock.
#![allow(
    dead_code,
    unreachable_pub,
    unused_imports,
    missing_debug_implementations,
    clippy::unwrap_used
)]

mod body;
mod handler;
mod scripted;
mod sse;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, Version};

pub(crate) use body::MockBody;
pub use handler::*;
pub(crate) use scripted::*;

/// A copy of a request the mock received.
#[derive(Clone, Debug)]
pub(crate) struct RecordedRequest {
    /// The request method.
    pub(crate) method: Method,
    /// The request target, as received.
    pub(crate) uri: Uri,
    /// The HTTP version.
    pub(crate) version: Version,
    /// All request headers.
    pub(crate) headers: HeaderMap,
    /// The whole request body.
    pub(crate) body: Bytes,
}

impl RecordedRequest {
    /// The request path.
    pub(crate) fn path(&self) -> &str {
        self.uri.path()
    }

    /// The body parsed as JSON (`null` when it is not JSON).
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

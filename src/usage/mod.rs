//! Usage accounting: one exact [`UsageRecord`] per request, sinks behind [`UsageSink`]
//! (in-memory aggregate with `GET /v1/usage`, JSONL file, PostgreSQL, Prometheus `GET /metrics`
//! with OpenTelemetry's GenAI names), and a tracing span per request.
//!
//! # Two pieces, one record
//!
//! * [`UsageLayer`] (outer, generic over `Request<B>`) wraps the **whole chat stack**. It makes
//!   the request's record, puts a ticket to it in the request extensions, and notes the status
//!   and how the response body ended (with the [`OnEnd`](crate::body::OnEnd) hook). A request
//!   rejected anywhere inside it (401/403 by auth, 429 by a limiter, 413/422 by validation,
//!   404 by the router) gets its record with that status and zero tokens.
//! * [`UsageMeterLayer`] (inner, `Service<Request<ValidatedRequest>>`) goes after
//!   [`ValidateLayer`](crate::ValidateLayer), in front of the router. It takes the ticket and
//!   adds what only it can know: the model asked for, whether it streams, and the tokens read
//!   from the response — the JSON of a non-streamed answer, or the events of a stream as they
//!   pass through (never buffered). An answer from an [`Upstream`](crate::upstream::Upstream)
//!   was already read whole and checked where it arrived, and the meter takes what that check
//!   found rather than read it again; another service's answer (the echo model, one of yours)
//!   the meter reads itself (whole, up to [`DEFAULT_MAX_BODY`]). Either way an answer that is
//!   not a chat completion becomes a 502 and a record saying `invalid_response`.
//!
//! Both hold the same record; it is sent when the last of them lets go of it (when the
//! response body has ended or was dropped), so there is **exactly one record per request**,
//! whatever happens: a client that leaves mid-stream leaves a `partial` record, one that
//! leaves before the answer a 499.
//!
//! ```text
//!   request ─▶ UsageLayer ─▶ (auth, limits) ─▶ ValidateLayer ─▶ UsageMeterLayer ─▶ ModelRouter
//!              one record                                        tokens, streams
//! ```
//!
//! # Streams are always metered
//!
//! When a client streams without `stream_options.include_usage`, the meter asks the upstream
//! for usage anyway ([`ValidatedRequest::set_include_usage`](crate::ValidatedRequest::set_include_usage))
//! and removes what that adds from what the client sees: the usage-only chunk, and the
//! `"usage":null` member that OpenAI-style upstreams then write into every other chunk (cut
//! when it is the chunk's last member, as they write it; a frame with such a cut is forwarded
//! as one new buffer). The client gets what it asked for, and the record is exact. When the upstream reports no usage, the tokens are counted —
//! the prompt with the [`TokenCounter`], the completion as the number of streamed content
//! deltas (one token each for OpenAI-compatible servers) — and the record says
//! `estimated: true`.
//!
//! # Sinks
//!
//! Records leave the request path through a bounded channel to a writer task
//! ([`UsageHandle`]); when it is full, [`Overflow`] says whether records are dropped (and
//! counted) or requests wait. The writer takes what the channel holds, then lets records
//! [gather](UsageHandleBuilder::gather) for 25 ms (an idle writer is woken by the next
//! record, and a busy one early when the channel is half full; only after a wake-up that
//! found few records): a wake-up per request costs more than the sinks' work.
//! Sinks that need no I/O per record ([`takes_records`](UsageSink::takes_records): the
//! in-memory aggregate, the metrics, the JSONL file and the request log) take each when the
//! writer takes it, and are cued to write out what they took; the others get the records in
//! batches.
//! Cues and batches go out [`linger`](UsageHandleBuilder::linger) after the first record
//! since the last (250 ms), or once 1024 records came, so a sink's wake-up and write (a
//! system call, for a file) are paid per batch, not per request.
//!
//! # The rate limiter's settlement
//!
//! A [`RateLimitLayer`](crate::rate_limit::RateLimitLayer) inside the meter would read every
//! answer's usage for its settlement too. The meter asks it for the request's
//! [`Settlement`](crate::rate_limit::Settlement) instead (a
//! [`SettlementSlot`](crate::rate_limit::SettlementSlot) in the request) and settles it when the
//! record is made, as the limiter would have (the reported usage; nothing for an error status;
//! the reservation kept when no usage was reported): each answer is read once, not twice.
//!
//! # The request log
//!
//! [`LogSink`] writes one line per record (text or JSON, the fields of the usage layer's
//! `tracing` event, [`REQUEST_EVENT`]), a batch at a time: far cheaper than formatting the
//! event through a subscriber on the request path. The bundled proxy logs its request lines
//! this way.
//!
//! # What it costs
//!
//! Per request: the record (a few small allocations), one channel send; the answer's JSON is
//! read once, by the upstream client's check (one pass, serde only for what is not plain; a
//! one-frame answer is not copied), whether accounting is on or not. Per stream chunk: after the first few, a chunk written like
//! the last one is counted by comparing its bytes with that one's (a template); others get a
//! quick look at their bytes, which decides whether they need parsing — only the first chunk,
//! the usage chunk and chunks with a finish reason (or a `\u` escape) are parsed. Figures in
//! `BENCHMARKS.md` ("Usage"). The handle is made once and outlives reloads; call
//! [`UsageHandle::close`] after the server stops.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use chatgate::usage::{MemorySink, UsageHandle, UsageLayer, UsageMeterLayer};
//! use chatgate::{route::ModelRouter, EchoModel, ValidateLayer};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let memory = Arc::new(MemorySink::new());
//! let usage = UsageHandle::builder().sink(memory.clone()).build();
//! let router = ModelRouter::builder().service("echo", EchoModel::new()).build();
//! let chat = ServiceBuilder::new()
//!     .layer(UsageLayer::new(usage.clone()))
//!     .layer(ValidateLayer::new())
//!     .layer(UsageMeterLayer::new())
//!     .service(router);
//! # let _ = chat;
//! usage.close().await;
//! # }
//! ```

mod answer;
mod body;
mod counter;
mod draft;
mod future;
mod jsonl;
mod layer;
mod log;
mod memory;
mod metrics;
#[cfg(feature = "postgres")]
mod postgres;
mod prices;
mod record;
mod scan;
mod service;
mod sink;
mod trace;

pub(crate) use answer::CheckedAnswer;
pub use body::{MeterBody, UsageEnd};
pub use counter::{ByteEstimate, TokenCounter};
pub use future::{MeterFuture, ResponseFuture};
pub use jsonl::{FlushPolicy, JsonlSink};
pub use layer::{DEFAULT_MAX_BODY, UsageLayer, UsageMeterLayer};
pub use log::{LogFormat, LogSink};
pub use memory::{MemorySink, UsageRoute, UsageRow};
pub use metrics::{MetricsRoute, MetricsSink};
#[cfg(feature = "postgres")]
pub use postgres::{MIGRATION, PgSink, PgWrite};
pub use prices::{Price, Prices};
pub use record::UsageRecord;
pub use service::{Usage, UsageMeter};
pub use sink::{Overflow, SinkError, SinkFuture, UsageHandle, UsageHandleBuilder, UsageSink};
pub use trace::REQUEST_EVENT;

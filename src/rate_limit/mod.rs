//! Rate limiting per key and per (key, model): requests per minute, tokens per minute and
//! concurrent requests.
//!
//! [`RateLimitLayer`] is a `Service<Request<ValidatedRequest>>`: it goes inside
//! [`ValidateLayer`](crate::ValidateLayer) (it needs the parsed request to count tokens) and
//! after authentication (it reads the [`Principal`](crate::auth::Principal)):
//!
//! ```text
//! request ─▶ auth (Principal) ─▶ ValidateLayer ─▶ RateLimitLayer ─▶ ModelRouter
//! ```
//!
//! # Scopes
//!
//! A request is counted in every scope that limits it, all or nothing (a scope that would
//! refuse leaves the others untouched):
//!
//! * the key ([`KeyRecord::limits`](crate::auth::KeyRecord::limits)), over all models;
//! * the key and the requested model
//!   ([`KeyRecord::limits_for`](crate::auth::KeyRecord::limits_for)): every model matching the
//!   pattern has counters of its own — every model that exists, when the limiter is told which
//!   do ([`RateLimitConfig::models`]; the proxy tells it the router's): names it does not know
//!   share one set of counters per pattern, so made-up names cannot grow them;
//! * without a `Principal`, the caller's IP address ([`PeerAddr`](crate::request_id::PeerAddr))
//!   when [`RateLimitConfig::anonymous`] limits are set (off by default: then such requests
//!   pass unlimited, as do keys without limits).
//!
//! Each scope may limit requests per minute (`rpm`), tokens per minute (`tpm`) and requests in
//! flight (`max_concurrent`). The decision is made in `call`, as tower-governor does, never in
//! `poll_ready` (which only delegates): a limited key gets a ready 429 and never stalls the
//! others.
//!
//! # Per-minute limits
//!
//! Each per-minute limit is a [`Gcra`] bucket: the allowance drips in continuously (one unit
//! every `60 s / limit`) up to the whole limit. A full bucket admits a **burst of the whole
//! limit** at once; over any span `t`, at most `limit + limit · t / 60 s` are admitted. Nothing
//! resets at minute boundaries, so there is no double burst at a window edge.
//!
//! # Tokens: reserved at admission, settled at the end
//!
//! A request **reserves** `prompt + n × completion` tokens when it is admitted, where `prompt`
//! comes from the [`TokenEstimator`] (by default [`ByteEstimator`], an estimate: bytes / 4 plus
//! chat framing) and `completion` is `max_completion_tokens`, else `max_tokens`, else
//! [`RateLimitConfig::default_completion_tokens`] ([`DEFAULT_COMPLETION_TOKENS`], 1024). A
//! request whose reservation is larger than a scope's whole `tpm` can **never** be admitted: it
//! gets a 429 saying so at once (with `x-should-retry: false` and no `Retry-After`), rather than
//! a wait that never ends.
//!
//! # Settlement
//!
//! When the response body ends, fails or is dropped (the crate's one end-of-response hook,
//! [`OnEndBody`](crate::body::OnEndBody)), the reservation is **settled** against the exact usage:
//! `reserved − used` is refunded, or `used − reserved` debited (the bucket may go into debt,
//! which later requests wait out). The usage is read from the body as it passes:
//!
//! * a JSON completion: its `usage`, from the body held up to
//!   [`RateLimitConfig::max_usage_body`] (1 MiB); a longer body, or one that did not complete,
//!   keeps the reservation;
//! * a stream: the `usage` of any chunk that has a non-null one (the `"choices":[]` chunk of
//!   `stream_options.include_usage`), decoded with [`EventDecoder`](crate::sse::EventDecoder);
//! * an error status (4xx/5xx): nothing was generated, the whole reservation is refunded.
//!
//! When no usage is reported — the client did not ask for `include_usage`, or went away before
//! the usage chunk — the **reservation is kept** as the charge: a client that disconnects
//! mid-stream pays at most what it reserved, never more. The [usage
//! meter](crate::usage::UsageMeterLayer), which forces `include_usage` upstream and reads every
//! response anyway, settles in the limiter's place: it asks for the settlement with a
//! [`SettlementSlot`] in the request, and the limiter then does not read the body (it is read
//! once, not twice). The concurrency slot is released at the same moment, however the response ended, and
//! also when the inner service fails or its future is dropped.
//!
//! # Budgets
//!
//! A key may also have a [`Budget`] ([`KeyRecord::budget`](crate::auth::KeyRecord::budget)):
//! at most so many tokens and/or so much money (integer micro-dollars) per [`BudgetPeriod`] —
//! a UTC day, ISO week or calendar month, or a fixed duration aligned on the Unix epoch. A
//! budget is not a bucket that drips back: its counter (one per key and period) **resets at
//! the period boundary**.
//!
//! It is enforced with the same machinery as the token limits, all or nothing with the other
//! scopes. At admission the request reserves its tokens (as above) and its **worst-case
//! cost**: the prompt estimate at the model's input price plus the completion bound (× `n`) at
//! its output price, from [`RateLimitConfig::prices`] (by the requested model's name; a model
//! without a price costs nothing against a money budget, its token budget still applies). A
//! request is admitted only if `spent + reservation ≤ budget`, checked and taken under one lock
//! (local) or in one script (Redis), so concurrent requests can never overshoot the budget
//! together. The settlement replaces the reservation with the exact usage and its exact cost
//! ([`UnitPrice`], in nano-dollars per token); when the usage reports only a total, the total
//! is charged at the higher of the two prices; without usage the reservation is kept. A
//! settlement arriving after its period ended changes nothing (that period is gone).
//!
//! Refused: 429 `rate_limit_error` / **`budget_exceeded`**, the message naming the key and the
//! budget, `Retry-After` / `retry-after-ms` until the period resets, and the per-minute
//! `x-ratelimit-*` headers unchanged. A request whose reservation exceeds the whole budget can
//! never fit: no `Retry-After`, `x-should-retry: false`.
//!
//! Where the spend lives: in the backend's counters, like every other counter here —
//! [`LocalBackend`]'s memory (lost at restart: a restarted gateway starts the period afresh)
//! or Redis (shared by the replicas, one hash per key and period expiring a day after the
//! period; it survives gateway restarts). The local backend can be re-seeded at start with
//! [`LocalBackend::seed_budget`] (the proxy does it from the PostgreSQL usage records, with
//! `PgSink::spent_since`). Periods follow the gateway's wall clock (Redis: each instance's, so
//! instances should run NTP). While Redis is unreachable and the backend fails open, budgets
//! are not enforced either (requests pass unchecked, as for the limits). A change of a key's
//! period (reload, admin update) starts a new count. The budget itself is persisted with the key:
//! `[[keys]]` `budget_tokens`, `budget_usd`, `budget_period` in the configuration, or the
//! `budget_*` columns of the PostgreSQL key table.
//!
//! # Answers
//!
//! Refused by a rate limit: 429 `rate_limit_error` / `rate_limit_exceeded` (a budget:
//! `budget_exceeded`, above), the message naming the limit
//! (requests, tokens or concurrent requests) and the scope, with `Retry-After` (whole seconds,
//! rounded up), `retry-after-ms`, and the refusing scope's `x-ratelimit-*` headers. Admitted:
//! the response carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` of the tightest
//! scope (the least remaining, per dimension). Resets are written as OpenAI does (`1s`, `6m0s`,
//! `120ms`, see [`format_reset`]). A backend that cannot decide and fails closed: 503
//! `service_unavailable`.
//!
//! # Backends
//!
//! The counters live in a [`LimitBackend`] made once and shared by every stack built around it,
//! so a configuration reload keeps them: [`LocalBackend`] (this process's memory, the default)
//! or, with the `redis` feature, `RedisBackend` (one Redis shared by several gateway
//! instances, atomic Lua scripts on Redis's clock).
//!
//! ## Why not `governor`
//!
//! `governor` is an excellent GCRA for *requests* (lock-free, one atomic compare-and-swap per
//! check), and an rpm bucket is exactly what it does. It is not used, for three reasons. Tokens
//! need a refund and a debit after the fact, which governor does not offer (a cell taken is
//! gone; `check_n` only takes). A request must be admitted in all its scopes or none, and
//! governor's keyed limiters check one key at a time with no way to roll back the first when
//! the second refuses. And one bucket type for both dimensions keeps the local and Redis
//! backends the same algorithm. The cost is a lock per shard instead of a CAS: measured in
//! `BENCHMARKS.md` ("Rate limiting"), well within budget.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use chatgate::auth::{KeyRecord, Principal};
//! use chatgate::rate_limit::{Limits, LocalBackend, RateLimitConfig, RateLimitLayer};
//! use chatgate::{EchoModel, ValidateLayer};
//! use http::Request;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let backend = LocalBackend::new(); // once, at start: survives reloads
//! let svc = ServiceBuilder::new()
//!     .layer(ValidateLayer::new())
//!     .layer(RateLimitLayer::new(backend.clone(), RateLimitConfig::new()))
//!     .service(EchoModel::new());
//!
//! let mut key = KeyRecord::new("team-a");
//! key.limits = Limits::none().rpm(1);
//! let principal = Principal(Arc::new(key));
//! let req = || {
//!     let mut r = Request::post("/v1/chat/completions")
//!         .body(Full::new(Bytes::from(r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#)))
//!         .unwrap();
//!     r.extensions_mut().insert(principal.clone());
//!     r
//! };
//! let ok = svc.clone().oneshot(req()).await.unwrap();
//! assert_eq!(ok.status(), 200);
//! assert_eq!(ok.headers()["x-ratelimit-remaining-requests"], "0");
//! let limited = svc.oneshot(req()).await.unwrap();
//! assert_eq!(limited.status(), 429);
//! assert_eq!(limited.headers()["retry-after"], "60");
//! # }
//! ```

mod backend;
mod budget;
mod estimate;
mod future;
mod headers;
mod layer;
mod limits;
mod local;
#[cfg(feature = "redis")]
mod redis;
mod scope;
mod service;
mod settle;

pub use backend::{
    Admit, AdmitRequest, BackendError, BudgetCheck, Decision, LimitBackend, LimitKind, Refusal,
    ScopeCheck, Settle, Status, Ticket, TicketBudget, TicketScope, Window,
};
pub use budget::{Budget, BudgetPeriod, UnitPrice};
pub use estimate::{ByteEstimator, TokenEstimator, completion_bound, reservation};
pub use future::ResponseFuture;
pub use headers::{
    RETRY_AFTER_MS, X_RATELIMIT_LIMIT_REQUESTS, X_RATELIMIT_LIMIT_TOKENS,
    X_RATELIMIT_REMAINING_REQUESTS, X_RATELIMIT_REMAINING_TOKENS, X_RATELIMIT_RESET_REQUESTS,
    X_RATELIMIT_RESET_TOKENS, X_SHOULD_RETRY, format_reset, insert_status, too_many_requests,
};
pub use layer::{DEFAULT_COMPLETION_TOKENS, RateLimitConfig, RateLimitLayer};
pub use limits::{Limits, ModelLimits};
pub use local::{Gcra, LocalBackend, WINDOW};
#[cfg(feature = "redis")]
pub use redis::{FailMode, RedisBackend, RedisBackendBuilder};
pub use scope::Scope;
pub use service::{RateLimit, RateLimitBody};
pub(crate) use settle::SlotCell;
pub(crate) use settle::Used;
pub use settle::{DEFAULT_MAX_USAGE_BODY, Settlement, SettlementSlot, UsageWatch};

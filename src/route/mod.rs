//! Model routing: [`ModelRouter`] sends each validated request to the route of its `model`, or
//! answers 404 `model_not_found` (docs/contract.md, "Errors").
//!
//! A route is either
//!
//! * any tower service ([`ModelRouterBuilder::service`]): an in-process model such as
//!   [`EchoModel`](crate::EchoModel), or the embedding application's own handler; or
//! * one or more upstream replicas ([`ModelRouterBuilder::upstream`] with a [`RouteConfig`]),
//!   each an [`Upstream`](crate::Upstream).
//!
//! The `model` field only ever selects a configured route: it is never interpreted as an
//! address. The router puts a [`RoutedModel`] in the response extensions, and in the request
//! extensions of a request it hands to an in-process service.
//!
//! # Upstream routes
//!
//! * **Balancing.** Power of two random choices over the available replicas; of the two, the one
//!   with fewer outstanding requests per unit of [weight](crate::upstream::UpstreamConfig::weight)
//!   wins, counting the new request (`(outstanding + 1) / weight`), so idle replicas also share
//!   by weight. A request is outstanding until its response body ends or is dropped.
//! * **Retries.** A connect failure or an upstream 5xx, which happen before anything is sent to
//!   the client, move the request to another untried replica, up to
//!   [`max_attempts`](RouteConfig::max_attempts). Then the last 5xx is passed through, or the
//!   gateway's 502/504 is sent. Timeouts and 4xx are not retried.
//! * **Passive health.** A replica is ejected after
//!   [`eject_after`](RouteConfig::eject_after) consecutive failures (transport failure, timeout,
//!   5xx, stream failed mid-way) for [`readmit_after`](RouteConfig::readmit_after), doubled for
//!   every further ejection without a success in between (up to
//!   [`max_readmit_after`](RouteConfig::max_readmit_after)); a re-admitted replica that fails
//!   before succeeding once is ejected again at once.
//! * **Active health** (optional, [`HealthCheck`]): a background task probes each replica
//!   (`GET` of a path relative to the replica's base URL, `/models` by default); a replica
//!   whose probe fails takes no traffic until a probe succeeds. The task is spawned by
//!   [`ModelRouterBuilder::try_build`] and stops when the router is dropped.
//! * **Unavailable.** When no replica is available, the [fallbacks](RouteConfig::fallback) are
//!   tried in order (the first with an available replica, or an in-process service, serves the
//!   request, under its own name); else 400 `model_not_ready`.
//! * **Hot path.** No locks: counters and health are atomics; the only allocations per request
//!   are the forwarded request itself and the boxed response body.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use chatgate::{route::ModelRouter, EchoModel, ValidateLayer};
//! use http::Request;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let router = ModelRouter::builder().service("echo", EchoModel::new()).build();
//! let svc = ServiceBuilder::new().layer(ValidateLayer::new()).service(router);
//! let req = |model: &str| {
//!     Request::post("/v1/chat/completions")
//!         .body(Full::new(Bytes::from(format!(
//!             r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#
//!         ))))
//!         .unwrap()
//! };
//! assert_eq!(svc.clone().oneshot(req("echo")).await.unwrap().status(), 200);
//! assert_eq!(svc.oneshot(req("gpt-9")).await.unwrap().status(), 404);
//! # }
//! ```
//!
//! Upstream replicas, with an in-process fallback:
//!
//! ```
//! use chatgate::route::{ModelRouter, RouteConfig};
//! use chatgate::upstream::UpstreamConfig;
//! use chatgate::EchoModel;
//!
//! # fn main() -> Result<(), chatgate::route::BuildError> {
//! let router = ModelRouter::builder()
//!     .upstream(
//!         "gpt-4o",
//!         RouteConfig::new()
//!             .replica(UpstreamConfig::new("https://api.openai.com/v1".parse().unwrap()).api_key("sk-…"))
//!             .replica(UpstreamConfig::new("http://10.0.0.7:8000/v1".parse().unwrap())
//!                 .upstream_model("Qwen2.5-72B")
//!                 .weight(3))
//!             .fallback("echo"),
//!     )?
//!     .service("echo", EchoModel::new())
//!     .try_build()?;
//! assert!(router.is_ready("gpt-4o"));
//! assert!(!router.contains("gpt-9"));
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod pool;
mod service;

pub use config::{
    DEFAULT_EJECT_AFTER, DEFAULT_HEALTH_CHECK_INTERVAL, DEFAULT_HEALTH_CHECK_PATH,
    DEFAULT_HEALTH_CHECK_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_READMIT_AFTER,
    DEFAULT_READMIT_AFTER, HealthCheck, RouteConfig,
};
pub use error::BuildError;
pub use service::{ModelRouter, ModelRouterBuilder, ResponseFuture, RouteService};

/// The name of the route serving a request.
///
/// [`ModelRouter`] puts it in the response extensions (for usage accounting), and in the request
/// extensions before calling an in-process service. The replicas of an upstream route are given
/// it directly (an [`Upstream`](crate::Upstream) sends this name when the upstream has no name of
/// its own, so a fallback route gets its own name); an `Upstream` called as a service of its own
/// reads it from the request extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedModel(std::sync::Arc<str>);

impl RoutedModel {
    /// A routed model name.
    pub fn new(name: impl Into<std::sync::Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The route's model name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The name, shared.
    pub(crate) fn shared(&self) -> &std::sync::Arc<str> {
        &self.0
    }
}

/// The upstream replica that answered (its host and port), in the response extensions of an
/// upstream route (for usage accounting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamName(std::sync::Arc<str>);

impl UpstreamName {
    /// An upstream name.
    pub fn new(name: impl Into<std::sync::Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The name, shared.
    pub(crate) fn shared(&self) -> &std::sync::Arc<str> {
        &self.0
    }
}

/// The response body of routed services: boxed, because routes differ in body type.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, crate::BoxError>;

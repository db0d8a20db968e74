//! Model routing: [`ModelRouter`] sends each validated request to the service registered for its
//! `model`, or answers 404 `model_not_found` (CONTRACT.md §6).
//!
//! A route is any tower service (an in-process model such as [`EchoModel`](crate::EchoModel), or
//! the embedding application's own handler). The `model` field only ever selects a configured
//! route: it is never interpreted as an address.
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

mod config;
mod error;
mod pool;
mod service;

pub use config::{
    DEFAULT_EJECT_AFTER, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_READMIT_AFTER, DEFAULT_READMIT_AFTER,
    HealthCheck, RouteConfig,
};
pub use error::BuildError;
pub use service::{ModelRouter, ModelRouterBuilder, ResponseFuture, RouteService};

/// The name of the route serving a request.
///
/// [`ModelRouter`] puts it in the request extensions before calling the route (an
/// [`Upstream`](crate::Upstream) sends this name when the upstream has no name of its own, so a
/// fallback route gets its own name) and in the response extensions (for usage accounting).
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
}

/// The response body of routed services: boxed, because routes differ in body type.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, crate::BoxError>;

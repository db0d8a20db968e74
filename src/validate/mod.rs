//! Request validation: [`ValidateLayer`] reads the body once (bounded), validates it against the
//! contract, and hands the inner service the typed [`ValidatedRequest`] as the request's body:
//! `Request<ValidatedRequest>`. A layer that needs the parsed request is a
//! `Service<Request<ValidatedRequest>>`, so a stack that mounts it outside `ValidateLayer` does
//! not compile.
//!
//! What it answers itself (docs/contract.md, "Endpoint", "Errors"):
//!
//! | case | status | body |
//! |---|---|---|
//! | method other than `POST` | 405 | `{"detail":"Method Not Allowed"}` |
//! | body over [`ValidateConfig::max_body`] (by `Content-Length` or while reading) | 413 | OpenAI envelope, `request_too_large` |
//! | body not read within [`ValidateConfig::body_timeout`] | 408 | OpenAI envelope, `request_timeout` |
//! | not JSON, duplicate key, nesting over [`ValidateConfig::max_depth`] | 422 | `json_invalid` |
//! | schema violations (all of them) | 422 | FastAPI `detail` list |
//! | strict mode: OpenAI's semantic rules | 400 | OpenAI envelope |
//!
//! Lax coercions (`"2"` → `2`, `"yes"` → `true`) are accepted as MLflow accepts them and the
//! coerced value is what the inner service receives; with [`ValidateConfig::apply_defaults`]
//! (on by default) absent `temperature` and `n` are written in as `0.0` and `1`. Both are byte
//! patches on the original body: an unchanged request is forwarded as the very bytes the client
//! sent, and unknown members are kept at every level.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use chatgate::validate::{ValidateLayer, ValidatedRequest};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(ValidateLayer::new())
//!     .service_fn(|req: Request<ValidatedRequest>| async move {
//!         let model = req.body().request().model.clone();
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(model))))
//!     });
//!
//! let ok = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#)))
//!     .unwrap();
//! let res = svc.clone().oneshot(ok).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "m");
//!
//! let bad = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from(r#"{"model":"m","messages":[]}"#)))
//!     .unwrap();
//! assert_eq!(svc.oneshot(bad).await.unwrap().status(), 422);
//! # }
//! ```

mod future;
mod layer;
mod request;
pub(crate) mod schema;
mod service;
mod strict;

use std::time::Duration;

use bytes::Bytes;

pub use future::ResponseFuture;
pub use layer::ValidateLayer;
pub use request::ValidatedRequest;
pub use service::Validate;
pub use strict::check_strict;

use crate::error::ValidationErrors;

/// How [`ValidateLayer`] validates.
#[derive(Clone, Debug)]
pub struct ValidateConfig {
    /// Largest accepted body in bytes (default 4 MiB).
    pub max_body: usize,
    /// Deepest accepted array/object nesting (default 64).
    pub max_depth: usize,
    /// Write absent `temperature` (0.0) and `n` (1) into the forwarded body (default on).
    pub apply_defaults: bool,
    /// Also enforce OpenAI's semantic rules, answering 400 (default off).
    pub strict: bool,
    /// Longest time to receive the whole body (default 30 s); `None` waits forever.
    pub body_timeout: Option<Duration>,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        Self {
            max_body: 4 * 1024 * 1024,
            max_depth: 64,
            apply_defaults: true,
            strict: false,
            body_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Validates one JSON body without the layer (no size limit, no strict rules).
///
/// ```
/// use bytes::Bytes;
/// use chatgate::validate::{validate, ValidateConfig};
/// let ok = validate(Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":"2"}"#),
///                   &ValidateConfig::default()).unwrap();
/// assert_eq!(ok.request().n, Some(2));
/// assert_eq!(&ok.to_bytes()[..], br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2,"temperature":0.0}"#);
/// ```
///
/// # Errors
/// The 422 body listing every violation.
pub fn validate(
    body: Bytes,
    config: &ValidateConfig,
) -> Result<ValidatedRequest, ValidationErrors> {
    let out = schema::validate_bytes(body, true, config)?;
    Ok(ValidatedRequest::from_parts(
        out.request,
        out.original,
        out.patches,
        out.spans,
    ))
}

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tower::Service;

use super::future::ResponseFuture;
use super::{ValidateConfig, ValidateLayer, ValidatedRequest};
use crate::body::ResponseBody;
use crate::error::{ApiError, method_not_allowed};

/// Validates chat-completions requests before `S` sees them. See the [module docs](crate::validate).
///
/// `S` receives `Request<ValidatedRequest>`: the typed request is the body
/// ([`ValidatedRequest`](super::ValidatedRequest)).
#[derive(Clone, Debug)]
pub struct Validate<S> {
    inner: S,
    config: Arc<ValidateConfig>,
}

impl<S> Validate<S> {
    /// Wraps `inner` with the given configuration.
    pub fn new(inner: S, config: ValidateConfig) -> Self {
        Self::from_shared(inner, Arc::new(config))
    }

    pub(super) fn from_shared(inner: S, config: Arc<ValidateConfig>) -> Self {
        Self { inner, config }
    }

    /// A [`ValidateLayer`] with the default configuration.
    pub fn layer() -> ValidateLayer {
        ValidateLayer::new()
    }

    crate::macros::define_inner_service_accessors!();
}

/// Whether a `Content-Type` (absent counts) is parsed as JSON (docs/contract.md, "Endpoint").
pub(crate) fn is_json_content(headers: &http::HeaderMap) -> bool {
    let Some(v) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(v) = v.to_str() else { return false };
    let essence = v.split(';').next().unwrap_or("").trim();
    let Some((top, sub)) = essence.split_once('/') else {
        return false;
    };
    top.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Validate<S>
where
    S: Service<Request<ValidatedRequest>, Response = Response<ResBody>> + Clone,
    ReqBody: Body,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if req.method() != Method::POST {
            return ResponseFuture::early(method_not_allowed("POST"));
        }
        let limit = self.config.max_body;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return ResponseFuture::early(ApiError::request_too_large(limit).into_response());
        }
        // The service that was made ready is the one that gets the request (tower's
        // "be careful when cloning inner services").
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        let collect = Limited::new(body, limit).collect();
        ResponseFuture::collecting(collect, parts, inner, Arc::clone(&self.config))
    }
}

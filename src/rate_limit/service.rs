use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

use super::backend::{Admit, AdmitRequest, BudgetCheck, ScopeCheck};
use super::budget::UnitPrice;
use super::estimate::completion_bound;
use super::future::ResponseFuture;
use super::settle::UsageWatch;
use super::{LimitBackend, RateLimitConfig, Scope};
use crate::BoxError;
use crate::auth::Principal;
use crate::body::{OnEndBody, ResponseBody};
use crate::request_id::PeerAddr;
use crate::validate::ValidatedRequest;

/// Limits requests per key, per (key, model) and per anonymous address. See the
/// [module docs](crate::rate_limit).
pub struct RateLimit<S> {
    inner: S,
    backend: Arc<dyn LimitBackend>,
    config: Arc<RateLimitConfig>,
}

impl<S: Clone> Clone for RateLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            backend: Arc::clone(&self.backend),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S> RateLimit<S> {
    /// Wraps `inner`, deciding with `backend`.
    pub fn new(inner: S, backend: impl LimitBackend, config: RateLimitConfig) -> Self {
        Self::from_parts(inner, Arc::new(backend), Arc::new(config))
    }

    pub(super) fn from_parts(
        inner: S,
        backend: Arc<dyn LimitBackend>,
        config: Arc<RateLimitConfig>,
    ) -> Self {
        Self {
            inner,
            backend,
            config,
        }
    }

    crate::macros::define_inner_service_accessors!();
}

/// The scopes `req` is counted in, most general first.
pub(super) fn scopes_of<'a>(
    req: &'a Request<ValidatedRequest>,
    config: &RateLimitConfig,
) -> Vec<(Scope<'a>, super::Limits)> {
    let mut out = Vec::new();
    if let Some(p) = req.extensions().get::<Principal>() {
        let key = p.key();
        if !key.limits.is_unlimited() {
            out.push((Scope::Key { id: &key.id }, key.limits));
        }
        let model = req.body().request().model.as_str();
        if let Some(m) = key.model_limits_for(model)
            && !m.limits.is_unlimited()
        {
            let scope = match &config.models {
                Some(known) if !known.contains(model) => Scope::KeyPattern {
                    id: &key.id,
                    pattern: &m.model,
                },
                _ => Scope::KeyModel { id: &key.id, model },
            };
            out.push((scope, m.limits));
        }
    } else if let (Some(limits), Some(peer)) =
        (config.anonymous, req.extensions().get::<PeerAddr>())
    {
        out.push((Scope::Anonymous { ip: peer.0.ip() }, limits));
    }
    out
}

/// The question for the backend, `None` when nothing limits the request.
pub(super) fn admit_request(
    req: &Request<ValidatedRequest>,
    config: &RateLimitConfig,
) -> Option<AdmitRequest> {
    let scopes = scopes_of(req, config);
    let budget = req
        .extensions()
        .get::<Principal>()
        .and_then(|p| Some((&p.key().id, p.key().budget.filter(|b| !b.is_unlimited())?)));
    if scopes.is_empty() && budget.is_none() {
        return None;
    }
    let request = req.body().request();
    let (tokens, budget) = if budget.is_some() || scopes.iter().any(|(_, l)| l.tpm.is_some()) {
        let prompt = config.estimator.prompt_tokens(request);
        let completion = completion_bound(request, config.default_completion_tokens)
            .saturating_mul(request.choices());
        let budget = budget.map(|(id, budget)| {
            let price = config
                .prices
                .get(&request.model)
                .map(|p| UnitPrice::from(*p));
            BudgetCheck {
                key: budget_key(id),
                budget,
                micro_usd: price.map_or(0, |p| p.micro_usd(prompt, completion)),
                price,
            }
        });
        (prompt.saturating_add(completion), budget)
    } else {
        (0, None)
    };
    Some(AdmitRequest {
        scopes: scopes
            .into_iter()
            .map(|(s, limits)| ScopeCheck {
                key: s.key(),
                limits,
            })
            .collect(),
        tokens,
        budget,
    })
}

/// The counter key of a key's budget: `budget:<id>`.
pub(super) fn budget_key(id: &str) -> String {
    format!("budget:{id}")
}

/// The body of a [`RateLimit`] response.
pub type RateLimitBody<B> = ResponseBody<OnEndBody<B, Option<UsageWatch>>>;

impl<S, ResBody> Service<Request<ValidatedRequest>> for RateLimit<S>
where
    S: Service<Request<ValidatedRequest>, Response = Response<ResBody>> + Clone,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ValidatedRequest>) -> Self::Future {
        let Some(ask) = admit_request(&req, &self.config) else {
            return ResponseFuture::calling(self.inner.call(req), None, None, &self.config);
        };
        match self.backend.admit(ask) {
            Admit::Ready(decision) => {
                ResponseFuture::decided(decision, req, &mut self.inner, &self.backend, &self.config)
            }
            Admit::Pending(admit) => {
                // The service that was made ready is the one that gets the request.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::admitting(
                    admit,
                    req,
                    inner,
                    Arc::clone(&self.backend),
                    Arc::clone(&self.config),
                )
            }
        }
    }
}

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::settle::DEFAULT_MAX_USAGE_BODY;
use super::{ByteEstimator, LimitBackend, Limits, RateLimit, TokenEstimator};
use crate::usage::Prices;

/// The completion tokens reserved for a request that sets neither `max_completion_tokens` nor
/// `max_tokens`: 1024. A guess on purpose: a shorter answer is refunded at settlement, a longer
/// one debited, so it only decides how much headroom a request in flight holds.
pub const DEFAULT_COMPLETION_TOKENS: u64 = 1024;

/// How [`RateLimit`] builds the question it asks its backend.
#[derive(Clone)]
pub struct RateLimitConfig {
    pub(super) default_completion_tokens: u64,
    pub(super) anonymous: Option<Limits>,
    pub(super) max_usage_body: usize,
    pub(super) estimator: Arc<dyn TokenEstimator>,
    pub(super) prices: Arc<Prices>,
    /// The models that exist, when known: see [`RateLimitConfig::models`].
    pub(super) models: Option<Arc<HashSet<String>>>,
}

impl fmt::Debug for RateLimitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitConfig")
            .field("default_completion_tokens", &self.default_completion_tokens)
            .field("anonymous", &self.anonymous)
            .field("max_usage_body", &self.max_usage_body)
            .field("prices", &self.prices)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimitConfig {
    /// [`DEFAULT_COMPLETION_TOKENS`], no anonymous limits (callers without a key pass
    /// unlimited), 1 MiB of JSON body held to read `usage`, the [`ByteEstimator`], no prices.
    pub fn new() -> Self {
        Self {
            default_completion_tokens: DEFAULT_COMPLETION_TOKENS,
            anonymous: None,
            max_usage_body: DEFAULT_MAX_USAGE_BODY,
            estimator: Arc::new(ByteEstimator),
            prices: Arc::new(Prices::new()),
            models: None,
        }
    }

    /// The models' prices (by requested model name), for money [budgets](super#budgets): a
    /// model without a price costs nothing against a money budget (its token budget still
    /// applies).
    pub fn prices(mut self, prices: Prices) -> Self {
        self.prices = Arc::new(prices);
        self
    }

    /// The models that exist (a router's [`models`](crate::route::ModelRouter::models)).
    ///
    /// A key's [`model_limits`](crate::auth::KeyRecord::model_limits) count each model matching
    /// a pattern on its own; with this set, a request for any other model (which the router
    /// will refuse) is counted once per pattern instead
    /// ([`Scope::KeyPattern`](super::Scope::KeyPattern)), so that names a client makes up
    /// cannot make counters without bound. Unset (the default), every name has its own.
    pub fn models<I>(mut self, models: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.models = Some(Arc::new(models.into_iter().map(Into::into).collect()));
        self
    }

    /// Completion tokens reserved when the request sets no bound.
    pub fn default_completion_tokens(mut self, n: u64) -> Self {
        self.default_completion_tokens = n;
        self
    }

    /// Limits for callers without a [`Principal`](crate::auth::Principal), counted per client
    /// IP address ([`PeerAddr`](crate::request_id::PeerAddr)). Off by default: such callers are
    /// not limited. (Behind a reverse proxy every caller has the proxy's address.)
    pub fn anonymous(mut self, limits: Option<Limits>) -> Self {
        self.anonymous = limits.filter(|l| !l.is_unlimited());
        self
    }

    /// Most bytes of a non-streamed response held to read its `usage`; a longer body keeps
    /// its reservation.
    pub fn max_usage_body(mut self, bytes: usize) -> Self {
        self.max_usage_body = bytes;
        self
    }

    /// The prompt-token estimator (see [`TokenEstimator`]).
    pub fn estimator(mut self, estimator: impl TokenEstimator) -> Self {
        self.estimator = Arc::new(estimator);
        self
    }

    /// Completion tokens reserved when the request sets no bound.
    pub fn get_default_completion_tokens(&self) -> u64 {
        self.default_completion_tokens
    }

    /// The anonymous limits, if any.
    pub fn get_anonymous(&self) -> Option<Limits> {
        self.anonymous
    }
}

/// Applies [`RateLimit`] to a service. See the [module docs](crate::rate_limit).
///
/// Holds the shared backend (counters) and the configuration; rebuild it on a reload around the
/// same backend to keep the counters.
#[derive(Clone)]
pub struct RateLimitLayer {
    backend: Arc<dyn LimitBackend>,
    config: Arc<RateLimitConfig>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A layer deciding with `backend` (a clone of a backend made once; see
    /// [`LimitBackend`]).
    pub fn new(backend: impl LimitBackend, config: RateLimitConfig) -> Self {
        Self::from_shared(Arc::new(backend), config)
    }

    /// A layer around an already shared backend.
    pub fn from_shared(backend: Arc<dyn LimitBackend>, config: RateLimitConfig) -> Self {
        Self {
            backend,
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_parts(inner, Arc::clone(&self.backend), Arc::clone(&self.config))
    }
}

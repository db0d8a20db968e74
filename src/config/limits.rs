//! The `[limits]` table: the rate limiter's settings ([`LimitsConfig`]). Per-key limits come
//! from `[[keys]]` (the keys' `rpm`, `tpm`, `max_concurrent`), not from here.

use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::raw::Source;
use crate::rate_limit::{
    DEFAULT_COMPLETION_TOKENS, LimitBackend, Limits, LocalBackend, RateLimitConfig,
};

/// `[limits]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    default_completion_tokens: Option<Spanned<u64>>,
    anonymous: Option<RawAnonymous>,
    backend: Option<Spanned<String>>,
    redis_url: Option<Spanned<String>>,
    redis_prefix: Option<Spanned<String>>,
    on_redis_error: Option<Spanned<String>>,
}

/// `[limits] anonymous = { rpm, tpm, max_concurrent }`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnonymous {
    rpm: Option<u32>,
    tpm: Option<u64>,
    max_concurrent: Option<u32>,
}

/// What `on_redis_error` says to do when Redis cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnRedisError {
    /// Admit without limits (`"open"`, the default).
    #[default]
    Open,
    /// Answer 503 (`"closed"`).
    Closed,
}

/// Where the limiter keeps its counters (`backend`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LimiterBackend {
    /// In this process's memory (`"local"`, the default).
    #[default]
    Local,
    /// In Redis (`"redis"`; needs the `redis` cargo feature).
    Redis {
        /// `redis_url`.
        url: String,
        /// `redis_prefix` (default `chatgate:rl:`).
        prefix: String,
        /// `on_redis_error`.
        on_error: OnRedisError,
    },
}

/// The rate limiter's settings (`[limits]`): how requests are counted, and where.
#[derive(Clone, Debug, Default)]
pub struct LimitsConfig {
    default_completion_tokens: Option<u64>,
    anonymous: Option<Limits>,
    backend: LimiterBackend,
}

impl LimitsConfig {
    /// The layer's configuration (`default_completion_tokens`, `anonymous`).
    pub fn rate_limit_config(&self) -> RateLimitConfig {
        RateLimitConfig::new()
            .default_completion_tokens(
                self.default_completion_tokens
                    .unwrap_or(DEFAULT_COMPLETION_TOKENS),
            )
            .anonymous(self.anonymous)
            .estimator(crate::tokens::Tokenizer)
    }

    /// Where the counters live.
    pub fn backend(&self) -> &LimiterBackend {
        &self.backend
    }

    /// Makes the backend. Call it **once** at start and keep it across reloads (a reload that
    /// changes `backend` needs a restart). Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// The Redis backend cannot be built (bad URL).
    pub fn make_backend(&self) -> Result<Arc<dyn LimitBackend>, ConfigError> {
        match &self.backend {
            LimiterBackend::Local => Ok(Arc::new(LocalBackend::new())),
            #[cfg(feature = "redis")]
            LimiterBackend::Redis {
                url,
                prefix,
                on_error,
            } => {
                use crate::rate_limit::{FailMode, RedisBackend};
                let mode = match on_error {
                    OnRedisError::Open => FailMode::Open,
                    OnRedisError::Closed => FailMode::Closed,
                };
                RedisBackend::builder(url.clone())
                    .prefix(prefix.clone())
                    .on_error(mode)
                    .build()
                    .map(|b| Arc::new(b) as Arc<dyn LimitBackend>)
                    .map_err(|e| plain_error(format!("[limits] redis: {e}")))
            }
            #[cfg(not(feature = "redis"))]
            LimiterBackend::Redis { .. } => Err(plain_error(
                "[limits] backend = \"redis\" needs the `redis` cargo feature".to_owned(),
            )),
        }
    }
}

fn plain_error(problem: String) -> ConfigError {
    ConfigError {
        kind: super::error::ErrorKind::Invalid,
        file: None,
        position: None,
        problem,
    }
}

impl Source<'_> {
    pub(super) fn limits_config(
        &self,
        raw: Option<&RawLimits>,
    ) -> Result<LimitsConfig, ConfigError> {
        let mut out = LimitsConfig::default();
        let Some(raw) = raw else { return Ok(out) };
        if let Some(n) = &raw.default_completion_tokens {
            if *n.get_ref() == 0 {
                return Err(self.invalid(n, "default_completion_tokens must be at least 1".into()));
            }
            out.default_completion_tokens = Some(*n.get_ref());
        }
        if let Some(a) = &raw.anonymous {
            let mut l = Limits::none();
            l.rpm = a.rpm;
            l.tpm = a.tpm;
            l.max_concurrent = a.max_concurrent;
            out.anonymous = Some(l);
        }
        let on_error = match &raw.on_redis_error {
            None => OnRedisError::Open,
            Some(s) => match s.get_ref().as_str() {
                "open" => OnRedisError::Open,
                "closed" => OnRedisError::Closed,
                other => {
                    let msg = format!(r#"on_redis_error {other:?}: expected "open" or "closed""#);
                    return Err(self.invalid(s, msg));
                }
            },
        };
        match raw.backend.as_ref().map(|b| (b, b.get_ref().as_str())) {
            None | Some((_, "local")) => {
                if let Some(url) = &raw.redis_url {
                    let msg = r#"redis_url is set but backend is not "redis""#.to_owned();
                    return Err(self.invalid(url, msg));
                }
            }
            Some((b, "redis")) => {
                if cfg!(not(feature = "redis")) {
                    let msg = "backend \"redis\": this build has no Redis support (cargo \
                               feature `redis`)"
                        .to_owned();
                    return Err(self.invalid(b, msg));
                }
                let Some(url) = &raw.redis_url else {
                    return Err(self.invalid(b, "backend \"redis\" needs redis_url".to_owned()));
                };
                let u = url.get_ref();
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    // The URL itself is left out: it may hold a password.
                    let msg =
                        "invalid redis_url: expected redis://host:port or rediss://…".to_owned();
                    return Err(self.invalid(url, msg));
                }
                out.backend = LimiterBackend::Redis {
                    url: u.clone(),
                    prefix: raw
                        .redis_prefix
                        .as_ref()
                        .map_or_else(|| "chatgate:rl:".to_owned(), |p| p.get_ref().clone()),
                    on_error,
                };
            }
            Some((b, other)) => {
                let msg = format!(r#"unknown backend {other:?} (use "local" or "redis")"#);
                return Err(self.invalid(b, msg));
            }
        }
        Ok(out)
    }
}

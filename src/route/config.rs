use std::time::Duration;

use crate::upstream::UpstreamConfig;

/// Default [`RouteConfig::max_attempts`]: 2.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;
/// Default [`RouteConfig::eject_after`]: 3 consecutive failures.
pub const DEFAULT_EJECT_AFTER: u32 = 3;
/// Default [`RouteConfig::readmit_after`]: 5 s.
pub const DEFAULT_READMIT_AFTER: Duration = Duration::from_secs(5);
/// Default [`RouteConfig::max_readmit_after`]: 5 min.
pub const DEFAULT_MAX_READMIT_AFTER: Duration = Duration::from_secs(300);
/// Default [`HealthCheck::path`]: `/models`, relative to the replica's base URL
/// (`http://h:8000/v1` is probed at `http://h:8000/v1/models`): every OpenAI-compatible server
/// (OpenAI, vLLM, TGI, llama.cpp, Ollama) serves it, where `/health` is vLLM's own.
pub const DEFAULT_HEALTH_CHECK_PATH: &str = "/models";
/// Default [`HealthCheck::interval`]: 10 s.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Default [`HealthCheck::timeout`]: 5 s, the default connect timeout: a listing of models is
/// cheap, but a loaded server may queue it behind generation work, and a probe that times out
/// takes the replica out of rotation.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A model served by one or more upstream replicas. See the [module docs](crate::route).
///
/// A plain struct with public fields (a configuration file maps onto it) and consuming setters.
///
/// ```
/// use std::time::Duration;
/// use chatgate::route::{HealthCheck, RouteConfig};
/// use chatgate::upstream::UpstreamConfig;
/// let route = RouteConfig::new()
///     .replica(UpstreamConfig::new("http://10.0.0.1:8000/v1".parse().unwrap()))
///     .replica(UpstreamConfig::new("http://10.0.0.2:8000/v1".parse().unwrap()).weight(3))
///     .health_check(HealthCheck::default().interval(Duration::from_secs(5)))
///     .fallback("small-model");
/// assert_eq!(route.max_attempts, 2);
/// assert_eq!(route.eject_after, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteConfig {
    /// The replicas (at least one).
    pub replicas: Vec<UpstreamConfig>,
    /// How many replicas one request may try (default 2): a connect failure or an upstream 5xx
    /// before anything reached the client moves the request to another replica. 0 counts as 1.
    pub max_attempts: u32,
    /// Consecutive failures (transport failures, timeouts, 5xx, failed streams) that eject a
    /// replica (default 3); 0 never ejects.
    pub eject_after: u32,
    /// How long the first ejection lasts (default 5 s). Each further ejection without a success
    /// in between doubles it, up to [`max_readmit_after`](Self::max_readmit_after); a re-admitted
    /// replica is ejected again by a single failure until it succeeds once.
    pub readmit_after: Duration,
    /// The longest ejection (default 5 min).
    pub max_readmit_after: Duration,
    /// An active probe, if any (default none).
    pub health_check: Option<HealthCheck>,
    /// Models to use, in order, when no replica of this one is available (default none). Only
    /// direct fallbacks are followed, not the fallbacks' own.
    pub fallback: Vec<String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteConfig {
    /// A route with no replicas yet and the documented defaults.
    pub fn new() -> Self {
        Self {
            replicas: Vec::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            eject_after: DEFAULT_EJECT_AFTER,
            readmit_after: DEFAULT_READMIT_AFTER,
            max_readmit_after: DEFAULT_MAX_READMIT_AFTER,
            health_check: None,
            fallback: Vec::new(),
        }
    }

    /// Adds a replica.
    pub fn replica(mut self, upstream: UpstreamConfig) -> Self {
        self.replicas.push(upstream);
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets [`eject_after`](Self::eject_after).
    pub fn eject_after(mut self, n: u32) -> Self {
        self.eject_after = n;
        self
    }

    /// Sets [`readmit_after`](Self::readmit_after).
    pub fn readmit_after(mut self, d: Duration) -> Self {
        self.readmit_after = d;
        self
    }

    /// Sets [`max_readmit_after`](Self::max_readmit_after).
    pub fn max_readmit_after(mut self, d: Duration) -> Self {
        self.max_readmit_after = d;
        self
    }

    /// Sets [`health_check`](Self::health_check).
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    /// Appends a fallback model.
    pub fn fallback(mut self, model: impl Into<String>) -> Self {
        self.fallback.push(model.into());
        self
    }
}

/// An active health probe: a background task `GET`s `path` on every replica each `interval`;
/// a replica that does not answer 2xx within `timeout` takes no traffic until it does.
///
/// # The path
///
/// `path` starts with `/` and is **relative to the replica's base URL**: it is appended to the
/// base URL's path, so `/models` of `http://h:8000/v1` is `http://h:8000/v1/models` (the
/// default, which every OpenAI-compatible server serves). `.` and `..` segments are then
/// resolved as in any URL ([RFC 3986 §5.2.4]), which is how a path at the host's root is
/// reached: `/../health` of `http://h:8000/v1` is `http://h:8000/health` (vLLM's health
/// endpoint). `..` never climbs above the root, so `/../../health` reaches the same place. The
/// base URL's query, if any, is not added; a query in `path` is sent as written. The probe is
/// sent with the replica's API key.
///
/// [RFC 3986 §5.2.4]: https://www.rfc-editor.org/rfc/rfc3986#section-5.2.4
///
/// ```
/// use std::time::Duration;
/// use chatgate::route::HealthCheck;
/// let check = HealthCheck::default();
/// assert_eq!(check.path, "/models");
/// assert_eq!(check.interval, Duration::from_secs(10));
/// assert_eq!(check.timeout, Duration::from_secs(5));
/// // vLLM's /health, at the root of a replica whose base URL is http://h:8000/v1:
/// let root = HealthCheck::new("/../health");
/// # let _ = root;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// The path to `GET`, relative to the base URL (default [`DEFAULT_HEALTH_CHECK_PATH`],
    /// `/models`).
    pub path: String,
    /// Time between probes (default [`DEFAULT_HEALTH_CHECK_INTERVAL`], 10 s).
    pub interval: Duration,
    /// Longest wait for an answer (default [`DEFAULT_HEALTH_CHECK_TIMEOUT`], 5 s).
    pub timeout: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self::new(DEFAULT_HEALTH_CHECK_PATH)
    }
}

impl HealthCheck {
    /// A probe of `path` (relative to each replica's base URL) with the default interval (10 s)
    /// and timeout (5 s).
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            interval: DEFAULT_HEALTH_CHECK_INTERVAL,
            timeout: DEFAULT_HEALTH_CHECK_TIMEOUT,
        }
    }

    /// Sets [`interval`](Self::interval).
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
}

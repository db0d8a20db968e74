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
///     .health_check(HealthCheck::new("/health").interval(Duration::from_secs(5)))
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
/// `path` is absolute on the replica's host (`/health` of `http://h:8000/v1` is
/// `http://h:8000/health`) and is sent with the replica's API key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// The path to `GET` (default `/health`).
    pub path: String,
    /// Time between probes (default 10 s).
    pub interval: Duration,
    /// Longest wait for an answer (default 2 s).
    pub timeout: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self::new("/health")
    }
}

impl HealthCheck {
    /// A probe of `path` with the default interval (10 s) and timeout (2 s).
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
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

//! The validated configuration's models, replicas, timeouts and health settings.

use std::time::Duration;

use http::Uri;

use super::{ApiKeyEnv, CaFile, DEFAULT_EJECT_AFTER, DEFAULT_READMIT_AFTER};

/// One `[[models]]` entry: a public model name and what serves it.
#[derive(Clone, Debug)]
pub struct Model {
    pub(super) name: String,
    pub(super) backend: Backend,
    pub(super) fallback: Vec<String>,
    pub(super) max_attempts: u32,
}

impl Model {
    /// The public name clients send in `model`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What serves the model.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The builtin serving the model, if it is one.
    pub fn builtin(&self) -> Option<Builtin> {
        match &self.backend {
            Backend::Builtin(b) => Some(*b),
            Backend::Upstreams(_) => None,
        }
    }

    /// The replicas serving the model (empty for a builtin).
    pub fn upstreams(&self) -> &[Upstream] {
        match &self.backend {
            Backend::Builtin(_) => &[],
            Backend::Upstreams(u) => u,
        }
    }

    /// Configured models to try, in order, when this one is unavailable. Not transitive: only
    /// this list is tried, never the fallbacks' own fallbacks.
    pub fn fallback(&self) -> &[String] {
        &self.fallback
    }

    /// Tries per request across this model's replicas (`max_attempts`, default 2 = one retry
    /// on another replica); at least 1.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

/// What serves a model.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Backend {
    /// An in-process model (`builtin = "…"`).
    Builtin(Builtin),
    /// One or more OpenAI-compatible servers (`[[models.upstreams]]`); never empty.
    Upstreams(Vec<Upstream>),
}

/// The in-process models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Builtin {
    /// `"echo"`: answers with the last user message.
    Echo,
}

impl Builtin {
    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Echo => "echo",
        }
    }
}

/// One replica of a model: an OpenAI-compatible server (`[[models.upstreams]]`).
#[derive(Clone, Debug)]
pub struct Upstream {
    pub(super) url: Uri,
    pub(super) chat_completions_url: Uri,
    pub(super) model: String,
    pub(super) api_key_env: Option<ApiKeyEnv>,
    pub(super) ca_file: Option<CaFile>,
    pub(super) weight: u32,
    pub(super) timeouts: Timeouts,
    pub(super) max_answer_bytes: usize,
    pub(super) health: Health,
}

impl Upstream {
    /// The base URL (`url`), `http` or `https`, without a trailing `/`, query or fragment.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The URL requests are sent to: the base URL with `/chat/completions` appended.
    pub fn chat_completions_url(&self) -> &Uri {
        &self.chat_completions_url
    }

    /// The model name sent upstream (`model`, default: the public name).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The variable holding this upstream's key, if it needs one (`api_key_env`).
    pub fn api_key_env(&self) -> Option<&ApiKeyEnv> {
        self.api_key_env.as_ref()
    }

    /// The private CA bundle this `https` upstream is verified against, if any (`ca_file`).
    pub fn ca_file(&self) -> Option<&CaFile> {
        self.ca_file.as_ref()
    }

    /// This replica's share of the model's traffic relative to the others (`weight`, default 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The effective timeouts (upstream value, else model value, else default).
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The most bytes of a non-streamed answer read whole and checked (`max_answer_bytes`,
    /// upstream value, else model value, else 8 MiB; 0: not checked). See
    /// [`UpstreamConfig::max_answer_bytes`](crate::upstream::UpstreamConfig::max_answer_bytes).
    pub fn max_answer_bytes(&self) -> usize {
        self.max_answer_bytes
    }

    /// The effective health settings (upstream value, else model value, else default). They are
    /// the same for every replica of a model: a file where they differ is refused.
    pub fn health(&self) -> &Health {
        &self.health
    }
}

/// How long each phase of an upstream exchange may take. All are greater than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Establishing the connection, TCP and TLS (`connect_timeout`, default 5 s).
    pub connect: Duration,
    /// From sending the request to receiving the response head (`first_byte_timeout`,
    /// default 60 s).
    pub first_byte: Duration,
    /// Longest gap between two chunks of the response body (`idle_timeout`, default 60 s).
    pub idle: Duration,
    /// The whole exchange, body included (`total_timeout`, default 10 min).
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        use crate::upstream::{
            DEFAULT_CONNECT_TIMEOUT, DEFAULT_FIRST_BYTE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
            DEFAULT_TOTAL_TIMEOUT,
        };
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            first_byte: DEFAULT_FIRST_BYTE_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            total: DEFAULT_TOTAL_TIMEOUT,
        }
    }
}

/// When a replica is taken out of rotation and brought back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Consecutive failures before the replica is ejected (`eject_after`, default 3); >= 1.
    pub eject_after: u32,
    /// Base backoff before an ejected replica is tried again (`readmit_after`, default 5 s).
    pub readmit_after: Duration,
    /// The active probe (`health_check`), if any.
    pub probe: Option<HealthProbe>,
}

impl Health {
    /// Whether two replicas' settings are the same for their route (the probe's URL aside,
    /// which is each replica's own).
    pub(super) fn same_for_route(&self, other: &Health) -> bool {
        let probe = |h: &Health| {
            h.probe
                .as_ref()
                .map(|p| (p.path.clone(), p.interval, p.timeout))
        };
        self.eject_after == other.eject_after
            && self.readmit_after == other.readmit_after
            && probe(self) == probe(other)
    }
}

impl Default for Health {
    fn default() -> Self {
        Self {
            eject_after: DEFAULT_EJECT_AFTER,
            readmit_after: DEFAULT_READMIT_AFTER,
            probe: None,
        }
    }
}

/// An active health probe: `GET` on [`HealthProbe::url`] every [`HealthProbe::interval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthProbe {
    pub(super) path: String,
    pub(super) url: Uri,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
}

impl HealthProbe {
    /// The probed path, relative to the upstream's base URL (`path`, default `/models`); see
    /// [`HealthCheck`](crate::route::HealthCheck) for the rule.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The probed URL: the upstream's base URL followed by [`HealthProbe::path`], `.` and `..`
    /// segments resolved (`/../health` of `http://h:8000/v1` is `http://h:8000/health`).
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// Time between two probes (`interval`, default 10 s).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long one probe may take (`timeout`, default 5 s).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

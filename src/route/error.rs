use std::fmt;

use crate::upstream::UpstreamConfigError;

#[derive(Debug)]
enum Kind {
    NoReplicas,
    Upstream(UpstreamConfigError),
    UnknownFallback(String),
    NoRuntime,
}

/// Why a [`ModelRouter`](super::ModelRouter) cannot be built.
#[derive(Debug)]
pub struct BuildError {
    model: String,
    kind: Kind,
}

impl BuildError {
    pub(crate) fn no_replicas(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            kind: Kind::NoReplicas,
        }
    }

    pub(crate) fn upstream(model: &str, e: UpstreamConfigError) -> Self {
        Self {
            model: model.to_owned(),
            kind: Kind::Upstream(e),
        }
    }

    pub(crate) fn unknown_fallback(model: &str, fallback: &str) -> Self {
        Self {
            model: model.to_owned(),
            kind: Kind::UnknownFallback(fallback.to_owned()),
        }
    }

    pub(crate) fn no_runtime(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            kind: Kind::NoRuntime,
        }
    }

    /// The model whose route is wrong.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.model;
        match &self.kind {
            Kind::NoReplicas => write!(f, "model `{m}`: a route needs at least one replica"),
            Kind::Upstream(e) => write!(f, "model `{m}`: {e}"),
            Kind::UnknownFallback(fb) => {
                write!(
                    f,
                    "model `{m}`: the fallback `{fb}` is not a configured model"
                )
            }
            Kind::NoRuntime => write!(
                f,
                "model `{m}`: a health check needs a Tokio runtime when the router is built"
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Upstream(e) => Some(e),
            _ => None,
        }
    }
}

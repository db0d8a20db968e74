use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::{Validate, ValidateConfig};

/// Applies [`Validate`] to a service. See the [module docs](crate::validate).
#[derive(Clone, Debug, Default)]
pub struct ValidateLayer {
    config: Arc<ValidateConfig>,
}

impl ValidateLayer {
    /// The contract's defaults: 4 MiB bodies, depth 64, defaults written in, strict off.
    pub fn new() -> Self {
        Self::default()
    }

    /// A layer with the given configuration.
    pub fn with_config(config: ValidateConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut ValidateConfig)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Largest accepted body in bytes.
    pub fn max_body(self, bytes: usize) -> Self {
        self.edit(|c| c.max_body = bytes)
    }

    /// Deepest accepted JSON nesting.
    pub fn max_depth(self, depth: usize) -> Self {
        self.edit(|c| c.max_depth = depth)
    }

    /// Whether absent `temperature` and `n` are written into the forwarded body.
    pub fn apply_defaults(self, on: bool) -> Self {
        self.edit(|c| c.apply_defaults = on)
    }

    /// Whether OpenAI's semantic rules are enforced (400).
    pub fn strict(self, on: bool) -> Self {
        self.edit(|c| c.strict = on)
    }

    /// Longest time to receive the body; `None` waits forever.
    pub fn body_timeout(self, timeout: Option<Duration>) -> Self {
        self.edit(|c| c.body_timeout = timeout)
    }

    /// The configuration.
    pub fn config(&self) -> &ValidateConfig {
        &self.config
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Validate::from_shared(inner, Arc::clone(&self.config))
    }
}

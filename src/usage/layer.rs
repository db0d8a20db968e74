//! [`UsageLayer`] (outer) and [`UsageMeterLayer`] (inner).

use tower::Layer;

use super::{Usage, UsageHandle, UsageMeter};

/// The outer half of usage accounting: wraps the whole chat stack, makes exactly one
/// [`UsageRecord`](super::UsageRecord) per request (also for requests rejected inside it, with
/// their status and zero tokens) and sends it to the [`UsageHandle`]'s sinks. See the
/// [module docs](super) for where it goes.
#[derive(Clone, Debug)]
pub struct UsageLayer {
    handle: UsageHandle,
}

impl UsageLayer {
    /// A layer sending records to `handle`.
    pub fn new(handle: UsageHandle) -> Self {
        Self { handle }
    }
}

impl<S> Layer<S> for UsageLayer {
    type Service = Usage<S>;

    fn layer(&self, inner: S) -> Usage<S> {
        Usage::new(inner, self.handle.clone())
    }
}

/// The default bound on a non-streamed body read for its usage: 8 MiB.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// The inner half: reads the usage of each response (a non-streamed body's JSON, a stream's
/// events as they pass), asks upstreams for usage on every stream, and hides the usage chunk
/// from clients that did not ask for it. Mounted after [`ValidateLayer`](crate::ValidateLayer)
/// (its service takes `Request<ValidatedRequest>`), inside a [`UsageLayer`].
///
/// As it decodes a stream anyway, it takes over the scanning of the router's stream ending
/// ([`SseEnding`](crate::sse::SseEnding)), which then decides from what the meter saw. Layers
/// between the meter and the router should pass a stream's frames through as they come, as
/// the crate's own do (one that changes them is reported by a warning in the log).
#[derive(Clone, Debug)]
pub struct UsageMeterLayer {
    max_body: usize,
}

impl Default for UsageMeterLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageMeterLayer {
    /// A meter with the default bound on non-streamed bodies ([`DEFAULT_MAX_BODY`]).
    pub fn new() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The most bytes of a non-streamed 2xx body held to read its usage; a longer body passes
    /// through unread and its record says `usage_unknown`.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

impl<S> Layer<S> for UsageMeterLayer {
    type Service = UsageMeter<S>;

    fn layer(&self, inner: S) -> UsageMeter<S> {
        UsageMeter::new(inner, self.max_body)
    }
}

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::catalog::FunctionCatalog;
use super::rounds::Shared;
use super::service::ServerTools;

/// Default bound on model calls per request (MLflow's).
pub const DEFAULT_MAX_ROUNDS: u32 = 20;
/// Default time one catalog function may run.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on one (non-streamed) model answer, in bytes.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Applies [`ServerTools`]: runs `uc_function` tools in the gateway. See the
/// [module docs](super).
#[derive(Clone)]
pub struct ServerToolsLayer {
    catalogs: Vec<Arc<dyn FunctionCatalog>>,
    max_rounds: u32,
    call_timeout: Duration,
    max_answer_bytes: usize,
}

impl fmt::Debug for ServerToolsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerToolsLayer")
            .field("catalogs", &self.catalogs.len())
            .field("max_rounds", &self.max_rounds)
            .field("call_timeout", &self.call_timeout)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .finish()
    }
}

impl ServerToolsLayer {
    /// Server-side tools from `catalog`. Pass an `Arc` to share one catalog (and its
    /// connection pool) between stacks, e.g. across reloads.
    pub fn new(catalog: impl FunctionCatalog) -> Self {
        Self {
            catalogs: vec![Arc::new(catalog)],
            max_rounds: DEFAULT_MAX_ROUNDS,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    /// Also looks names up in `catalog`, after the earlier ones (the first that has a name
    /// runs it).
    pub fn catalog(mut self, catalog: impl FunctionCatalog) -> Self {
        self.catalogs.push(Arc::new(catalog));
        self
    }

    /// At most `rounds` model calls per request (default [`DEFAULT_MAX_ROUNDS`]; at least 1).
    pub fn max_rounds(mut self, rounds: u32) -> Self {
        self.max_rounds = rounds.max(1);
        self
    }

    /// How long one function may run before its result is a timeout error (default
    /// [`DEFAULT_CALL_TIMEOUT`]).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The largest model answer read in a round (default [`DEFAULT_MAX_ANSWER_BYTES`]); a
    /// larger one is a 502.
    pub fn max_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_answer_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for ServerToolsLayer {
    type Service = ServerTools<S>;

    fn layer(&self, inner: S) -> ServerTools<S> {
        ServerTools::new(
            inner,
            Arc::new(Shared {
                catalogs: self.catalogs.clone(),
                max_rounds: self.max_rounds,
                call_timeout: self.call_timeout,
                max_answer_bytes: self.max_answer_bytes,
            }),
        )
    }
}

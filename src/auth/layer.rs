use std::sync::Arc;

use tower::Layer;

use super::{Auth, KeyStore};

/// Applies [`Auth`] to a service: API keys checked against a [`KeyStore`]. See the
/// [module docs](crate::auth).
#[derive(Clone)]
pub struct AuthLayer {
    store: Arc<dyn KeyStore>,
}

impl AuthLayer {
    /// Checks keys against `store`.
    pub fn new(store: impl KeyStore) -> Self {
        Self::from_shared(Arc::new(store))
    }

    /// Checks keys against a shared store: the handle made once and handed to every stack a
    /// reload builds (a database store's pool and cache outlive the reload).
    pub fn from_shared(store: Arc<dyn KeyStore>) -> Self {
        Self { store }
    }
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth::from_shared(inner, Arc::clone(&self.store))
    }
}

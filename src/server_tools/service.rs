use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

use super::blocks;
use super::future::ResponseFuture;
use super::rounds::{Shared, run};
use crate::BoxError;
use crate::contract::ToolType;
use crate::route::BoxBody;
use crate::validate::ValidatedRequest;

/// Runs `uc_function` tools in the gateway (made by [`ServerToolsLayer`](super::ServerToolsLayer)).
/// See the [module docs](super).
#[derive(Clone)]
pub struct ServerTools<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for ServerTools<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTools")
            .field("catalogs", &self.shared.catalogs.len())
            .field("max_rounds", &self.shared.max_rounds)
            .finish_non_exhaustive()
    }
}

impl<S> ServerTools<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<ValidatedRequest>> for ServerTools<S>
where
    S: Service<Request<ValidatedRequest>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ValidatedRequest>) -> Self::Future {
        // What ran in earlier turns goes back to the model as the calls and results it was.
        if let Some(messages) = blocks::expand(&req.body().request().messages) {
            req.body_mut().set_messages(messages);
        }
        let catalog_tools = req
            .body()
            .request()
            .tools
            .iter()
            .flatten()
            .any(|t| t.kind == ToolType::UcFunction);
        if !catalog_tools {
            return ResponseFuture::direct(self.inner.call(req));
        }
        // The service that was made ready serves the request; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::rounds(Box::pin(run(inner, Arc::clone(&self.shared), req)))
    }
}

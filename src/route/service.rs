use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use pin_project_lite::pin_project;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{Service, ServiceExt};

use super::BoxBody;
use crate::BoxError;
use crate::error::ApiError;
use crate::validate::ValidatedRequest;

/// A route's service, type-erased.
pub type RouteService = BoxCloneSyncService<Request<Full<Bytes>>, Response<BoxBody>, Infallible>;

/// Sends a validated request to the route of its `model`. See the [module docs](crate::route).
#[derive(Clone)]
pub struct ModelRouter {
    routes: Arc<HashMap<String, RouteService>>,
    names: Arc<[String]>,
}

impl std::fmt::Debug for ModelRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRouter")
            .field("models", &self.names)
            .finish()
    }
}

/// Builds a [`ModelRouter`].
#[derive(Default)]
pub struct ModelRouterBuilder {
    routes: HashMap<String, RouteService>,
    names: Vec<String>,
}

impl std::fmt::Debug for ModelRouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRouterBuilder")
            .field("models", &self.names)
            .finish()
    }
}

impl ModelRouterBuilder {
    /// Routes `model` to `service`; its failures must already be responses (`Error = Infallible`).
    /// A later registration of the same name replaces the earlier.
    pub fn service<S, B>(mut self, model: impl Into<String>, service: S) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let route = service
            .map_response(|res: Response<B>| res.map(|b| b.map_err(Into::into).boxed_unsync()));
        let model = model.into();
        if !self.routes.contains_key(&model) {
            self.names.push(model.clone());
        }
        self.routes.insert(model, BoxCloneSyncService::new(route));
        self
    }

    /// The router.
    pub fn build(self) -> ModelRouter {
        ModelRouter {
            routes: Arc::new(self.routes),
            names: self.names.into(),
        }
    }
}

impl ModelRouter {
    /// A builder with no routes.
    pub fn builder() -> ModelRouterBuilder {
        ModelRouterBuilder::default()
    }

    /// The configured model names, in registration order.
    pub fn models(&self) -> &[String] {
        &self.names
    }

    /// The route of `model`, if configured.
    pub fn route(&self, model: &str) -> Option<&RouteService> {
        self.routes.get(model)
    }
}

pin_project! {
    /// Response future of [`ModelRouter`].
    pub struct ResponseFuture {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Routed { #[pin] call: Oneshot<RouteService, Request<Full<Bytes>>> },
        Early { response: Option<Response<BoxBody>> },
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<BoxBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Routed { call } => call.poll(cx),
            KindProj::Early { response } => {
                Poll::Ready(Ok(response.take().expect("future polled after completion")))
            }
        }
    }
}

fn early(e: ApiError) -> ResponseFuture {
    ResponseFuture {
        kind: Kind::Early {
            response: Some(
                e.into_response()
                    .map(|b| b.map_err(|never| match never {}).boxed_unsync()),
            ),
        },
    }
}

impl Service<Request<Full<Bytes>>> for ModelRouter {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each route is made ready when called (it is only known then).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> ResponseFuture {
        let Some(validated) = req.extensions().get::<ValidatedRequest>() else {
            return early(ApiError::internal(
                "ModelRouter needs ValidateLayer in front of it: the request carries no ValidatedRequest.",
            ));
        };
        let model = validated.request().model.as_str();
        match self.routes.get(model) {
            Some(route) => ResponseFuture {
                kind: Kind::Routed {
                    call: route.clone().oneshot(req),
                },
            },
            None => early(ApiError::model_not_found(model)),
        }
    }
}

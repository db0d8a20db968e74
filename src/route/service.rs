use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{Service, ServiceExt};

use super::config::RouteConfig;
use super::error::BuildError;
use super::pool::{Attempts, Exhausted, Pool, spawn_health_check};
use super::{BoxBody, RoutedModel};
use crate::BoxError;
use crate::error::ApiError;
use crate::validate::ValidatedRequest;

/// A route's service, type-erased.
pub type RouteService =
    BoxCloneSyncService<Request<ValidatedRequest>, Response<BoxBody>, Infallible>;

type Routes = HashMap<String, Entry>;

/// Sends a validated request to the route of its `model`. See the [module docs](crate::route).
#[derive(Clone)]
pub struct ModelRouter {
    routes: Arc<Routes>,
    names: Arc<[String]>,
}

/// A configured model.
struct Entry {
    name: RoutedModel,
    route: Route,
}

enum Route {
    Service(RouteService),
    Pool(Arc<Pool>),
}

/// Where one request goes.
enum Target<'a> {
    Service(&'a RouteService, &'a RoutedModel),
    Pool(&'a Arc<Pool>, usize),
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
    routes: HashMap<String, Entry>,
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
    ///
    /// The service gets the validated request as its body (`Request<ValidatedRequest>`);
    /// [`ValidatedRequest`] is also an `http_body::Body` of the bytes to forward, so a service
    /// written for any body type fits.
    pub fn service<S, B>(mut self, model: impl Into<String>, service: S) -> Self
    where
        S: Service<Request<ValidatedRequest>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Event streams keep the contract's ending whatever the service does
        // (docs/contract.md, "Streaming").
        let route = service.map_response(|res: Response<B>| {
            let sse = res
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            res.map(|b| {
                let b = b.map_err(Into::<BoxError>::into);
                if sse {
                    crate::sse::ending(b).boxed_unsync()
                } else {
                    b.boxed_unsync()
                }
            })
        });
        self.insert(
            model.into(),
            Route::Service(BoxCloneSyncService::new(route)),
        );
        self
    }

    /// Routes `model` to upstream replicas. A later registration of the same name replaces the
    /// earlier.
    ///
    /// # Errors
    /// The route has no replica, or a replica's URL or key is unusable.
    pub fn upstream(
        mut self,
        model: impl Into<String>,
        config: RouteConfig,
    ) -> Result<Self, BuildError> {
        let model = model.into();
        let pool = Pool::new(&model, config)?;
        self.insert(model, Route::Pool(Arc::new(pool)));
        Ok(self)
    }

    fn insert(&mut self, model: String, route: Route) {
        if !self.routes.contains_key(&model) {
            self.names.push(model.clone());
        }
        let name = RoutedModel::new(model.as_str());
        self.routes.insert(model, Entry { name, route });
    }

    /// The router; starts the active health checks.
    ///
    /// # Errors
    /// A fallback names no configured model, or a health check is configured and there is no
    /// Tokio runtime to run it on.
    pub fn try_build(self) -> Result<ModelRouter, BuildError> {
        for (model, entry) in &self.routes {
            if let Route::Pool(pool) = &entry.route
                && let Some(fb) = pool
                    .fallback
                    .iter()
                    .find(|fb| !self.routes.contains_key(*fb))
            {
                return Err(BuildError::unknown_fallback(model, fb));
            }
        }
        for entry in self.routes.values() {
            if let Route::Pool(pool) = &entry.route
                && let Some(check) = &pool.health_check
            {
                spawn_health_check(pool, check.clone())?;
            }
        }
        Ok(ModelRouter {
            routes: Arc::new(self.routes),
            names: self.names.into(),
        })
    }

    /// The router; starts the active health checks.
    ///
    /// # Panics
    /// Where [`try_build`](Self::try_build) fails. A router of in-process services only never
    /// panics.
    pub fn build(self) -> ModelRouter {
        match self.try_build() {
            Ok(router) => router,
            Err(e) => panic!("invalid model routes: {e}"),
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

    /// The in-process service of `model`, if `model` is routed to one (`None` for unknown
    /// models and upstream routes).
    pub fn route(&self, model: &str) -> Option<&RouteService> {
        match &self.routes.get(model)?.route {
            Route::Service(s) => Some(s),
            Route::Pool(_) => None,
        }
    }

    /// Whether `model` is configured.
    pub fn contains(&self, model: &str) -> bool {
        self.routes.contains_key(model)
    }

    /// Whether `model` can take a request now: configured, and (for an upstream route) it or
    /// one of its fallbacks has an available replica.
    pub fn is_ready(&self, model: &str) -> bool {
        self.routes
            .get(model)
            .is_some_and(|e| self.target(e).is_some())
    }

    /// Where a request for `entry` goes: the entry itself, or its first available fallback.
    fn target<'a>(&'a self, entry: &'a Entry) -> Option<Target<'a>> {
        let pool = match &entry.route {
            Route::Service(s) => return Some(Target::Service(s, &entry.name)),
            Route::Pool(pool) => pool,
        };
        if let Some(i) = pool.pick(0) {
            return Some(Target::Pool(pool, i));
        }
        fallback_target(&self.routes, pool)
    }
}

/// The first fallback of `pool` that can take a request now.
fn fallback_target<'a>(routes: &'a Routes, pool: &Pool) -> Option<Target<'a>> {
    pool.fallback.iter().find_map(|fb| {
        let e = routes.get(fb)?;
        match &e.route {
            Route::Service(s) => Some(Target::Service(s, &e.name)),
            Route::Pool(p) => p.pick(0).map(|i| Target::Pool(p, i)),
        }
    })
}

/// Calls `target` with `req` (the routed name goes in the response extensions, and in the
/// request's for an in-process service).
fn call_target(target: Target<'_>, mut req: Request<ValidatedRequest>) -> Kind {
    match target {
        Target::Service(service, name) => {
            req.extensions_mut().insert(name.clone());
            Kind::Routed {
                call: service.clone().oneshot(req),
                routed: Some(name.clone()),
            }
        }
        Target::Pool(pool, index) => {
            // The pool's upstreams are told the route's name directly: no extension to add.
            Kind::Upstream {
                call: pool.start(index, req),
                fallback: None,
            }
        }
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
        Routed { #[pin] call: Oneshot<RouteService, Request<ValidatedRequest>>, routed: Option<RoutedModel> },
        // `fallback`: the routing table and the pool whose fallbacks serve the request if every
        // attempt fails (taken once: fallbacks are not chained).
        Upstream { #[pin] call: Attempts, fallback: Option<(Arc<Routes>, Arc<Pool>)> },
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
        let mut kind = self.project().kind;
        loop {
            let next = match kind.as_mut().project() {
                KindProj::Routed { call, routed } => {
                    let mut res = ready!(call.poll(cx))?;
                    if let Some(routed) = routed.take() {
                        res.extensions_mut().insert(routed);
                    }
                    return Poll::Ready(Ok(res));
                }
                KindProj::Upstream { call, fallback } => match ready!(call.poll(cx)) {
                    Ok(res) => return Poll::Ready(Ok(res)),
                    Err(Exhausted { response, request }) => {
                        let Some((routes, pool)) = fallback.take() else {
                            return Poll::Ready(Ok(response));
                        };
                        let Some(target) = fallback_target(&routes, &pool) else {
                            return Poll::Ready(Ok(response));
                        };
                        // Nothing was sent to the client: the failure is dropped, and the
                        // fallback serves the request.
                        drop(response);
                        call_target(target, request)
                    }
                },
                KindProj::Early { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("future polled after completion")));
                }
            };
            kind.set(next);
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

impl Service<Request<ValidatedRequest>> for ModelRouter {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each route is made ready when called (it is only known then).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ValidatedRequest>) -> ResponseFuture {
        let model = req.body().request().model.as_str();
        let Some(entry) = self.routes.get(model) else {
            return early(ApiError::model_not_found(model));
        };
        let Some(target) = self.target(entry) else {
            return early(ApiError::model_not_ready(model));
        };
        let mut kind = call_target(target, req);
        // A pool answered at arrival keeps its fallbacks for when every attempt fails.
        if let (Kind::Upstream { fallback, .. }, Route::Pool(pool)) = (&mut kind, &entry.route)
            && !pool.fallback.is_empty()
        {
            *fallback = Some((Arc::clone(&self.routes), Arc::clone(pool)));
        }
        ResponseFuture { kind }
    }
}

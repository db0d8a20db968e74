//! The whole gateway as one service: the chat-completions paths through a layer stack you
//! assemble, plus `GET /v1/models`, `GET /v1/models/{id}` and `GET /healthz` — what the bundled
//! proxy serves.
//!
//! ```text
//!   request ─▶ paths ─┬─ POST …/chat/completions ─▶ the chat stack (e.g. ValidateLayer ─▶ ModelRouter)
//!                     ├─ GET /v1/models, /v1/models/{id}   (OpenAI list / model format)
//!                     ├─ GET /healthz
//!                     └─ anything else ─▶ 404 {"detail":"Not Found"}
//! ```
//!
//! # Assembling the stack
//!
//! The chat stack is any `Service<Request<B>>` with `Error = Infallible`: usually a
//! [`ServiceBuilder`](tower::ServiceBuilder) of the crate's layers (and yours) around a
//! [`ModelRouter`]. [`Gateway::with_stack`] takes it; [`Gateway::new`] is the default stack
//! (`ValidateLayer` around a `ModelRouter`). The gateway makes the stack ready (`poll_ready`)
//! before every call, so readiness-based layers such as `tower::limit::ConcurrencyLimit` work.
//!
//! # Reloading, and state that must outlive it
//!
//! [`Gateway::reload_stack`] (or [`Gateway::reload`] for the default stack) swaps the whole stack
//! for new requests with one atomic store; requests in flight finish on the stack they started
//! with. A reload builds a **new stack from configuration**, so anything that must survive it —
//! limiter counters, usage sinks, key caches, connection pools to Redis or PostgreSQL — is not
//! owned by the stack: it lives in shared handles (`Arc`s) made once at start, and each new stack
//! is built around the same handles. The routing table (the [`ModelRouter`]) is the part that a
//! reload replaces; a layer's configuration may change with it, its counters do not.
//!
//! # Example
//!
//! ```
//! use chatgate::gateway::Gateway;
//! use chatgate::{route::ModelRouter, EchoModel, ValidateLayer};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let router = ModelRouter::builder().service("echo", EchoModel::new()).build();
//! let models = router.models().to_vec();
//! let chat = ServiceBuilder::new()
//!     .concurrency_limit(1024)            // any tower layer
//!     .layer(ValidateLayer::new())
//!     .service(router);
//! let gateway = Gateway::with_stack(chat, models);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = tokio::spawn(chatgate::gateway::serve(listener, gateway, std::future::pending()));
//! # server.abort();
//! # Ok(())
//! # }
//! ```

mod serve;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::Service;
use tower::util::{BoxCloneSyncService, Oneshot};

pub use serve::{ServeConfig, serve, serve_with};

use crate::BoxError;
use crate::body::{ResponseBody, full_into_bytes};
use crate::error::{ApiError, json_response};
use crate::route::{BoxBody, ModelRouter};
use crate::validate::{Validate, ValidateConfig};

/// The paths the chat-completions endpoint is mounted at.
pub const CHAT_PATHS: [&str; 2] = [
    "/v1/chat/completions",
    "/api/v1/compatibility/openai/v1/chat/completions",
];

/// The default chat stack: validation in front of the router.
pub type DefaultStack = Validate<ModelRouter>;

/// One immutable version of the stack.
#[derive(Debug)]
struct Stack<S> {
    chat: S,
    models: Arc<[String]>,
    models_json: Bytes,
}

impl<S> Stack<S> {
    fn new(chat: S, models: Vec<String>) -> Self {
        let data: Vec<serde_json::Value> = models.iter().map(|m| model_object(m)).collect();
        let models_json = Bytes::from(
            serde_json::to_vec(&serde_json::json!({"object": "list", "data": data}))
                .unwrap_or_default(),
        );
        Self {
            chat,
            models: models.into(),
            models_json,
        }
    }
}

fn model_object(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "chatgate"})
}

/// The gateway service. Cheap to clone; clones share the (reloadable) stack.
#[derive(Debug)]
pub struct Gateway<S = DefaultStack> {
    stack: Arc<ArcSwap<Stack<S>>>,
    routes: Arc<[(String, Route)]>,
}

impl<S> Clone for Gateway<S> {
    fn clone(&self) -> Self {
        Self {
            stack: Arc::clone(&self.stack),
            routes: Arc::clone(&self.routes),
        }
    }
}

/// The request body an extra route gets (the client's body, boxed).
pub type RouteBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An extra route of the gateway ([`Gateway::with_route`]): admin endpoints, `/metrics`, …
pub type Route = BoxCloneSyncService<Request<RouteBody>, Response<BoxBody>, Infallible>;

impl Gateway<DefaultStack> {
    /// The default stack: `ValidateLayer` (with `validate`) around `router`.
    pub fn new(router: ModelRouter, validate: ValidateConfig) -> Self {
        let models = router.models().to_vec();
        Self::with_stack(Validate::new(router, validate), models)
    }

    /// Replaces the default stack for new requests; requests in flight finish on the old one.
    pub fn reload(&self, router: ModelRouter, validate: ValidateConfig) {
        let models = router.models().to_vec();
        self.reload_stack(Validate::new(router, validate), models);
    }
}

impl<S> Gateway<S> {
    /// A gateway serving `chat` at the chat-completions paths; `models` are listed at
    /// `/v1/models`.
    pub fn with_stack(chat: S, models: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let models = models.into_iter().map(Into::into).collect();
        Self {
            stack: Arc::new(ArcSwap::from_pointee(Stack::new(chat, models))),
            routes: Arc::new([]),
        }
    }

    /// Serves `route` at `path` (exactly), or at every path under it when `path` ends with
    /// `/`. Extra routes are checked before the built-in ones, live outside the reloadable
    /// stack (a reload keeps them) and get the client's body boxed.
    ///
    /// ```
    /// use chatgate::gateway::{Gateway, RouteBody};
    /// use chatgate::{route::ModelRouter, EchoModel};
    /// use http::{Request, Response};
    /// use http_body_util::BodyExt;
    ///
    /// let router = ModelRouter::builder().service("echo", EchoModel::new()).build();
    /// let gateway = Gateway::new(router, Default::default()).with_route(
    ///     "/admin/",
    ///     tower::service_fn(|_req: Request<RouteBody>| async {
    ///         Ok(Response::new(
    ///             http_body_util::Full::new(bytes::Bytes::from("hi"))
    ///                 .map_err(|never| match never {})
    ///                 .boxed_unsync(),
    ///         ))
    ///     }),
    /// );
    /// # let _ = gateway;
    /// ```
    pub fn with_route<R>(mut self, path: impl Into<String>, route: R) -> Self
    where
        R: Service<Request<RouteBody>, Response = Response<BoxBody>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        R::Future: Send + 'static,
    {
        let mut routes = self.routes.to_vec();
        routes.push((path.into(), BoxCloneSyncService::new(route)));
        self.routes = routes.into();
        self
    }

    /// Replaces the stack for new requests; requests in flight finish on the old one. See
    /// the [module docs](self) for the state that must outlive a reload.
    pub fn reload_stack(&self, chat: S, models: impl IntoIterator<Item = impl Into<String>>) {
        let models = models.into_iter().map(Into::into).collect();
        self.stack.store(Arc::new(Stack::new(chat, models)));
    }

    /// The listed model names.
    pub fn models(&self) -> Vec<String> {
        self.stack.load().models.to_vec()
    }
}

fn plain<B>(status: StatusCode, body: &'static [u8]) -> Response<ResponseBody<B>> {
    let mut res = Response::new(ResponseBody::full(Bytes::from_static(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn full<B>(res: Response<http_body_util::Full<Bytes>>) -> Response<ResponseBody<B>> {
    res.map(|b| ResponseBody::full(full_into_bytes(b)))
}

/// `%XX` sequences decoded (model ids such as `org/name` may arrive as `org%2Fname`).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pin_project! {
    /// Response future of [`Gateway`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        kind: Kind<S, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<B>>,
    {
        Chat { #[pin] future: Oneshot<S, Request<B>> },
        Route { #[pin] future: Oneshot<Route, Request<RouteBody>> },
        Ready { response: Option<Response<ResponseBody<Never>>> },
    }
}

pin_project! {
    /// The response body of [`Gateway`]: the chat stack's, or an extra route's, or the
    /// gateway's own.
    #[derive(Debug)]
    pub struct GatewayBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    #[derive(Debug)]
    enum BodyKind<B> {
        Chat { #[pin] body: ResponseBody<B> },
        Route { #[pin] body: BoxBody },
    }
}

impl<B> GatewayBody<B> {
    fn chat(body: ResponseBody<B>) -> Self {
        Self {
            kind: BodyKind::Chat { body },
        }
    }

    fn route(body: BoxBody) -> Self {
        Self {
            kind: BodyKind::Route { body },
        }
    }
}

impl<B> http_body::Body for GatewayBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            BodyKindProj::Chat { body } => body.poll_frame(cx).map_err(Into::into),
            BodyKindProj::Route { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Chat { body } => body.is_end_stream(),
            BodyKind::Route { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.kind {
            BodyKind::Chat { body } => body.size_hint(),
            BodyKind::Route { body } => body.size_hint(),
        }
    }
}

/// The body type of the gateway's own responses before they take the stack's body type.
type Never = http_body_util::Empty<Bytes>;

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = Infallible>,
{
    type Output = Result<Response<GatewayBody<ResBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let chat = GatewayBody::chat;
        match self.project().kind.project() {
            KindProj::Chat { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(|b| chat(ResponseBody::inner(b))))),
            KindProj::Route { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(GatewayBody::route))),
            KindProj::Ready { response } => {
                let res = response.take().expect("future polled after completion");
                Poll::Ready(Ok(res.map(|b| chat(ResponseBody::retype(b)))))
            }
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for Gateway<S>
where
    S: Service<Request<B>, Response = Response<ResBody>, Error = Infallible> + Clone,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<GatewayBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The stack is made ready per request (it may be swapped by a reload in between).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let ready = |response| ResponseFuture {
            kind: Kind::Ready {
                response: Some(response),
            },
        };
        if let Some((_, route)) = self
            .routes
            .iter()
            .find(|(p, _)| p == path || (p.ends_with('/') && path.starts_with(p.as_str())))
        {
            let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
            return ResponseFuture {
                kind: Kind::Route {
                    future: Oneshot::new(route.clone(), req),
                },
            };
        }
        if CHAT_PATHS.contains(&path) {
            let chat = self.stack.load().chat.clone();
            // `Oneshot` waits for `poll_ready` before `call` (tower's contract).
            return ResponseFuture {
                kind: Kind::Chat {
                    future: Oneshot::new(chat, req),
                },
            };
        }
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        if let Some(id) = path.strip_prefix("/v1/models/") {
            if !get {
                return ready(full(crate::error::method_not_allowed("GET, HEAD")));
            }
            let stack = self.stack.load();
            let id = percent_decode(id).unwrap_or_default();
            let res = match stack.models.iter().find(|m| **m == id) {
                Some(m) => json_response(StatusCode::OK, Bytes::from(model_object(m).to_string())),
                None => ApiError::model_not_found(&id).into_response(),
            };
            return ready(full(res));
        }
        match path {
            "/v1/models" if get => {
                let stack = self.stack.load();
                ready(full(json_response(
                    StatusCode::OK,
                    stack.models_json.clone(),
                )))
            }
            "/healthz" if get => ready(plain(StatusCode::OK, br#"{"status":"ok"}"#)),
            "/v1/models" | "/healthz" => ready(full(crate::error::method_not_allowed("GET, HEAD"))),
            _ => ready(plain(StatusCode::NOT_FOUND, br#"{"detail":"Not Found"}"#)),
        }
    }
}

//! The whole gateway as one service: the chat-completions paths through the layer stack, plus
//! `GET /v1/models` and `GET /healthz` — what the bundled proxy serves.
//!
//! ```text
//!   request ─▶ paths ─┬─ POST …/chat/completions ─▶ ValidateLayer ─▶ ModelRouter ─▶ route
//!                     ├─ GET /v1/models            (configured models, OpenAI list format)
//!                     ├─ GET /healthz
//!                     └─ anything else ─▶ 404 {"detail":"Not Found"}
//! ```
//!
//! The stack can be replaced while serving ([`Gateway::reload`]): requests already in flight
//! finish on the stack they started with.
//!
//! # Example
//!
//! ```
//! use chatgate::gateway::Gateway;
//! use chatgate::{route::ModelRouter, validate::ValidateConfig, EchoModel};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let router = ModelRouter::builder().service("echo", EchoModel::new()).build();
//! let gateway = Gateway::new(router, ValidateConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = tokio::spawn(chatgate::gateway::serve(listener, gateway, std::future::pending()));
//! # let _ = addr; server.abort();
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
use pin_project_lite::pin_project;
use tower::Service;

pub use serve::{ServeConfig, serve, serve_with};

use crate::body::ResponseBody;
use crate::route::{BoxBody, ModelRouter};
use crate::validate::{Validate, ValidateConfig};
use crate::{BoxError, error::json_response};

/// The paths the chat-completions endpoint is mounted at.
pub const CHAT_PATHS: [&str; 2] = [
    "/v1/chat/completions",
    "/api/v1/compatibility/openai/v1/chat/completions",
];

/// One immutable version of the stack.
#[derive(Debug)]
struct Stack {
    chat: Validate<ModelRouter>,
    models_json: Bytes,
}

impl Stack {
    fn new(router: ModelRouter, validate: ValidateConfig) -> Self {
        let data: Vec<serde_json::Value> = router
            .models()
            .iter()
            .map(|m| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": "chatgate"}))
            .collect();
        let models_json = Bytes::from(
            serde_json::to_vec(&serde_json::json!({"object": "list", "data": data}))
                .unwrap_or_default(),
        );
        Self {
            chat: Validate::new(router, validate),
            models_json,
        }
    }
}

/// The gateway service. Cheap to clone; clones share the (reloadable) stack.
#[derive(Clone, Debug)]
pub struct Gateway {
    stack: Arc<ArcSwap<Stack>>,
}

impl Gateway {
    /// A gateway routing with `router` and validating with `validate`.
    pub fn new(router: ModelRouter, validate: ValidateConfig) -> Self {
        Self {
            stack: Arc::new(ArcSwap::from_pointee(Stack::new(router, validate))),
        }
    }

    /// Replaces the stack for new requests; requests in flight finish on the old one.
    pub fn reload(&self, router: ModelRouter, validate: ValidateConfig) {
        self.stack.store(Arc::new(Stack::new(router, validate)));
    }

    /// The configured model names.
    pub fn models(&self) -> Vec<String> {
        self.stack.load().chat.get_ref().models().to_vec()
    }
}

fn plain(status: StatusCode, body: &'static [u8]) -> Response<ResponseBody<BoxBody>> {
    let mut res = Response::new(ResponseBody::full(Bytes::from_static(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pin_project! {
    /// Response future of [`Gateway`].
    pub struct ResponseFuture<B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        Chat { #[pin] future: crate::validate::ResponseFuture<ModelRouter, B> },
        Ready { response: Option<Response<ResponseBody<BoxBody>>> },
    }
}

impl<B> std::fmt::Debug for ResponseFuture<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B> Future for ResponseFuture<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<BoxBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Chat { future } => future.poll(cx),
            KindProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("future polled after completion")))
            }
        }
    }
}

impl<B> Service<Request<B>> for Gateway
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<BoxBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let ready = |response| ResponseFuture {
            kind: Kind::Ready {
                response: Some(response),
            },
        };
        if CHAT_PATHS.contains(&path) {
            let mut chat = self.stack.load().chat.clone();
            return ResponseFuture {
                kind: Kind::Chat {
                    future: chat.call(req),
                },
            };
        }
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match path {
            "/v1/models" if get => {
                let stack = self.stack.load();
                ready(
                    json_response(StatusCode::OK, stack.models_json.clone())
                        .map(|b| ResponseBody::full(crate::body::full_into_bytes(b))),
                )
            }
            "/healthz" if get => ready(plain(StatusCode::OK, br#"{"status":"ok"}"#)),
            "/v1/models" | "/healthz" => ready(
                crate::error::method_not_allowed("GET, HEAD")
                    .map(|b| ResponseBody::full(crate::body::full_into_bytes(b))),
            ),
            _ => ready(plain(StatusCode::NOT_FOUND, br#"{"detail":"Not Found"}"#)),
        }
    }
}

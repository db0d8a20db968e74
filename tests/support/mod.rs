//! Shared helpers for the integration tests: the mock upstream ([`mock_upstream`]), a gateway on
//! 127.0.0.1:0 (the whole [`Gateway`], or `ValidateLayer` + a router) and a real HTTP client.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod mock_upstream;

use std::net::SocketAddr;

use bytes::Bytes;
use chatgate::gateway::Gateway;
use chatgate::route::ModelRouter;
use chatgate::validate::ValidateConfig;
use chatgate::{EchoModel, ValidateLayer};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{ServiceBuilder, ServiceExt};

/// A running gateway; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Starts the full gateway with `echo` (and `m`, the vectors' model name) served by EchoModel.
pub async fn start(config: ValidateConfig) -> Server {
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .service("m", EchoModel::new())
        .build();
    start_with(Gateway::new(router, config)).await
}

pub async fn start_with<S, B>(gateway: Gateway<S>) -> Server
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(chatgate::gateway::serve(listener, gateway, async move {
        let _ = rx.await;
    }));
    Server { addr, _stop: tx }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    // No Nagle: a request's head and body may leave in two writes.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(http)
}

pub fn http2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a request and reads the whole answer.
pub async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Bytes) {
    let res = client.request(req).await.expect("request");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

/// `POST` JSON to the chat path.
pub async fn post_json(
    client: &HttpClient,
    addr: SocketAddr,
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    let req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("request");
    send(client, req).await
}

/// A request body fed from a channel, sent chunked.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    pub fn new() -> (tokio::sync::mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (tx, Self { rx })
    }

    pub fn from_receiver(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self { rx }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

pub fn channel_client() -> Client<HttpConnector, ChannelBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The gateway under test: `ValidateLayer` + `router`, served by hyper on 127.0.0.1:0.
pub async fn gateway(router: ModelRouter) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("gateway addr");
    let svc = ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .service(router);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let svc = svc.clone();
            tokio::spawn(async move {
                let hyper_svc = service_fn(move |req: Request<Incoming>| svc.clone().oneshot(req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), hyper_svc)
                    .await;
            });
        }
    });
    addr
}

pub type TestClient = HttpClient;

/// `POST /v1/chat/completions` with `body` and optional extra headers.
pub async fn post(
    client: &TestClient,
    gateway: SocketAddr,
    body: serde_json::Value,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut req = Request::post(format!("http://{gateway}/v1/chat/completions"))
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
    client.request(req).await.expect("gateway reachable")
}

/// A minimal valid chat request for `model`.
pub fn chat(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

/// The whole body as text.
pub async fn text(res: Response<Incoming>) -> String {
    let b = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(b.to_vec()).expect("utf-8")
}

/// The next data chunk of a body (`None` at the end).
pub async fn next_chunk(body: &mut Incoming) -> Option<Bytes> {
    loop {
        let frame = body.frame().await?.expect("body frame");
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

/// A usage sink that hands each record to the test (through an unbounded channel).
#[derive(Debug)]
pub struct RecordChan(pub tokio::sync::mpsc::UnboundedSender<chatgate::usage::UsageRecord>);

impl chatgate::usage::UsageSink for RecordChan {
    fn write<'a>(
        &'a self,
        batch: &'a [chatgate::usage::UsageRecord],
    ) -> chatgate::usage::SinkFuture<'a> {
        for r in batch {
            let _ = self.0.send(r.clone());
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

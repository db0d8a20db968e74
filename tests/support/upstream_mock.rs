//! A small OpenAI-compatible mock upstream (hyper on 127.0.0.1:0) and a gateway harness
//! (`ValidateLayer` + `ModelRouter` served by hyper on 127.0.0.1:0), for `tests/upstream.rs`.

#![allow(
    dead_code,
    unreachable_pub,
    missing_debug_implementations,
    clippy::unwrap_used
)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use chatgate::ValidateLayer;
use chatgate::route::ModelRouter;
use http::{HeaderMap, Request, Response, StatusCode, Uri, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tower::{ServiceBuilder, ServiceExt};

/// What the mock received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub version: http::Version,
    pub method: http::Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A response body: complete bytes, or fed from a channel (an `Err` item aborts the
/// connection); tells `on_drop` when hyper drops it.
pub struct MockBody {
    full: Option<Bytes>,
    ready: std::collections::VecDeque<Bytes>,
    rx: Option<mpsc::Receiver<Result<Bytes, String>>>,
    on_drop: Option<oneshot::Sender<()>>,
}

impl MockBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self {
            full: Some(b.into()),
            ready: Default::default(),
            rx: None,
            on_drop: None,
        }
    }

    /// A body of several frames, all ready at once.
    pub fn frames(frames: impl IntoIterator<Item = Bytes>) -> Self {
        Self {
            full: None,
            ready: frames.into_iter().collect(),
            rx: None,
            on_drop: None,
        }
    }

    /// A streamed body: the sender feeds it, the receiver fires when it is dropped.
    pub fn channel() -> (
        mpsc::Sender<Result<Bytes, String>>,
        oneshot::Receiver<()>,
        Self,
    ) {
        let (tx, rx) = mpsc::channel(1);
        let (dtx, drx) = oneshot::channel();
        (
            tx,
            drx,
            Self {
                full: None,
                ready: Default::default(),
                rx: Some(rx),
                on_drop: Some(dtx),
            },
        )
    }
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if let Some(tx) = self.on_drop.take() {
            let _ = tx.send(());
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(b) = self.full.take().or_else(|| self.ready.pop_front()) {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

type Handler =
    Arc<dyn Fn(Seen) -> Pin<Box<dyn Future<Output = Response<MockBody>> + Send>> + Send + Sync>;

/// A mock upstream.
#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
}

impl Mock {
    /// Serves `handler` for every request (chat completions and health probes alike).
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Seen) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<MockBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |s| Box::pin(handler(s)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let mock = Self {
            addr,
            seen: Arc::default(),
            hits: Arc::default(),
            conns: Arc::default(),
        };
        let (seen, hits, conns) = (mock.seen.clone(), mock.hits.clone(), mock.conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                conns.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, hits) = (handler.clone(), seen.clone(), hits.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (handler, seen, hits) = (handler.clone(), seen.clone(), hits.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let s = Seen {
                                version: parts.version,
                                method: parts.method,
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                                body,
                            };
                            seen.lock().unwrap().push(s.clone());
                            hits.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(handler(s).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        mock
    }

    /// Answers every chat request with a fixed JSON completion naming the model it received.
    pub async fn ok() -> Self {
        Self::start(|s: Seen| async move { completion(&s) }).await
    }

    /// Answers every request with `status` and an OpenAI error body.
    pub async fn failing(status: u16) -> Self {
        Self::start(move |_| async move {
            json(status, serde_json::json!({"error":{"message":"upstream broke","type":"server_error","param":null,"code":"mock"}}))
        })
        .await
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn url(&self) -> Uri {
        format!("http://{}/v1", self.addr).parse().unwrap()
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn json(status: u16, v: serde_json::Value) -> Response<MockBody> {
    let mut res = Response::new(MockBody::full(serde_json::to_vec(&v).unwrap()));
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    res
}

/// A non-streamed completion echoing the model the upstream received.
pub fn completion(s: &Seen) -> Response<MockBody> {
    let model = s.json()["model"].clone();
    json(
        200,
        serde_json::json!({
            "id": "cmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        }),
    )
}

/// An SSE response fed through a channel.
pub fn sse() -> (
    mpsc::Sender<Result<Bytes, String>>,
    oneshot::Receiver<()>,
    Response<MockBody>,
) {
    let (tx, dropped, body) = MockBody::channel();
    let mut res = Response::new(body);
    res.headers_mut()
        .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    (tx, dropped, res)
}

/// One SSE chunk event carrying `content`.
pub fn chunk(content: &str) -> Bytes {
    let v = serde_json::json!({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    });
    Bytes::from(format!("data: {v}\n\n"))
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

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    // No Nagle: a request's head and body may leave in two writes.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(http)
}

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

/// An address on which nothing listens (connections are refused).
pub fn refused_url() -> Uri {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/v1").parse().unwrap()
}

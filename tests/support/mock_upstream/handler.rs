//! The handler mock: a closure answers each request, for tests that steer or inspect every
//! request (health probes, failovers, streams held open on a channel).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::{MockBody, RecordedRequest};

type Handler = Arc<
    dyn Fn(RecordedRequest) -> Pin<Box<dyn Future<Output = Response<MockBody>> + Send>>
        + Send
        + Sync,
>;

/// A mock upstream.
#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<RecordedRequest>>>,
    hits: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
}

impl Mock {
    /// Serves `handler` for every request (chat completions and health probes alike).
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(RecordedRequest) -> Fut + Send + Sync + 'static,
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
                            let s = RecordedRequest {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
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
        Self::start(|s: RecordedRequest| async move { completion(&s) }).await
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
    pub fn seen(&self) -> Vec<RecordedRequest> {
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
pub fn completion(s: &RecordedRequest) -> Response<MockBody> {
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

/// An address on which nothing listens (connections are refused).
pub fn refused_url() -> Uri {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/v1").parse().unwrap()
}

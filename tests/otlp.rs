//! OTLP export end to end (feature `otlp`): requests over real HTTP through a gateway with the
//! usage layer, their `chat` spans exported by `chatgate::otlp` to a loopback OTLP/HTTP
//! collector, whose protobuf bodies are decoded and checked.
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used)]

mod support;

use support::RecordChan;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chatgate::gateway::Gateway;
use chatgate::otlp::{self, OtlpConfig};
use chatgate::route::ModelRouter;
use chatgate::usage::{UsageHandle, UsageLayer, UsageMeterLayer, UsageRecord};
use chatgate::{EchoModel, ValidateLayer};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// One POST the collector received.
struct Post {
    path: String,
    content_type: String,
    body: Bytes,
}

/// An OTLP/HTTP collector on 127.0.0.1:0, on a thread and runtime of its own (as a real
/// collector is another process: flushing blocks the test's thread, and must not block the
/// collector). Every POST is handed to the test and answered 200 with an empty
/// `ExportTraceServiceResponse`.
struct Collector {
    addr: SocketAddr,
    posts: std::sync::mpsc::Receiver<Post>,
}

impl Collector {
    fn start() -> Self {
        let (tx, posts) = std::sync::mpsc::channel();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: Request<Incoming>| {
                            let tx = tx.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let content_type = req
                                    .headers()
                                    .get("content-type")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_owned();
                                // A body cut short is recorded empty (and fails to decode).
                                let body = match req.into_body().collect().await {
                                    Ok(b) => b.to_bytes(),
                                    Err(_) => Bytes::new(),
                                };
                                // The test may be gone; the collector keeps answering.
                                let _ = tx.send(Post {
                                    path,
                                    content_type,
                                    body,
                                });
                                let mut res = Response::new(Full::new(Bytes::new()));
                                res.headers_mut().insert(
                                    "content-type",
                                    HeaderValue::from_static("application/x-protobuf"),
                                );
                                Ok::<_, std::convert::Infallible>(res)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Self { addr, posts }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans of every POST received so far, with their resource's attributes. Call after
    /// a flush returned: the export has then been answered, so the POSTs are all here.
    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let mut out = Vec::new();
        while let Ok(post) = self.posts.recv_timeout(Duration::from_millis(0)) {
            assert_eq!(post.path, "/v1/traces");
            assert_eq!(post.content_type, "application/x-protobuf");
            let request = ExportTraceServiceRequest::decode(post.body).expect("OTLP protobuf");
            for resource_spans in request.resource_spans {
                let resource = resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        out.push((resource.clone(), span));
                    }
                }
            }
        }
        out
    }
}

// Records reach the test through `support::RecordChan`: once a request's record is there, its
// span has ended (the record is made, and the span filled and closed, when the request's last
// handle on it goes).

/// What the log layer printed.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// A gateway with the usage layer and the echo model on 127.0.0.1:0.
struct Env {
    server: support::Server,
    client: support::HttpClient,
    records: mpsc::UnboundedReceiver<UsageRecord>,
}

impl Env {
    async fn new() -> Self {
        let router = ModelRouter::builder()
            .service("echo", EchoModel::new())
            .build();
        let (tx, records) = mpsc::unbounded_channel();
        let handle = UsageHandle::builder()
            .sink(Arc::new(RecordChan(tx)))
            // Records as soon as the writer runs: the tests wait for each one.
            .linger(Duration::ZERO)
            .build();
        let models = router.models().to_vec();
        let chat = ServiceBuilder::new()
            .layer(UsageLayer::new(handle))
            .layer(ValidateLayer::new())
            .layer(UsageMeterLayer::new())
            .service(router);
        Self {
            server: support::start_with(Gateway::with_stack(chat, models)).await,
            client: support::client(),
            records,
        }
    }

    /// POSTs a chat request with `headers`; the status and the body as text.
    async fn chat(
        &self,
        body: serde_json::Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let mut req = Request::post(format!("http://{}/v1/chat/completions", self.server.addr))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap();
        let (status, _, body) = support::send(&self.client, req).await;
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// The next usage record (its span has ended).
    async fn record(&mut self) -> UsageRecord {
        tokio::time::timeout(Duration::from_secs(10), self.records.recv())
            .await
            .expect("a record within 10 s")
            .expect("the sink is open")
    }
}

fn hello(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "Hello there, collector"}]})
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

#[track_caller]
fn str_attr<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(&span.attributes, key) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("{key}: expected a string attribute, got {other:?}"),
    }
}

#[track_caller]
fn int_attr(span: &Span, key: &str) -> i64 {
    match attr(&span.attributes, key) {
        Some(any_value::Value::IntValue(n)) => *n,
        other => panic!("{key}: expected an int attribute, got {other:?}"),
    }
}

/// The exported span of the request with this `x-request-id`.
#[track_caller]
fn span_of<'a>(spans: &'a [(Vec<KeyValue>, Span)], request_id: &str) -> &'a (Vec<KeyValue>, Span) {
    let found: Vec<_> = spans
        .iter()
        .filter(|(_, s)| {
            matches!(attr(&s.attributes, "request_id"), Some(any_value::Value::StringValue(r)) if r == request_id)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one span for request {request_id}: {spans:?}"
    );
    found[0]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn usage_of(body: &str) -> (i64, i64) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    (
        v["usage"]["prompt_tokens"].as_i64().unwrap(),
        v["usage"]["completion_tokens"].as_i64().unwrap(),
    )
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// The span of an answered request and of a rejected one, with the GenAI attributes, the
/// resource, and the caller's trace as parent; exported although the log layer's own filter
/// (as `RUST_LOG=warn`) lets no request line through.
#[tokio::test]
async fn chat_spans_are_exported_with_genai_attributes() {
    let collector = Collector::start();
    let config = OtlpConfig {
        service_name: "chatgate-otlp-test".to_owned(),
        ..OtlpConfig::new(collector.endpoint())
    };
    let logs = Logs::default();
    let log_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(logs.clone())
        .with_filter(LevelFilter::WARN);
    let (spans_layer, guard) = otlp::layer(&config).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(log_layer)
        .with(spans_layer);
    // This test's runtime is current-thread: the gateway's tasks run on this thread and see
    // this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);

    let mut env = Env::new().await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let (status, body) = env
        .chat(
            hello("echo"),
            &[("x-request-id", "otlp-ok-1"), ("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (input, output) = usage_of(&body);
    assert!(input > 0 && output > 0, "{body}");
    let ok = env.record().await;
    let (status, body) = env
        .chat(hello("nope"), &[("x-request-id", "otlp-404-1")])
        .await;
    assert_eq!(status, 404, "{body}");
    let rejected = env.record().await;
    assert_eq!(rejected.status, 404);

    guard.force_flush().unwrap();
    let spans = collector.spans();

    let (resource, span) = span_of(&spans, "otlp-ok-1");
    assert_eq!(span.name, "chat");
    assert!(
        matches!(attr(resource, "service.name"), Some(any_value::Value::StringValue(s)) if s == "chatgate-otlp-test"),
        "{resource:?}"
    );
    assert_eq!(str_attr(span, "gen_ai.operation.name"), "chat");
    assert_eq!(str_attr(span, "gen_ai.request.model"), "echo");
    assert_eq!(str_attr(span, "gen_ai.response.model"), "echo");
    assert_eq!(int_attr(span, "gen_ai.usage.input_tokens"), input);
    assert_eq!(int_attr(span, "gen_ai.usage.output_tokens"), output);
    assert_eq!(str_attr(span, "gen_ai.response.finish_reasons"), "stop");
    assert_eq!(int_attr(span, "http.response.status_code"), 200);
    assert!(attr(&span.attributes, "error.type").is_none(), "{span:?}");
    assert_eq!(ok.prompt_tokens as i64, input, "the record agrees");
    // The caller's trace: same trace id, the caller's span as parent.
    assert_eq!(hex(&span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.parent_span_id), PARENT_ID);
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);

    let (_, span) = span_of(&spans, "otlp-404-1");
    assert_eq!(span.name, "chat");
    assert_eq!(int_attr(span, "http.response.status_code"), 404);
    assert_eq!(str_attr(span, "error.type"), "model_not_found");
    assert_eq!(rejected.error.as_deref(), Some("model_not_found"));
    assert_eq!(int_attr(span, "gen_ai.usage.input_tokens"), 0);
    // No traceparent: a trace of its own, with no parent.
    assert!(span.parent_span_id.is_empty(), "{span:?}");
    assert_ne!(hex(&span.trace_id), TRACE_ID);

    // The log layer (filtered at WARN) printed no request line.
    let printed = logs.text();
    assert!(!printed.contains("otlp-ok-1"), "{printed}");
    guard.shutdown().unwrap();
}

/// A streamed request's tokens come from its usage chunk; a malformed `traceparent` is
/// ignored; `shutdown` exports what is still queued.
#[tokio::test]
async fn streams_and_shutdown() {
    let collector = Collector::start();
    let (spans_layer, guard) = otlp::layer(&OtlpConfig::new(collector.endpoint())).unwrap();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans_layer));

    let mut env = Env::new().await;
    let mut body = hello("echo");
    body["stream"] = true.into();
    body["stream_options"] = serde_json::json!({"include_usage": true});
    let (status, text) = env
        .chat(
            body,
            &[
                ("x-request-id", "otlp-stream-1"),
                ("traceparent", "00-not-a-trace-01"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let usage = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .find(|v| v["usage"].is_object())
        .expect("a usage chunk");
    let record = env.record().await;
    assert!(record.streamed);

    guard.shutdown().unwrap();
    let spans = collector.spans();
    let (resource, span) = span_of(&spans, "otlp-stream-1");
    assert!(
        matches!(attr(resource, "service.name"), Some(any_value::Value::StringValue(s)) if s == otlp::DEFAULT_SERVICE_NAME),
        "{resource:?}"
    );
    assert_eq!(
        int_attr(span, "gen_ai.usage.input_tokens"),
        usage["usage"]["prompt_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        int_attr(span, "gen_ai.usage.output_tokens"),
        usage["usage"]["completion_tokens"].as_i64().unwrap()
    );
    assert_eq!(int_attr(span, "http.response.status_code"), 200);
    assert!(span.parent_span_id.is_empty(), "{span:?}");
    assert_eq!(span.trace_id.len(), 16);
}

/// Dropping the guard flushes too.
#[tokio::test]
async fn dropping_the_guard_flushes() {
    let collector = Collector::start();
    let (spans_layer, guard) = otlp::layer(&OtlpConfig::new(collector.endpoint())).unwrap();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans_layer));
    let mut env = Env::new().await;
    let (status, _) = env
        .chat(hello("echo"), &[("x-request-id", "otlp-drop-1")])
        .await;
    assert_eq!(status, 200);
    env.record().await;
    drop(guard);
    let spans = collector.spans();
    assert_eq!(span_of(&spans, "otlp-drop-1").1.name, "chat");
}

#[test]
fn bad_endpoints_are_refused() {
    type S = tracing_subscriber::Registry;
    for endpoint in [
        "ftp://127.0.0.1:4318",
        "127.0.0.1:4318",
        "http://",
        "not a url",
    ] {
        let Err(err) = otlp::layer::<S>(&OtlpConfig::new(endpoint)) else {
            panic!("{endpoint} accepted");
        };
        assert!(
            err.to_string().contains("invalid OTLP endpoint"),
            "{endpoint}: {err}"
        );
    }
    assert_eq!(
        OtlpConfig::new("http://c:4318/").traces_url(),
        "http://c:4318/v1/traces"
    );
}

//! The scripted mock: configured once by a [`Builder`], cheap per request (the benchmark's
//! upstream).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::sse::{Phase, Sse};
use super::{MockBody, RecordedRequest};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, Sleep};

/// The `created` timestamp of every response, fixed so that responses are byte-for-byte stable.
const CREATED: u64 = 1_700_000_000;
/// The `id` of every response.
const COMPLETION_ID: &str = "chatcmpl-mock";
/// The content of each streamed chunk.
const CHUNK_CONTENT: &str = "lorem ";
/// The event that ends every stream.
pub(super) const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT_EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// What the mock does with a request instead of answering it normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer with this status and an OpenAI error envelope as the body.
    Status(StatusCode),
    /// Close the connection without sending a response (HTTP/2: reset the stream).
    Close,
}

/// Which HTTP versions the mock accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocols {
    /// HTTP/1.1 and HTTP/2 (prior knowledge), told apart by the connection preface.
    Auto,
    /// HTTP/1.x only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// Entry point: see [`MockUpstream::builder`].
#[derive(Debug)]
pub(crate) struct MockUpstream;

impl MockUpstream {
    /// A builder with the defaults: no delays, 50 chunks per stream, model `mock`, no fault,
    /// requests recorded, HTTP/1.1 and HTTP/2.
    pub(crate) fn builder() -> Builder {
        Builder::default()
    }
}

/// Configures and starts a mock upstream. Setters consume and return the builder.
#[derive(Clone, Debug)]
pub(crate) struct Builder {
    header_delay: Duration,
    chunk_delay: Duration,
    default_chunks: usize,
    model: String,
    content: String,
    prompt_tokens: u64,
    fault: Option<Fault>,
    fault_limit: Option<u64>,
    record: bool,
    protocols: Protocols,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            header_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            default_chunks: 50,
            model: "mock".to_owned(),
            content: "Hello! This is a fixed answer from the chatgate mock upstream, padded to a \
                      realistic size so that response bodies are not trivially small."
                .to_owned(),
            prompt_tokens: 9,
            fault: None,
            fault_limit: None,
            record: true,
            protocols: Protocols::Auto,
        }
    }
}

impl Builder {
    /// Waits this long after reading a request body before sending the response head.
    pub(crate) fn header_delay(mut self, delay: Duration) -> Self {
        self.header_delay = delay;
        self
    }

    /// Waits this long between two streamed `chat.completion.chunk` events.
    pub(crate) fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// The number of chunks streamed when the request has no `"mock_chunks"` member.
    pub(crate) fn default_chunks(mut self, chunks: usize) -> Self {
        self.default_chunks = chunks;
        self
    }

    /// The `model` named in responses and in the model list.
    pub(crate) fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// The assistant message of non-streamed completions.
    pub(crate) fn content(mut self, content: impl Into<String>) -> Self {
        self.content = content.into();
        self
    }

    /// The `usage.prompt_tokens` reported for every request.
    pub(crate) fn prompt_tokens(mut self, tokens: u64) -> Self {
        self.prompt_tokens = tokens;
        self
    }

    /// Answers every request with `status` and an OpenAI error envelope.
    pub(crate) fn status(mut self, status: StatusCode) -> Self {
        self.fault = Some(Fault::Status(status));
        self
    }

    /// Closes the connection of every request without answering.
    pub(crate) fn close_without_response(mut self) -> Self {
        self.fault = Some(Fault::Close);
        self
    }

    /// Injects `fault` (see [`Fault`]) into requests.
    pub(crate) fn fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// Limits the fault set by [`status`](Self::status) or
    /// [`close_without_response`](Self::close_without_response) to the first `n` requests; later
    /// requests are answered normally (to test retries and failover).
    pub(crate) fn fault_first(mut self, n: u64) -> Self {
        self.fault_limit = Some(n);
        self
    }

    /// Whether to keep a copy of the last request (default: yes). The benchmark turns it off.
    pub(crate) fn record_requests(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Accepts HTTP/1.x only.
    pub(crate) fn http1_only(mut self) -> Self {
        self.protocols = Protocols::Http1;
        self
    }

    /// Accepts HTTP/2 (prior knowledge) only.
    pub(crate) fn http2_only(mut self) -> Self {
        self.protocols = Protocols::Http2;
        self
    }

    /// Binds `addr` (use port 0 for a free port) and serves in a background task.
    ///
    /// Returns the bound address and the handle that owns the server: dropping the handle stops it.
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub(crate) async fn start(
        self,
        addr: impl ToSocketAddrs,
    ) -> io::Result<(SocketAddr, MockHandle)> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok((addr, self.serve(listener)))
    }

    /// Serves on an already bound listener, in a background task.
    pub(crate) fn serve(self, listener: TcpListener) -> MockHandle {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let shared = Arc::new(Shared::new(self));
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        MockHandle { addr, shared, task }
    }
}

/// Owns a running mock upstream; dropping it stops the server and its connections.
#[derive(Debug)]
pub(crate) struct MockHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockHandle {
    /// The address the mock listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL an OpenAI client would use: `http://ADDR/v1`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// How many requests arrived so far (whatever their path, fault or outcome).
    pub(crate) fn request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// A copy of the last request whose body was read, if recording is on.
    pub(crate) fn last_request(&self) -> Option<RecordedRequest> {
        self.shared
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops accepting, closes every connection and waits until the server task has ended.
    pub(crate) async fn shutdown(mut self) {
        self.task.abort();
        // The only possible outcome is a cancellation, which is the point.
        let _ = (&mut self.task).await;
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// State shared by the handle and all connections: configuration, prebuilt bytes, counters.
#[derive(Debug)]
pub(super) struct Shared {
    header_delay: Duration,
    pub(super) chunk_delay: Duration,
    default_chunks: usize,
    prompt_tokens: u64,
    fault: Option<Fault>,
    fault_limit: Option<u64>,
    record: bool,
    protocols: Protocols,
    /// The model name as a JSON string literal.
    model: String,
    /// The non-streamed `chat.completion` body.
    completion: Bytes,
    /// The body of `GET /models`.
    models: Bytes,
    /// The error envelope sent with an injected status.
    fault_body: Bytes,
    /// Chunk events, indexed by [`chunk_index`].
    pub(super) chunks: [Bytes; 8],
    requests: AtomicU64,
    last: Mutex<Option<RecordedRequest>>,
}

/// The index in [`Shared::chunks`] of a chunk event with these properties.
pub(super) fn chunk_index(with_usage_member: bool, first: bool, last: bool) -> usize {
    usize::from(with_usage_member) * 4 + usize::from(first) * 2 + usize::from(last)
}

impl Shared {
    fn new(b: Builder) -> Self {
        // The JSON is written by hand so that members come in OpenAI's order (`id` first).
        let model = json_string(&b.model);
        let completion_tokens = b.content.split_whitespace().count() as u64;
        let completion = format!(
            concat!(
                r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":{model},"#,
                r#""choices":[{{"index":0,"message":{{"role":"assistant","content":{content},"#,
                r#""refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{usage}}}"#,
            ),
            id = COMPLETION_ID,
            created = CREATED,
            model = model,
            content = json_string(&b.content),
            usage = usage_json(b.prompt_tokens, completion_tokens),
        );
        let models = format!(
            r#"{{"object":"list","data":[{{"id":{model},"object":"model","created":{CREATED},"owned_by":"chatgate-mock"}}]}}"#
        );
        let fault_body = match &b.fault {
            Some(Fault::Status(status)) => error_body(
                &format!("mock upstream: injected status {}", status.as_u16()),
                if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request_error"
                },
                None,
            ),
            _ => Bytes::new(),
        };
        let content = json_string(CHUNK_CONTENT);
        let chunks = std::array::from_fn(|i| {
            let (with_usage_member, first, last) = (i & 4 != 0, i & 2 != 0, i & 1 != 0);
            let role = if first { r#""role":"assistant","# } else { "" };
            let finish_reason = if last { r#""stop""# } else { "null" };
            let usage = if with_usage_member {
                r#","usage":null"#
            } else {
                ""
            };
            sse_event(&format!(
                concat!(
                    r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"#,
                    r#""model":{model},"choices":[{{"index":0,"delta":{{{role}"content":{content}}},"#,
                    r#""logprobs":null,"finish_reason":{finish_reason}}}]{usage}}}"#,
                ),
                id = COMPLETION_ID,
                created = CREATED,
                model = model,
                role = role,
                content = content,
                finish_reason = finish_reason,
                usage = usage,
            ))
        });
        Self {
            header_delay: b.header_delay,
            chunk_delay: b.chunk_delay,
            default_chunks: b.default_chunks,
            prompt_tokens: b.prompt_tokens,
            fault: b.fault,
            fault_limit: b.fault_limit,
            record: b.record,
            protocols: b.protocols,
            completion: Bytes::from(completion),
            models: Bytes::from(models),
            model,
            fault_body,
            chunks,
            requests: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    /// The final usage-only chunk event of a stream of `chunks` chunks.
    pub(super) fn usage_event(&self, chunks: usize) -> Bytes {
        sse_event(&format!(
            concat!(
                r#"{{"id":"{id}","object":"chat.completion.chunk","created":{created},"#,
                r#""model":{model},"choices":[],"usage":{usage}}}"#,
            ),
            id = COMPLETION_ID,
            created = CREATED,
            model = self.model,
            usage = usage_json(self.prompt_tokens, chunks as u64),
        ))
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A `usage` object.
fn usage_json(prompt_tokens: u64, completion_tokens: u64) -> String {
    let total_tokens = prompt_tokens + completion_tokens;
    format!(
        r#"{{"prompt_tokens":{prompt_tokens},"completion_tokens":{completion_tokens},"total_tokens":{total_tokens}}}"#
    )
}

/// `data: JSON\n\n`.
fn sse_event(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

/// An OpenAI error envelope.
fn error_body(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    Bytes::from(
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string(),
    )
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match shared.protocols {
        Protocols::Auto => builder,
        Protocols::Http1 => builder.http1_only(),
        Protocols::Http2 => builder.http2_only(),
    };
    let builder = Arc::new(builder);
    // Connections live in this set, so aborting the accept task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                let builder = Arc::clone(&builder);
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(Arc::clone(&shared), req));
                    // A failed connection (client gone, injected close) only ends that connection.
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Why the mock answered a request with no response.
#[derive(Debug)]
pub(crate) enum MockError {
    /// The fault [`Fault::Close`] was injected.
    InjectedClose,
    /// Reading the request body failed.
    Body(hyper::Error),
}

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InjectedClose => f.write_str("mock upstream: injected connection close"),
            Self::Body(e) => write!(f, "mock upstream: reading the request body: {e}"),
        }
    }
}

impl std::error::Error for MockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InjectedClose => None,
            Self::Body(e) => Some(e),
        }
    }
}

/// The members of a chat-completions request the mock looks at; the rest is skipped.
#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    mock_chunks: Option<usize>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// The routes of the mock.
enum Route {
    ChatCompletions,
    Models,
    MethodNotAllowed,
    NotFound,
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, MockError> {
    let index = shared.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let route = if path.ends_with("/chat/completions") {
        if parts.method == Method::POST {
            Route::ChatCompletions
        } else {
            Route::MethodNotAllowed
        }
    } else if path.ends_with("/models") {
        if parts.method == Method::GET {
            Route::Models
        } else {
            Route::MethodNotAllowed
        }
    } else {
        Route::NotFound
    };
    let body = body.collect().await.map_err(MockError::Body)?.to_bytes();
    if shared.record {
        let recorded = RecordedRequest {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body: body.clone(),
        };
        *shared.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(recorded);
    }
    if !shared.header_delay.is_zero() {
        tokio::time::sleep(shared.header_delay).await;
    }
    if let Some(fault) = &shared.fault
        && shared.fault_limit.is_none_or(|limit| index < limit)
    {
        return match fault {
            Fault::Status(status) => Ok(json_response(*status, shared.fault_body.clone())),
            Fault::Close => Err(MockError::InjectedClose),
        };
    }
    Ok(match route {
        Route::ChatCompletions => chat_completions(&shared, &body),
        Route::Models => json_response(StatusCode::OK, shared.models.clone()),
        Route::MethodNotAllowed => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            error_body("Method not allowed", "invalid_request_error", None),
        ),
        Route::NotFound => json_response(
            StatusCode::NOT_FOUND,
            error_body("Unknown path", "invalid_request_error", Some("unknown_url")),
        ),
    })
}

fn chat_completions(shared: &Arc<Shared>, body: &[u8]) -> Response<MockBody> {
    let request: ChatRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                error_body(
                    &format!("mock upstream: invalid JSON body: {e}"),
                    "invalid_request_error",
                    None,
                ),
            );
        }
    };
    if request.stream != Some(true) {
        return json_response(StatusCode::OK, shared.completion.clone());
    }
    let include_usage = request
        .stream_options
        .and_then(|options| options.include_usage)
        .unwrap_or(false);
    let chunks = request.mock_chunks.unwrap_or(shared.default_chunks);
    let sse = Sse {
        shared: Arc::clone(shared),
        total: chunks,
        next: 0,
        include_usage,
        phase: Phase::Chunks,
        sleep: None,
        waiting: false,
    };
    let mut response = Response::new(MockBody::sse(sse));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, TEXT_EVENT_STREAM);
    response.headers_mut().insert(CACHE_CONTROL, NO_CACHE);
    response
}

fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

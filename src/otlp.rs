//! OpenTelemetry export of the per-request spans by OTLP/HTTP (feature `otlp`).
//!
//! The usage layer ([`UsageLayer`](crate::usage::UsageLayer)) opens one `tracing` span per
//! request, named `chat` (target `chatgate::usage`), and fills it with OpenTelemetry's GenAI
//! attributes when the request's record is made:
//!
//! | attribute | type | value |
//! |---|---|---|
//! | `gen_ai.operation.name` | string | `"chat"` |
//! | `gen_ai.request.model` | string | the model the client asked for |
//! | `gen_ai.response.model` | string | the model that answered (the upstream's name, else the route's) |
//! | `gen_ai.usage.input_tokens` | int | prompt tokens |
//! | `gen_ai.usage.output_tokens` | int | completion tokens |
//! | `gen_ai.response.finish_reasons` | string | the choices' finish reasons, comma-separated |
//! | `error.type` | string | why the request failed (`model_not_found`, `client_closed`, the status…); absent on success |
//! | `http.response.status_code` | int | the status the client got (499: it left first) |
//! | `request_id`, `key_id`, `upstream` | string | the `x-request-id`, the API key's id, the replica that served |
//!
//! [`layer`] turns those spans into OpenTelemetry spans and exports them in batches to an
//! OTLP/HTTP collector (protobuf, `POST <endpoint>/v1/traces`), with the `service.name`
//! resource set. The layer is filtered to chatgate's own spans at `INFO` (per-layer filter,
//! [`chatgate_spans`]), so it exports them whatever level the other layers of the subscriber
//! (say, a log line filtered by `RUST_LOG=warn`) let through.
//!
//! # Off the request path
//!
//! A finished span is queued in memory (2048 spans at most; beyond, spans are dropped); a
//! background thread of the OpenTelemetry SDK sends the queue every 5 s or every 512 spans,
//! over its own HTTP client (hyper with rustls and the bundled webpki roots, so `https`
//! collectors work with no system OpenSSL), independent of the application's runtime. The SDK's
//! `OTEL_BSP_*` variables tune the batches; `OTEL_EXPORTER_OTLP_HEADERS` (or
//! `OTEL_EXPORTER_OTLP_TRACES_HEADERS`) adds headers, such as a collector's credentials.
//! Export failures are logged with `tracing` (targets `opentelemetry_sdk`, `opentelemetry-otlp`)
//! and never reach clients.
//!
//! # Trace context
//!
//! When a request carries a W3C `traceparent` header (and `tracestate`), its `chat` span is
//! exported as a child of that remote span: the gateway joins the caller's trace.
//!
//! # Shutting down
//!
//! Keep the [`OtlpGuard`] until the server has stopped, then call [`OtlpGuard::shutdown`]: it
//! exports what is queued and stops the exporter. Dropping the guard does the same. Both block
//! the calling thread until the last batch is sent (at most about 5 s), so from async code call
//! it in `spawn_blocking` or after the runtime is done.
//!
//! # Example
//!
//! ```
//! use chatgate::otlp::{self, OtlpConfig};
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = OtlpConfig {
//!     service_name: "my-gateway".to_owned(),
//!     ..OtlpConfig::new("http://127.0.0.1:4318") // spans go to http://127.0.0.1:4318/v1/traces
//! };
//! let (spans, guard) = otlp::layer(&config)?;
//! tracing_subscriber::registry()
//!     .with(spans) // plus your log layer, e.g. tracing_subscriber::fmt::layer()
//!     .try_init()?;
//!
//! // ... serve the gateway (with a `UsageLayer`) until it stops ...
//!
//! guard.shutdown()?; // exports the spans still queued
//! # Ok(())
//! # }
//! ```
//!
//! To export your own spans too, make a second layer from the same provider:
//! `tracing_opentelemetry::layer().with_tracer(guard.provider().tracer("my-app"))` (with
//! `opentelemetry::trace::TracerProvider` in scope).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::{Level, Metadata, Subscriber};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::registry::LookupSpan;

/// The `service.name` when none is given: `"chatgate"`.
pub const DEFAULT_SERVICE_NAME: &str = "chatgate";

/// How long one export request may take (connecting included): 10 s, OTLP's default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as what the spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's base URL, such as `http://127.0.0.1:4318` (an OpenTelemetry Collector's
    /// OTLP/HTTP port); spans are posted to `<endpoint>/v1/traces`. `http` or `https`.
    pub endpoint: String,
    /// The `service.name` resource attribute (default [`DEFAULT_SERVICE_NAME`]).
    pub service_name: String,
    /// The longest one export request may take (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl OtlpConfig {
    /// Exports to the collector at `endpoint` (a base URL), with the default service name and
    /// timeout.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The URL the spans are posted to: the endpoint followed by `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
    }
}

impl Default for OtlpConfig {
    /// A collector on this machine, `http://localhost:4318` (the OTLP/HTTP default).
    fn default() -> Self {
        Self::new("http://localhost:4318")
    }
}

/// The layer [`layer`] returns: tracing-opentelemetry's layer, filtered to [`chatgate_spans`].
pub type OtlpLayer<S> =
    Filtered<OpenTelemetryLayer<S, SdkTracer>, FilterFn<fn(&Metadata<'_>) -> bool>, S>;

/// Whether `meta` is one of the spans [`layer`] exports: chatgate's spans (targets `chatgate`
/// and `chatgate::…`) at `INFO` or more severe. Events (log lines) are not exported.
pub fn chatgate_spans(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    meta.is_span()
        && *meta.level() <= Level::INFO
        && (target == "chatgate" || target.starts_with("chatgate::"))
}

/// A `tracing` layer exporting chatgate's request spans by OTLP/HTTP, and the guard that
/// flushes and stops the export.
///
/// The spans are batched and sent by a background thread (see the [module docs](self)). Add the
/// layer to a [`tracing_subscriber::registry()`]; keep the guard until the server has stopped.
///
/// # Errors
/// The endpoint is not a valid `http`/`https` URL, or the exporter cannot be built.
pub fn layer<S>(config: &OtlpConfig) -> Result<(OtlpLayer<S>, OtlpGuard), OtlpError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let url = config.traces_url();
    let uri: http::Uri = url
        .parse()
        .map_err(|e| OtlpError(format!("invalid OTLP endpoint {:?}: {e}", config.endpoint)))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(OtlpError(format!(
            "invalid OTLP endpoint {:?}: expected an http or https URL",
            config.endpoint
        )));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(config.timeout)
        .with_http_client(ExportClient::new(config.timeout))
        .build()
        .map_err(|e| OtlpError(format!("OTLP exporter: {e}")))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("chatgate");
    let filter: fn(&Metadata<'_>) -> bool = chatgate_spans;
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // The attributes are the span's own fields: no thread, source location, target or
        // busy/idle times.
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(FilterFn::new(filter).with_max_level_hint(Level::INFO));
    Ok((
        layer,
        OtlpGuard {
            provider,
            stopped: false,
        },
    ))
}

/// Flushes and stops the export of [`layer`]'s spans: call [`shutdown`](Self::shutdown) when
/// the server has stopped (dropping the guard does too).
pub struct OtlpGuard {
    provider: SdkTracerProvider,
    stopped: bool,
}

impl fmt::Debug for OtlpGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpGuard").finish_non_exhaustive()
    }
}

impl OtlpGuard {
    /// The tracer provider behind the layer (to make tracers for your own spans).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports every span finished so far, and waits until the collector has answered (or the
    /// SDK's 5 s flush timeout has passed). Blocks the calling thread.
    ///
    /// # Errors
    /// The export failed or timed out.
    pub fn force_flush(&self) -> Result<(), OtlpError> {
        self.provider
            .force_flush()
            .map_err(|e| OtlpError(format!("OTLP flush: {e}")))
    }

    /// Exports the spans still queued and stops the exporter; spans finished later are dropped.
    /// Blocks the calling thread (about 5 s at most).
    ///
    /// # Errors
    /// The last export failed or timed out.
    pub fn shutdown(mut self) -> Result<(), OtlpError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), OtlpError> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(());
        }
        self.provider
            .shutdown()
            .map_err(|e| OtlpError(format!("OTLP shutdown: {e}")))
    }
}

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        // The subscriber keeps the provider alive (its tracer holds it): stop it here.
        let _ = self.stop();
    }
}

/// Why the OTLP export could not be set up, flushed or stopped.
#[derive(Debug)]
pub struct OtlpError(String);

impl fmt::Display for OtlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OtlpError {}

/// Makes the request's span a child of the caller's span when the request carries a valid W3C
/// `traceparent` header. Called by the usage layer right after creating the span (before it is
/// first entered, when the OpenTelemetry span starts).
pub(crate) fn set_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer sees the span: nothing to do then.
        let _ = span.set_parent(cx);
    }
}

/// The exporter's HTTP client: hyper (with rustls) driven by a runtime of its own.
///
/// The SDK's batch processor exports on a plain thread of its own and blocks on each export;
/// hyper needs a Tokio runtime, so this client makes a current-thread runtime on that thread
/// (at the first export) and blocks on it. The export never runs on, nor waits for, the
/// application's runtime: flushing from inside it cannot deadlock.
struct ExportClient {
    inner: HyperClient<HttpsConnector<HttpConnector>>,
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
}

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportClient").finish_non_exhaustive()
    }
}

impl ExportClient {
    fn new(timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            inner: HyperClient::new(https, timeout, None),
            runtime: OnceLock::new(),
        }
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            // Only the batch processor's own thread exports (see `layer`).
            return Err("the OTLP exporter must not run on a Tokio runtime's thread".into());
        }
        let runtime = self
            .runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the OTLP exporter's runtime: {e}"))
            })
            .as_ref()
            .map_err(|e| HttpError::from(e.clone()))?;
        runtime.block_on(self.inner.send_bytes(request))
    }
}

// `HttpClient` is an `async_trait`; this is the signature the macro generates.
impl HttpClient for ExportClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(self.send(request))
    }
}

impl Drop for ExportClient {
    fn drop(&mut self) {
        // Never blocks, wherever the exporter is dropped (a runtime must not be dropped by
        // blocking inside another one).
        if let Some(Ok(rt)) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

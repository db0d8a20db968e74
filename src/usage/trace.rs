//! Tracing: one span per request with OpenTelemetry's GenAI attributes, and one event (a log
//! line) per request when it ends.

use tracing::field::Empty;

use super::UsageRecord;

/// The span of one request (fields are filled when its record is made). With the `otlp`
/// feature, a W3C `traceparent` in `headers` becomes its OpenTelemetry parent.
pub(crate) fn span(request_id: Option<&str>, headers: &http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        target: "chatgate::usage",
        "chat",
        otel.name = "chat",
        gen_ai.operation.name = "chat",
        request_id = request_id.unwrap_or(""),
        key_id = Empty,
        gen_ai.request.model = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        error.type = Empty,
        upstream = Empty,
        http.response.status_code = Empty,
    );
    #[cfg(feature = "otlp")]
    crate::otlp::set_remote_parent(&span, headers);
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
    span
}

/// A count as the span's integer value: `tracing` hands unsigned integers to the OpenTelemetry
/// layer as text, signed ones as OTLP `int` attributes.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The name of the request's event (its log line): a subscriber that writes the lines with a
/// [`LogSink`](super::LogSink) instead leaves the event out by this name.
pub const REQUEST_EVENT: &str = "request";

/// Fills the span's fields and logs the request's line (an event named [`REQUEST_EVENT`]).
pub(crate) fn record(span: &tracing::Span, r: &UsageRecord) {
    if !span.is_disabled() {
        record_span(span, r);
    }
    // Nothing is formatted unless a subscriber takes the event.
    tracing::info!(
        name: REQUEST_EVENT,
        target: "chatgate::usage",
        parent: span,
        request_id = r.request_id.as_deref().unwrap_or(""),
        key_id = r.key_id.as_deref().unwrap_or(""),
        model = r.model.as_deref().unwrap_or(""),
        routed_model = r.routed_model.as_deref().unwrap_or(""),
        status = r.status,
        streamed = r.streamed,
        input_tokens = r.prompt_tokens,
        output_tokens = r.completion_tokens,
        estimated = r.estimated,
        partial = r.partial,
        duration_ms = r.duration_ms,
        ttft_ms = r.ttft_ms.unwrap_or(-1.0),
        error = r.error.as_deref().unwrap_or(""),
        "request"
    );
}

/// Fills the span's fields (for a layer that keeps spans, such as the OTLP export).
fn record_span(span: &tracing::Span, r: &UsageRecord) {
    let reasons = r.finish_reasons.join(",");
    if let Some(k) = &r.key_id {
        span.record("key_id", k.as_str());
    }
    if let Some(m) = &r.model {
        span.record("gen_ai.request.model", &**m);
    }
    if let Some(m) = r.response_model.as_ref().or(r.routed_model.as_ref()) {
        span.record("gen_ai.response.model", &**m);
    }
    span.record("gen_ai.usage.input_tokens", int(r.prompt_tokens));
    span.record("gen_ai.usage.output_tokens", int(r.completion_tokens));
    span.record("gen_ai.response.finish_reasons", reasons.as_str());
    if let Some(e) = &r.error {
        span.record("error.type", e.as_str());
    }
    if let Some(u) = &r.upstream {
        span.record("upstream", &**u);
    }
    span.record("http.response.status_code", i64::from(r.status));
}

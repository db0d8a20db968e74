//! [`MetricsSink`]: Prometheus metrics with OpenTelemetry's GenAI semantic-convention names,
//! served by [`MetricsRoute`] at `GET /metrics`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::sink::Stats;
use super::{SinkFuture, UsageHandle, UsageRecord, UsageSink};
use crate::gateway::RouteBody;
use crate::route::BoxBody;

type Labels = Vec<(&'static str, String)>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;

/// OpenTelemetry's advised buckets for `gen_ai.client.token.usage`.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];
/// OpenTelemetry's advised buckets for `gen_ai.server.request.duration` (seconds).
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// OpenTelemetry's advised buckets for `gen_ai.server.time_to_first_token` (seconds).
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}
fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}
fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

/// FNV-1a, for the maps of label values: they hold only bounded names (configured models, the
/// first key ids seen), so a keyed hash (SipHash, std's default) buys nothing here and costs
/// more than the rest of the lookup.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type FnvBuild = BuildHasherDefault<Fnv>;

/// The label values allowed, so that the number of series stays bounded.
#[derive(Debug)]
struct Bounds {
    models: HashSet<String, FnvBuild>,
    max_keys: usize,
    keys: Mutex<HashSet<String, FnvBuild>>,
}

impl Bounds {
    fn model<'a>(&self, m: Option<&'a str>) -> &'a str {
        match m {
            None => "",
            Some(m) if self.models.contains(m) => m,
            Some(_) => "other",
        }
    }

    /// The first `max_keys` key ids seen get their own label value; later ones are `other`.
    fn key<'a>(&self, k: Option<&'a str>) -> &'a str {
        let Some(k) = k else {
            return "";
        };
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.contains(k) {
            return k;
        }
        if keys.len() < self.max_keys {
            keys.insert(k.to_owned());
            return k;
        }
        "other"
    }
}

/// Prometheus metrics of the records, by OpenTelemetry's GenAI semantic conventions (names
/// translated to Prometheus as OpenTelemetry's exporters do: dots to underscores, the unit
/// `s` as a `_seconds` suffix):
///
/// | metric | type | labels |
/// |---|---|---|
/// | `gen_ai_client_token_usage` (`{token}`) | histogram | `gen_ai_token_type` (`input`/`output`) + common |
/// | `gen_ai_server_request_duration_seconds` | histogram | common |
/// | `gen_ai_server_time_to_first_token_seconds` | histogram (streams) | common |
/// | `chatgate_requests_total` | counter | `status` |
/// | `chatgate_rejections_total` | counter | `reason` (4xx by status: `unauthenticated`, `forbidden`, `model_not_found`, `too_large`, `invalid`, `rate_limited`, `bad_request`, `other`) |
/// | `chatgate_upstream_failures_total` | counter | `gen_ai_request_model` |
/// | `chatgate_usage_records_total`, `chatgate_usage_records_dropped_total`, `chatgate_usage_sink_errors_total` | counter | — (after [`watch`](Self::watch)) |
///
/// The common labels are `gen_ai_operation_name` (`chat`), `gen_ai_request_model`,
/// `gen_ai_response_model`, `key_id` and `status`. **Cardinality is bounded**: a model label is
/// the model's name only when it is one of the names given to [`new`](Self::new) (configured
/// public and upstream names), else `other`; key ids get their own value for the first
/// `max_keys` distinct ids seen since start, later ones share `other`; statuses are HTTP codes.
#[derive(Debug)]
pub struct MetricsSink {
    registry: Mutex<Registry>,
    bounds: Bounds,
    tokens: Hist,
    duration: Hist,
    ttft: Hist,
    requests: Family<Labels, Counter>,
    rejections: Family<Labels, Counter>,
    upstream_failures: Family<Labels, Counter>,
    /// The series of each label combination seen, so a record costs one small lookup instead of
    /// a label set built and hashed per metric. Bounded as the labels are.
    series: Mutex<SeriesMap>,
}

/// The series by label values, found by a key written into a reused buffer (no allocation once
/// a combination has been seen).
#[derive(Debug, Default)]
struct SeriesMap {
    /// Where each label combination's series is in `series`.
    map: HashMap<String, usize, FnvBuild>,
    series: Vec<Series>,
    scratch: String,
    /// The last record's label inputs and its series: the records of a batch mostly share
    /// their labels, and then one comparison finds the series.
    last: Option<Last>,
}

/// What a record's labels are made from (before the bounds), and where the series they led to
/// is.
#[derive(Debug)]
struct Last {
    model: Option<Arc<str>>,
    response_model: Option<Arc<str>>,
    key_id: Option<String>,
    status: u16,
    at: usize,
}

impl Last {
    fn is_for(&self, r: &UsageRecord) -> bool {
        self.status == r.status
            && self.model.as_deref() == r.model.as_deref()
            && self.response_model.as_deref() == response_model_of(r)
            && self.key_id.as_deref() == r.key_id.as_deref()
    }
}

/// The model a record's `gen_ai_response_model` is made from.
fn response_model_of(r: &UsageRecord) -> Option<&str> {
    r.response_model.as_deref().or(r.routed_model.as_deref())
}

/// Writes the label values as one unambiguous key (each value after its length).
fn series_key(out: &mut String, values: [&str; 3], status: u16) {
    let mut n = itoa::Buffer::new();
    out.clear();
    for v in values {
        out.push_str(n.format(v.len()));
        out.push(':');
        out.push_str(v);
    }
    out.push_str(n.format(status));
}

/// One label combination's metrics (the histograms only once a record needs them, so no empty
/// series is exported).
#[derive(Debug)]
struct Series {
    common: Labels,
    input: Option<Histogram>,
    output: Option<Histogram>,
    ttft: Option<Histogram>,
    duration: Histogram,
    requests: Counter,
}

#[derive(Debug)]
struct StatsCollector(Arc<Stats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counters = [
            (
                "chatgate_usage_records",
                "Usage records handed to the sinks.",
                &self.0.emitted,
            ),
            (
                "chatgate_usage_records_dropped",
                "Usage records dropped because the sinks' channel was full.",
                &self.0.dropped,
            ),
            (
                "chatgate_usage_sink_errors",
                "Batches a usage sink failed to take.",
                &self.0.sink_errors,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value.load(Relaxed));
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}

impl MetricsSink {
    /// Metrics with model labels limited to `models` and at most `max_keys` key-id values.
    pub fn new(models: impl IntoIterator<Item = impl Into<String>>, max_keys: usize) -> Self {
        // prometheus-client ends each help text with a period itself.
        let mut registry = Registry::default();
        let tokens: Hist = Family::new_with_constructor(token_histogram);
        let duration: Hist = Family::new_with_constructor(duration_histogram);
        let ttft: Hist = Family::new_with_constructor(ttft_histogram);
        let requests = Family::<Labels, Counter>::default();
        let rejections = Family::<Labels, Counter>::default();
        let upstream_failures = Family::<Labels, Counter>::default();
        registry.register(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used",
            tokens.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_request_duration",
            "Generative AI server request duration",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time to generate the first token, for successful streamed responses",
            Unit::Seconds,
            ttft.clone(),
        );
        registry.register(
            "chatgate_requests",
            "Chat requests by status",
            requests.clone(),
        );
        registry.register(
            "chatgate_rejections",
            "Chat requests rejected (4xx) by reason",
            rejections.clone(),
        );
        registry.register(
            "chatgate_upstream_failures",
            "Chat requests whose upstream failed (5xx, or a stream that broke)",
            upstream_failures.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            bounds: Bounds {
                models: models.into_iter().map(Into::into).collect(),
                max_keys,
                keys: Mutex::default(),
            },
            tokens,
            duration,
            ttft,
            requests,
            rejections,
            upstream_failures,
            series: Mutex::default(),
        }
    }

    /// Also exports `handle`'s counters (records, drops, sink errors). Call once.
    pub fn watch(&self, handle: &UsageHandle) {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register_collector(Box::new(StatsCollector(Arc::clone(&handle.shared.stats))));
    }

    /// Adds one record.
    pub fn add(&self, r: &UsageRecord) {
        let b = &self.bounds;
        let success = (200..300).contains(&r.status);
        {
            let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            let SeriesMap {
                map,
                series,
                scratch,
                last,
            } = &mut *series;
            let at = match last {
                Some(l) if l.is_for(r) => l.at,
                _ => {
                    let request_model = b.model(r.model.as_deref());
                    let response_model = b.model(response_model_of(r));
                    let key = b.key(r.key_id.as_deref());
                    series_key(scratch, [request_model, response_model, key], r.status);
                    let at = match map.get(scratch.as_str()) {
                        Some(&at) => at,
                        None => {
                            let common: Labels = vec![
                                ("gen_ai_operation_name", "chat".to_owned()),
                                ("gen_ai_request_model", request_model.to_owned()),
                                ("gen_ai_response_model", response_model.to_owned()),
                                ("key_id", key.to_owned()),
                                ("status", r.status.to_string()),
                            ];
                            let duration = self.duration.get_or_create(&common).clone();
                            let requests = self
                                .requests
                                .get_or_create(&vec![("status", r.status.to_string())])
                                .clone();
                            series.push(Series {
                                common,
                                input: None,
                                output: None,
                                ttft: None,
                                duration,
                                requests,
                            });
                            map.insert(scratch.clone(), series.len() - 1);
                            series.len() - 1
                        }
                    };
                    let l = last.get_or_insert_with(|| Last {
                        model: None,
                        response_model: None,
                        key_id: None,
                        status: 0,
                        at,
                    });
                    // Reusing the strings' buffers.
                    l.model.clone_from(&r.model);
                    l.response_model = r.response_model.clone().or(r.routed_model.clone());
                    l.key_id.clone_from(&r.key_id);
                    l.status = r.status;
                    l.at = at;
                    at
                }
            };
            let s = &mut series[at];
            if success {
                let tokens = |kind: &str| {
                    let mut l = s.common.clone();
                    l.push(("gen_ai_token_type", kind.to_owned()));
                    self.tokens.get_or_create(&l).clone()
                };
                s.input
                    .get_or_insert_with(|| tokens("input"))
                    .observe(r.prompt_tokens as f64);
                s.output
                    .get_or_insert_with(|| tokens("output"))
                    .observe(r.completion_tokens as f64);
                if r.streamed
                    && let Some(t) = r.ttft_ms
                {
                    let common = &s.common;
                    s.ttft
                        .get_or_insert_with(|| self.ttft.get_or_create(common).clone())
                        .observe(t / 1000.0);
                }
            }
            s.duration.observe(r.duration_ms / 1000.0);
            s.requests.inc();
        }
        if (400..500).contains(&r.status) && r.status != 499 {
            let reason = match r.status {
                400 => "bad_request",
                401 => "unauthenticated",
                403 => "forbidden",
                404 => "model_not_found",
                413 => "too_large",
                422 => "invalid",
                429 => "rate_limited",
                _ => "other",
            };
            self.rejections
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc();
        }
        let broke = r.partial && r.error.as_deref() != Some("client_closed");
        if r.status >= 500 || broke {
            self.upstream_failures
                .get_or_create(&vec![(
                    "gen_ai_request_model",
                    b.model(r.model.as_deref()).to_owned(),
                )])
                .inc();
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl UsageSink for MetricsSink {
    fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a> {
        for r in batch {
            self.add(r);
        }
        Box::pin(ready(Ok(())))
    }

    fn takes_records(&self) -> bool {
        true
    }

    fn take(&self, record: &UsageRecord) {
        self.add(record);
    }
}

/// `GET /metrics`: the [`MetricsSink`]'s metrics (OpenMetrics text, which Prometheus reads).
#[derive(Clone, Debug)]
pub struct MetricsRoute {
    metrics: Arc<MetricsSink>,
}

impl MetricsRoute {
    /// Serves `metrics`.
    pub fn new(metrics: Arc<MetricsSink>) -> Self {
        Self { metrics }
    }
}

impl tower::Service<Request<RouteBody>> for MetricsRoute {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<BoxBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RouteBody>) -> Self::Future {
        let res = if req.method() == http::Method::GET || req.method() == http::Method::HEAD {
            let mut res = Response::new(Full::new(Bytes::from(self.metrics.encode())));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            res
        } else {
            crate::error::method_not_allowed("GET, HEAD")
        };
        let mut res = res.map(|b| b.map_err(|never| match never {}).boxed_unsync());
        if res.status() == StatusCode::OK {
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        ready(Ok(res))
    }
}

/// `%XX` and `+` decoded (lossy).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, model: &str, status: u16) -> UsageRecord {
        UsageRecord {
            key_id: Some(key.to_owned()),
            model: Some(model.into()),
            routed_model: Some(model.into()),
            status,
            prompt_tokens: 5,
            completion_tokens: 7,
            ..UsageRecord::default()
        }
    }

    /// The value of the sample `name{labels}` in the text.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.parse().expect("a number"))
    }

    #[test]
    fn records_in_runs_and_alternating_land_in_their_series() {
        let records = [
            record("a", "echo", 200),
            record("a", "echo", 200),
            record("b", "echo", 200),    // a second key: `other`
            record("a", "made-up", 200), // not a listed model: `other`
            record("a", "echo", 429),
            record("a", "echo", 200),
            record("c", "echo", 200), // `other` again, by another way
            record("b", "echo", 200),
        ];
        // One batch, and one record per batch: the same counts.
        for batches in [records.len(), 1] {
            let m = MetricsSink::new(["echo"], 1);
            for batch in records.chunks(batches) {
                for r in batch {
                    m.add(r);
                }
            }
            let text = m.encode();
            let count = |request: &str, response: &str, key: &str, status: &str| {
                let labels = format!(
                    "gen_ai_operation_name=\"chat\",gen_ai_request_model=\"{request}\",\
                     gen_ai_response_model=\"{response}\",key_id=\"{key}\",status=\"{status}\""
                );
                sample(
                    &text,
                    "gen_ai_server_request_duration_seconds_count",
                    &labels,
                )
            };
            assert_eq!(count("echo", "echo", "a", "200"), Some(3.0), "{text}");
            assert_eq!(count("echo", "echo", "other", "200"), Some(3.0), "{text}");
            assert_eq!(count("other", "other", "a", "200"), Some(1.0), "{text}");
            assert_eq!(count("echo", "echo", "a", "429"), Some(1.0), "{text}");
            let input = sample(
                &text,
                "gen_ai_client_token_usage_sum",
                "gen_ai_operation_name=\"chat\",gen_ai_request_model=\"echo\",\
                 gen_ai_response_model=\"echo\",key_id=\"other\",status=\"200\",\
                 gen_ai_token_type=\"input\"",
            );
            assert_eq!(input, Some(15.0), "{text}");
            assert_eq!(
                sample(&text, "chatgate_requests_total", "status=\"200\""),
                Some(7.0)
            );
        }
    }
}

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;

/// Default [`UpstreamConfig::connect_timeout`]: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`UpstreamConfig::first_byte_timeout`]: 60 s.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`UpstreamConfig::max_answer_bytes`]: 8 MiB.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 8 << 20;

/// Default [`UpstreamConfig::idle_timeout`]: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`UpstreamConfig::total_timeout`]: 10 min.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(600);

/// One OpenAI-compatible server: where it is, how to authenticate, and how long to wait.
///
/// A plain struct with public fields (a configuration file maps onto it) and consuming setters.
/// `Debug` never shows the API key.
///
/// ```
/// use std::time::Duration;
/// use chatgate::upstream::UpstreamConfig;
/// let c = UpstreamConfig::new("https://api.example.com/v1".parse().unwrap())
///     .upstream_model("gpt-4o-2024-08-06")
///     .api_key("sk-secret")
///     .first_byte_timeout(Duration::from_secs(30));
/// assert_eq!(c.connect_timeout, Duration::from_secs(5));
/// assert!(!format!("{c:?}").contains("sk-secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// The base URL, e.g. `https://api.openai.com/v1`; requests go to `<url>/chat/completions`
    /// (a query in the base URL is kept). `http` and `https` are supported.
    pub url: Uri,
    /// The model name the upstream knows, when it differs from the public name clients use.
    /// `None`: the public name of the route is sent.
    pub upstream_model: Option<String>,
    /// The upstream's own credential, sent as `Authorization: Bearer <key>`. The client's
    /// `Authorization` is never forwarded. `None`: no `Authorization` is sent.
    pub api_key: Option<String>,
    /// Share of the traffic relative to the route's other replicas (default 1; 0 counts as 1).
    pub weight: u32,
    /// Longest time to establish the TCP (and TLS) connection (default 5 s).
    pub connect_timeout: Duration,
    /// Longest time from sending the request (connecting included) to the response headers
    /// (default 60 s).
    pub first_byte_timeout: Duration,
    /// Longest gap between two chunks of the response body (default 60 s).
    pub idle_timeout: Duration,
    /// Longest time for the whole exchange, from sending to the last byte (default 10 min).
    pub total_timeout: Duration,
    /// Speak only HTTP/2: with prior knowledge (h2c) for `http`, and without falling back to
    /// HTTP/1.1 for `https` (default off: HTTP/1.1, or HTTP/2 when TLS negotiates it).
    pub http2_only: bool,
    /// PEM-encoded CA certificates to trust for this `https` upstream *instead of* the bundled
    /// webpki roots (a private CA, such as an internal TLS terminator in front of vLLM or
    /// Ollama). `None` (the default): the bundled webpki (Mozilla) roots.
    ///
    /// Replacing rather than adding to the public roots keeps the trust as narrow as the
    /// deployment: an upstream behind a private CA has no reason to accept a certificate from
    /// any public CA, and it is what `curl --cacert` and `SSL_CERT_FILE` do. To trust both, put
    /// the public roots in the bundle too.
    ///
    /// Checked by [`Upstream::new`](super::Upstream::new): the bytes must hold at least one
    /// `CERTIFICATE` block (other blocks are ignored), every certificate must parse, and the URL
    /// must be `https`.
    pub root_certificates: Option<Bytes>,
    /// The most bytes of a non-streamed 2xx answer read whole and checked to be a chat
    /// completion (default [`DEFAULT_MAX_ANSWER_BYTES`], 8 MiB). An answer that is not one (not
    /// JSON, or JSON without `choices`) becomes a 502 `bad_gateway`; a longer answer passes
    /// through unchecked; 0 turns the check off. What the check read (the answer's model,
    /// usage and finish reasons) goes on to the usage meter, which does not read it again.
    pub max_answer_bytes: usize,
}

impl UpstreamConfig {
    /// An upstream at `url` with the documented defaults.
    pub fn new(url: Uri) -> Self {
        Self {
            url,
            upstream_model: None,
            api_key: None,
            weight: 1,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            total_timeout: DEFAULT_TOTAL_TIMEOUT,
            http2_only: false,
            root_certificates: None,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        }
    }

    /// Sets [`max_answer_bytes`](Self::max_answer_bytes).
    pub fn max_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_answer_bytes = bytes;
        self
    }

    /// Sets [`upstream_model`](Self::upstream_model).
    pub fn upstream_model(mut self, model: impl Into<String>) -> Self {
        self.upstream_model = Some(model.into());
        self
    }

    /// Sets [`api_key`](Self::api_key).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets [`weight`](Self::weight).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets [`first_byte_timeout`](Self::first_byte_timeout).
    pub fn first_byte_timeout(mut self, t: Duration) -> Self {
        self.first_byte_timeout = t;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = t;
        self
    }

    /// Sets [`total_timeout`](Self::total_timeout).
    pub fn total_timeout(mut self, t: Duration) -> Self {
        self.total_timeout = t;
        self
    }
}

impl UpstreamConfig {
    /// Sets [`http2_only`](Self::http2_only).
    pub fn http2_only(mut self, on: bool) -> Self {
        self.http2_only = on;
        self
    }

    /// Sets [`root_certificates`](Self::root_certificates): PEM bytes, such as the contents
    /// of a `ca.pem` file. Only these roots are trusted; the bundled ones no longer are.
    pub fn root_certificates(mut self, pem: impl Into<Bytes>) -> Self {
        self.root_certificates = Some(pem.into());
        self
    }
}

impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &self.url)
            .field("upstream_model", &self.upstream_model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("weight", &self.weight)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("http2_only", &self.http2_only)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .field(
                "root_certificates",
                &self
                    .root_certificates
                    .as_ref()
                    .map(|pem| format!("<{} bytes of PEM>", pem.len())),
            )
            .finish()
    }
}

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

use super::config::UpstreamConfig;
use super::error::UpstreamConfigError;
use super::future::{ResponseBody, ResponseFuture, SendFuture};
use super::headers::request_headers;
use super::tls::root_store;
use crate::route::RoutedModel;
use crate::validate::ValidatedRequest;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Forwards chat-completions requests to one OpenAI-compatible server. See the
/// [module docs](crate::upstream).
///
/// Cloning is cheap (the connection pool is shared by the clones).
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

struct Shared {
    client: HttpClient,
    endpoint: Uri,
    scheme: Scheme,
    authority: http::uri::Authority,
    auth: Option<HeaderValue>,
    /// The `Host` header, when requests are certain to go over HTTP/1.1 (`http` without
    /// `http2_only`); written here once rather than formatted by the client per request.
    host: Option<HeaderValue>,
    /// The name the upstream knows the model by.
    model: Option<String>,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    total_timeout: Duration,
    max_answer_bytes: usize,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("endpoint", &self.shared.endpoint)
            .field("upstream_model", &self.shared.model)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream with its own connection pool.
    ///
    /// # Errors
    /// The URL is not an absolute `http`/`https` URL, the API key cannot be a header value, or
    /// [`root_certificates`](UpstreamConfig::root_certificates) are set but hold no usable
    /// PEM certificate, or are set for an `http` URL.
    pub fn new(config: UpstreamConfig) -> Result<Self, UpstreamConfigError> {
        let scheme = config
            .url
            .scheme()
            .cloned()
            .ok_or(UpstreamConfigError::new("the upstream URL has no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(UpstreamConfigError::new(
                "the upstream URL must be http or https",
            ));
        }
        let roots = match &config.root_certificates {
            None => None,
            Some(_) if scheme != Scheme::HTTPS => {
                return Err(UpstreamConfigError::new(
                    "root certificates are set but the upstream URL is not https",
                ));
            }
            Some(pem) => Some(root_store(pem).map_err(|why| {
                UpstreamConfigError::owned(format!("invalid root certificates: {why}"))
            })?),
        };
        let authority = config
            .url
            .authority()
            .cloned()
            .ok_or(UpstreamConfigError::new("the upstream URL has no host"))?;
        let base = config.url.path().trim_end_matches('/');
        let path = match config.url.query() {
            Some(q) => format!("{base}/chat/completions?{q}"),
            None => format!("{base}/chat/completions"),
        };
        let endpoint = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| UpstreamConfigError::new("the upstream URL is invalid"))?;
        let auth = match &config.api_key {
            Some(key) => {
                let mut v = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    UpstreamConfigError::new(
                        "the API key contains characters not allowed in a header",
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let host = (scheme == Scheme::HTTP && !config.http2_only)
            .then(|| {
                let host = authority.host();
                let value = match authority.port_u16() {
                    Some(port) if port != 80 => format!("{host}:{port}"),
                    _ => host.to_owned(),
                };
                HeaderValue::try_from(value).ok()
            })
            .flatten();
        let model = config.upstream_model.clone();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let tls = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = match roots {
            None => tls.with_webpki_roots(),
            // The same provider resolution and protocol defaults as `with_webpki_roots`.
            Some(roots) => tls.with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ),
        };
        let https = tls
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .timer(TokioTimer::new())
            .http2_only(config.http2_only)
            .build(https);

        Ok(Self {
            shared: Arc::new(Shared {
                client,
                endpoint,
                scheme,
                authority,
                auth,
                host,
                model,
                connect_timeout: config.connect_timeout,
                first_byte_timeout: config.first_byte_timeout,
                idle_timeout: config.idle_timeout,
                total_timeout: config.total_timeout,
                max_answer_bytes: config.max_answer_bytes,
            }),
        })
    }

    /// Where requests go: the base URL plus `/chat/completions`.
    pub fn endpoint(&self) -> &Uri {
        &self.shared.endpoint
    }

    /// The configured connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.shared.connect_timeout
    }

    /// Sends one request: `headers` are the client request's, `routed` the route it was routed
    /// by (when known), `request` the validated request, rendered with the model name this
    /// upstream expects.
    pub(crate) fn send(
        &self,
        headers: &HeaderMap,
        routed: Option<&RoutedModel>,
        request: &ValidatedRequest,
    ) -> SendFuture {
        let s = &*self.shared;
        // The model the upstream must see: its own name, else the route's (differs from the
        // request's after a fallback). One splice into the forwarded bytes, no parse.
        let body = match (&s.model, routed) {
            (Some(name), _) => request.to_bytes_with_model(name),
            (None, Some(routed)) => request.to_bytes_with_model(routed.name()),
            (None, None) => request.to_bytes(),
        };

        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = s.endpoint.clone();
        *req.headers_mut() = request_headers(headers, s.auth.as_ref(), s.host.as_ref());
        SendFuture::send(
            s.client.request(req),
            s.first_byte_timeout,
            s.idle_timeout,
            s.total_timeout,
            s.max_answer_bytes,
        )
    }

    /// `GET` of `path` relative to the base URL (see [`super::probe_path`]) with the
    /// upstream's credential: whether it answered 2xx within `timeout`.
    pub(crate) async fn probe(&self, path: &str, timeout: Duration) -> bool {
        let s = &*self.shared;
        let base = s.endpoint.path().strip_suffix("/chat/completions");
        let Ok(pq) = PathAndQuery::try_from(super::probe_path(base.unwrap_or(""), path)) else {
            return false;
        };
        let Ok(uri) = Uri::builder()
            .scheme(s.scheme.clone())
            .authority(s.authority.clone())
            .path_and_query(pq)
            .build()
        else {
            return false;
        };
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        if let Some(auth) = &s.auth {
            req.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        matches!(
            tokio::time::timeout(timeout, s.client.request(req)).await,
            Ok(Ok(res)) if res.status().is_success()
        )
    }
}

impl Service<Request<ValidatedRequest>> for Upstream {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pool handles readiness (as hyper-util's client does).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ValidatedRequest>) -> ResponseFuture {
        ResponseFuture::new(self.send(
            req.headers(),
            req.extensions().get::<RoutedModel>(),
            req.body(),
        ))
    }
}

//! HTTPS upstreams end to end on loopback: a private CA and a `localhost`/127.0.0.1 server
//! certificate generated at test time (rcgen), a TLS mock upstream (tokio-rustls, ring), and the
//! gateway of `support::gateway` (`ValidateLayer` + `ModelRouter` + `Upstream`).
//!
//! With the CA in [`UpstreamConfig::root_certificates`] the exchange succeeds; with the bundled
//! webpki roots alone the certificate is untrusted, which is a connect failure (502
//! `bad_gateway`, at once), not a hang.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chatgate::route::{ModelRouter, RouteConfig};
use chatgate::upstream::{Upstream, UpstreamConfig};
use http::{Request, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use support::mock_upstream::*;
use support::{chat, client, gateway, post, text};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Hang detection: every test finishes well within this.
const BOUND: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("test hung")
}

/// A private CA: its certificate as PEM, and a TLS server config for a certificate it issued
/// to `localhost` and `127.0.0.1`.
struct Pki {
    ca_pem: String,
    server: Arc<ServerConfig>,
}

fn private_ca(ca_name: &str) -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf.signed_by(&key, &ca).unwrap();

    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// A TLS mock upstream on 127.0.0.1:0: a JSON completion, or (for `"stream": true`) a short
/// SSE stream of two chunks and `[DONE]`.
struct TlsMock {
    addr: SocketAddr,
    /// Requests that got through the handshake.
    hits: Arc<AtomicUsize>,
    /// HTTP versions of those requests.
    versions: Arc<std::sync::Mutex<Vec<http::Version>>>,
}

impl TlsMock {
    async fn start(server: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server);
        let hits = Arc::new(AtomicUsize::new(0));
        let versions = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (h, v) = (hits.clone(), versions.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, hits, versions) = (acceptor.clone(), h.clone(), v.clone());
                tokio::spawn(async move {
                    // An untrusting client aborts the handshake: nothing to serve.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (hits, versions) = (hits.clone(), versions.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            hits.fetch_add(1, Ordering::SeqCst);
                            versions.lock().unwrap().push(parts.version);
                            let seen = RecordedRequest {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            Ok::<_, Infallible>(answer(&seen))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            versions,
        }
    }

    /// `https://localhost:PORT/v1`: the name the certificate is issued to.
    fn url(&self) -> Uri {
        format!("https://localhost:{}/v1", self.addr.port())
            .parse()
            .unwrap()
    }
}

fn answer(seen: &RecordedRequest) -> http::Response<MockBody> {
    if seen.path() != "/v1/chat/completions" {
        return json(404, serde_json::json!({"error": {"message": "not found"}}));
    }
    if seen.json()["stream"] != true {
        return completion(seen);
    }
    let mut res = http::Response::new(MockBody::frames([
        chunk("Hel"),
        chunk("lo"),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ]));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    res
}

fn router(config: UpstreamConfig) -> ModelRouter {
    ModelRouter::builder()
        .upstream("m", RouteConfig::new().replica(config))
        .unwrap()
        .build()
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_private_ca_is_trusted_when_configured() {
    bounded(async {
        let pki = private_ca("chatgate test CA");
        let mock = TlsMock::start(pki.server.clone()).await;
        let config = UpstreamConfig::new(mock.url())
            .upstream_model("served-model")
            .root_certificates(pki.ca_pem.clone());
        let gw = gateway(router(config)).await;
        let c = client();

        // Non-streamed: status and body forwarded.
        let res = post(&c, gw, chat("m", false), &[]).await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(body["model"], "served-model");
        assert_eq!(body["choices"][0]["message"]["content"], "ok");

        // Streamed: the chunks, then the upstream's own [DONE], once.
        let res = post(&c, gw, chat("m", true), &[]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
        let sse = text(res).await;
        let data: Vec<&str> = sse
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.len(), 3, "{sse}");
        let content = |i: usize| {
            let v: serde_json::Value = serde_json::from_str(data[i]).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            (content(0), content(1)),
            ("Hel".to_owned(), "lo".to_owned())
        );
        assert_eq!(data[2], "[DONE]");

        assert_eq!(mock.hits.load(Ordering::SeqCst), 2);
        // ALPN still offers h2 with a custom root store, and the mock accepts it.
        assert!(
            mock.versions
                .lock()
                .unwrap()
                .iter()
                .all(|v| *v == http::Version::HTTP_2)
        );
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_prompt_bad_gateway() {
    bounded(async {
        let pki = private_ca("chatgate test CA");
        let mock = TlsMock::start(pki.server.clone()).await;
        let c = client();

        // The bundled webpki roots alone, then another private CA: both refuse the certificate.
        let other = private_ca("some other CA");
        for config in [
            UpstreamConfig::new(mock.url()),
            UpstreamConfig::new(mock.url()).root_certificates(other.ca_pem),
        ] {
            let gw = gateway(router(config)).await;
            for stream in [false, true] {
                let started = Instant::now();
                let res = post(&c, gw, chat("m", stream), &[]).await;
                assert_eq!(res.status(), 502);
                assert_eq!(error_code(&text(res).await), "bad_gateway");
                // A handshake failure, not the 5 s connect timeout (which would be a 504).
                assert!(started.elapsed() < Duration::from_secs(4));
            }
        }
        assert_eq!(mock.hits.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[test]
fn unusable_root_certificates_are_rejected_by_upstream_new() {
    let url: Uri = "https://localhost:8443/v1".parse().unwrap();
    let err = |c: UpstreamConfig| Upstream::new(c).unwrap_err().to_string();

    let e = err(UpstreamConfig::new(url.clone()).root_certificates("not PEM"));
    assert!(
        e.starts_with("invalid root certificates: no certificate found"),
        "{e}"
    );
    let truncated = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    let e = err(UpstreamConfig::new(url.clone()).root_certificates(truncated));
    assert!(
        e.starts_with("invalid root certificates: malformed PEM"),
        "{e}"
    );

    let pem = private_ca("chatgate test CA").ca_pem;
    let http: Uri = "http://localhost:8080/v1".parse().unwrap();
    let e = err(UpstreamConfig::new(http).root_certificates(pem.clone()));
    assert_eq!(
        e,
        "root certificates are set but the upstream URL is not https"
    );

    let c = UpstreamConfig::new(url).root_certificates(pem.clone());
    assert!(format!("{c:?}").contains(&format!("<{} bytes of PEM>", pem.len())));
    Upstream::new(c).unwrap();
}

//! The bare pass-through baseline of the load benchmark (`bench/load/run.sh`): the smallest correct
//! hyper 1 reverse proxy, against which the overhead of chatgate's proxy is measured.
//!
//! ```text
//! cargo run --release --example passthrough -- --listen 127.0.0.1:8091 --upstream http://127.0.0.1:8090
//! ```
//!
//! Every request, whatever its method and path, goes to the upstream with the same path and query,
//! over a pooled HTTP/1.1 keep-alive client (hyper-util's legacy client); the response, status and
//! headers included, comes back with its body streamed frame by frame, never buffered. Hop-by-hop
//! headers are dropped both ways and `Host` is set to the upstream's, as nginx does by default. The
//! server side speaks HTTP/1.1 and HTTP/2 (hyper-util's auto builder). There is no validation, no
//! routing and no timeout: any of those would belong to what is being measured.
//!
//! The runtime has one worker thread per core, or `TOKIO_WORKER_THREADS` of them (the main thread only
//! waits); `TOKIO_WORKER_THREADS=1` runs everything on one thread (a current-thread runtime).

use std::convert::Infallible;
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const USAGE: &str = "usage: passthrough --upstream http://HOST:PORT [--listen ADDR]";

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), besides those that the
/// `Connection` header itself names.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The response body: the upstream's, streamed, or a short error of the proxy's own.
type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Where requests go, and the connection pool to get there.
#[derive(Debug)]
struct Upstream {
    client: Client<HttpConnector, Incoming>,
    scheme: Scheme,
    authority: Authority,
}

fn main() -> Result<(), Box<dyn Error>> {
    // As chatgate's proxy: one worker asked for (`TOKIO_WORKER_THREADS=1`) is a current-thread
    // runtime, the equivalent of nginx's single worker; otherwise one worker per core.
    let one = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let runtime = if one {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(run())
}

async fn run() -> Result<(), Box<dyn Error>> {
    let mut listen = "127.0.0.1:8091".to_owned();
    let mut upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--listen" => listen = value()?,
            "--upstream" => upstream = Some(value()?.parse::<Uri>()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let upstream = upstream.ok_or(USAGE)?;
    let (Some(scheme), Some(authority)) = (upstream.scheme(), upstream.authority()) else {
        return Err(format!("--upstream must be an absolute http URL, got {upstream}").into());
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let upstream = Arc::new(Upstream {
        client,
        scheme: scheme.clone(),
        authority: authority.clone(),
    });

    let listener = TcpListener::bind(listen.as_str()).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // On a worker, not on the main thread that `block_on`s: with TOKIO_WORKER_THREADS=1, accepting
    // and serving then share one thread, as in nginx's single worker.
    tokio::spawn(serve(listener, upstream)).await?;
    Ok(())
}

/// Accepts connections forever and serves each in its own task.
async fn serve(listener: TcpListener, upstream: Arc<Upstream>) {
    let server = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let upstream = Arc::clone(&upstream);
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(Arc::clone(&upstream), req));
            // Client disconnects end up here; there is nothing to do about them.
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Sends `req` to the upstream and returns its response as it comes.
async fn forward(
    upstream: Arc<Upstream>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path_and_query)
        .build();
    let Ok(uri) = uri else {
        return Ok(error(StatusCode::BAD_REQUEST, "bad request target"));
    };
    *req.uri_mut() = uri;
    // The pool speaks HTTP/1.1 whatever the client spoke.
    *req.version_mut() = Version::HTTP_11;
    strip_hop_by_hop(req.headers_mut());
    // The client sets it from the URI.
    req.headers_mut().remove(header::HOST);
    match upstream.client.request(req).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Err(e) => {
            eprintln!("upstream: {e}");
            Ok(error(StatusCode::BAD_GATEWAY, "upstream unavailable"))
        }
    }
}

/// Removes the headers that belong to one hop, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// A plain-text error of the proxy's own.
fn error(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        message.as_bytes(),
    ))));
    *response.status_mut() = status;
    response
}

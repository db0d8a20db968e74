//! Serving a [`Gateway`] over TCP with hyper: HTTP/1.1 and HTTP/2 (cleartext, prior knowledge),
//! header-size and header-time caps, a panic in a request's handling answered as a 500 in the
//! OpenAI envelope (tower-http's `CatchPanic`), and a graceful shutdown with a bound.
//!
//! Around the gateway, per connection: [`SetRequestId`](crate::request_id::SetRequestId)
//! (outermost, so every response carries `x-request-id`, a panic's 500 too), then the
//! connection's [`PeerAddr`] into the request extensions, then `CatchPanic`.

use std::future::Future;
use std::io;
use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;

use super::Gateway;
use crate::BoxError;
use crate::request_id::{PeerAddr, RequestIdLayer};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// How long in-flight requests and streams may run after shutdown begins (default 30 s).
    pub shutdown_grace: Duration,
    /// Largest request head: HTTP/1 buffer and HTTP/2 header list (default 64 KiB).
    pub max_header_bytes: usize,
    /// Longest time to receive an HTTP/1 request head (default 30 s).
    pub header_read_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

fn panic_response(
    _panic: Box<dyn std::any::Any + Send + 'static>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    crate::error::ApiError::internal("The gateway failed while handling the request.")
        .into_response()
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then drains (see [`ServeConfig`]).
///
/// # Errors
/// Never returns an error today; accept failures are retried.
pub async fn serve<S, ResBody>(
    listener: TcpListener,
    gateway: Gateway<S>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    serve_with(listener, gateway, shutdown, ServeConfig::default()).await
}

/// [`serve`] with explicit settings.
///
/// # Errors
/// Never returns an error today; accept failures are retried.
pub async fn serve_with<S, ResBody>(
    listener: TcpListener,
    gateway: Gateway<S>,
    shutdown: impl Future<Output = ()>,
    config: ServeConfig,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(_) => {
                    // Out of descriptors or a reset during accept: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // A bug that panics while handling a request answers 500 in the contract's envelope
        // instead of resetting the connection.
        let service = ServiceBuilder::new()
            .layer(RequestIdLayer::new())
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                req
            })
            .layer(CatchPanicLayer::custom(panic_response))
            .service(gateway.clone());
        let service = TowerToHyperService::new(service);
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(config.shutdown_grace, graceful.shutdown()).await;
    Ok(())
}

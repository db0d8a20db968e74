//! Timeouts: 504 before the first byte, an SSE error event after it.

use super::*;

#[tokio::test]
async fn connect_timeout_is_504() {
    bounded(async {
        // A listener that never accepts, with its backlog filled: further SYNs are dropped, so
        // connecting hangs (on loopback; no outside address is used).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        let mut full = false;
        for _ in 0..64 {
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("unexpected connect error {e}"),
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        if !full {
            eprintln!("skipped: this kernel does not hang connects on a full backlog");
            return;
        }
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(
                UpstreamConfig::new(format!("http://{addr}/v1").parse().unwrap())
                    .connect_timeout(Duration::from_millis(100)),
            ),
        ))
        .await;
        let started = Instant::now();
        let res = post(&client(), gw, chat("m", false), &[]).await;
        assert_eq!(res.status(), 504);
        assert_eq!(error_code(&text(res).await), "upstream_timeout");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(listener);
    })
    .await;
}

#[tokio::test]
async fn first_byte_timeout_is_504() {
    bounded(async {
        let mock = Mock::start(|_| std::future::pending()).await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(
                UpstreamConfig::new(mock.url()).first_byte_timeout(Duration::from_millis(150)),
            ),
        ))
        .await;
        let started = Instant::now();
        let res = post(&client(), gw, chat("m", true), &[]).await;
        assert_eq!(res.status(), 504);
        assert_eq!(error_code(&text(res).await), "upstream_timeout");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(mock.hits(), 1, "timeouts are not retried");
    })
    .await;
}

#[tokio::test]
async fn total_timeout_before_headers_is_504() {
    bounded(async {
        let mock = Mock::start(|_| std::future::pending()).await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(mock.url()).total_timeout(Duration::from_millis(150))),
        ))
        .await;
        let res = post(&client(), gw, chat("m", false), &[]).await;
        assert_eq!(res.status(), 504);
        assert_eq!(error_code(&text(res).await), "upstream_timeout");
    })
    .await;
}

#[tokio::test]
async fn idle_timeout_mid_stream_ends_with_an_error_event() {
    bounded(async {
        let mock = stalling_mock().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(mock.url()).idle_timeout(Duration::from_millis(150))),
        ))
        .await;
        assert_stream_ends_with_error(gw, "upstream_timeout").await;
    })
    .await;
}

#[tokio::test]
async fn total_timeout_mid_stream_ends_with_an_error_event() {
    bounded(async {
        let mock = stalling_mock().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(mock.url()).total_timeout(Duration::from_millis(300))),
        ))
        .await;
        assert_stream_ends_with_error(gw, "upstream_timeout").await;
    })
    .await;
}

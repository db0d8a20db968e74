//! Streams: incremental, coalesced, `[DONE]` once; resets and client disconnects.

use super::*;

#[tokio::test]
async fn streaming_is_incremental_and_done_is_appended_once() {
    bounded(async {
        let release = Arc::new(Notify::new());
        let r = release.clone();
        let mock = Mock::start(move |_| {
            let r = r.clone();
            async move {
                let (tx, _dropped, res) = sse();
                tokio::spawn(async move {
                    tx.send(Ok(chunk("first"))).await.ok();
                    r.notified().await;
                    tx.send(Ok(chunk("second"))).await.ok();
                    // Ends cleanly without `[DONE]`.
                });
                res
            }
        })
        .await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let res = post(&client(), gw, chat("m", true), &[]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut body = res.into_body();
        // The first event arrives while the upstream still holds the rest.
        let first = next_chunk(&mut body).await.expect("first chunk");
        assert!(String::from_utf8_lossy(&first).contains("first"));
        release.notify_one();
        let mut rest = Vec::new();
        while let Some(c) = next_chunk(&mut body).await {
            rest.extend_from_slice(&c);
        }
        let rest = String::from_utf8(rest).unwrap();
        assert!(rest.contains("second"), "{rest}");
        assert_eq!(rest.matches("data: [DONE]").count(), 1, "{rest}");
        assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    })
    .await;
}

#[tokio::test]
async fn events_already_received_are_coalesced() {
    bounded(async {
        const EVENTS: usize = 40;
        let mock = Mock::start(|_| async {
            let frames = (0..EVENTS)
                .map(|i| chunk(&format!("c{i}")))
                .chain([Bytes::from_static(b"data: [DONE]\n\n")]);
            let mut res = http::Response::new(MockBody::frames(frames));
            res.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            res
        })
        .await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let res = post(&client(), gw, chat("m", true), &[]).await;
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let (mut frames, mut all) = (0, Vec::new());
        while let Some(c) = next_chunk(&mut body).await {
            frames += 1;
            all.extend_from_slice(&c);
        }
        let all = String::from_utf8(all).unwrap();
        let data = data_lines(&all);
        assert_eq!(data.len(), EVENTS + 1, "{all}");
        assert_eq!(data.last(), Some(&"[DONE]"));
        // The upstream wrote them in a few writes; one frame per event would be EVENTS + 1.
        assert!(frames <= EVENTS / 4, "{frames} frames for {EVENTS} events");
    })
    .await;
}

#[tokio::test]
async fn upstream_done_is_not_duplicated() {
    bounded(async {
        let mock = Mock::start(|_| async {
            let (tx, _d, res) = sse();
            tokio::spawn(async move {
                tx.send(Ok(chunk("a"))).await.ok();
                tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
                    .await
                    .ok();
            });
            res
        })
        .await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let body = text(post(&client(), gw, chat("m", true), &[]).await).await;
        assert_eq!(body.matches("[DONE]").count(), 1, "{body}");
    })
    .await;
}

#[tokio::test]
async fn reset_mid_stream_ends_with_an_error_event() {
    bounded(async {
        let mock = Mock::start(|_| async {
            let (tx, _dropped, res) = sse();
            tokio::spawn(async move {
                tx.send(Ok(chunk("first"))).await.ok();
                tx.send(Err("boom".into())).await.ok();
            });
            res
        })
        .await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        assert_stream_ends_with_error(gw, "bad_gateway").await;
    })
    .await;
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    bounded(async {
        let (dropped_tx, mut dropped_rx) = mpsc::channel::<()>(1);
        let more = Arc::new(Notify::new());
        let m = more.clone();
        let mock = Mock::start(move |_| {
            let (dropped_tx, m) = (dropped_tx.clone(), m.clone());
            async move {
                let (tx, dropped, res) = sse();
                tokio::spawn(async move {
                    tx.send(Ok(chunk("first"))).await.ok();
                    // After the client is gone, keep producing (as a model would) until the
                    // gateway stops reading: a bounded number of chunks.
                    m.notified().await;
                    for i in 0..100_000 {
                        if tx.send(Ok(chunk(&format!("more {i}")))).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    if dropped.await.is_ok() {
                        dropped_tx.send(()).await.ok();
                    }
                });
                res
            }
        })
        .await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let res = post(&client(), gw, chat("m", true), &[]).await;
        let mut body = res.into_body();
        let first = next_chunk(&mut body).await.expect("first chunk");
        assert!(String::from_utf8_lossy(&first).contains("first"));
        drop(body);
        more.notify_one();
        // The mock's response body is dropped: the upstream request was cancelled.
        dropped_rx.recv().await.expect("upstream body dropped");
    })
    .await;
}

//! Upstream proxying end to end on loopback: a hyper gateway (`ValidateLayer` + `ModelRouter`),
//! a hyper-util client, and mock OpenAI upstreams (`support/mock_upstream`).
//!
//! No test sleeps to synchronise: the mocks hold their streams on channels until the test says
//! so. Timeout tests use short timeouts (100–300 ms) and only assert generous upper bounds.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chatgate::EchoModel;
use chatgate::route::{HealthCheck, ModelRouter, RouteConfig, RoutedModel};
use chatgate::upstream::UpstreamConfig;
use support::mock_upstream::*;
use support::{chat, client, gateway, next_chunk, post, text};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Hang detection: every test finishes well within this.
const BOUND: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("test hung")
}

fn router(model: &str, route: RouteConfig) -> ModelRouter {
    ModelRouter::builder()
        .upstream(model, route)
        .unwrap()
        .build()
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// The JSON payloads of the `data:` lines of an SSE text.
fn data_lines(sse: &str) -> Vec<&str> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn alias_is_rewritten_and_only_the_upstream_key_is_sent() {
    bounded(async {
        let mock = Mock::ok().await;
        let gw = gateway(router(
            "public",
            RouteConfig::new().replica(
                UpstreamConfig::new(mock.url())
                    .upstream_model("real-model")
                    .api_key("upstream-key"),
            ),
        ))
        .await;
        let c = client();
        let res = post(
            &c,
            gw,
            chat("public", false),
            &[
                ("authorization", "Bearer client-key"),
                ("x-custom", "kept"),
                ("connection", "x-hop"),
                ("x-hop", "dropped"),
            ],
        )
        .await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(body["model"], "real-model");

        let seen = mock.seen();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.path(), "/v1/chat/completions");
        assert_eq!(s.json()["model"], "real-model");
        assert_eq!(s.json()["messages"][0]["content"], "hi");
        let auth: Vec<_> = s.headers.get_all("authorization").iter().collect();
        assert_eq!(auth, ["Bearer upstream-key"]);
        assert_eq!(s.headers["x-custom"], "kept");
        assert!(!s.headers.contains_key("x-hop"));
        assert_eq!(s.headers["content-type"], "application/json");
        // The upstream's own host, not the gateway's.
        let host: Vec<_> = s.headers.get_all("host").iter().collect();
        assert_eq!(host, [mock.addr.to_string().as_str()]);
    })
    .await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive() {
    bounded(async {
        let mock = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let c = client();
        for _ in 0..5 {
            let res = post(&c, gw, chat("m", false), &[]).await;
            assert_eq!(res.status(), 200);
            text(res).await;
        }
        assert_eq!(mock.hits(), 5);
        assert_eq!(mock.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn http2_prior_knowledge_streams_over_one_connection() {
    bounded(async {
        let mock = Mock::start(|s: RecordedRequest| async move {
            assert_eq!(s.version, http::Version::HTTP_2);
            let (tx, _d, res) = sse();
            tokio::spawn(async move {
                tx.send(Ok(chunk("a"))).await.ok();
            });
            res
        })
        .await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url()).http2_only(true)),
        ))
        .await;
        let c = client();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let body = text(post(&c, gw, chat("m", true), &[]).await).await;
                assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(mock.hits(), 4);
        assert_eq!(mock.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn no_key_configured_means_no_authorization() {
    bounded(async {
        let mock = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let res = post(
            &client(),
            gw,
            chat("m", false),
            &[("authorization", "Bearer client-key")],
        )
        .await;
        assert_eq!(res.status(), 200);
        let s = &mock.seen()[0];
        assert!(!s.headers.contains_key("authorization"));
        // No alias: the body goes through with the client's model.
        assert_eq!(s.json()["model"], "m");
    })
    .await;
}

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
async fn unknown_model_is_404() {
    bounded(async {
        let mock = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let res = post(&client(), gw, chat("other", false), &[]).await;
        assert_eq!(res.status(), 404);
        assert_eq!(error_code(&text(res).await), "model_not_found");
        assert_eq!(mock.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn all_replicas_ejected_is_400_model_not_ready() {
    bounded(async {
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(refused_url()))
                .replica(UpstreamConfig::new(refused_url()))
                .eject_after(1),
        ))
        .await;
        let c = client();
        // Both replicas are tried and refuse: 502, and both are ejected.
        let res = post(&c, gw, chat("m", false), &[]).await;
        assert_eq!(res.status(), 502);
        assert_eq!(error_code(&text(res).await), "bad_gateway");
        let res = post(&c, gw, chat("m", false), &[]).await;
        assert_eq!(res.status(), 400);
        let body = text(res).await;
        assert_eq!(error_code(&body), "model_not_ready");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    })
    .await;
}

#[tokio::test]
async fn failover_on_refused_connection() {
    bounded(async {
        let good = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(refused_url()))
                .replica(UpstreamConfig::new(good.url()))
                .eject_after(0),
        ))
        .await;
        let c = client();
        for _ in 0..20 {
            let res = post(&c, gw, chat("m", false), &[]).await;
            assert_eq!(res.status(), 200);
        }
        assert_eq!(good.hits(), 20);
    })
    .await;
}

#[tokio::test]
async fn failover_on_5xx_and_passthrough_when_all_fail() {
    bounded(async {
        let bad = Mock::failing(503).await;
        let good = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(bad.url()))
                .replica(UpstreamConfig::new(good.url()))
                .eject_after(0),
        ))
        .await;
        let c = client();
        for _ in 0..20 {
            let res = post(&c, gw, chat("m", false), &[]).await;
            assert_eq!(res.status(), 200);
        }
        assert_eq!(good.hits(), 20);
        assert!(bad.hits() > 0, "the 5xx replica was never tried");

        // Every replica fails: the last upstream 5xx is passed through, status and body.
        let bad2 = Mock::failing(500).await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(bad.url()))
                .replica(UpstreamConfig::new(bad2.url())),
        ))
        .await;
        let res = post(&c, gw, chat("m", false), &[]).await;
        assert!(res.status() == 500 || res.status() == 503);
        assert_eq!(error_code(&text(res).await), "mock");
        assert_eq!(bad2.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn upstream_4xx_is_passed_through_and_not_retried() {
    bounded(async {
        let a = Mock::failing(429).await;
        let b = Mock::failing(429).await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(a.url()))
                .replica(UpstreamConfig::new(b.url())),
        ))
        .await;
        let res = post(&client(), gw, chat("m", false), &[]).await;
        assert_eq!(res.status(), 429);
        assert_eq!(error_code(&text(res).await), "mock");
        assert_eq!(a.hits() + b.hits(), 1);
    })
    .await;
}

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

/// A mock that sends one chunk and then holds the stream open until the connection goes.
async fn stalling_mock() -> Mock {
    Mock::start(|_| async {
        let (tx, _dropped, res) = sse();
        tokio::spawn(async move {
            tx.send(Ok(chunk("first"))).await.ok();
            tx.closed().await;
        });
        res
    })
    .await
}

async fn assert_stream_ends_with_error(gw: std::net::SocketAddr, code: &str) {
    let started = Instant::now();
    let res = post(&client(), gw, chat("m", true), &[]).await;
    assert_eq!(res.status(), 200);
    let body = text(res).await;
    let data = data_lines(&body);
    assert_eq!(data.len(), 2, "{body}");
    assert!(data[0].contains("first"));
    let err: serde_json::Value = serde_json::from_str(data[1]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    assert_eq!(err["error"]["code"], code);
    assert!(err["error"]["param"].is_null());
    assert!(err["error"]["message"].is_string());
    assert!(!body.contains("[DONE]"), "{body}");
    assert!(body.ends_with("\n\n"));
    assert!(started.elapsed() < Duration::from_secs(10));
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

#[tokio::test]
async fn load_spreads_over_replicas_by_weight() {
    bounded(async {
        // Each upstream answer is held until 8 requests are waiting in total, so that the
        // gateway sees real concurrency and balances by outstanding requests.
        struct Gate {
            waiting: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
        }
        let gate = Arc::new(Gate {
            waiting: Mutex::new(Vec::new()),
        });
        let total = Arc::new(AtomicUsize::new(0));
        let make = |gate: Arc<Gate>, total: Arc<AtomicUsize>| {
            Mock::start(move |s| {
                let (gate, total) = (gate.clone(), total.clone());
                async move {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    {
                        let mut w = gate.waiting.lock().unwrap();
                        w.push(tx);
                        let n = total.fetch_add(1, Ordering::SeqCst) + 1;
                        if w.len() >= 8 || n >= 200 {
                            for t in w.drain(..) {
                                t.send(()).ok();
                            }
                        }
                    }
                    rx.await.ok();
                    completion(&s)
                }
            })
        };
        let a = make(gate.clone(), total.clone()).await;
        let b = make(gate.clone(), total.clone()).await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(a.url()).weight(1))
                .replica(UpstreamConfig::new(b.url()).weight(3)),
        ))
        .await;
        let c = client();
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (c, next) = (c.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < 200 {
                    let res = post(&c, gw, chat("m", false), &[]).await;
                    assert_eq!(res.status(), 200);
                    text(res).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (na, nb) = (a.hits(), b.hits());
        assert_eq!(na + nb, 200);
        eprintln!("split over weights 1:3: a={na} b={nb}");
        // 1:3 would be 50:150; loose bounds.
        assert!((20..=90).contains(&na), "a={na} b={nb}");
    })
    .await;
}

#[tokio::test]
async fn passive_ejection_and_readmission() {
    bounded(async {
        let healthy = Arc::new(AtomicBool::new(false));
        let h = healthy.clone();
        let flaky = Mock::start(move |s| {
            let ok = h.load(Ordering::SeqCst);
            async move {
                if ok {
                    completion(&s)
                } else {
                    json(500, serde_json::json!({"error":{"message":"x","type":"server_error","param":null,"code":"mock"}}))
                }
            }
        })
        .await;
        let good = Mock::ok().await;
        let readmit = Duration::from_millis(200);
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(flaky.url()))
                .replica(UpstreamConfig::new(good.url()))
                .eject_after(2)
                .readmit_after(readmit),
        ))
        .await;
        let c = client();
        // Until the flaky replica has failed twice, requests fail over to the good one.
        let mut sent = 0;
        // A lower bound of the ejection time: the start of the request that caused it.
        let mut ejected_at = Instant::now();
        while flaky.hits() < 2 {
            ejected_at = Instant::now();
            assert_eq!(post(&c, gw, chat("m", false), &[]).await.status(), 200);
            sent += 1;
            assert!(sent < 1000, "the flaky replica is never picked");
        }
        // Ejected: the next requests all go to the good replica.
        for _ in 0..20 {
            assert_eq!(post(&c, gw, chat("m", false), &[]).await.status(), 200);
        }
        let after = flaky.hits();
        assert!(after == 2 || ejected_at.elapsed() >= readmit, "hit while ejected");
        // It recovers; once `readmit_after` has passed it is picked again.
        healthy.store(true, Ordering::SeqCst);
        while flaky.hits() == after {
            assert_eq!(post(&c, gw, chat("m", false), &[]).await.status(), 200);
        }
        assert!(ejected_at.elapsed() >= readmit);
    })
    .await;
}

#[tokio::test]
async fn streams_failing_mid_way_eject_a_replica() {
    bounded(async {
        let broken = Mock::start(|_| async {
            let (tx, _d, res) = sse();
            tokio::spawn(async move {
                tx.send(Ok(chunk("a"))).await.ok();
                tx.send(Err("boom".into())).await.ok();
            });
            res
        })
        .await;
        let good = Mock::start(|_| async {
            let (tx, _d, res) = sse();
            tokio::spawn(async move {
                tx.send(Ok(chunk("a"))).await.ok();
            });
            res
        })
        .await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(broken.url()))
                .replica(UpstreamConfig::new(good.url()))
                .eject_after(2)
                .readmit_after(Duration::from_secs(600)),
        ))
        .await;
        let c = client();
        let mut sent = 0;
        while broken.hits() < 2 {
            let body = text(post(&c, gw, chat("m", true), &[]).await).await;
            assert!(
                body.contains("[DONE]") || body.contains("bad_gateway"),
                "{body}"
            );
            sent += 1;
            assert!(sent < 1000, "the broken replica is never picked");
        }
        for _ in 0..10 {
            let body = text(post(&c, gw, chat("m", true), &[]).await).await;
            assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        }
        assert_eq!(broken.hits(), 2);
    })
    .await;
}

#[tokio::test]
async fn fallback_model_when_primary_is_unavailable() {
    bounded(async {
        let backup = Mock::ok().await;
        let router = ModelRouter::builder()
            .upstream(
                "primary",
                RouteConfig::new()
                    .replica(UpstreamConfig::new(refused_url()))
                    .eject_after(1)
                    .fallback("backup"),
            )
            .unwrap()
            .upstream(
                "backup",
                RouteConfig::new().replica(UpstreamConfig::new(backup.url())),
            )
            .unwrap()
            .build();
        let gw = gateway(router).await;
        let c = client();
        // The only replica refuses: 502, and it is ejected.
        assert_eq!(
            post(&c, gw, chat("primary", false), &[]).await.status(),
            502
        );
        // Now `primary` is unavailable: `backup` serves, under its own name.
        let res = post(&c, gw, chat("primary", false), &[]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(backup.seen()[0].json()["model"], "backup");
    })
    .await;
}

#[tokio::test]
async fn fallback_to_an_in_process_service() {
    bounded(async {
        let router = ModelRouter::builder()
            .upstream(
                "primary",
                RouteConfig::new()
                    .replica(UpstreamConfig::new(refused_url()))
                    .eject_after(1)
                    .fallback("echo"),
            )
            .unwrap()
            .service("echo", EchoModel::new())
            .build();
        assert!(router.is_ready("primary"));
        let gw = gateway(router.clone()).await;
        let c = client();
        assert_eq!(
            post(&c, gw, chat("primary", false), &[]).await.status(),
            502
        );
        let res = post(&c, gw, chat("primary", false), &[]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.extensions().get::<RoutedModel>(),
            None,
            "extensions are not sent over HTTP"
        );
        let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
    })
    .await;
}

#[tokio::test]
async fn unknown_fallback_is_a_build_error() {
    let err = ModelRouter::builder()
        .upstream(
            "a",
            RouteConfig::new()
                .replica(UpstreamConfig::new(refused_url()))
                .fallback("nope"),
        )
        .unwrap()
        .try_build()
        .unwrap_err();
    assert_eq!(err.model(), "a");
    assert!(err.to_string().contains("nope"));
    assert!(
        ModelRouter::builder()
            .upstream("a", RouteConfig::new())
            .is_err()
    );
}

#[tokio::test]
async fn active_health_check_takes_a_replica_out_and_back() {
    bounded(async {
        let healthy = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Notify::new());
        let (h, p) = (healthy.clone(), probes.clone());
        let mock = Mock::start(move |s| {
            let ok = h.load(Ordering::SeqCst);
            let p = p.clone();
            async move {
                // The default path is relative to the base URL (`…/v1`), not to the host root.
                if s.path() == "/v1/models" {
                    assert_eq!(s.method, http::Method::GET);
                    assert_eq!(s.headers["authorization"], "Bearer k");
                    p.notify_one();
                    json(if ok { 200 } else { 503 }, serde_json::json!({}))
                } else {
                    completion(&s)
                }
            }
        })
        .await;
        let router = router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(mock.url()).api_key("k"))
                .health_check(HealthCheck::default().interval(Duration::from_millis(50))),
        );
        let gw = gateway(router.clone()).await;
        let c = client();
        // Two probes answered: the first one's verdict is recorded.
        probes.notified().await;
        probes.notified().await;
        assert!(!router.is_ready("m"));
        let res = post(&c, gw, chat("m", false), &[]).await;
        assert_eq!(res.status(), 400);
        assert_eq!(error_code(&text(res).await), "model_not_ready");

        healthy.store(true, Ordering::SeqCst);
        probes.notified().await;
        probes.notified().await;
        assert!(router.is_ready("m"));
        assert_eq!(post(&c, gw, chat("m", false), &[]).await.status(), 200);
    })
    .await;
}

/// The probe path goes under the base URL; `..` reaches the host root (vLLM's `/health`).
#[tokio::test]
async fn probe_paths_are_relative_to_the_base_url() {
    bounded(async {
        for (path, expected) in [
            ("/models", "/v1/models"),
            ("/../health", "/health"),
            ("/../v2/ready?deep=1", "/v2/ready"),
        ] {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let mock = Mock::start(move |s| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(s.path().to_owned());
                    json(200, serde_json::json!({}))
                }
            })
            .await;
            let router = router(
                "m",
                RouteConfig::new()
                    .replica(UpstreamConfig::new(mock.url()))
                    .health_check(HealthCheck::new(path).interval(Duration::from_millis(20))),
            );
            assert_eq!(rx.recv().await.as_deref(), Some(expected), "{path}");
            drop(router);
        }
    })
    .await;
}

//! Routing over replicas: balancing, failover, passive and active health, fallbacks.

use super::*;

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
async fn sequential_requests_split_by_weight() {
    bounded(async {
        // One request at a time: every replica is idle when the next is picked. Before the
        // fix, weights 3 and 1 went 100/0.
        let a = Mock::ok().await;
        let b = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new()
                .replica(UpstreamConfig::new(a.url()).weight(3))
                .replica(UpstreamConfig::new(b.url()).weight(1)),
        ))
        .await;
        let c = client();
        for _ in 0..200 {
            let res = post(&c, gw, chat("m", false), &[]).await;
            assert_eq!(res.status(), 200);
            text(res).await;
        }
        let (na, nb) = (a.hits(), b.hits());
        assert_eq!(na + nb, 200);
        // 3:1 would be 150:50; loose bounds (binomial, sd ≈ 6).
        assert!((120..=180).contains(&na), "a={na} b={nb}");
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
        // The only replica refuses: the request itself goes to `backup` (nothing had reached
        // the client), under its own name; the replica is ejected.
        let res = post(&c, gw, chat("primary", false), &[]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(backup.seen()[0].json()["model"], "backup");
        // Now `primary` is unavailable at arrival: `backup` serves directly.
        let res = post(&c, gw, chat("primary", false), &[]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(backup.seen().len(), 2);
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
                    .fallback("echo"),
            )
            .unwrap()
            .service("echo", EchoModel::new())
            .build();
        assert!(router.is_ready("primary"));
        let gw = gateway(router.clone()).await;
        let c = client();
        for _ in 0..3 {
            // Every request is served: the failed attempt's 502 never reaches the client.
            let res = post(&c, gw, chat("primary", false), &[]).await;
            assert_eq!(res.status(), 200);
        }
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

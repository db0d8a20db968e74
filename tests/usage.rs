//! Usage accounting end to end: real HTTP through the whole gateway, records read from a sink.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatgate::gateway::Gateway;
use chatgate::route::{ModelRouter, RouteConfig};
use chatgate::upstream::UpstreamConfig;
use chatgate::usage::{
    MemorySink, MetricsRoute, MetricsSink, Price, Prices, SinkFuture, UsageHandle, UsageLayer,
    UsageMeterLayer, UsageRecord, UsageRoute, UsageSink,
};
use chatgate::validate::ValidateConfig;
use chatgate::{EchoModel, ValidateLayer};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::mock_upstream::{Mock, MockBody, chunk, sse};
use support::{HttpClient, RecordChan, Server, client, next_chunk, post, start_with, text};
use tokio::sync::mpsc;
use tower::ServiceBuilder;

struct Env {
    server: Server,
    client: HttpClient,
    records: mpsc::UnboundedReceiver<UsageRecord>,
    handle: UsageHandle,
}

const ADMIN: &str = "admin-secret";

impl Env {
    async fn new(upstream: Option<&Mock>) -> Self {
        let mut router = ModelRouter::builder()
            .service("echo", EchoModel::new())
            .service("qwen", EchoModel::new());
        if let Some(m) = upstream {
            router = router
                .upstream(
                    "up",
                    RouteConfig::new()
                        .max_attempts(1)
                        .replica(UpstreamConfig::new(m.url())),
                )
                .unwrap();
        }
        let router = router.build();
        let (tx, rx) = mpsc::unbounded_channel();
        let memory = Arc::new(MemorySink::new());
        let metrics = Arc::new(MetricsSink::new(["echo", "qwen"], 2));
        let handle = UsageHandle::builder()
            .sink(Arc::new(RecordChan(tx)))
            // Records as soon as the writer runs: the tests wait for each one.
            .linger(Duration::ZERO)
            .sink(memory.clone())
            .sink(metrics.clone())
            .prices(Prices::new().with(
                "qwen",
                Price {
                    input_per_million: 0.15,
                    output_per_million: 0.60,
                },
            ))
            .build();
        metrics.watch(&handle);
        let models = router.models().to_vec();
        let cfg = ValidateConfig {
            max_body: 4096,
            ..ValidateConfig::default()
        };
        let chat = ServiceBuilder::new()
            .layer(UsageLayer::new(handle.clone()))
            .layer(ValidateLayer::with_config(cfg))
            .layer(UsageMeterLayer::new().max_body(64 * 1024))
            .service(router);
        let admin = chatgate::auth::KeyDigest::of(ADMIN);
        let gateway = Gateway::with_stack(chat, models)
            .with_route("/metrics", MetricsRoute::new(metrics))
            .with_route("/v1/usage", UsageRoute::new(memory, Some(admin)));
        Self {
            server: start_with(gateway).await,
            client: client(),
            records: rx,
            handle,
        }
    }

    async fn record(&mut self) -> UsageRecord {
        tokio::time::timeout(Duration::from_secs(10), self.records.recv())
            .await
            .expect("a record within 10 s")
            .expect("the sink is open")
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(format!("http://{}{path}", self.server.addr));
        if let Some(a) = auth {
            req = req.header("authorization", format!("Bearer {a}"));
        }
        let (status, _, body) =
            support::send(&self.client, req.body(Full::new(Bytes::new())).unwrap()).await;
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

fn usage_of(v: &serde_json::Value) -> (u64, u64, u64) {
    let u = &v["usage"];
    (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
        u["total_tokens"].as_u64().unwrap(),
    )
}

fn tokens(r: &UsageRecord) -> (u64, u64, u64) {
    (r.prompt_tokens, r.completion_tokens, r.total_tokens)
}

/// The events of an SSE body, as JSON (`None` for `[DONE]`).
fn events(body: &str) -> Vec<Option<serde_json::Value>> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let d = e.strip_prefix("data: ").unwrap();
            (d != "[DONE]").then(|| serde_json::from_str(d).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn non_streamed_counts_are_the_models() {
    let mut env = Env::new(None).await;
    let body = serde_json::json!({"model": "qwen", "messages": [{"role": "user", "content": "Hello there, general Kenobi"}], "n": 3});
    let res = post(
        &env.client,
        env.server.addr,
        body,
        &[("x-request-id", "req-1")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    let r = env.record().await;
    assert_eq!(tokens(&r), usage_of(&v));
    assert!(r.completion_tokens > 0 && !r.estimated && !r.partial && !r.streamed);
    assert_eq!(r.request_id.as_deref(), Some("req-1"));
    assert_eq!(r.model.as_deref(), Some("qwen"));
    assert_eq!(r.routed_model.as_deref(), Some("qwen"));
    assert_eq!(r.status, 200);
    assert_eq!(r.finish_reasons, ["stop", "stop", "stop"]);
    let cost = (r.prompt_tokens as f64 * 0.15 + r.completion_tokens as f64 * 0.60) / 1e6;
    assert!((r.cost.unwrap() - cost).abs() < 1e-12);
    assert!(r.started_at_ms <= r.ended_at_ms && r.duration_ms >= 0.0);
}

#[tokio::test]
async fn streams_are_metered_exactly_and_the_usage_chunk_is_hidden_unless_asked() {
    let mut env = Env::new(None).await;
    let msg = "one two three four five";
    // Asked for: the client sees the usage chunk.
    let asked = serde_json::json!({"model": "echo", "stream": true, "n": 2,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": msg}]});
    let body = text(post(&env.client, env.server.addr, asked, &[]).await).await;
    let ev = events(&body);
    assert_eq!(ev.last(), Some(&None), "ends with [DONE]");
    let usage_chunk = ev[ev.len() - 2].clone().unwrap();
    let reported = usage_of(&usage_chunk);
    let r = env.record().await;
    assert_eq!(tokens(&r), reported);
    assert!(r.streamed && !r.estimated && !r.partial && r.ttft_ms.is_some());

    // The echo model writes `"usage":null` in every other chunk once usage is asked for.
    assert!(
        ev[..ev.len() - 2]
            .iter()
            .flatten()
            .all(|e| e["usage"].is_null() && e.as_object().unwrap().contains_key("usage"))
    );

    // Not asked for (absent, then false): the same counts, `[DONE]` last, and no trace of the
    // usage the gateway asked for: no usage chunk, no `"usage":null` in the others.
    for options in [
        serde_json::Value::Null,
        serde_json::json!({"include_usage": false}),
    ] {
        let mut req = serde_json::json!({"model": "echo", "stream": true, "n": 2,
            "messages": [{"role": "user", "content": msg}]});
        if !options.is_null() {
            req["stream_options"] = options;
        }
        let body = text(post(&env.client, env.server.addr, req, &[]).await).await;
        let ev = events(&body);
        assert_eq!(ev.last(), Some(&None), "ends with [DONE]: {body}");
        assert!(ev.len() > 3, "{body}");
        for e in ev.iter().flatten() {
            assert!(e.get("usage").is_none(), "no usage: {e}");
            assert_ne!(e["choices"], serde_json::json!([]), "no usage chunk: {e}");
        }
        let r = env.record().await;
        assert_eq!(tokens(&r), reported, "exact without include_usage");
        assert!(!r.estimated);
    }
}

#[tokio::test]
async fn tool_calls_are_counted() {
    let mut env = Env::new(None).await;
    let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]);
    for stream in [false, true] {
        let mut req = serde_json::json!({"model": "echo", "stream": stream, "tools": tools,
            "messages": [{"role": "user", "content": "call get_weather {\"city\": \"Paris\"}"}]});
        if stream {
            req["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let body = text(post(&env.client, env.server.addr, req, &[]).await).await;
        assert!(body.contains("get_weather"), "{body}");
        let reported = if stream {
            let ev = events(&body);
            usage_of(ev[ev.len() - 2].as_ref().unwrap())
        } else {
            usage_of(&serde_json::from_str(&body).unwrap())
        };
        let r = env.record().await;
        assert_eq!(tokens(&r), reported);
        assert_eq!(r.finish_reasons, ["tool_calls"]);
    }
}

#[tokio::test]
async fn an_upstream_without_usage_is_estimated() {
    let mock = Mock::start(|_| async {
        let (tx, _d, res) = sse();
        tokio::spawn(async move {
            for w in ["a", "b", "c"] {
                tx.send(Ok(chunk(w))).await.ok();
            }
            tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
                .await
                .ok();
        });
        res
    })
    .await;
    let mut env = Env::new(Some(&mock)).await;
    let body = text(post(&env.client, env.server.addr, support::chat("up", true), &[]).await).await;
    assert!(body.ends_with("data: [DONE]\n\n"));
    // The upstream was asked for usage although the client was not.
    assert_eq!(
        mock.seen()[0].json()["stream_options"]["include_usage"],
        true
    );
    let r = env.record().await;
    assert!(r.estimated && !r.partial);
    assert_eq!(r.completion_tokens, 3);
    assert!(r.prompt_tokens > 0);
    assert_eq!(r.upstream.as_deref(), Some(mock.addr.to_string().as_str()));
}

/// A mock answering every request 200 with `body` as JSON, and what a non-streamed request
/// through the gateway gets, with the gateway's environment (for its record).
async fn answered(body: &'static [u8]) -> (Mock, Env, http::Response<hyper::body::Incoming>) {
    let mock = Mock::start(move |_| async move {
        let mut res = http::Response::new(MockBody::full(Bytes::from_static(body)));
        res.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        res
    })
    .await;
    let env = Env::new(Some(&mock)).await;
    let res = post(
        &env.client,
        env.server.addr,
        support::chat("up", false),
        &[],
    )
    .await;
    (mock, env, res)
}

#[tokio::test]
async fn a_200_that_is_not_a_completion_is_a_502() {
    let (_mock, mut env, res) = answered(b"{not json").await;
    assert_eq!(res.status(), 502);
    let v: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    let r = env.record().await;
    assert_eq!(r.status, 502);
    assert_eq!(r.error.as_deref(), Some("invalid_response"));
    assert_eq!(r.total_tokens, 0);
}

#[tokio::test]
async fn a_completion_whose_usage_cannot_be_read_passes_and_says_so() {
    let (_mock, mut env, res) = answered(
        br#"{"model":"up","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1.5}}"#,
    )
    .await;
    assert_eq!(res.status(), 200);
    let r = env.record().await;
    assert_eq!(r.status, 200);
    assert!(r.usage_unknown && !r.estimated);
    assert_eq!(r.total_tokens, 0);
    assert_eq!(r.error, None);
}

#[tokio::test]
async fn a_stream_that_dies_and_a_client_that_leaves_leave_partial_records() {
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(());
    let mock = Mock::start(move |s| {
        let mut hold = hold_rx.clone();
        async move {
            let die = s.json()["messages"][0]["content"] == "die";
            let (tx, _d, res) = sse();
            tokio::spawn(async move {
                tx.send(Ok(chunk("first"))).await.ok();
                tx.send(Ok(chunk("second"))).await.ok();
                if die {
                    tx.send(Err("reset".into())).await.ok();
                } else {
                    let _ = hold.changed().await;
                }
            });
            res
        }
    })
    .await;
    let mut env = Env::new(Some(&mock)).await;
    let req = serde_json::json!({"model": "up", "stream": true, "messages": [{"role": "user", "content": "die"}]});
    let body = text(post(&env.client, env.server.addr, req, &[]).await).await;
    assert!(body.contains("\"error\""), "{body}");
    let r = env.record().await;
    assert!(r.partial && r.estimated, "{r:?}");
    assert_eq!(r.completion_tokens, 2);
    assert_eq!(r.status, 200);
    assert!(r.error.is_some());

    let req = serde_json::json!({"model": "up", "stream": true, "messages": [{"role": "user", "content": "stay"}]});
    let res = post(&env.client, env.server.addr, req, &[]).await;
    let mut body = res.into_body();
    let first = next_chunk(&mut body).await.unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    let r = env.record().await;
    assert!(r.partial, "{r:?}");
    assert_eq!(r.error.as_deref(), Some("client_closed"));
    drop(hold_tx);
}

#[tokio::test]
async fn concurrent_load_leaves_one_record_per_request_and_exact_sums() {
    let failing = Mock::failing(500).await;
    let mut env = Env::new(Some(&failing)).await;
    const N: usize = 60;
    let mut tasks = Vec::new();
    for i in 0..N {
        let client = env.client.clone();
        let addr = env.server.addr;
        tasks.push(tokio::spawn(async move {
            let content = format!("request number {i} says hello");
            let (body, kind) = match i % 6 {
                0 => (serde_json::json!({"model": "echo", "messages": [{"role": "user", "content": content}]}), "json"),
                1 => (serde_json::json!({"model": "echo", "stream": true, "messages": [{"role": "user", "content": content}]}), "stream"),
                2 => (serde_json::json!({"model": "qwen", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": content}]}), "stream_usage"),
                3 => (serde_json::json!({"model": "echo", "messages": []}), "422"),
                4 => (serde_json::json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}), "404"),
                _ => (serde_json::json!({"model": "up", "messages": [{"role": "user", "content": "x"}]}), "500"),
            };
            let res = post(&client, addr, body.clone(), &[]).await;
            let status = res.status().as_u16();
            let text = text(res).await;
            let expected = match kind {
                "json" => usage_of(&serde_json::from_str(&text).unwrap()),
                "stream" | "stream_usage" => {
                    // Ask the model again with usage to know the exact counts.
                    let mut again = body.clone();
                    again["stream"] = false.into();
                    let v: serde_json::Value =
                        serde_json::from_str(&support::text(post(&client, addr, again, &[]).await).await).unwrap();
                    usage_of(&v)
                }
                _ => (0, 0, 0),
            };
            (status, expected, kind)
        }));
    }
    let mut expected_sum = 0;
    let mut requests = 0;
    for t in tasks {
        let (status, usage, kind) = t.await.unwrap();
        match kind {
            "422" => assert_eq!(status, 422),
            "404" => assert_eq!(status, 404),
            "500" => assert_eq!(status, 500),
            _ => assert_eq!(status, 200),
        }
        requests += if kind.starts_with("stream") { 2 } else { 1 };
        expected_sum += 2 * usage.2
            - if kind.starts_with("stream") {
                0
            } else {
                usage.2
            };
    }
    env.handle.flush().await;
    let mut records = Vec::new();
    while let Ok(r) = env.records.try_recv() {
        records.push(r);
    }
    assert_eq!(records.len(), requests, "one record per request");
    let sum: u64 = records.iter().map(|r| r.total_tokens).sum();
    assert_eq!(sum, expected_sum);
    assert!(records.iter().all(|r| !r.estimated && !r.partial));
    assert_eq!(records.iter().filter(|r| r.status == 422).count(), N / 6);
    assert_eq!(records.iter().filter(|r| r.status == 404).count(), N / 6);
    assert_eq!(records.iter().filter(|r| r.status == 500).count(), N / 6);

    // /metrics parses, and agrees.
    let (status, metrics) = env.get("/metrics", None).await;
    assert_eq!(status, 200);
    let helps: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("# HELP "))
        .collect();
    assert!(helps.len() >= 6, "{helps:?}");
    assert!(
        helps.iter().all(|h| h.ends_with('.') && !h.ends_with("..")),
        "{helps:?}"
    );
    let lines = metrics.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v)
                | prometheus_parse::Value::Gauge(v) => v,
                prometheus_parse::Value::Histogram(ref h) => h.last().map_or(0.0, |b| b.count),
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(value("chatgate_requests_total", None) as usize, requests);
    assert_eq!(
        value("chatgate_rejections_total", Some(("reason", "invalid"))) as usize,
        N / 6
    );
    assert_eq!(
        value(
            "chatgate_rejections_total",
            Some(("reason", "model_not_found"))
        ) as usize,
        N / 6
    );
    assert_eq!(
        value("chatgate_upstream_failures_total", None) as usize,
        N / 6
    );
    assert_eq!(
        value("chatgate_usage_records_total", None) as usize,
        requests
    );
    assert_eq!(value("chatgate_usage_records_dropped_total", None), 0.0);
    // The token histogram's sums are the records' sums.
    let token_sum: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("gen_ai_client_token_usage_sum{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(token_sum as u64, expected_sum);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "gen_ai_client_token_usage"
                && matches!(s.value, prometheus_parse::Value::Histogram(_)))
    );
    assert!(metrics.contains("gen_ai_server_request_duration_seconds_bucket"));
    assert!(metrics.contains("gen_ai_token_type=\"input\""));
    assert!(
        metrics.contains("gen_ai_request_model=\"other\""),
        "unknown models share `other`"
    );

    // /v1/usage: admin only, with the spend.
    assert_eq!(env.get("/v1/usage", None).await.0, 401);
    assert_eq!(env.get("/v1/usage", Some("wrong")).await.0, 401);
    let (status, usage) = env.get("/v1/usage?model=qwen", Some(ADMIN)).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&usage).unwrap();
    assert!(v["total"]["cost"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["data"][0]["model"], "qwen");
    let (_, all) = env.get("/v1/usage", Some(ADMIN)).await;
    let v: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(v["total"]["total_tokens"].as_u64().unwrap(), expected_sum);
    assert_eq!(v["total"]["requests"].as_u64().unwrap() as usize, requests);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_recorded_413() {
    let mut env = Env::new(None).await;
    let big = "x".repeat(8000);
    let res = post(
        &env.client,
        env.server.addr,
        serde_json::json!({"model": "echo", "messages": [{"role": "user", "content": big}]}),
        &[],
    )
    .await;
    assert_eq!(res.status(), 413);
    let _ = res.into_body().collect().await;
    let r = env.record().await;
    assert_eq!(r.status, 413);
    assert_eq!(r.total_tokens, 0);
    assert!(r.model.is_none());
    assert!(r.error.is_some());
}

#[tokio::test]
async fn a_jsonl_file_gets_every_record() {
    use chatgate::usage::{FlushPolicy, JsonlSink};
    let dir = std::env::temp_dir().join(format!("chatgate-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("u-{:?}.jsonl", std::thread::current().id()));
    let _ = std::fs::remove_file(&path);
    let sink = Arc::new(JsonlSink::open(&path, FlushPolicy::EveryBatch).unwrap());
    let handle = UsageHandle::builder().sink(sink).build();
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let chat = ServiceBuilder::new()
        .layer(UsageLayer::new(handle.clone()))
        .layer(ValidateLayer::new())
        .layer(UsageMeterLayer::new())
        .service(router);
    use tower::ServiceExt;
    for _ in 0..3 {
        let req = Request::post("/v1/chat/completions")
            .body(Full::new(Bytes::from(
                r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#,
            )))
            .unwrap();
        let res = chat.clone().oneshot(req).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
    }
    // Log rotation: move the file away, reopen, write more.
    let rotated = path.with_extension("1");
    std::fs::rename(&path, &rotated).unwrap();
    handle.reopen().await;
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(
            r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let _ = chat
        .clone()
        .oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await;
    handle.close().await;
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert_eq!(old.lines().count(), 3);
    assert_eq!(new.lines().count(), 1);
    let r: UsageRecord = serde_json::from_str(new.lines().next().unwrap()).unwrap();
    assert_eq!(r.model.as_deref(), Some("echo"));
    assert!(r.total_tokens > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_place_in_the_channel_records_are_dropped_and_counted() {
    // A sink that never finishes: the writer stops taking records.
    #[derive(Debug)]
    struct Stuck;
    impl UsageSink for Stuck {
        fn write<'a>(&'a self, _: &'a [UsageRecord]) -> SinkFuture<'a> {
            Box::pin(std::future::pending())
        }
    }
    let handle = UsageHandle::builder()
        .sink(Arc::new(Stuck))
        .capacity(1)
        .batch(1)
        .sink_queue(1)
        .build();
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let chat = ServiceBuilder::new()
        .layer(UsageLayer::new(handle.clone()))
        .layer(ValidateLayer::new())
        .layer(UsageMeterLayer::new())
        .service(router);
    use tower::ServiceExt;
    for _ in 0..10 {
        let req = Request::post("/v1/chat/completions")
            .body(Full::new(Bytes::from(
                r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#,
            )))
            .unwrap();
        let _ = chat
            .clone()
            .oneshot(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await;
        tokio::task::yield_now().await;
    }
    assert_eq!(handle.emitted() + handle.dropped(), 10);
    assert!(handle.dropped() > 0);
}

#[tokio::test]
async fn made_up_model_names_do_not_grow_the_usage_aggregate() {
    let mut env = Env::new(None).await;
    for i in 0..20 {
        let res = post(
            &env.client,
            env.server.addr,
            serde_json::json!({"model": format!("no-such-model-{i}"), "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
        .await;
        assert_eq!(res.status(), 404);
        let _ = res.into_body().collect().await;
        // Every request still has its record, with the model asked for.
        let model = env.record().await.model;
        assert_eq!(
            model.as_deref(),
            Some(format!("no-such-model-{i}").as_str())
        );
    }
    env.handle.flush().await;
    let (status, usage) = env.get("/v1/usage", Some(ADMIN)).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&usage).unwrap();
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["model"], "");
    assert_eq!(rows[0]["requests"], 20);
    assert_eq!(rows[0]["errors"], 20);
}

/// A body that yields its frames in order: data, or an error.
struct Frames(Vec<Result<Bytes, &'static str>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.0.is_empty() {
            return std::task::Poll::Ready(None);
        }
        std::task::Poll::Ready(Some(match self.0.remove(0) {
            Ok(data) => Ok(http_body::Frame::data(data)),
            Err(e) => Err(std::io::Error::other(e)),
        }))
    }
}

/// An in-process service answering with `frames`, behind the usage layers (the meter reading
/// at most `max_body` bytes): the status and body the client gets, and the request's record.
async fn in_process(
    frames: Vec<Result<Bytes, &'static str>>,
    max_body: usize,
) -> (StatusCode, Result<Bytes, String>, UsageRecord) {
    use tower::ServiceExt;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = UsageHandle::builder()
        .sink(Arc::new(RecordChan(tx)))
        // Records as soon as the writer runs: the tests wait for each one.
        .linger(Duration::ZERO)
        .build();
    let inner = tower::service_fn(move |_: Request<chatgate::ValidatedRequest>| {
        let frames = Frames(frames.clone());
        async move {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(frames)
                    .unwrap(),
            )
        }
    });
    let chat = ServiceBuilder::new()
        .layer(UsageLayer::new(handle.clone()))
        .layer(ValidateLayer::new())
        .layer(UsageMeterLayer::new().max_body(max_body))
        .service(inner);
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(
            r#"{"model":"local","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let res = chat.oneshot(req).await.unwrap();
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    handle.close().await;
    (status, body, rx.recv().await.expect("one record"))
}

/// Answers from in-process services are read by the meter itself (an upstream's come read and
/// checked by the upstream client): whole when they fit, passed on unread when they do not, a
/// 502 when the body fails or is not a chat completion; one record each, saying which.
#[tokio::test]
async fn the_meter_reads_an_in_process_answer_itself() {
    let answer: &[u8] = br#"{"id":"c","object":"chat.completion","model":"local","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    let halves = || {
        let (a, b) = answer.split_at(40);
        vec![Ok(Bytes::from(a)), Ok(Bytes::from(b))]
    };

    let (status, body, r) = in_process(halves(), 64 * 1024).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), answer);
    assert_eq!((r.prompt_tokens, r.completion_tokens), (3, 2));
    assert_eq!(r.finish_reasons, ["stop"]);
    assert_eq!(r.response_model.as_deref(), Some("local"));
    assert!(!r.usage_unknown && r.error.is_none());

    // Longer than the meter reads: handed on whole and unchanged, its usage unknown.
    let (status, body, r) = in_process(halves(), 50).await;
    assert_eq!(status, 200);
    assert_eq!(body.unwrap(), answer);
    assert!(r.usage_unknown);
    assert_eq!(r.total_tokens, 0);

    let (status, body, r) = in_process(vec![Ok(Bytes::from_static(b"{not json"))], 1024).await;
    assert_eq!(status, 502);
    assert!(body.unwrap().starts_with(b"{\"error\""));
    assert_eq!(
        (r.status, r.error.as_deref()),
        (502, Some("invalid_response"))
    );

    let (status, body, r) =
        in_process(vec![Ok(Bytes::from(&answer[..40])), Err("cut")], 1024).await;
    assert_eq!(status, 502);
    assert!(body.unwrap().starts_with(b"{\"error\""));
    assert_eq!(
        (r.status, r.error.as_deref()),
        (502, Some("upstream_failed"))
    );
}

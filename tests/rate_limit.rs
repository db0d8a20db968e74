//! The rate limiter: contract vector S08 over real HTTP, and exactness with a paused clock
//! (bursts, refunds, disconnects, reloads, refills) through `ValidateLayer` → `RateLimitLayer`
//! → `EchoModel`.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatgate::auth::{KeyRecord, Principal};
use chatgate::contract::ChatCompletionRequest;
use chatgate::gateway::Gateway;
use chatgate::rate_limit::{Limits, LocalBackend, ModelLimits, RateLimitConfig, RateLimitLayer};
use chatgate::route::ModelRouter;
use chatgate::{EchoModel, ValidateLayer};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{Service, ServiceBuilder, ServiceExt};

/// The echo model's exact prompt count (3 per message + role + text, + 3), so reservations are
/// predictable.
fn exact(req: &ChatCompletionRequest) -> u64 {
    use chatgate::echo::count_tokens;
    req.messages
        .iter()
        .map(|m| 3 + count_tokens(&m.role) + count_tokens(&m.text()))
        .sum::<u64>()
        + 3
}

fn principal(id: &str, limits: Limits) -> Principal {
    let mut key = KeyRecord::new(id);
    key.limits = limits;
    Principal(Arc::new(key))
}

fn body(extra: &str) -> String {
    format!(r#"{{"model":"echo","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#)
}

fn request(p: &Principal, extra: &str) -> Request<Full<Bytes>> {
    let mut r = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(body(extra))))
        .expect("request");
    r.extensions_mut().insert(p.clone());
    r
}

type Stack = chatgate::validate::Validate<chatgate::rate_limit::RateLimit<EchoModel>>;

fn stack(backend: &LocalBackend, config: RateLimitConfig) -> Stack {
    ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(RateLimitLayer::new(backend.clone(), config))
        .service(EchoModel::new())
}

fn exact_config() -> RateLimitConfig {
    RateLimitConfig::new().estimator(exact)
}

async fn status(svc: &Stack, req: Request<Full<Bytes>>) -> StatusCode {
    let res = svc.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    // Read it all: the settlement happens at the end of the body.
    res.into_body().collect().await.expect("body");
    status
}

async fn json(res: Response<impl http_body::Body<Data = Bytes, Error: std::fmt::Debug>>) -> Value {
    serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes())
        .expect("json")
}

// The prompt `hi` from `user` is 3 + 1 + 1 + 3 = 8 tokens; the echo answers `hi`: 1 token.
const PROMPT: u64 = 8;

#[tokio::test]
async fn s08_over_http_429_with_retry_after_and_remaining() {
    let backend = LocalBackend::new();
    let router = ModelRouter::builder()
        .service("m", EchoModel::new())
        .build();
    let models = router.models().to_vec();
    // No auth layer: anonymous callers limited by their address (PeerAddr, set by `serve`).
    let config = RateLimitConfig::new().anonymous(Some(Limits::none().rpm(1).tpm(10_000)));
    let chat = ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(RateLimitLayer::new(backend.clone(), config))
        .service(router);
    let server = support::start_with(Gateway::with_stack(chat, models)).await;
    let client = support::client();
    let vector = include_str!("data/contract_vectors.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .find(|v| v["id"] == "S08")
        .expect("S08");
    let body = serde_json::to_vec(&vector["body"]).expect("body");

    let (status, headers, _) = support::post_json(&client, server.addr, body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ratelimit-limit-requests"], "1");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(headers["x-ratelimit-reset-requests"], "1m0s");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "10000");
    assert!(headers.contains_key("x-ratelimit-remaining-tokens"));

    let (status, headers, bytes) = support::post_json(&client, server.addr, body).await;
    assert_eq!(
        status.as_u16(),
        vector["status"].as_u64().expect("status") as u16
    );
    for h in vector["headers_required"].as_array().expect("headers") {
        assert!(
            headers.contains_key(h.as_str().expect("name")),
            "{h} missing"
        );
    }
    assert_eq!(headers["retry-after"], "60");
    let ms: u64 = headers["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((59_000..=60_000).contains(&ms), "{ms}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    let err: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(err["error"]["code"], vector["error"]["code"]);
    assert_eq!(err["error"]["type"], "rate_limit_error");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("requests per minute"), "{msg}");
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test(start_paused = true)]
async fn a_burst_from_many_clients_admits_exactly_the_limit_then_refills() {
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config());
    let p = principal("burst", Limits::none().rpm(10));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (svc, req) = (svc.clone(), request(&p, ""));
            tokio::spawn(async move { svc.oneshot(req).await.expect("ok").status() })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if t.await.expect("task") == 200 {
            admitted += 1;
        }
    }
    // A full bucket admits a burst of the whole limit, and nothing more at that instant.
    assert_eq!(admitted, 10);
    // One request every 6 s drips back.
    tokio::time::advance(Duration::from_millis(5_999)).await;
    assert_eq!(status(&svc, request(&p, "")).await, 429);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(status(&svc, request(&p, "")).await, 200);
    assert_eq!(status(&svc, request(&p, "")).await, 429);
    // A whole minute refills the whole limit, not more.
    tokio::time::advance(Duration::from_secs(120)).await;
    for _ in 0..10 {
        assert_eq!(status(&svc, request(&p, "")).await, 200);
    }
    assert_eq!(status(&svc, request(&p, "")).await, 429);
}

#[tokio::test(start_paused = true)]
async fn a_short_answer_is_refunded_and_an_unreported_one_is_not() {
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config());
    // Each request reserves 8 + 50 = 58; two do not fit in 100 unless the first is refunded.
    let p = principal("refund", Limits::none().tpm(100));
    let res = svc
        .clone()
        .oneshot(request(&p, r#","max_tokens":50"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "42");
    let answer = json(res).await;
    assert_eq!(answer["usage"]["total_tokens"], PROMPT + 1);
    // Settled: 9 used, 49 refunded, 91 left.
    let res = svc
        .clone()
        .oneshot(request(&p, r#","max_tokens":50"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "33");
    json(res).await;

    // A stream without include_usage reports nothing: the reservation is kept.
    let q = principal("kept", Limits::none().tpm(100));
    assert_eq!(
        status(&svc, request(&q, r#","max_tokens":50,"stream":true"#)).await,
        200
    );
    let res = svc
        .clone()
        .oneshot(request(&q, r#","max_tokens":50"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let err = json(res).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );
    // With include_usage the stream's usage chunk settles it exactly.
    let r = principal("streamed", Limits::none().tpm(100));
    let usage = r#","max_tokens":50,"stream":true,"stream_options":{"include_usage":true}"#;
    assert_eq!(status(&svc, request(&r, usage)).await, 200);
    let res = svc
        .clone()
        .oneshot(request(&r, r#","max_tokens":50"#))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "33");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_disconnects_mid_stream_is_charged_its_reservation_and_frees_its_slot() {
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config());
    let p = principal("gone", Limits::none().tpm(100).max_concurrent(1));
    let usage = r#","max_tokens":50,"stream":true,"stream_options":{"include_usage":true}"#;
    let res = svc.clone().oneshot(request(&p, usage)).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.expect("a frame").expect("ok");
    assert!(first.is_data());
    // In flight: the slot is taken.
    let res = svc
        .clone()
        .oneshot(request(&p, r#","max_tokens":1"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let err = json(res).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent requests")
    );
    assert_eq!(backend.in_flight("key:gone"), 1);
    // The client goes away before the usage chunk: 58 stay charged, the slot is freed.
    drop(body);
    assert_eq!(backend.in_flight("key:gone"), 0);
    let res = svc
        .clone()
        .oneshot(request(&p, r#","max_tokens":1"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "33"); // 100 - 58 - 9
}

#[tokio::test(start_paused = true)]
async fn limits_survive_a_reload_around_the_same_backend() {
    let backend = LocalBackend::new();
    let p = principal("reload", Limits::none().rpm(2));
    let before = stack(&backend, exact_config());
    assert_eq!(status(&before, request(&p, "")).await, 200);
    assert_eq!(status(&before, request(&p, "")).await, 200);
    // A reload builds a new stack (another configuration even) around the same backend.
    let after = stack(
        &backend,
        RateLimitConfig::new().default_completion_tokens(7),
    );
    assert_eq!(status(&after, request(&p, "")).await, 429);
    // A stack with a new backend would have forgotten.
    let fresh = stack(&LocalBackend::new(), exact_config());
    assert_eq!(status(&fresh, request(&p, "")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn a_request_larger_than_the_whole_tpm_never_waits() {
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config());
    let p = principal("big", Limits::none().tpm(100));
    let res = svc
        .clone()
        .oneshot(request(&p, r#","max_tokens":500"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(!res.headers().contains_key("retry-after"));
    assert_eq!(res.headers()["x-should-retry"], "false");
    let err = json(res).await;
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("never"), "{msg}");
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    // The default completion reservation counts when no bound is set.
    let small = stack(&backend, exact_config().default_completion_tokens(10));
    assert_eq!(status(&small, request(&p, "")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn key_and_model_scopes_are_admitted_together() {
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config());
    let mut key = KeyRecord::new("both");
    key.limits = Limits::none().rpm(3);
    key.model_limits.push(ModelLimits {
        model: "ech*".into(),
        limits: Limits::none().rpm(1),
    });
    let p = Principal(Arc::new(key));
    let res = svc.clone().oneshot(request(&p, "")).await.unwrap();
    // The tightest scope's headers: the model's.
    assert_eq!(res.headers()["x-ratelimit-limit-requests"], "1");
    assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "0");
    json(res).await;
    let res = svc.clone().oneshot(request(&p, "")).await.unwrap();
    assert_eq!(res.status(), 429);
    let err = json(res).await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key `both` and model `echo`")
    );
    // The refusal took nothing from the key's scope: 2 of its 3 are left.
    let mut other = KeyRecord::new("both");
    other.limits = Limits::none().rpm(3);
    let p2 = Principal(Arc::new(other));
    let res = svc.clone().oneshot(request(&p2, "")).await.unwrap();
    assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "1");
}

/// A request for `model` (the echo model answers any name).
fn request_for(p: &Principal, model: &str) -> Request<Full<Bytes>> {
    let mut r = request(p, "");
    let body = body("").replace(r#""model":"echo""#, &format!(r#""model":"{model}""#));
    *r.body_mut() = Full::new(Bytes::from(body));
    r
}

#[tokio::test(start_paused = true)]
async fn made_up_model_names_share_their_patterns_counters_when_the_models_are_known() {
    let mut key = KeyRecord::new("globs");
    key.model_limits.push(ModelLimits {
        model: "ech*".into(),
        limits: Limits::none().rpm(2),
    });
    let p = Principal(Arc::new(key));

    // Told which models exist: names it does not know share the pattern's scope.
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config().models(["echo"]));
    assert_eq!(status(&svc, request_for(&p, "echo-made-up-1")).await, 200);
    assert_eq!(status(&svc, request_for(&p, "echo-made-up-2")).await, 200);
    let res = svc
        .clone()
        .oneshot(request_for(&p, "echo-made-up-3"))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let err = json(res).await;
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("key `globs` and models matching `ech*`"),
        "{message}"
    );
    for i in 4..40 {
        let name = format!("echo-made-up-{i}");
        assert_eq!(status(&svc, request_for(&p, &name)).await, 429);
    }
    assert_eq!(backend.scopes(), 1, "one scope for every made-up name");
    // A model that exists keeps counters of its own.
    assert_eq!(status(&svc, request_for(&p, "echo")).await, 200);
    assert_eq!(backend.scopes(), 2);

    // Not told: every name has its own counters.
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config());
    for i in 0..5 {
        let name = format!("echo-made-up-{i}");
        assert_eq!(status(&svc, request_for(&p, &name)).await, 200);
    }
    assert_eq!(backend.scopes(), 5);
}

#[tokio::test(start_paused = true)]
async fn errors_are_refunded_and_excess_usage_is_debited() {
    let backend = LocalBackend::new();
    let p = principal("debit", Limits::none().tpm(1000));
    // A model that reports more than was reserved.
    let greedy = tower::service_fn(|req: Request<chatgate::ValidatedRequest>| async move {
        let status = if req.body().request().model == "fail" {
            500
        } else {
            200
        };
        let mut res = Response::new(Full::new(Bytes::from_static(
            br#"{"object":"chat.completion","usage":{"prompt_tokens":100,"completion_tokens":400,"total_tokens":500}}"#,
        )));
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok::<_, std::convert::Infallible>(res)
    });
    let mut svc = ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(RateLimitLayer::new(backend.clone(), exact_config()))
        .service(greedy);
    let call = |extra: &str, model: &str| -> Request<Full<Bytes>> {
        let mut r = Request::post("/")
            .body(Full::new(Bytes::from(format!(
                r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#
            ))))
            .unwrap();
        r.extensions_mut().insert(p.clone());
        r
    };
    // Reserves 8 + 10, uses 500: 482 debited.
    let res = ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
        .await
        .unwrap()
        .call(call(r#","max_tokens":10"#, "m"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let res = ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
        .await
        .unwrap()
        .call(call(r#","max_tokens":10"#, "fail"))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "482"); // 1000 - 500 - 18
    res.into_body().collect().await.unwrap();
    // The 500 was refunded whole.
    let res = ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
        .await
        .unwrap()
        .call(call(r#","max_tokens":10"#, "m"))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "482");
}

#[tokio::test(start_paused = true)]
async fn callers_without_limits_pass_untouched() {
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config());
    let p = principal("free", Limits::none());
    let res = svc.clone().oneshot(request(&p, "")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("x-ratelimit-remaining-requests"));
    // No principal and no anonymous limits.
    let anon = Request::post("/")
        .body(Full::new(Bytes::from(body(""))))
        .unwrap();
    assert_eq!(status(&svc, anon).await, 200);
    assert_eq!(backend.scopes(), 0);
}

/// The usage layers in front of the limiter, as the proxy stacks them.
fn metered_stack(
    backend: &LocalBackend,
    usage: &chatgate::usage::UsageHandle,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<impl http_body::Body<Data = Bytes, Error: std::fmt::Debug>>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone {
    use chatgate::usage::{UsageLayer, UsageMeterLayer};
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    ServiceBuilder::new()
        .layer(UsageLayer::new(usage.clone()))
        .layer(ValidateLayer::new())
        .layer(UsageMeterLayer::new())
        .layer(RateLimitLayer::new(backend.clone(), exact_config()))
        .service(router)
}

#[tokio::test(start_paused = true)]
async fn behind_the_usage_meter_the_meter_settles_every_answer_exactly() {
    let backend = LocalBackend::new();
    let memory = Arc::new(chatgate::usage::MemorySink::new());
    let usage = chatgate::usage::UsageHandle::builder()
        .sink(memory.clone())
        .build();
    let svc = metered_stack(&backend, &usage);
    let next = |p: &Principal| {
        let svc = svc.clone();
        let req = request(p, r#","max_tokens":50"#);
        async move {
            let res = svc.oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
            let left = res.headers()["x-ratelimit-remaining-tokens"].clone();
            res.into_body().collect().await.unwrap();
            left
        }
    };
    // Each request reserves 8 + 50 = 58 of 100; the echo uses 8 + 1 = 9.
    for (id, extra) in [
        ("plain", r#","max_tokens":50"#),
        // The meter asks for the usage chunk and hides it: the limiter never sees it, and the
        // settlement is exact all the same (not the reservation kept).
        ("hidden", r#","max_tokens":50,"stream":true"#),
        (
            "asked",
            r#","max_tokens":50,"stream":true,"stream_options":{"include_usage":true}"#,
        ),
    ] {
        let p = principal(id, Limits::none().tpm(100));
        let res = svc.clone().oneshot(request(&p, extra)).await.unwrap();
        assert_eq!(res.status(), 200, "{id}");
        let text = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert_eq!(
            text.contains(r#""usage":{"#),
            !extra.contains("stream\":true") || extra.contains("include_usage"),
            "{id}: {text}"
        );
        assert_eq!(next(&p).await, "33", "{id}: 100 - 9 - 58");
    }
    // A model nobody serves: 404 from the router, the whole reservation refunded.
    let p = principal("unknown", Limits::none().tpm(100));
    let mut req = request(&p, r#","max_tokens":50"#);
    *req.body_mut() = Full::new(Bytes::from(
        r#"{"model":"nope","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#,
    ));
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 404);
    res.into_body().collect().await.unwrap();
    assert_eq!(
        next(&p).await,
        "42",
        "100 - 58: nothing was charged for the 404"
    );
    usage.close().await;
    // One record per request, and the usage the meter settled with is the usage it recorded.
    let rows = memory.rows();
    assert_eq!(rows.iter().map(|r| r.requests).sum::<u64>(), 8);
    assert_eq!(rows.iter().map(|r| r.errors).sum::<u64>(), 1);
    assert_eq!(rows.iter().map(|r| r.total_tokens).sum::<u64>(), 7 * 9);
    assert_eq!(rows.iter().map(|r| r.estimated).sum::<u64>(), 0);
}

#[tokio::test]
async fn the_usage_layer_without_its_meter_leaves_the_settling_to_the_limiter() {
    // The usage layer puts its record's slot in every request; only its meter arms it.
    use chatgate::usage::{UsageHandle, UsageLayer};
    let backend = LocalBackend::new();
    let usage = UsageHandle::builder().build();
    let svc = ServiceBuilder::new()
        .layer(UsageLayer::new(usage.clone()))
        .layer(ValidateLayer::new())
        .layer(RateLimitLayer::new(backend.clone(), exact_config()))
        .service(EchoModel::new());
    let p = principal("unmetered", Limits::none().tpm(100));
    for left in ["42", "33"] {
        let res = svc
            .clone()
            .oneshot(request(&p, r#","max_tokens":50"#))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        // 100 - 58 reserved, then (after the first settled at 9) 100 - 9 - 58.
        assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], left);
        res.into_body().collect().await.unwrap();
    }
    usage.close().await;
}

#[tokio::test(start_paused = true)]
async fn with_a_settlement_slot_in_the_request_the_limiter_leaves_the_settling_to_its_owner() {
    use chatgate::rate_limit::SettlementSlot;
    let backend = LocalBackend::new();
    let svc = stack(&backend, exact_config());
    let p = principal("slot", Limits::none().tpm(100));
    let slot = SettlementSlot::new();
    let mut req = request(&p, r#","max_tokens":50"#);
    req.extensions_mut().insert(slot.clone());
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let answer = json(res).await;
    assert_eq!(answer["usage"]["total_tokens"], PROMPT + 1);
    // The body was read to its end with its usage, and the limiter did not settle.
    let settlement = slot.take().expect("the limiter's settlement");
    assert!(!settlement.is_settled());
    assert_eq!(settlement.reserved_tokens(), 58);
    assert!(slot.take().is_none(), "taken once");
    // Its owner settles: 30 used, so 100 - 30 = 70 left before the next reservation.
    assert!(settlement.settle(30));
    let res = svc
        .clone()
        .oneshot(request(&p, r#","max_tokens":50"#))
        .await
        .unwrap();
    assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], "12"); // 70 - 58
    // Unlimited callers have no ticket: nothing is put in the slot.
    let free = principal("free", Limits::none());
    let slot = SettlementSlot::new();
    let mut req = request(&free, "");
    req.extensions_mut().insert(slot.clone());
    assert_eq!(status(&svc, req).await, 200);
    assert!(slot.take().is_none());
}

#[tokio::test]
async fn an_upstreams_answer_is_settled_with_the_usage_its_check_read() {
    // The upstream client reads and checks a non-streamed answer where it arrives; the limiter
    // settles with the usage that check found (total 2), without reading the body itself.
    use chatgate::route::RouteConfig;
    use chatgate::upstream::UpstreamConfig;
    use support::mock_upstream::{Mock, completion};
    let mock = Mock::start(|s| async move { completion(&s) }).await;
    let router = ModelRouter::builder()
        .upstream(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        )
        .unwrap()
        .build();
    let backend = LocalBackend::new();
    let svc = ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(RateLimitLayer::new(backend.clone(), exact_config()))
        .service(router);
    let p = principal("upstream", Limits::none().tpm(100));
    for left in ["42", "40"] {
        let mut r = Request::post("/v1/chat/completions")
            .body(Full::new(Bytes::from(
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#,
            )))
            .unwrap();
        r.extensions_mut().insert(p.clone());
        let res = svc.clone().oneshot(r).await.unwrap();
        assert_eq!(res.status(), 200);
        // 100 - 58 reserved; then 100 - 2 (the first answer's usage) - 58.
        assert_eq!(res.headers()["x-ratelimit-remaining-tokens"], left);
        let answer = json(res).await;
        assert_eq!(answer["usage"]["total_tokens"], 2);
    }
}

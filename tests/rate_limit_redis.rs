//! The Redis backend against the real Redis at 127.0.0.1:6379 (feature `redis`): two gateway
//! instances share one limit, settlements are seen by both, fail open or closed when Redis is
//! unreachable. Each test uses its own key prefix.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chatgate::auth::{KeyRecord, Principal};
use chatgate::rate_limit::{
    Admit, AdmitRequest, Decision, FailMode, LimitBackend, Limits, RateLimitConfig, RateLimitLayer,
    RedisBackend, ScopeCheck, Settle,
};
use chatgate::{EchoModel, ValidateLayer};
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};

const URL: &str = "redis://127.0.0.1:6379";

fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("chatgate-test:{test}:{}:{nanos}:", std::process::id())
}

fn backend(prefix: &str, mode: FailMode) -> RedisBackend {
    RedisBackend::builder(URL)
        .prefix(prefix)
        .on_error(mode)
        .build()
        .expect("backend")
}

fn principal(limits: Limits) -> Principal {
    let mut key = KeyRecord::new("shared");
    key.limits = limits;
    Principal(Arc::new(key))
}

fn request(p: &Principal, extra: &str) -> Request<Full<Bytes>> {
    let mut r = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(format!(
            r#"{{"model":"echo","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#
        ))))
        .expect("request");
    r.extensions_mut().insert(p.clone());
    r
}

fn config() -> RateLimitConfig {
    // The echo model's prompt for `hi`: 8 tokens.
    RateLimitConfig::new().estimator(|_: &chatgate::contract::ChatCompletionRequest| 8u64)
}

type Stack = chatgate::validate::Validate<chatgate::rate_limit::RateLimit<EchoModel>>;

fn gateway(backend: &RedisBackend) -> Stack {
    ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(RateLimitLayer::new(backend.clone(), config()))
        .service(EchoModel::new())
}

async fn cleanup(prefix: &str) {
    let client = redis::Client::open(URL).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .expect("del");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_admit_more_than_the_limit_together() {
    let prefix = prefix("two");
    let (a, b) = (
        gateway(&backend(&prefix, FailMode::Closed)),
        gateway(&backend(&prefix, FailMode::Closed)),
    );
    const RPM: u64 = 10;
    let p = principal(Limits::none().rpm(RPM as u32));
    let started = Instant::now();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            let req = request(&p, "");
            tokio::spawn(async move {
                let res = svc.oneshot(req).await.expect("infallible");
                let s = res.status();
                res.into_body().collect().await.expect("body");
                s
            })
        })
        .collect();
    let mut admitted = 0u64;
    for t in tasks {
        let s = t.await.expect("task");
        assert!(s == 200 || s == 429, "{s}");
        admitted += u64::from(s == 200);
    }
    // One request drips back every 6 s: however slow the machine, never more than that.
    let dripped = started.elapsed().as_secs() / 6;
    assert!(admitted >= RPM && admitted <= RPM + dripped, "{admitted}");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_refund_on_one_instance_is_seen_by_the_other() {
    let prefix = prefix("refund");
    let (a, b) = (
        backend(&prefix, FailMode::Closed),
        backend(&prefix, FailMode::Closed),
    );
    let ask = |tokens| AdmitRequest {
        scopes: vec![ScopeCheck {
            key: "key:shared".into(),
            limits: Limits::none().tpm(1000).max_concurrent(1),
        }],
        tokens,
        budget: None,
    };
    let admit = |backend: &RedisBackend, tokens| {
        let Admit::Pending(f) = backend.admit(ask(tokens)) else {
            panic!("redis answers later")
        };
        f
    };
    let Decision::Admitted(ticket, status) = admit(&a, 600).await.expect("redis") else {
        panic!("first admission")
    };
    assert_eq!(status.tokens.expect("tokens").remaining, 400);
    // Instance b sees both the tokens and the slot taken.
    let Decision::Refused(r) = admit(&b, 100).await.expect("redis") else {
        panic!("slot taken")
    };
    assert_eq!(r.limit, chatgate::rate_limit::LimitKind::Concurrency);
    // a settles: 20 used, 580 refunded, slot freed.
    let Settle::Pending(f) = a.settle(ticket, Some(20)) else {
        panic!("redis settles later")
    };
    f.await;
    a.flush().await;
    let Decision::Admitted(_, status) = admit(&b, 600).await.expect("redis") else {
        panic!("refund visible on b")
    };
    let remaining = status.tokens.expect("tokens").remaining;
    // 1000 - 20 - 600, plus whatever dripped back meanwhile (16 tokens a second).
    assert!((380..=400).contains(&remaining), "{remaining}");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn settlement_through_the_layer_is_shared() {
    let prefix = prefix("layer");
    let (ba, bb) = (
        backend(&prefix, FailMode::Closed),
        backend(&prefix, FailMode::Closed),
    );
    let (a, b) = (gateway(&ba), gateway(&bb));
    // Reserves 8 + 50 = 58 of 100; the echo uses 9 and the settlement refunds 49.
    let p = principal(Limits::none().tpm(100));
    let res = a.oneshot(request(&p, r#","max_tokens":50"#)).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    ba.flush().await;
    let res = b.oneshot(request(&p, r#","max_tokens":50"#)).await.unwrap();
    assert_eq!(res.status(), 200, "the refund made room");
    let remaining: u64 = res.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((33..=35).contains(&remaining), "{remaining}");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_or_closed_and_is_counted() {
    let p = principal(Limits::none().rpm(1));
    let unreachable = "redis://127.0.0.1:1";
    let open = RedisBackend::builder(unreachable)
        .on_error(FailMode::Open)
        .build()
        .expect("lazy");
    let svc = gateway(&open);
    for _ in 0..3 {
        let res = svc.clone().oneshot(request(&p, "")).await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(!res.headers().contains_key("x-ratelimit-remaining-requests"));
    }
    assert!(open.errors() >= 3);
    assert!(open.is_down());

    let closed = RedisBackend::builder(unreachable)
        .on_error(FailMode::Closed)
        .build()
        .expect("lazy");
    let res = gateway(&closed).oneshot(request(&p, "")).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert!(closed.errors() >= 1);

    // A reachable Redis clears the incident.
    let prefix = prefix("up");
    let up = backend(&prefix, FailMode::Closed);
    let res = gateway(&up).oneshot(request(&p, "")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(!up.is_down());
    assert_eq!(up.errors(), 0);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_budget_is_shared_by_instances_and_cannot_be_overshot() {
    use chatgate::rate_limit::{Budget, BudgetPeriod};
    use chatgate::usage::{Price, Prices};
    let prefix = prefix("budget");
    let (ba, bb) = (
        backend(&prefix, FailMode::Closed),
        backend(&prefix, FailMode::Closed),
    );
    // 1000 µ$ per prompt token, 2000 µ$ per completion token.
    let prices = Prices::new().with(
        "echo",
        Price {
            input_per_million: 1000.0,
            output_per_million: 2000.0,
        },
    );
    let stack = |b: &RedisBackend| {
        ServiceBuilder::new()
            .layer(ValidateLayer::new())
            .layer(RateLimitLayer::new(
                b.clone(),
                config().prices(prices.clone()),
            ))
            .service(EchoModel::new())
    };
    let (a, b) = (stack(&ba), stack(&bb));
    let mut key = KeyRecord::new("budgeted");
    key.budget = Some(Budget::new(BudgetPeriod::Day).tokens(200));
    let p = Principal(Arc::new(key));
    // 8 + 50 = 58 reserved each, responses held: 3 fit in 200, across both instances.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            let req = request(&p, r#","max_tokens":50"#);
            tokio::spawn(async move { svc.oneshot(req).await.unwrap() })
        })
        .collect();
    let mut held = Vec::new();
    for t in tasks {
        let res = t.await.unwrap();
        if res.status() == 200 {
            held.push(res);
        } else {
            assert_eq!(res.status(), 429);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "budget_exceeded");
        }
    }
    assert_eq!(held.len(), 3);
    // Settled at 9 each: 27 spent, room for 3 more reservations (27 + 3 × 58 = 201 > 200:
    // two).
    for res in held {
        res.into_body().collect().await.unwrap();
    }
    ba.flush().await;
    bb.flush().await;
    let mut held = Vec::new();
    for svc in [&a, &b, &a] {
        held.push(
            svc.clone()
                .oneshot(request(&p, r#","max_tokens":50"#))
                .await
                .unwrap(),
        );
    }
    let statuses: Vec<u16> = held.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 429]);
    // Larger than the whole budget: never.
    let res = b
        .clone()
        .oneshot(request(&p, r#","max_tokens":500"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["x-should-retry"], "false");

    // Money: 28 000 µ$ worst case of 50 000, settled at 10 000.
    let mut key = KeyRecord::new("money");
    key.budget = Some(Budget::new(BudgetPeriod::Day).usd(0.05));
    let m = Principal(Arc::new(key));
    let first = a
        .clone()
        .oneshot(request(&m, r#","max_tokens":10"#))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let res = b
        .clone()
        .oneshot(request(&m, r#","max_tokens":10"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    first.into_body().collect().await.unwrap();
    ba.flush().await;
    for svc in [&b, &a] {
        let res = svc
            .clone()
            .oneshot(request(&m, r#","max_tokens":10"#))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "10 000 + 28 000 (+ 10 000 settled) fit");
        res.into_body().collect().await.unwrap();
        ba.flush().await;
        bb.flush().await;
    }
    // 30 000 spent: a fourth worst case (28 000) does not fit.
    let res = b
        .clone()
        .oneshot(request(&m, r#","max_tokens":10"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    drop(held);
    ba.flush().await;
    bb.flush().await;
    cleanup(&prefix).await;
}

//! Budgets through `ValidateLayer` → `RateLimitLayer` → `EchoModel` with a paused clock:
//! concurrent requests cannot overshoot, short answers are refunded, an exhausted budget is a
//! 429 `budget_exceeded` until the period resets, money budgets at the model's price.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use chatgate::auth::{KeyRecord, Principal};
use chatgate::contract::ChatCompletionRequest;
use chatgate::rate_limit::{
    Budget, BudgetPeriod, Limits, LocalBackend, RateLimitConfig, RateLimitLayer,
};
use chatgate::usage::{Price, Prices};
use chatgate::{EchoModel, ValidateLayer};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};

/// The echo model's exact prompt count, so reservations are predictable.
fn exact(req: &ChatCompletionRequest) -> u64 {
    use chatgate::echo::count_tokens;
    req.messages
        .iter()
        .map(|m| 3 + count_tokens(&m.role) + count_tokens(&m.text()))
        .sum::<u64>()
        + 3
}

// The prompt `hi` from `user` is 8 tokens; the echo answers `hi`: 1 token.
const PROMPT: u64 = 8;

/// 2024-02-29T12:00:00Z.
const NOON: u64 = 1_709_208_000_000;

fn principal(id: &str, budget: Budget) -> Principal {
    let mut key = KeyRecord::new(id);
    key.budget = Some(budget);
    Principal(Arc::new(key))
}

fn request(p: &Principal, max_tokens: u64) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"echo","messages":[{{"role":"user","content":"hi"}}],"max_tokens":{max_tokens}}}"#
    );
    let mut r = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    r.extensions_mut().insert(p.clone());
    r
}

type Stack = chatgate::validate::Validate<chatgate::rate_limit::RateLimit<EchoModel>>;

fn backend() -> LocalBackend {
    LocalBackend::with_clock(8, UNIX_EPOCH + Duration::from_millis(NOON))
}

fn stack(backend: &LocalBackend, prices: Prices) -> Stack {
    ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(RateLimitLayer::new(
            backend.clone(),
            RateLimitConfig::new().estimator(exact).prices(prices),
        ))
        .service(EchoModel::new())
}

/// Status and JSON body, read to the end (the settlement happens there).
async fn call(svc: &Stack, req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, Value) {
    let res = svc.clone().oneshot(req).await.expect("infallible");
    let (head, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        head.status,
        head.headers,
        serde_json::from_slice(&bytes).expect("json"),
    )
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_cannot_overshoot_the_budget() {
    let backend = backend();
    let svc = stack(&backend, Prices::new());
    let budget = Budget::new(BudgetPeriod::Day).tokens(1000);
    let p = principal("many", budget);
    // Each request reserves 8 + 100 = 108; the responses are held (not settled) while all
    // 100 requests are in flight.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (svc, req) = (svc.clone(), request(&p, 100));
            tokio::spawn(async move { svc.oneshot(req).await.expect("ok") })
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let res = t.await.expect("task");
        match res.status().as_u16() {
            200 => held.push(res),
            429 => refused += 1,
            s => panic!("status {s}"),
        }
    }
    assert_eq!(held.len(), 9, "1000 / 108");
    assert_eq!(refused, 91);
    let (tokens, _) = backend.budget_spent("budget:many", BudgetPeriod::Day);
    assert_eq!(tokens, 9 * 108);
    assert!(tokens <= 1000);
    // Read to the end, each is settled at its exact use.
    for res in held {
        res.into_body().collect().await.expect("body");
    }
    let (tokens, _) = backend.budget_spent("budget:many", BudgetPeriod::Day);
    assert_eq!(tokens, 9 * (PROMPT + 1));
}

#[tokio::test(start_paused = true)]
async fn a_short_answer_is_refunded() {
    let backend = backend();
    let svc = stack(&backend, Prices::new());
    // 108 reserved each: two fit in 120 only because the first is refunded to its 9.
    let p = principal("refund", Budget::new(BudgetPeriod::Day).tokens(120));
    let (status, _, answer) = call(&svc, request(&p, 100)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["usage"]["total_tokens"], PROMPT + 1);
    assert_eq!(
        backend.budget_spent("budget:refund", BudgetPeriod::Day),
        (PROMPT + 1, 0)
    );
    let (status, _, _) = call(&svc, request(&p, 100)).await;
    assert_eq!(status, 200);
    assert_eq!(
        backend.budget_spent("budget:refund", BudgetPeriod::Day).0,
        2 * (PROMPT + 1)
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_is_429_budget_exceeded_until_the_period_resets() {
    let backend = backend();
    let svc = stack(&backend, Prices::new());
    let mut key = KeyRecord::new("daily");
    key.budget = Some(Budget::new(BudgetPeriod::Day).tokens(20));
    key.limits = Limits::none().rpm(1000);
    let p = Principal(Arc::new(key));
    // 8 + 10 reserved, 9 used: 11 left, then 18 does not fit.
    assert_eq!(call(&svc, request(&p, 10)).await.0, 200);
    let (status, headers, err) = call(&svc, request(&p, 10)).await;
    assert_eq!(status, 429);
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert_eq!(err["error"]["code"], "budget_exceeded");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("key `daily`"), "{message}");
    // Noon: the UTC day resets in 12 hours.
    assert_eq!(headers["retry-after"], "43200");
    assert!(!headers.contains_key("x-should-retry"));
    // The per-minute headers are those of the rate limits, unchanged (one request taken).
    assert_eq!(headers["x-ratelimit-limit-requests"], "1000");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "999");
    // A request larger than the whole budget can never fit.
    let (status, headers, err) = call(&svc, request(&p, 100)).await;
    assert_eq!(status, 429);
    assert_eq!(err["error"]["code"], "budget_exceeded");
    assert_eq!(headers["x-should-retry"], "false");
    assert!(!headers.contains_key("retry-after"));

    // One millisecond before midnight: still exhausted; at midnight: a new day.
    tokio::time::advance(Duration::from_millis(43_200_000 - 1)).await;
    let (status, headers, _) = call(&svc, request(&p, 10)).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after-ms"], "1");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(call(&svc, request(&p, 10)).await.0, 200);
    assert_eq!(
        backend.budget_spent("budget:daily", BudgetPeriod::Day),
        (PROMPT + 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_money_budget_reserves_the_worst_case_and_settles_the_exact_cost() {
    let backend = backend();
    // 1000 µ$ per prompt token, 2000 µ$ per completion token.
    let prices = Prices::new().with(
        "echo",
        Price {
            input_per_million: 1000.0,
            output_per_million: 2000.0,
        },
    );
    let svc = stack(&backend, prices);
    let period = BudgetPeriod::Every(Duration::from_secs(3600));
    let p = principal("money", Budget::new(period).usd(0.05));
    // Worst case: 8 × 1000 + 10 × 2000 = 28 000 µ$; two do not fit in 50 000 at once.
    let first = svc.clone().oneshot(request(&p, 10)).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(backend.budget_spent("budget:money", period), (18, 28_000));
    let (status, _, err) = call(&svc, request(&p, 10)).await;
    assert_eq!(status, 429);
    assert_eq!(err["error"]["code"], "budget_exceeded");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("$0.050000"),
        "{err}"
    );
    // Settled at the exact cost: 8 × 1000 + 1 × 2000 = 10 000 µ$.
    first.into_body().collect().await.unwrap();
    assert_eq!(backend.budget_spent("budget:money", period), (9, 10_000));
    assert_eq!(call(&svc, request(&p, 10)).await.0, 200);
    assert_eq!(backend.budget_spent("budget:money", period), (18, 20_000));
}

#[tokio::test]
async fn a_toml_budget_over_http() {
    use chatgate::auth::{AuthLayer, KeyStore};
    use chatgate::config::Config;
    use chatgate::gateway::Gateway;
    use chatgate::route::ModelRouter;
    let config = Config::from_toml_str(
        r#"
[[models]]
name = "echo"
builtin = "echo"

[[keys]]
id = "team-a"
key = "sk-test-budget"
budget_usd = 0.04
budget_period = "day"

[[prices]]
model = "echo"
input_per_million = 1000.0
output_per_million = 2000.0
"#,
        std::path::Path::new("budgets.toml"),
    )
    .unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(config.key_store().unwrap());
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let models = router.models().to_vec();
    let backend = LocalBackend::new();
    let chat = ServiceBuilder::new()
        .layer(AuthLayer::from_shared(store))
        .layer(ValidateLayer::new())
        .layer(RateLimitLayer::new(
            backend.clone(),
            config
                .limits_config()
                .rate_limit_config()
                .estimator(exact)
                .prices(config.prices().clone()),
        ))
        .service(router);
    let server = support::start_with(Gateway::with_stack(chat, models)).await;
    let client = support::client();
    let post = || {
        Request::post(format!("http://{}/v1/chat/completions", server.addr))
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-test-budget")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"echo","messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#,
            )))
            .unwrap()
    };
    // 28 000 µ$ reserved, 10 000 charged each: 10 000 + 28 000 fits in 40 000, 20 000 + 28 000
    // does not.
    for n in 1..=2 {
        let (status, _, body) = support::send(&client, post()).await;
        assert_eq!(status, 200, "{body:?}");
        // The client may have the whole body a moment before the server sees its end and
        // settles: wait for the settlement (no sleep, bounded).
        let mut settled = false;
        for _ in 0..10_000 {
            if backend.budget_spent("budget:team-a", BudgetPeriod::Day).1 == n * 10_000 {
                settled = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(settled, "settled at the exact cost");
    }
    let (status, headers, body) = support::send(&client, post()).await;
    assert_eq!(status, 429);
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["error"]["code"], "budget_exceeded");
    assert_eq!(err["error"]["type"], "rate_limit_error");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    assert!(!String::from_utf8_lossy(&body).contains("sk-test"));
}

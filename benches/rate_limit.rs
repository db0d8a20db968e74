//! Cost of rate limiting per request with the local backend: admission + settlement.
//!
//! `cargo bench --bench rate_limit -- --warm-up-time 1 --measurement-time 3`
//!
//! * `backend/*` — `LocalBackend::admit` then `settle` (the scope key built as the layer builds
//!   it), for one key, and for 100,000 keys taken in turn (a working set larger than the
//!   caches);
//! * `layer/*` — the whole `RateLimit` service around a no-op inner service: scopes from the
//!   `Principal`, the reservation (a fixed estimator: no tokenizing), admission, the
//!   `x-ratelimit-*` headers, the body wrapper, reading a 150-byte JSON body with `usage`, and
//!   the settlement when it ends;
//! * `hot key, 2 threads` — `backend` with one key hammered from two threads at once
//!   (`std::thread::scope`), time per request.
//!
//! Every key has rpm, tpm and max_concurrent limits high enough never to refuse, so every
//! request takes all three and gives them back.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatgate::auth::{KeyRecord, Principal};
use chatgate::contract::ChatCompletionRequest;
use chatgate::rate_limit::{
    Admit, AdmitRequest, Decision, LimitBackend, Limits, LocalBackend, RateLimitConfig,
    RateLimitLayer, Scope, ScopeCheck,
};
use chatgate::validate::{ValidateConfig, ValidatedRequest, validate};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service};

const LIMITS: Limits = Limits::none()
    .rpm(1_000_000_000)
    .tpm(1_000_000_000_000)
    .max_concurrent(1_000_000);

fn once(backend: &LocalBackend, id: &str) {
    let ask = AdmitRequest {
        scopes: vec![ScopeCheck {
            key: Scope::Key { id }.key(),
            limits: LIMITS,
        }],
        tokens: 100,
        budget: None,
    };
    let Admit::Ready(Ok(Decision::Admitted(ticket, status))) = backend.admit(ask) else {
        panic!("admitted")
    };
    black_box(status);
    backend.settle(ticket, Some(60));
}

fn backend(c: &mut Criterion) {
    let mut g = c.benchmark_group("backend");
    let b = LocalBackend::new();
    g.bench_function("1 key", |bench| bench.iter(|| once(&b, "k")));
    let ids: Vec<String> = (0..100_000).map(|i| format!("key-{i}")).collect();
    let b = LocalBackend::new();
    let mut i = 0;
    g.bench_function("100,000 keys", |bench| {
        bench.iter(|| {
            once(&b, &ids[i]);
            i = (i + 1) % ids.len();
        })
    });
    g.bench_function("hot key, 2 threads", |bench| {
        let b = LocalBackend::new();
        bench.iter_custom(|iters| {
            let per = iters.div_ceil(2);
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..per {
                            once(&b, "hot");
                        }
                    });
                }
            });
            // Time per request: two run at once.
            start.elapsed() / 2
        })
    });
    g.finish();
}

fn layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let validated: ValidatedRequest = validate(
        Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#),
        &ValidateConfig::default(),
    )
    .unwrap();
    let completion = Bytes::from_static(
        br#"{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":8,"completion_tokens":40,"total_tokens":48}}"#,
    );
    let inner = tower::service_fn(move |_req: Request<ValidatedRequest>| {
        let body = completion.clone();
        async move {
            let mut res = Response::new(Full::new(body));
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                "application/json".parse().unwrap(),
            );
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    let mut g = c.benchmark_group("layer");
    for (name, keys) in [("1 key", 1usize), ("100,000 keys", 100_000)] {
        let layer = RateLimitLayer::new(
            LocalBackend::new(),
            RateLimitConfig::new().estimator(|_: &ChatCompletionRequest| 10u64),
        );
        let mut svc = layer.layer(inner.clone());
        let principals: Vec<Principal> = (0..keys)
            .map(|i| {
                let mut k = KeyRecord::new(format!("key-{i}"));
                k.limits = LIMITS;
                Principal(Arc::new(k))
            })
            .collect();
        let mut i = 0;
        g.bench_function(name, |bench| {
            bench.iter_batched(
                || {
                    let mut req = Request::new(validated.clone());
                    req.extensions_mut().insert(principals[i].clone());
                    i = (i + 1) % principals.len();
                    req
                },
                |req| {
                    rt.block_on(async {
                        let res = svc.call(req).await.unwrap();
                        black_box(res.into_body().collect().await.unwrap());
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The same without the limiter, for the baseline.
    let mut bare = inner;
    g.bench_function("no limiter (baseline)", |bench| {
        bench.iter_batched(
            || Request::new(validated.clone()),
            |req| {
                rt.block_on(async {
                    let res = bare.call(req).await.unwrap();
                    black_box(res.into_body().collect().await.unwrap());
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = backend, layer
}
criterion_main!(benches);

//! Cost of the authentication check per request on the Ready path (an in-memory
//! `ConfigKeyStore`), with 1 key and with 100,000 keys.
//!
//! `cargo bench --bench auth -- --warm-up-time 1 --measurement-time 3`
//!
//! Each iteration builds nothing: the request (with its `Authorization` header) is made in the
//! batch setup, outside the measurement. Cases:
//!
//! * `bare` — the inner service alone (a `service_fn` answering an empty 200 at once);
//! * `sha256` — `KeyDigest::of` of a 38-byte key: the hashing part of the check;
//! * `Auth, N keys` — `AuthLayer` around the same inner service, a valid key: header parsing,
//!   SHA-256, hash-map lookup, expiry check, `Authorization` removed, `Principal` inserted, inner
//!   call, response body wrapped;
//! * `Auth, N keys, unknown key` — the same with a key that is not in the store (401 answer).
#![allow(missing_docs, clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use chatgate::auth::{AuthLayer, ConfigKeyStore, KeyDigest, KeyRecord};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};

const KEY: &str = "sk-cg-0123456789abcdef0123456789abcdef";

fn store(n: usize) -> ConfigKeyStore {
    ConfigKeyStore::new((0..n).map(|i| {
        let secret = if i == n / 2 {
            KEY.to_owned()
        } else {
            format!("sk-cg-{i:032x}")
        };
        (KeyDigest::of(&secret), KeyRecord::new(format!("key-{i}")))
    }))
    .unwrap()
}

fn request(key: &str) -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Polls a future that is ready at once.
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the Ready path never waits"),
    }
}

async fn inner(_: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::new())))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("auth");
    let mut bare = tower::service_fn(inner);
    g.bench_function("bare", |b| {
        b.iter_batched(
            || request(KEY),
            |req| black_box(now(bare.call(req)).unwrap().status()),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sha256", |b| b.iter(|| KeyDigest::of(black_box(KEY))));
    for n in [1, 100_000] {
        let mut svc = AuthLayer::new(store(n)).layer(tower::service_fn(inner));
        for (label, key, want) in [("", KEY, 200), (", unknown key", "sk-cg-nope-0000", 401)] {
            assert_eq!(now(svc.call(request(key))).unwrap().status(), want);
            g.bench_function(format!("Auth, {n} keys{label}"), |b| {
                b.iter_batched(
                    || request(key),
                    |req| black_box(now(svc.call(req)).unwrap().status()),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

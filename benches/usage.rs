//! The usage layers' cost: per non-streamed request, and per streamed chunk.
//!
//! `cargo bench --bench usage -- --warm-up-time 1 --measurement-time 3`
//!
//! Both cases call the stack in process (no HTTP) around the echo model, once without usage
//! accounting (`ValidateLayer` + router) and once with it (`UsageLayer` + `ValidateLayer` +
//! `UsageMeterLayer` + router, records sent to a handle without sinks), and read the whole
//! response body:
//!
//! * `non-streamed` — one request, a 30-token answer (`Throughput::Elements(1)`);
//! * `streamed` — a 200-token stream without `include_usage` (the meter asks for usage and
//!   hides the usage chunk), per chunk (`Throughput::Elements(chunks)`).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use bytes::Bytes;
use chatgate::route::ModelRouter;
use chatgate::usage::{UsageHandle, UsageLayer, UsageMeterLayer};
use chatgate::{EchoModel, ValidateLayer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};

fn body(words: usize, stream: bool) -> Bytes {
    let text = vec!["word"; words].join(" ");
    Bytes::from(format!(
        r#"{{"model":"echo","stream":{stream},"messages":[{{"role":"user","content":"{text}"}}]}}"#
    ))
}

async fn run<S, B>(svc: &mut S, body: &Bytes) -> usize
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(body.clone()))
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap().to_bytes().len()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let mut plain = ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .service(router.clone());
    let handle = UsageHandle::builder().capacity(1 << 20).build();
    let mut metered = ServiceBuilder::new()
        .layer(UsageLayer::new(handle.clone()))
        .layer(ValidateLayer::new())
        .layer(UsageMeterLayer::new())
        .service(router);

    let mut g = c.benchmark_group("usage/non-streamed");
    g.throughput(Throughput::Elements(1));
    let one = body(30, false);
    g.bench_function("without usage", |b| {
        b.iter(|| black_box(rt.block_on(run(&mut plain, &one))))
    });
    g.bench_function("with usage", |b| {
        b.iter(|| black_box(rt.block_on(run(&mut metered, &one))))
    });
    g.finish();

    let stream = body(200, true);
    // Role chunk, 200 content chunks, finish chunk, [DONE].
    let chunks = 203;
    let mut g = c.benchmark_group("usage/streamed");
    g.throughput(Throughput::Elements(chunks));
    g.bench_function("without usage", |b| {
        b.iter(|| black_box(rt.block_on(run(&mut plain, &stream))))
    });
    g.bench_function("with usage", |b| {
        b.iter(|| black_box(rt.block_on(run(&mut metered, &stream))))
    });
    g.finish();
    rt.block_on(handle.close());
}

criterion_group!(benches, bench);
criterion_main!(benches);

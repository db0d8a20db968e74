//! Throughput of the SSE observer and filter against a plain pass-through of the same frames.
//!
//! `cargo bench --bench sse -- --warm-up-time 1 --measurement-time 3`
//!
//! The stream is a realistic chat-completions stream: a role chunk, 200 content chunks of
//! ~250 bytes, a finish chunk, the usage-only chunk and `data: [DONE]` (204 events, 50.9 KB).
//! It is fed in
//! three framings: one event per frame; 16 KiB frames and 1 KiB frames cut at arbitrary bytes (as
//! reads of a coalesced stream). Every case drains the same body-polling loop (`drain`):
//!
//! * `pass-through` — the baseline: the frames body itself, each frame handed to `black_box`;
//! * `copy` — the same, also copying each frame into a buffer (a plain copy of the bytes);
//! * `EventScanner` — `chatgate::sse::ending` (the stream ending on the end-of-response hook, with the 16-byte line scanner), for
//!   reference;
//! * `Observed, no-op` — `chatgate::sse::Observed` with an observer that does nothing: the
//!   cost of decoding the events;
//! * `Observed` — `chatgate::sse::Observed` with an observer that looks at every event's
//!   payload (`is_usage_only_chunk`, which parses only the usage chunk);
//! * `Filtered` — `chatgate::sse::Filtered` dropping the usage-only chunk.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use chatgate::sse::{Event, Filtered, Observed, is_usage_only_chunk};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body::{Body, Frame};

/// A body that yields prepared frames, all ready at once.
struct Frames(std::vec::IntoIter<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
    }
}

/// Polls `body` to its end, handing each data frame to `sink`; the bytes that went through.
fn drain<B>(body: &mut B, mut sink: impl FnMut(Bytes)) -> usize
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut n = 0;
    loop {
        match Pin::new(&mut *body).poll_frame(&mut cx) {
            Poll::Ready(Some(frame)) => {
                if let Ok(data) = frame.expect("no error").into_data() {
                    n += data.len();
                    sink(data);
                }
            }
            Poll::Ready(None) => return n,
            Poll::Pending => unreachable!("all frames are ready"),
        }
    }
}

fn chunk(delta: &str, finish: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-AbC123xyz789","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#
    )
}

/// The events of the stream, each framed.
fn events() -> Vec<String> {
    let words = [
        " the",
        " quick",
        " brown",
        " fox",
        " jumps",
        " over",
        " a",
        " lazy",
        " dog",
        ",",
        " and",
        " then",
        " explains",
        " why",
        " in",
        " detail",
        ".",
        "\\n",
    ];
    let mut events = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
    for i in 0..200 {
        let w = words[i % words.len()];
        events.push(chunk(&format!(r#"{{"content":"{w}"}}"#), "null"));
    }
    events.push(chunk("{}", r#""stop""#));
    events.push(
        r#"{"id":"chatcmpl-AbC123xyz789","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[],"usage":{"prompt_tokens":28,"completion_tokens":200,"total_tokens":228,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}"#
            .to_owned(),
    );
    events.push("[DONE]".to_owned());
    events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let events = events();
    let whole = Bytes::from(events.concat());
    let total = whole.len();
    let usage_len = events[events.len() - 2].len();

    let mut per_event = Vec::new();
    let mut at = 0;
    for e in &events {
        per_event.push(whole.slice(at..at + e.len()));
        at += e.len();
    }
    let cut = |size: usize| -> Vec<Bytes> {
        (0..total)
            .step_by(size)
            .map(|a| whole.slice(a..(a + size).min(total)))
            .collect()
    };
    let framings = [
        ("1 event per frame", per_event),
        ("16 KiB frames", cut(16 * 1024)),
        ("1 KiB frames", cut(1024)),
    ];

    let is_usage = |e: &Event<'_>| is_usage_only_chunk(e.data());

    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(total as u64));
    for (name, frames) in framings {
        let body = || Frames(frames.clone().into_iter());

        // Check what is measured.
        let mut seen = 0;
        let mut usage = 0;
        let mut observed = Observed::new(body(), |e: &Event<'_>| {
            seen += 1;
            usage += usize::from(is_usage(e));
        });
        assert_eq!(drain(&mut observed, drop), total);
        assert!(observed.decoder().saw_done());
        drop(observed);
        assert_eq!((seen, usage), (events.len(), 1));
        let mut out = Vec::new();
        let mut filtered = Filtered::new(body(), is_usage);
        drain(&mut filtered, |b| out.extend_from_slice(&b));
        assert_eq!(out.len(), total - usage_len);
        assert_eq!(filtered.filter().dropped(), 1);

        group.bench_function(BenchmarkId::new("pass-through", name), |b| {
            b.iter_batched(
                body,
                |mut body| (drain(&mut body, |d| drop(black_box(d))), body),
                BatchSize::SmallInput,
            )
        });
        let mut buf = Vec::with_capacity(total);
        group.bench_function(BenchmarkId::new("copy", name), |b| {
            b.iter_batched(
                body,
                |mut body| {
                    buf.clear();
                    let n = drain(&mut body, |d| buf.extend_from_slice(black_box(&d)));
                    black_box(&buf);
                    (n, body)
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("EventScanner", name), |b| {
            b.iter_batched(
                || chatgate::sse::ending(body()),
                |mut body| (drain(&mut body, |d| drop(black_box(d))), body),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("Observed, no-op", name), |b| {
            b.iter_batched(
                || {
                    Observed::new(body(), |e: &Event<'_>| {
                        black_box(e);
                    })
                },
                |mut body| (drain(&mut body, |d| drop(black_box(d))), body),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("Observed", name), |b| {
            b.iter_batched(
                || {
                    Observed::new(body(), |e: &Event<'_>| {
                        black_box(is_usage(e));
                    })
                },
                |mut body| (drain(&mut body, |d| drop(black_box(d))), body),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("Filtered", name), |b| {
            b.iter_batched(
                || Filtered::new(body(), is_usage),
                |mut body| (drain(&mut body, |d| drop(black_box(d))), body),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

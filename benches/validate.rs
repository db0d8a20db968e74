//! Validation throughput against an untyped `serde_json::Value` parse of the same bytes.
//!
//! `cargo bench --bench validate`
//!
//! For each body size: `chatgate` = the full validation (`chatgate::validate::validate`: JSON
//! read with duplicate-key and depth checks, typed request with pydantic-exact error collection,
//! defaults patched into the forwarded bytes); `serde_json::Value` = the baseline untyped parse;
//! `serde_json typed` = serde's derive into the same typed request (no error collection, no
//! duplicate check), for reference; `chatgate, defaults off` = the validation without writing
//! `temperature`/`n` into the forwarded bytes (so no copy of the body).
#![allow(missing_docs)]

use bytes::Bytes;
use chatgate::contract::ChatCompletionRequest;
use chatgate::validate::{ValidateConfig, validate};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;

#[path = "support/bodies.rs"]
mod bodies;

fn small() -> Vec<u8> {
    // ~300 bytes: one system and one user message.
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly and precisely."},
            {"role": "user", "content": "What is the capital of France? Please answer in one word, and explain nothing else."}
        ],
        "temperature": 0.7,
        "max_tokens": 64,
        "stream": false
    }))
    .expect("json")
}

fn typical() -> Vec<u8> {
    serde_json::to_vec(&bodies::typical_request()).expect("json")
}

fn large() -> Vec<u8> {
    // ~200 KB: a long document pasted into the conversation, with escapes and non-ASCII text.
    let paragraph = "Lorem ipsum dolor sit amet, \"consectetur\" adipiscing elit — sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.\n";
    let doc: String = paragraph.repeat(1500);
    serde_json::to_vec(&json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Summarise the document."},
            {"role": "user", "content": [{"type": "text", "text": doc}, {"type": "text", "text": "Summary please."}]}
        ],
        "max_tokens": 512
    }))
    .expect("json")
}

fn bench(c: &mut Criterion) {
    let config = ValidateConfig::default();
    let no_defaults = ValidateConfig {
        apply_defaults: false,
        ..ValidateConfig::default()
    };
    let mut group = c.benchmark_group("validate");
    for (name, body) in [
        ("small", small()),
        ("typical", typical()),
        ("large", large()),
    ] {
        let bytes = Bytes::from(body);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("chatgate", name), &bytes, |b, bytes| {
            b.iter(|| {
                validate(black_box(bytes.clone()), &config)
                    .expect("valid")
                    .to_bytes()
            })
        });
        group.bench_with_input(
            BenchmarkId::new("chatgate, defaults off", name),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    validate(black_box(bytes.clone()), &no_defaults)
                        .expect("valid")
                        .to_bytes()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json::Value", name),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    serde_json::from_slice::<serde_json::Value>(black_box(bytes)).expect("valid")
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json typed", name),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    serde_json::from_slice::<ChatCompletionRequest>(black_box(bytes))
                        .expect("valid")
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

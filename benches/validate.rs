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
    // ~4 KB: a multi-turn conversation with tools and a tool call.
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city, in metric units.",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["c", "f"], "description": "Temperature unit"}},
                "required": ["city"], "additionalProperties": false}, "strict": true}},
        {"type": "function", "function": {"name": "search_docs", "description": "Search the product documentation.",
            "parameters": {"type": "object", "properties": {
                "query": {"type": "string", "description": "Free text query"},
                "limit": {"type": "integer", "description": "Maximum results"},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "Filter by tags"}},
                "required": ["query"]}}}
    ]);
    let mut messages = vec![
        json!({"role": "system", "content": "You are a support agent for a weather service. Use the tools when they help; be concise and cite the documentation when you quote it."}),
    ];
    for i in 0..6 {
        messages.push(json!({"role": "user", "content": format!("Question {i}: what is the weather in Paris today, and how do I change the unit of temperature in the app settings? I tried the menu but could not find it.")}));
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": format!("call_{i}"), "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": "{\"temp\": 18, \"sky\": \"cloudy\"}"}));
        messages.push(json!({"role": "assistant", "content": "It is 18 °C and cloudy in Paris. To change the unit, open Settings → Display → Units."}));
    }
    serde_json::to_vec(&json!({
        "model": "gpt-4o", "messages": messages, "tools": tools, "tool_choice": "auto",
        "temperature": 0.2, "stream": true, "stream_options": {"include_usage": true}, "user": "u-123"
    }))
    .expect("json")
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

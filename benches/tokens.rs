//! Token counting throughput: `chatgate::tokens` on English, code and hostile input.
//!
//! `cargo bench --bench tokens -- --warm-up-time 1 --measurement-time 3`
//!
//! Texts (the token count of each is printed once at start, to turn times into tokens/µs):
//!
//! * `english` — the first 10 KB of `docs/contract.md` (English technical prose, markdown);
//! * `code` — the first 10 KB of `src/json/mod.rs` (Rust);
//! * `run-1MB` — 1 MiB of `a`: a single pre-token (the hostile case for BPE merging);
//! * `random-1MB` — 1 MiB of random `a`–`z` without spaces: also one pre-token, and the slowest
//!   input measured per byte (about 2 bytes per token);
//! * `run-4MiB` — 4 MiB of `a` (the validator's default body cap).
//!
//! Cases: `count_text` (`chatgate::tokens::count_text`: exact up to 32 KiB, sampled beyond) and,
//! for the hostile inputs, `exact` (bpe-openai's `Tokenizer::count` on the whole text, no cap),
//! to show what the cap bounds. `prompt/typical` is `count_prompt_tokens` on a typical 25-message
//! request with two tools (the `typical` body of `benches/validate.rs`).
#![allow(missing_docs)]

use std::hint::black_box;

use chatgate::contract::ChatCompletionRequest;
use chatgate::tokens::{Family, count_prompt_tokens, count_text, preload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

fn prefix(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn random_letters(n: usize) -> String {
    let mut seed = 42u64;
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (b'a' + ((seed >> 33) % 26) as u8) as char
        })
        .collect()
}

fn typical() -> ChatCompletionRequest {
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
    serde_json::from_value(json!({
        "model": "gpt-4o", "messages": messages, "tools": tools, "tool_choice": "auto",
        "temperature": 0.2, "stream": true, "stream_options": {"include_usage": true}, "user": "u-123"
    }))
    .expect("a valid request")
}

fn bench(c: &mut Criterion) {
    preload(Family::O200k);
    preload(Family::Cl100k);
    const MIB: usize = 1 << 20;
    let english = prefix(include_str!("../docs/contract.md"), 10_000).to_owned();
    let code = prefix(include_str!("../src/json/mod.rs"), 10_000).to_owned();
    let texts = [
        ("english", english),
        ("code", code),
        ("run-1MB", "a".repeat(MIB)),
        ("random-1MB", random_letters(MIB)),
        ("run-4MiB", "a".repeat(4 * MIB)),
    ];

    let mut group = c.benchmark_group("tokens");
    for (family, fname) in [(Family::O200k, "o200k"), (Family::Cl100k, "cl100k")] {
        let tok = match family {
            Family::O200k => bpe_openai::o200k_base(),
            _ => bpe_openai::cl100k_base(),
        };
        for (name, text) in &texts {
            let hostile = name.contains("MB") || name.contains("MiB");
            group.throughput(Throughput::Bytes(text.len() as u64));
            let n = count_text(family, text);
            eprintln!(
                "{fname}/{name}: {} bytes, count_text {n} tokens",
                text.len()
            );
            group.bench_with_input(
                BenchmarkId::new(format!("count_text/{fname}"), name),
                text,
                |b, t| b.iter(|| count_text(family, black_box(t))),
            );
            if hostile && *name != "run-4MiB" {
                let n = tok.count(text.as_str());
                eprintln!("{fname}/{name}: exact {n} tokens");
                // Up to ~200 ms per iteration: criterion's minimum sample count.
                group.sample_size(10);
                group.bench_with_input(
                    BenchmarkId::new(format!("exact/{fname}"), name),
                    text,
                    |b, t| b.iter(|| tok.count(black_box(t.as_str()))),
                );
                group.sample_size(100);
            }
        }
    }

    let req = typical();
    let bytes = serde_json::to_vec(&req).expect("json").len();
    eprintln!(
        "prompt/typical: {bytes} bytes of JSON, {} tokens (o200k)",
        count_prompt_tokens(Family::O200k, &req)
    );
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("prompt/typical/o200k", |b| {
        b.iter(|| count_prompt_tokens(Family::O200k, black_box(&req)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

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

#[path = "support/bodies.rs"]
mod bodies;

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
    serde_json::from_value(bodies::typical_request()).expect("a valid request")
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

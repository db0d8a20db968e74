//! THROWAWAY: bpe-openai vs tiktoken-rs (removed after the comparison; numbers in BENCHMARKS.md).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 33
}

fn prefix(s: &str, n: usize) -> String {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn inputs() -> Vec<(&'static str, String)> {
    const MB: usize = 1 << 20;
    let mut seed = 42;
    let random: String = (0..MB).map(|_| (b'a' + (lcg(&mut seed) % 26) as u8) as char).collect();
    let cjk: String = (0..MB / 3).map(|_| char::from_u32(0x4E00 + (lcg(&mut seed) % 2000) as u32).unwrap()).collect();
    vec![
        ("english 10KB (docs/contract.md)", prefix(include_str!("../docs/contract.md"), 10_000)),
        ("rust 10KB (src/json.rs)", prefix(include_str!("../src/json.rs"), 10_000)),
        ("python 6.5KB (bench/load/report.py)", include_str!("../bench/load/report.py").to_owned()),
        ("1MB 'a' run", "a".repeat(MB)),
        ("1MB random a-z no spaces", random),
        ("1MB emoji run", "😀".repeat(MB / 4)),
        ("1MB CJK no spaces", cjk),
        ("1MB spaces", " ".repeat(MB)),
        ("100KB 'a' run", "a".repeat(100 * 1024)),
        ("10KB 'a' run", "a".repeat(10 * 1024)),
    ]
}

/// Median of runs, up to `budget` total (at least 3 runs unless one run exceeds the budget).
fn time(mut f: impl FnMut() -> usize, budget: Duration) -> (Duration, usize, usize) {
    let mut ts = Vec::new();
    let start = Instant::now();
    let mut n = 0;
    loop {
        let t = Instant::now();
        n = black_box(f());
        ts.push(t.elapsed());
        if (start.elapsed() > budget && ts.len() >= 3) || start.elapsed() > budget * 3 || ts.len() >= 200 {
            break;
        }
    }
    ts.sort();
    (ts[ts.len() / 2], n, ts.len())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // Init (first use) in this fresh process.
    let t = Instant::now();
    let b_o = bpe_openai::o200k_base();
    let _ = b_o.count("x");
    let bi_o = t.elapsed();
    let t = Instant::now();
    let b_c = bpe_openai::cl100k_base();
    let _ = b_c.count("x");
    let bi_c = t.elapsed();
    let t = Instant::now();
    let t_o = tiktoken_rs::o200k_base_singleton();
    let _ = t_o.count_ordinary("x");
    let ti_o = t.elapsed();
    let t = Instant::now();
    let t_c = tiktoken_rs::cl100k_base_singleton();
    let _ = t_c.count_ordinary("x");
    let ti_c = t.elapsed();
    println!("init: bpe-openai o200k {bi_o:?} cl100k {bi_c:?}; tiktoken-rs o200k {ti_o:?} cl100k {ti_c:?}");

    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let budget = Duration::from_secs(2);
    println!("| input | family | bpe-openai | tiktoken-rs | tokens (bpe / tiktoken) | bytes/token |");
    for (name, text) in inputs() {
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        for (fam, b, tk) in [("o200k", b_o, t_o), ("cl100k", b_c, t_c)] {
            let (bt, bn, _) = time(|| b.count(text.as_str()), budget);
            let (tt, tn, tr) = time(|| tk.encode_ordinary(&text).len(), budget);
            let rate = |d: Duration, n: usize| n as f64 / d.as_secs_f64() / 1e6;
            println!(
                "| {name} | {fam} | {bt:.2?} ({:.1} tok/µs) | {tt:.2?} ({:.1} tok/µs, {tr} runs) | {bn} / {tn}{} | {:.2} |",
                rate(bt, bn),
                rate(tt, tn),
                if bn == tn { "" } else { " DIFFER" },
                text.len() as f64 / bn as f64
            );
        }
    }
}

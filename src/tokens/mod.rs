//! Prompt token counting for admission: the real tokenizer of a model's family, bounded work.
//!
//! Tokens reserved at admission (rate limits in tokens per minute) need the prompt's size before
//! the upstream reports it. This module counts it with the model family's own tokenizer:
//!
//! * [`family_of`] maps an OpenAI model name to a [`Family`] (`o200k_base`, `cl100k_base`, or
//!   [`Family::Unknown`]); route names are often aliases, so callers may pass a configured
//!   family instead (parse it with [`Family::from_str`](std::str::FromStr));
//! * [`count_text`] counts one text: exactly with `bpe-openai` (the tiktoken vocabularies,
//!   embedded in the binary: no file or network access at runtime) up to 32 KiB, sampled
//!   beyond; a documented estimate for unknown families;
//! * [`count_prompt_tokens`] applies OpenAI's chat recipe (per-message overhead, names, reply
//!   priming) to a [`ChatCompletionRequest`](crate::contract::ChatCompletionRequest), with fixed
//!   estimates for images and audio, under a per-request budget of exact work;
//! * [`preload`] loads a vocabulary at startup, so that no request pays its one-time load.
//!
//! Every count is an **estimate of what the upstream will report**: the exact figure is the
//! upstream's `usage`, which settlement uses. Work is bounded on hostile input (a 4 MiB run of
//! one character, random letters without spaces): see [`count_text`] and `BENCHMARKS.md`.
//!
//! Why `bpe-openai` rather than `tiktoken-rs`: same counts, 1–3.5× faster on ordinary text and
//! 10–40× on long single-token runs (linear where tiktoken is superlinear), and tiktoken-rs
//! panics on 1 MB of spaces (a regex stack overflow, unwrapped); the price is binary size. The
//! measurements are in `BENCHMARKS.md` ("Tokenizer"), the reasons in the README's dependency
//! table.

mod family;
mod plug;
mod prompt;
mod text;

pub use family::{Family, UnknownFamily, family_of};
pub use plug::Tokenizer;
pub use prompt::{
    AUDIO_TOKENS_PER_SECOND, IMAGE_HIGH_DETAIL, IMAGE_LOW_DETAIL, PROMPT_EXACT_BUDGET,
    REPLY_PRIMING, TOKENS_PER_MESSAGE, TOKENS_PER_NAME, count_prompt_tokens,
};
pub use text::{EXACT_LIMIT, count_text, preload};

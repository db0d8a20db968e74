//! The tokenizer plugged into the layers that count: the rate limiter's admission estimate and
//! the usage layer's fallback count.

use crate::contract::ChatCompletionRequest;

use super::{count_prompt_tokens, count_text, family_of};

/// Counts with the vocabulary of the model's family ([`family_of`]; unknown families get the
/// documented estimate). It is a [`TokenEstimator`](crate::rate_limit::TokenEstimator) for
/// [`RateLimitConfig::estimator`](crate::rate_limit::RateLimitConfig::estimator) and a
/// [`TokenCounter`](crate::usage::TokenCounter) for the usage layer.
///
/// ```
/// use chatgate::rate_limit::TokenEstimator;
/// use chatgate::tokens::Tokenizer;
/// let req: chatgate::contract::ChatCompletionRequest = serde_json::from_str(
///     r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#,
/// ).unwrap();
/// // 3 per message + role (1) + "hello world" (2) + 3 for the reply.
/// assert_eq!(Tokenizer.prompt_tokens(&req), 9);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokenizer;

impl crate::rate_limit::TokenEstimator for Tokenizer {
    fn prompt_tokens(&self, request: &ChatCompletionRequest) -> u64 {
        count_prompt_tokens(family_of(&request.model), request)
    }
}

impl crate::usage::TokenCounter for Tokenizer {
    fn count_text(&self, model: &str, text: &str) -> u64 {
        count_text(family_of(model), text)
    }

    fn count_prompt(&self, request: &ChatCompletionRequest) -> u64 {
        count_prompt_tokens(family_of(&request.model), request)
    }
}

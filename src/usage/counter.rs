//! [`TokenCounter`]: counting tokens when the upstream reports none.

use crate::contract::ChatCompletionRequest;

/// Counts tokens when the upstream does not report usage (records then say `estimated: true`).
///
/// The default, [`ByteEstimate`], is a documented estimate; a real tokenizer plugs in by
/// implementing [`count_text`](Self::count_text) (and, if it knows the model's chat template,
/// [`count_prompt`](Self::count_prompt)).
pub trait TokenCounter: std::fmt::Debug + Send + Sync + 'static {
    /// Tokens in `text` for `model`.
    fn count_text(&self, model: &str, text: &str) -> u64;

    /// Tokens of a chat prompt: OpenAI's recipe for chat models, 3 per message plus the tokens
    /// of its role and text, plus 3 for the reply's priming.
    fn count_prompt(&self, request: &ChatCompletionRequest) -> u64 {
        let model = request.model.as_str();
        3 + request
            .messages
            .iter()
            .map(|m| 3 + self.count_text(model, &m.role) + self.count_text(model, &m.text()))
            .sum::<u64>()
    }
}

/// The fallback estimate: one token per 4 bytes of UTF-8, rounded up (OpenAI's rule of thumb
/// for English text; about right for code, low for CJK text).
///
/// ```
/// use chatgate::usage::{ByteEstimate, TokenCounter};
/// assert_eq!(ByteEstimate.count_text("m", "Hello world!"), 3);
/// assert_eq!(ByteEstimate.count_text("m", "Hi"), 1);
/// assert_eq!(ByteEstimate.count_text("m", ""), 0);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteEstimate;

impl TokenCounter for ByteEstimate {
    fn count_text(&self, _model: &str, text: &str) -> u64 {
        (text.len() as u64).div_ceil(4)
    }
}

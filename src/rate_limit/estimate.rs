//! How many tokens a request reserves: [`TokenEstimator`] for the prompt, the request's own
//! bound for the completion.

use std::io;

use crate::contract::ChatCompletionRequest;

/// Counts (or estimates) a request's prompt tokens, for the reservation made at admission.
///
/// The default is [`ByteEstimator`]; a real tokenizer plugs in by implementing this trait, or
/// as a closure `Fn(&ChatCompletionRequest) -> u64`:
///
/// ```
/// use chatgate::rate_limit::{RateLimitConfig, TokenEstimator};
/// use chatgate::contract::ChatCompletionRequest;
///
/// fn exact(req: &ChatCompletionRequest) -> u64 {
///     req.messages.iter().map(|m| chatgate::echo::count_tokens(&m.text()) + 4).sum::<u64>() + 3
/// }
/// let config = RateLimitConfig::new().estimator(exact);
/// # let _ = config;
/// ```
///
/// An estimate only decides what is *reserved*: the settlement replaces it with the exact usage
/// the model reports, so a poor estimate costs headroom for the length of one request, not
/// accuracy.
pub trait TokenEstimator: Send + Sync + 'static {
    /// The prompt tokens of `request`.
    fn prompt_tokens(&self, request: &ChatCompletionRequest) -> u64;
}

impl<F> TokenEstimator for F
where
    F: Fn(&ChatCompletionRequest) -> u64 + Send + Sync + 'static,
{
    fn prompt_tokens(&self, request: &ChatCompletionRequest) -> u64 {
        self(request)
    }
}

/// The default [`TokenEstimator`]: an **estimate**, not a tokenizer.
///
/// `ceil(bytes / 4) + 4 × messages + 3`, where `bytes` counts the text of every message (string
/// content or text parts), each message's role, name and `tool_calls` (as JSON), and the
/// request's `tools` (as JSON). Four bytes per token is the usual rule of thumb for English
/// with GPT-style BPE vocabularies (it undercounts for CJK text and overcounts for code-heavy
/// whitespace); the per-message 4 and reply 3 are OpenAI's chat framing. No allocation: JSON is
/// measured by serializing into a counter.
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteEstimator;

/// A writer that only counts.
struct Count(u64);

impl io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn json_len<T: serde::Serialize>(value: &T) -> u64 {
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

impl TokenEstimator for ByteEstimator {
    fn prompt_tokens(&self, request: &ChatCompletionRequest) -> u64 {
        use crate::contract::{ContentPart, MessageContent};
        let mut bytes = 0u64;
        for m in &request.messages {
            bytes += m.role.len() as u64;
            match &m.content {
                None => {}
                Some(MessageContent::Text(s)) => bytes += s.len() as u64,
                Some(MessageContent::Parts(parts)) => {
                    for p in parts {
                        if let ContentPart::Text { text, .. } = p {
                            bytes += text.len() as u64;
                        }
                    }
                }
            }
            if let Some(name) = m.extra.get("name") {
                bytes += name.get().len() as u64;
            }
            if let Some(calls) = &m.tool_calls {
                bytes += json_len(calls);
            }
        }
        if let Some(tools) = &request.tools {
            bytes += json_len(tools);
        }
        bytes.div_ceil(4) + 4 * request.messages.len() as u64 + 3
    }
}

/// The completion tokens a request may produce, per choice: `max_completion_tokens` (an extra
/// member of the contract), else `max_tokens`, else `default`.
pub fn completion_bound(request: &ChatCompletionRequest, default: u64) -> u64 {
    request
        .extra
        .get("max_completion_tokens")
        .and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok())
        .or(request.max_tokens)
        .unwrap_or(default)
}

/// What a request reserves: `prompt + n × completion` (the prompt is counted once however many
/// choices are asked for, as OpenAI's usage counts it).
pub fn reservation(
    request: &ChatCompletionRequest,
    estimator: &dyn TokenEstimator,
    default_completion: u64,
) -> u64 {
    let completion = completion_bound(request, default_completion);
    estimator
        .prompt_tokens(request)
        .saturating_add(completion.saturating_mul(request.choices()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ChatCompletionRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn estimate_and_reservation() {
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"12345678"}]}"#);
        // (4 + 8) / 4 + 4 + 3
        assert_eq!(ByteEstimator.prompt_tokens(&r), 10);
        assert_eq!(reservation(&r, &ByteEstimator, 100), 110);
        let r = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"12345678"}],"n":3,"max_tokens":5,"max_completion_tokens":7}"#,
        );
        assert_eq!(reservation(&r, &ByteEstimator, 100), 10 + 21);
        let r = parse(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5}"#);
        assert_eq!(completion_bound(&r, 100), 5);
        let with_tools = parse(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}]}"#,
        );
        assert!(ByteEstimator.prompt_tokens(&with_tools) > ByteEstimator.prompt_tokens(&r));
        let closure = |_: &ChatCompletionRequest| 42u64;
        assert_eq!(reservation(&r, &closure, 0), 47);
    }
}

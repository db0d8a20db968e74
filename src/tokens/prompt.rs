//! Prompt tokens of a chat-completions request, by OpenAI's chat recipe.

use crate::contract::{
    AudioFormat, ChatCompletionRequest, ContentPart, ImageDetail, Message, MessageContent,
};

use super::Family;
use super::text::{EXACT_LIMIT, count_text};

/// Tokens added per message by the chat format (`<|start|>{role}\n{content}<|end|>\n`).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens added when a message has a `name`.
pub const TOKENS_PER_NAME: u64 = 1;
/// Tokens priming the reply (`<|start|>assistant<|message|>`).
pub const REPLY_PRIMING: u64 = 3;
/// Estimate for an image with `detail: "low"`: OpenAI's fixed low-detail cost.
pub const IMAGE_LOW_DETAIL: u64 = 85;
/// Estimate for any other image (`high`, `auto` or none): the cost of a 1024×1024 image at high
/// detail (85 + 4 tiles × 170), as the image's size is not known without fetching it.
pub const IMAGE_HIGH_DETAIL: u64 = 765;
/// Audio tokens per second of input audio (one token per 100 ms).
pub const AUDIO_TOKENS_PER_SECOND: u64 = 10;

/// Bytes of text a request is tokenized exactly on; beyond, texts are extrapolated.
///
/// Every tokenizer call is charged at least 64 bytes against it, so many tiny texts are bounded
/// as well as a few large ones.
pub const PROMPT_EXACT_BUDGET: usize = 256 * 1024;
const MIN_CHARGE: usize = 64;

/// Prompt tokens of `req` for `family`: an **estimate** of the `usage.prompt_tokens` the upstream
/// will report, for reserving tokens at admission. The exact figure comes from the upstream's
/// usage when the response is settled.
///
/// The recipe is OpenAI's (the cookbook's `num_tokens_from_messages`), extended to the parts the
/// cookbook leaves out:
///
/// * [`REPLY_PRIMING`] (3), plus for each message [`TOKENS_PER_MESSAGE`] (3) and the tokens of its
///   `role`, its content, `name` (plus [`TOKENS_PER_NAME`]), `refusal`, `tool_call_id`, and of each
///   tool call's function name and arguments;
/// * content parts: text parts as text; an image [`IMAGE_LOW_DETAIL`] (85) with `detail: "low"`,
///   otherwise [`IMAGE_HIGH_DETAIL`] (765); audio [`AUDIO_TOKENS_PER_SECOND`] per second, the
///   duration estimated from the base64 length (WAV read as 16 kHz 16-bit mono, 32,000 bytes/s;
///   MP3 as 128 kbit/s, 16,000 bytes/s);
/// * `tools`: the tokens of their JSON (OpenAI renders tool definitions in its own format, which
///   is of similar size: the JSON reads somewhat high).
///
/// Texts are counted with [`count_text`] (exact up to 32 KiB each, sampled beyond) until
/// [`PROMPT_EXACT_BUDGET`] (256 KiB) of text has been tokenized; the rest of the request is
/// extrapolated with the tokens per byte seen so far (or the [`Family::Unknown`] estimate if
/// nothing was counted yet). So a request's cost is bounded whatever its size (the validator
/// caps bodies at 4 MiB by default).
///
/// ```
/// use chatgate::contract::{ChatCompletionRequest, Message, MessageContent};
/// use chatgate::tokens::{count_prompt_tokens, Family};
/// let req = ChatCompletionRequest {
///     model: "gpt-4o".into(),
///     messages: vec![Message {
///         role: "user".into(),
///         content: Some(MessageContent::Text("hello world".into())),
///         ..Default::default()
///     }],
///     ..Default::default()
/// };
/// // 3 (priming) + 3 (message) + 1 ("user") + 2 ("hello world")
/// assert_eq!(count_prompt_tokens(Family::O200k, &req), 9);
/// ```
pub fn count_prompt_tokens(family: Family, req: &ChatCompletionRequest) -> u64 {
    let mut c = Counter::new(family);
    let mut total = REPLY_PRIMING;
    for m in &req.messages {
        total += c.message(m);
    }
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty())
        && let Ok(json) = serde_json::to_string(tools)
    {
        total += c.text(&json);
    }
    total
}

/// Counts texts against the request's exact budget.
struct Counter {
    family: Family,
    budget: usize,
    tokens_seen: u64,
    bytes_seen: u64,
}

impl Counter {
    fn new(family: Family) -> Self {
        Counter {
            family,
            budget: PROMPT_EXACT_BUDGET,
            tokens_seen: 0,
            bytes_seen: 0,
        }
    }

    fn message(&mut self, m: &Message) -> u64 {
        let mut n = TOKENS_PER_MESSAGE + self.role(&m.role);
        match &m.content {
            None => {}
            Some(MessageContent::Text(s)) => n += self.text(s),
            Some(MessageContent::Parts(parts)) => {
                for p in parts {
                    n += match p {
                        ContentPart::Text { text, .. } => self.text(text),
                        ContentPart::ImageUrl { image_url, .. } => match image_url.detail {
                            Some(ImageDetail::Low) => IMAGE_LOW_DETAIL,
                            _ => IMAGE_HIGH_DETAIL,
                        },
                        ContentPart::InputAudio { input_audio, .. } => {
                            audio_tokens(input_audio.data.len(), input_audio.format)
                        }
                    };
                }
            }
        }
        if let Some(name) = m
            .extra
            .get("name")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
        {
            n += TOKENS_PER_NAME + self.text(&name);
        }
        for s in [&m.refusal, &m.tool_call_id].into_iter().flatten() {
            n += self.text(s);
        }
        for call in m.tool_calls.iter().flatten() {
            for s in [&call.function.name, &call.function.arguments]
                .into_iter()
                .flatten()
            {
                n += self.text(s);
            }
        }
        n
    }

    /// The usual roles are one token in both vocabularies.
    fn role(&mut self, role: &str) -> u64 {
        match (self.family, role) {
            (Family::O200k | Family::Cl100k, "system" | "user" | "assistant" | "tool") => 1,
            _ => self.text(role),
        }
    }

    fn text(&mut self, s: &str) -> u64 {
        if s.is_empty() {
            return 0;
        }
        if self.family == Family::Unknown || self.budget > 0 {
            let n = count_text(self.family, s);
            let charged = s.len().clamp(MIN_CHARGE, EXACT_LIMIT);
            self.budget = self.budget.saturating_sub(charged);
            self.tokens_seen += n;
            self.bytes_seen += s.len() as u64;
            return n;
        }
        // Budget spent (a known family has counted ≥ 256 KiB charged, so `bytes_seen` > 0).
        (s.len() as u64 * self.tokens_seen).div_ceil(self.bytes_seen.max(1))
    }
}

/// [`AUDIO_TOKENS_PER_SECOND`] times the duration estimated from the base64 length.
fn audio_tokens(base64_len: usize, format: AudioFormat) -> u64 {
    let bytes = base64_len as u64 / 4 * 3;
    let bytes_per_second = match format {
        AudioFormat::Wav => 32_000,
        AudioFormat::Mp3 => 16_000,
    };
    (bytes * AUDIO_TOKENS_PER_SECOND).div_ceil(bytes_per_second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{
        FunctionCall, FunctionDefinition, ImageUrl, InputAudio, Tool, ToolCall, ToolType,
    };

    fn msg(role: &str, text: &str) -> Message {
        Message {
            role: role.into(),
            content: Some(MessageContent::Text(text.into())),
            ..Default::default()
        }
    }

    fn req(messages: Vec<Message>) -> ChatCompletionRequest {
        ChatCompletionRequest {
            model: "gpt-4o".into(),
            messages,
            ..Default::default()
        }
    }

    #[test]
    fn recipe() {
        for f in [Family::O200k, Family::Cl100k] {
            let r = req(vec![
                msg("system", "You are a helpful assistant."),
                msg("user", "hello world"),
            ]);
            let want = 3 + (3 + 1 + count_text(f, "You are a helpful assistant.")) + (3 + 1 + 2);
            assert_eq!(count_prompt_tokens(f, &r), want, "{f}");
        }
        // The fast path for the usual roles agrees with the tokenizer.
        for role in ["system", "user", "assistant", "tool"] {
            assert_eq!(count_text(Family::O200k, role), 1);
            assert_eq!(count_text(Family::Cl100k, role), 1);
        }
    }

    #[test]
    fn name_refusal_tool_calls_and_tools() {
        let f = Family::O200k;
        let mut m = msg("user", "hi");
        m.extra.0.push((
            "name".into(),
            serde_json::value::RawValue::from_string("\"alice\"".into()).expect("json"),
        ));
        let base = count_prompt_tokens(f, &req(vec![msg("user", "hi")]));
        assert_eq!(
            count_prompt_tokens(f, &req(vec![m])),
            base + TOKENS_PER_NAME + count_text(f, "alice")
        );

        let call = Message {
            role: "assistant".into(),
            tool_calls: Some(vec![ToolCall {
                id: "call_1".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: Some("get_weather".into()),
                    arguments: Some(r#"{"city":"Paris"}"#.into()),
                    extra: Default::default(),
                },
                extra: Default::default(),
            }]),
            ..Default::default()
        };
        let answer = Message {
            tool_call_id: Some("call_1".into()),
            ..msg("tool", "sunny")
        };
        let got = count_prompt_tokens(f, &req(vec![call, answer]));
        let want = 3
            + (3 + 1 + count_text(f, "get_weather") + count_text(f, r#"{"city":"Paris"}"#))
            + (3 + 1 + count_text(f, "sunny") + count_text(f, "call_1"));
        assert_eq!(got, want);

        let mut r = req(vec![msg("user", "hi")]);
        let tools = vec![Tool {
            kind: ToolType::Function,
            function: Some(FunctionDefinition {
                name: "get_weather".into(),
                description: Some("Weather of a city".into()),
                parameters: None,
                strict: None,
                extra: Default::default(),
            }),
            uc_function: None,
            extra: Default::default(),
        }];
        let json = serde_json::to_string(&tools).expect("json");
        r.tools = Some(tools);
        assert_eq!(count_prompt_tokens(f, &r), base + count_text(f, &json));
    }

    #[test]
    fn images_and_audio() {
        let image = |detail| ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: "https://example.com/a.png".into(),
                detail,
                extra: Default::default(),
            },
            extra: Default::default(),
        };
        let parts = vec![
            ContentPart::Text {
                text: "hello world".into(),
                extra: Default::default(),
            },
            image(Some(ImageDetail::Low)),
            image(None),
            ContentPart::InputAudio {
                input_audio: InputAudio {
                    // 3 s of 16 kHz 16-bit mono WAV: 96,000 bytes, 128,000 base64 chars.
                    data: "A".repeat(128_000),
                    format: AudioFormat::Wav,
                    extra: Default::default(),
                },
                extra: Default::default(),
            },
        ];
        let m = Message {
            role: "user".into(),
            content: Some(MessageContent::Parts(parts)),
            ..Default::default()
        };
        for f in [Family::O200k, Family::Cl100k, Family::Unknown] {
            let text = if f == Family::Unknown { 3 } else { 2 };
            // "user" is 1 token in every family (ceil(4 / 4) for Unknown).
            assert_eq!(
                count_prompt_tokens(f, &req(vec![m.clone()])),
                3 + 3 + 1 + text + 85 + 765 + 30,
                "{f}"
            );
        }
        assert_eq!(audio_tokens(128_000, AudioFormat::Mp3), 60);
    }

    #[test]
    fn unknown_family_uses_the_estimate() {
        let r = req(vec![msg("user", "abcdefgh")]);
        // 3 + 3 + ceil(4/4) + ceil(8/4)
        assert_eq!(count_prompt_tokens(Family::Unknown, &r), 9);
    }

    #[test]
    fn large_requests_are_bounded_and_plausible() {
        // 64 messages of 32 KiB English (2 MiB): the first 8 are counted, the rest extrapolated.
        let text = super::super::text::tests::english();
        let english = super::super::text::tests::prefix(&text, EXACT_LIMIT);
        let r = req((0..64).map(|_| msg("user", english)).collect());
        let f = Family::O200k;
        let one = count_text(f, english);
        let got = count_prompt_tokens(f, &r);
        let want = 3 + 64 * (3 + 1 + one);
        let err = (got as f64 - want as f64).abs() / want as f64;
        assert!(err < 0.01, "{got} vs {want}");

        // A 4 MiB single-character run in one message.
        let r = req(vec![msg("user", &"a".repeat(4 << 20))]);
        let got = count_prompt_tokens(f, &r);
        assert!((400_000..=600_000).contains(&got), "{got}");
    }
}

//! The echo model's answer to one request: what it says (text or a tool call), rendered whole or
//! event by event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{count_tokens, tokenize};
use crate::contract::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta, Extra,
    FinishReason, FunctionCall, FunctionCallDelta, ResponseMessage, ToolCall, ToolCallDelta,
    ToolChoice, ToolChoiceMode, ToolType, Usage,
};

/// The answer to `req`, as a plan that can be rendered whole or streamed.
pub(super) fn plan(req: &ChatCompletionRequest, max_tokens: Option<u64>) -> Plan {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let seq = NEXT.fetch_add(1, Ordering::Relaxed);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prompt_tokens = 3 + req
        .messages
        .iter()
        .map(|m| 3 + count_tokens(&m.role) + count_tokens(&m.text()))
        .sum::<u64>();

    let answer = match tool_result(req) {
        // After a tool result the model reports it, so an agent loop ends.
        Some(result) => text_answer(req, &format!("The tool returned: {result}"), max_tokens),
        None => {
            let last_user = last_user_text(req);
            match tool_call(req, &last_user) {
                Some((name, arguments)) => {
                    let tokens = count_tokens(&arguments);
                    Answer::Tool {
                        id: format!("call_echo_{seq}"),
                        name,
                        arguments,
                        tokens,
                    }
                }
                None => text_answer(req, &last_user, max_tokens),
            }
        }
    };
    let n = req.choices().max(1);
    let per_choice = match &answer {
        Answer::Text { ends, .. } => ends.len() as u64,
        Answer::Tool { tokens, .. } => *tokens,
    };
    Plan {
        id: format!("chatcmpl-echo-{seq:016x}"),
        created,
        model: req.model.clone(),
        n: u32::try_from(n).unwrap_or(u32::MAX),
        answer,
        usage: Usage::new(prompt_tokens, per_choice.saturating_mul(n)),
        include_usage: req.include_usage(),
    }
}

/// The text of the last `user` message (empty without one).
fn last_user_text(req: &ChatCompletionRequest) -> String {
    req.messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.text())
        .unwrap_or_default()
}

/// When the conversation ends with tool results (role `tool`), their texts in order, joined by
/// newlines (parallel calls answer with several `tool` messages in a row).
pub(super) fn tool_result(req: &ChatCompletionRequest) -> Option<String> {
    let trailing = req
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role == "tool")
        .count();
    (trailing > 0).then(|| {
        req.messages[req.messages.len() - trailing..]
            .iter()
            .map(|m| m.text())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// `text` cut before the first stop sequence, then after `max_tokens` tokens.
fn text_answer(req: &ChatCompletionRequest, text: &str, max_tokens: Option<u64>) -> Answer {
    let mut text = text;
    let mut finish = FinishReason::Stop;
    if let Some(stop) = &req.stop
        && let Some(cut) = stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min()
    {
        text = &text[..cut];
    }
    let mut ends: Vec<usize> = tokenize(text)
        .scan(0, |at, t| {
            *at += t.len();
            Some(*at)
        })
        .collect();
    if let Some(max) = max_tokens
        && ends.len() as u64 > max
    {
        ends.truncate(usize::try_from(max).unwrap_or(usize::MAX));
        finish = FinishReason::Length;
    }
    let len = ends.last().copied().unwrap_or(0);
    Answer::Text {
        text: text[..len].to_owned(),
        ends,
        finish,
    }
}

/// Decides whether the echo model calls a tool; returns `(name, arguments)`.
fn tool_call(req: &ChatCompletionRequest, last_user: &str) -> Option<(String, String)> {
    let functions: Vec<&str> = req
        .tools
        .iter()
        .flatten()
        .filter(|t| t.kind == ToolType::Function)
        .filter_map(|t| t.function.as_ref().map(|f| f.name.as_str()))
        .collect();
    if functions.is_empty() {
        return None;
    }
    let from_message = || {
        let rest = last_user.trim_start().strip_prefix("call ")?;
        let name_end = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
        let name = &rest[..name_end];
        functions.contains(&name).then(|| {
            let args = rest[name_end..].trim();
            let valid =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(args).is_ok();
            (
                name.to_owned(),
                if valid {
                    args.to_owned()
                } else {
                    "{}".to_owned()
                },
            )
        })
    };
    match &req.tool_choice {
        Some(ToolChoice::Mode(ToolChoiceMode::None)) => None,
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) => {
            from_message().or_else(|| Some((functions[0].to_owned(), "{}".to_owned())))
        }
        Some(ToolChoice::Named(named)) => {
            let forced = named.function.name.clone();
            Some(match from_message() {
                Some((name, args)) if name == forced => (name, args),
                _ => (forced, "{}".to_owned()),
            })
        }
        _ => from_message(),
    }
}

#[derive(Debug)]
pub(super) enum Answer {
    Text {
        text: String,
        /// Byte offset where each token ends.
        ends: Vec<usize>,
        finish: FinishReason,
    },
    Tool {
        id: String,
        name: String,
        arguments: String,
        tokens: u64,
    },
}

#[derive(Debug)]
pub(super) struct Plan {
    id: String,
    created: u64,
    model: String,
    pub(super) n: u32,
    answer: Answer,
    pub(super) usage: Usage,
    pub(super) include_usage: bool,
}

impl Plan {
    pub(super) fn completion(&self) -> ChatCompletion {
        let (message, finish) = match &self.answer {
            Answer::Text { text, finish, .. } => (
                ResponseMessage {
                    role: "assistant".into(),
                    content: Some(text.clone()),
                    tool_calls: None,
                    refusal: None,
                    extra: Extra::default(),
                },
                *finish,
            ),
            Answer::Tool {
                id,
                name,
                arguments,
                ..
            } => (
                ResponseMessage {
                    role: "assistant".into(),
                    content: None,
                    tool_calls: Some(vec![ToolCall {
                        id: id.clone(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: Some(name.clone()),
                            arguments: Some(arguments.clone()),
                            extra: Extra::default(),
                        },
                        extra: Extra::default(),
                    }]),
                    refusal: None,
                    extra: Extra::default(),
                },
                FinishReason::ToolCalls,
            ),
        };
        ChatCompletion {
            id: Some(self.id.clone()),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: (0..self.n)
                .map(|index| Choice {
                    index,
                    message: message.clone(),
                    finish_reason: Some(finish),
                    extra: Extra::default(),
                })
                .collect(),
            usage: Some(self.usage),
            extra: Extra::default(),
        }
    }

    /// Number of content events of one choice (between the role chunk and the finish chunk).
    pub(super) fn content_events(&self) -> usize {
        match &self.answer {
            Answer::Text { ends, .. } => ends.len(),
            // The call header, then the arguments token by token.
            Answer::Tool { arguments, .. } => 1 + tokenize(arguments).count(),
        }
    }

    pub(super) fn chunk(
        &self,
        choices: Vec<ChunkChoice>,
        usage: Option<Usage>,
    ) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.include_usage.then_some(usage),
            extra: Extra::default(),
        }
    }

    /// Event `k` of choice `index`: 0 is the role chunk, then content, then the finish chunk.
    pub(super) fn choice_event(&self, index: u32, k: usize) -> ChatCompletionChunk {
        let last = self.content_events() + 1;
        let mut delta = Delta::default();
        let mut finish = None;
        if k == 0 {
            delta.role = Some("assistant".into());
            if matches!(self.answer, Answer::Text { .. }) {
                delta.content = Some(String::new());
            }
        } else if k == last {
            finish = Some(match &self.answer {
                Answer::Text { finish, .. } => *finish,
                Answer::Tool { .. } => FinishReason::ToolCalls,
            });
        } else {
            match &self.answer {
                Answer::Text { text, ends, .. } => {
                    let start = if k >= 2 { ends[k - 2] } else { 0 };
                    delta.content = Some(text[start..ends[k - 1]].to_owned());
                }
                Answer::Tool {
                    id,
                    name,
                    arguments,
                    ..
                } => {
                    let call = if k == 1 {
                        ToolCallDelta {
                            index: 0,
                            id: Some(id.clone()),
                            kind: Some("function".into()),
                            function: FunctionCallDelta {
                                name: Some(name.clone()),
                                arguments: Some(String::new()),
                            },
                        }
                    } else {
                        ToolCallDelta {
                            index: 0,
                            id: None,
                            kind: None,
                            function: FunctionCallDelta {
                                name: None,
                                arguments: tokenize(arguments).nth(k - 2).map(str::to_owned),
                            },
                        }
                    };
                    delta.tool_calls = Some(vec![call]);
                }
            }
        }
        self.chunk(
            vec![ChunkChoice {
                index,
                delta,
                finish_reason: finish,
                extra: Extra::default(),
            }],
            None,
        )
    }
}

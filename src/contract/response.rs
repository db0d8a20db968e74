use serde::{Deserialize, Serialize};

use super::Extra;

/// Token counts of one completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated, over all choices.
    pub completion_tokens: u64,
    /// The sum.
    pub total_tokens: u64,
}

impl Usage {
    /// Usage with `total_tokens` filled in.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Why a choice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Filtered.
    ContentFilter,
    /// Legacy function call.
    FunctionCall,
}

/// A non-streamed response (`object: "chat.completion"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Completion id.
    pub id: Option<String>,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// One per `n`.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Option<Usage>,
    /// Other members (`system_fingerprint`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice of a [`ChatCompletion`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position.
    pub index: u32,
    /// The answer.
    pub message: ResponseMessage,
    /// Why it ended.
    pub finish_reason: Option<FinishReason>,
    /// Other members (`logprobs`, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The assistant message of a [`Choice`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// Always `assistant`.
    pub role: String,
    /// The text.
    pub content: Option<String>,
    /// Tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<super::ToolCall>>,
    /// A refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A streamed event (`object: "chat.completion.chunk"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Same in every chunk of a stream.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Same in every chunk of a stream.
    pub created: u64,
    /// The model.
    pub model: String,
    /// Deltas; empty in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// `null` on normal chunks when usage was asked for; the totals on the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice's delta in a chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// Set on the last chunk of the choice.
    pub finish_reason: Option<FinishReason>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The new part of a streamed message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant` on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A text fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// A refusal fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// A fragment of a tool call; `id`, `type` and `name` come only on the first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call.
    pub index: u32,
    /// Call id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and argument fragment.
    pub function: FunctionCallDelta,
}

/// Name and argument fragment of a [`ToolCallDelta`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// Function name (first fragment only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Next piece of the arguments string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

use serde::{Deserialize, Serialize};

use super::Extra;

/// `POST /v1/chat/completions` request body (docs/contract.md, "Request body"), after lax coercion.
///
/// Fields follow MLflow's gateway model; `None` means the client sent nothing (or `null`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The model (route) name.
    pub model: String,
    /// The conversation; at least one message.
    pub messages: Vec<Message>,
    /// Sampling temperature, 0 ≤ t ≤ 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Number of choices, ≥ 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// Stop sequences; at least one when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Upper bound of completion tokens, ≥ 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Whether to stream server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (any object; `include_usage` is the one the contract uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Sampling seed. Wider than `i64` in faithful mode, as Python's `int` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i128>,
    /// How the model may use tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Every other member, forwarded unchanged (e.g. `top_p`, `user`).
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatCompletionRequest {
    /// Whether the response is a stream (`stream` absent or `null` means no).
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a streamed response ends with a usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage == Some(true))
    }

    /// `n`, or its default 1.
    pub fn choices(&self) -> u64 {
        self.n.unwrap_or(1)
    }
}

/// `stream_options`: any object; `include_usage`, when present, is a (lax) boolean.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final usage chunk before `[DONE]` (lax boolean, coerced). `None` when absent or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Every other member.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One message of the conversation. `role` is a free string, as in MLflow.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, … (not checked outside strict mode).
    pub role: String,
    /// Text or content parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// Tool calls an assistant made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// An assistant's refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Every other member (e.g. `name`), kept and forwarded.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Message {
    /// The text of the message: the string content, or its text parts joined with newlines.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(s)) => s.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut out = String::new();
                for p in parts {
                    if let ContentPart::Text { text, .. } = p {
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(text);
                    }
                }
                out
            }
        }
    }
}

/// A message's content: a string, or a list of parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Text, image and audio parts.
    Parts(Vec<ContentPart>),
}

/// A content part, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// `{"type":"text","text":…}`
    Text {
        /// The text.
        text: String,
        /// Other members.
        #[serde(flatten)]
        extra: Extra,
    },
    /// `{"type":"image_url","image_url":{"url","detail"?}}`
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
        /// Other members.
        #[serde(flatten)]
        extra: Extra,
    },
    /// `{"type":"input_audio","input_audio":{"data","format"}}`
    InputAudio {
        /// The audio.
        input_audio: InputAudio,
        /// Other members.
        #[serde(flatten)]
        extra: Extra,
    },
}

/// An image reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// URL or `data:` URI.
    pub url: String,
    /// Resolution hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `image_url.detail`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    /// `auto`
    Auto,
    /// `low`
    Low,
    /// `high`
    High,
}

/// Inline audio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputAudio {
    /// Base64 data.
    pub data: String,
    /// Encoding.
    pub format: AudioFormat,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `input_audio.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioFormat {
    /// `wav`
    Wav,
    /// `mp3`
    Mp3,
}

/// A tool call in an assistant message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, referenced by the `tool` message that answers it.
    pub id: String,
    /// Always `function` in practice; any string is accepted.
    #[serde(rename = "type", default = "function_str")]
    pub kind: String,
    /// The call.
    pub function: FunctionCall,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

fn function_str() -> String {
    "function".to_owned()
}

/// Function name and JSON-encoded arguments; both optional, as in MLflow 3.8.1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Function name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Arguments as a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A tool definition (`function` or MLflow's `uc_function`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// The tool type.
    #[serde(rename = "type")]
    pub kind: ToolType,
    /// The function, for `type: "function"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDefinition>,
    /// The Unity Catalog function, for `type: "uc_function"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uc_function: Option<UcFunction>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `tools[].type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolType {
    /// An ordinary function tool.
    Function,
    /// A Unity Catalog function, expanded by the gateway.
    UcFunction,
}

/// A function tool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// Function name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<FunctionParams>,
    /// Structured-output strictness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A function's parameter schema (MLflow's narrow JSON-schema subset).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionParams {
    /// Parameters by name, in the order given.
    #[serde(with = "ordered_map")]
    pub properties: Vec<(String, ParamProperty)>,
    /// Always `object`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Required parameter names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<Vec<String>>,
    /// Whether other parameters are allowed.
    #[serde(
        rename = "additionalProperties",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub additional_properties: Option<bool>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One parameter's schema.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamProperty {
    /// The JSON type, or several.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ParamTypes>,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Allowed values (scalars), as raw JSON.
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<serde_json::Value>>,
    /// Item schema of an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<ParamProperty>>,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One type or a list of types.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamTypes {
    /// A single type.
    One(ParamType),
    /// Several.
    Many(Vec<ParamType>),
}

/// A parameter's JSON type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// `string`
    String,
    /// `number`
    Number,
    /// `integer`
    Integer,
    /// `object`
    Object,
    /// `array`
    Array,
    /// `boolean`
    Boolean,
    /// `null`
    Null,
}

impl ParamType {
    pub(crate) const ALL: [(&'static str, ParamType); 7] = [
        ("string", ParamType::String),
        ("number", ParamType::Number),
        ("integer", ParamType::Integer),
        ("object", ParamType::Object),
        ("array", ParamType::Array),
        ("boolean", ParamType::Boolean),
        ("null", ParamType::Null),
    ];
}

/// A Unity Catalog function reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UcFunction {
    /// `catalog.schema.function`
    pub name: String,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `tool_choice`: a mode string or a named function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(ToolChoiceMode),
    /// `{"type":"function","function":{"name"}}`
    Named(NamedToolChoice),
}

/// The string forms of `tool_choice`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoiceMode {
    /// Never call a tool.
    None,
    /// The model decides.
    Auto,
    /// Call at least one tool.
    Required,
}

/// A named function choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    /// Always `function`.
    #[serde(rename = "type", default = "function_str")]
    pub kind: String,
    /// The function.
    pub function: ToolChoiceFunction,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The function of a [`NamedToolChoice`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolChoiceFunction {
    /// Function name.
    pub name: String,
    /// Other members.
    #[serde(flatten)]
    pub extra: Extra,
}

/// (De)serializes `Vec<(String, V)>` as a JSON object, keeping order.
mod ordered_map {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::marker::PhantomData;

    pub(super) fn serialize<S: Serializer, V: Serialize>(
        v: &[(String, V)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, x) in v {
            m.serialize_entry(k, x)?;
        }
        m.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<(String, V)>, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Vec<(String, V)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = m.next_entry()? {
                    out.push(e);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Vis(PhantomData))
    }
}

//! The wire types of the contract: the request, the response, the streaming chunk and usage.
//!
//! These are plain serde types with no I/O. The request is built by the
//! [validator](crate::validate) (which reports pydantic-exact errors and keeps the original
//! bytes); the types also implement `Deserialize`/`Serialize` for callers that build or read them
//! directly. Fields the contract does not model are kept in an [`Extra`] at every level, so a
//! re-serialized request loses nothing the client sent.

mod extra;
mod request;
mod response;

pub use extra::Extra;
pub use request::{
    AudioFormat, ChatCompletionRequest, ContentPart, FunctionCall, FunctionDefinition,
    FunctionParams, ImageDetail, ImageUrl, InputAudio, Message, MessageContent, NamedToolChoice,
    ParamProperty, ParamType, ParamTypes, StreamOptions, Tool, ToolCall, ToolChoice,
    ToolChoiceFunction, ToolChoiceMode, ToolType, UcFunction,
};
pub use response::{
    ChatCompletion, ChatCompletionChunk, Choice, ChunkChoice, Delta, FinishReason,
    FunctionCallDelta, ResponseMessage, ToolCallDelta, Usage,
};

//! OpenAI's semantic rules, enforced only in strict mode, answered with 400 (docs/contract.md,
//! "Semantic rules and strict mode").

use crate::contract::{ChatCompletionRequest, ContentPart, MessageContent, ToolChoice, ToolType};
use crate::error::ApiError;

const ROLES: [&str; 6] = [
    "developer",
    "system",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Checks the rules MLflow does not enforce but OpenAI does; the first broken one is returned.
///
/// ```
/// use bytes::Bytes;
/// use chatgate::validate::{check_strict, validate, ValidateConfig};
/// let v = validate(Bytes::from_static(br#"{"model":"m","messages":[{"role":"wizard","content":"hi"}]}"#),
///                  &ValidateConfig::default()).unwrap();
/// let e = check_strict(v.request()).unwrap_err();
/// assert_eq!(e.status(), 400);
/// assert_eq!(e.param(), Some("messages[0].role"));
/// ```
///
/// # Errors
/// A 400 `invalid_request_error` whose `param` names the offending field.
pub fn check_strict(req: &ChatCompletionRequest) -> Result<(), ApiError> {
    // R1
    if req.stream_options.is_some() && !req.is_stream() {
        return Err(ApiError::invalid_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        ));
    }
    // R9
    if let Some(stop) = &req.stop
        && stop.len() > 4
    {
        return Err(ApiError::invalid_request(
            format!("'stop' allows at most 4 sequences, got {}.", stop.len()),
            "stop",
        ));
    }
    // R10
    if let Some(n) = req.n
        && n > 128
    {
        return Err(ApiError::invalid_request(
            format!("{n} is greater than the maximum of 128 - 'n'"),
            "n",
        ));
    }
    if let Some(seed) = req.seed
        && i64::try_from(seed).is_err()
    {
        return Err(ApiError::invalid_request(
            "'seed' must be a signed 64-bit integer.",
            "seed",
        ));
    }
    let mut call_ids: Vec<&str> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        // R6
        if !ROLES.contains(&m.role.as_str()) {
            return Err(ApiError::invalid_request(
                format!(
                    "Invalid value: '{}'. Supported values are: 'system', 'assistant', 'user', 'tool', 'developer' and 'function'.",
                    m.role
                ),
                format!("messages[{i}].role"),
            ));
        }
        if let Some(calls) = &m.tool_calls {
            call_ids.extend(calls.iter().map(|c| c.id.as_str()));
        }
        if m.role == "tool" {
            // R7, R8
            let Some(id) = &m.tool_call_id else {
                return Err(ApiError::invalid_request(
                    "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
                    format!("messages[{i}].tool_call_id"),
                ));
            };
            if m.content.is_none() {
                return Err(ApiError::invalid_request(
                    "Missing parameter 'content': messages with role 'tool' must have a 'content'.",
                    format!("messages[{i}].content"),
                ));
            }
            if !call_ids.contains(&id.as_str()) {
                return Err(ApiError::invalid_request(
                    format!(
                        "Invalid parameter: 'tool_call_id' {id:?} does not answer a tool call of a preceding assistant message."
                    ),
                    format!("messages[{i}].tool_call_id"),
                ));
            }
        }
        // Only user messages carry images and audio.
        if m.role != "user"
            && let Some(MessageContent::Parts(parts)) = &m.content
            && parts.iter().any(|p| !matches!(p, ContentPart::Text { .. }))
        {
            return Err(ApiError::invalid_request(
                format!(
                    "Messages with role '{}' may only contain text parts.",
                    m.role
                ),
                format!("messages[{i}].content"),
            ));
        }
    }
    // R11
    if let Some(tools) = &req.tools {
        for (k, t) in tools.iter().enumerate() {
            match t.kind {
                ToolType::Function if t.function.is_none() => {
                    return Err(ApiError::invalid_request(
                        "Missing parameter 'function' for a tool of type 'function'.",
                        format!("tools[{k}].function"),
                    ));
                }
                ToolType::UcFunction if t.uc_function.is_none() => {
                    return Err(ApiError::invalid_request(
                        "Missing parameter 'uc_function' for a tool of type 'uc_function'.",
                        format!("tools[{k}].uc_function"),
                    ));
                }
                _ => {}
            }
        }
    }
    // R4
    if let Some(ToolChoice::Named(named)) = &req.tool_choice {
        let name = &named.function.name;
        let known = req.tools.iter().flatten().any(|t| {
            t.function.as_ref().is_some_and(|f| &f.name == name)
                || t.uc_function.as_ref().is_some_and(|f| &f.name == name)
        });
        if !known {
            return Err(ApiError::invalid_request(
                format!(
                    "Invalid value for 'tool_choice': no function named {name:?} was specified in 'tools'."
                ),
                "tool_choice",
            ));
        }
    }
    Ok(())
}

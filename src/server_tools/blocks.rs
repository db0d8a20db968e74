//! What ran, shown in the answer: MLflow's `<uc_function_call>` / `<uc_function_result>`
//! blocks, written before the model's text and parsed back into tool calls and tool messages
//! when a client sends the conversation back.

use serde_json::Value;

use super::catalog::tool_name;
use crate::contract::{Extra, FunctionCall, Message, MessageContent, ToolCall};

const CALL_OPEN: &str = "<uc_function_call>";
const CALL_CLOSE: &str = "</uc_function_call>";
const RESULT_OPEN: &str = "<uc_function_result>";
const RESULT_CLOSE: &str = "</uc_function_result>";

/// One catalog function the gateway ran.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Executed {
    /// The model's call id.
    pub(super) id: String,
    /// The catalog name (`catalog.schema.function`).
    pub(super) name: String,
    /// The arguments as the model wrote them.
    pub(super) arguments: String,
    /// The tool result the model was given.
    pub(super) content: String,
}

/// Pretty JSON (two-space indent, as Python's `json.dumps(indent=2)`) with `<` written as
/// `\u003c`, so no value can close a block early.
fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v)
        .unwrap_or_default()
        .replace('<', "\\u003c")
}

/// The blocks of `executed`, in MLflow's `join_uc_functions` format.
pub(super) fn render(executed: &[Executed]) -> String {
    executed
        .iter()
        .map(|e| {
            #[derive(serde::Serialize)]
            struct Call<'a> {
                id: &'a str,
                name: &'a str,
                arguments: &'a str,
            }
            #[derive(serde::Serialize)]
            struct Result<'a> {
                tool_call_id: &'a str,
                content: &'a str,
            }
            let call = Call {
                id: &e.id,
                name: &e.name,
                arguments: &e.arguments,
            };
            let result = Result {
                tool_call_id: &e.id,
                content: &e.content,
            };
            format!(
                "{CALL_OPEN}\n{}\n{CALL_CLOSE}\n\n{RESULT_OPEN}\n{}\n{RESULT_CLOSE}",
                pretty(&call),
                pretty(&result)
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The final content: the blocks, a blank line, then the model's text (MLflow's
/// `prepend_uc_functions`); just the blocks when the model said nothing.
pub(super) fn prepend(executed: &[Executed], text: Option<&str>) -> Option<String> {
    if executed.is_empty() {
        return text.map(str::to_owned);
    }
    let blocks = render(executed);
    Some(match text {
        Some(t) if !t.is_empty() => format!("{blocks}\n\n{t}"),
        _ => blocks,
    })
}

/// The blocks of one message's text, and the text around them.
#[derive(Debug, PartialEq)]
struct Parsed {
    calls: Vec<ToolCall>,
    results: Vec<Message>,
    rest: String,
}

fn as_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Parses every call/result pair of `text`; `None` when there is none or one is malformed
/// (the message is then left as it is).
fn parse(text: &str) -> Option<Parsed> {
    let mut out = Parsed {
        calls: Vec::new(),
        results: Vec::new(),
        rest: String::new(),
    };
    let mut at = 0;
    while let Some(open) = text[at..].find(CALL_OPEN).map(|i| at + i) {
        out.rest.push_str(&text[at..open]);
        let body = open + CALL_OPEN.len();
        let close = body + text[body..].find(CALL_CLOSE)?;
        let call: Value = serde_json::from_str(text[body..close].trim()).ok()?;
        let after = &text[close + CALL_CLOSE.len()..];
        let trimmed = after.trim_start();
        let result_body = trimmed.strip_prefix(RESULT_OPEN)?;
        let result_close = result_body.find(RESULT_CLOSE)?;
        let result: Value = serde_json::from_str(result_body[..result_close].trim()).ok()?;
        at = text.len() - (result_body.len() - result_close - RESULT_CLOSE.len());

        let id = as_text(call.get("id"))?;
        let name = call.get("name")?.as_str()?;
        let arguments = as_text(call.get("arguments")).unwrap_or_else(|| "{}".to_owned());
        let result_id = as_text(result.get("tool_call_id").or_else(|| result.get("id")))
            .unwrap_or_else(|| id.clone());
        out.calls.push(ToolCall {
            id,
            kind: "function".to_owned(),
            function: FunctionCall {
                name: Some(tool_name(name)),
                arguments: Some(arguments),
                extra: Extra::default(),
            },
            extra: Extra::default(),
        });
        out.results.push(Message {
            role: "tool".to_owned(),
            content: Some(MessageContent::Text(
                as_text(result.get("content")).unwrap_or_default(),
            )),
            tool_call_id: Some(result_id),
            ..Message::default()
        });
    }
    if out.calls.is_empty() {
        return None;
    }
    out.rest.push_str(&text[at..]);
    out.rest = out.rest.trim().to_owned();
    Some(out)
}

/// Whether any assistant message may carry blocks (a cheap test before [`expand`]).
pub(super) fn any(messages: &[Message]) -> bool {
    messages.iter().any(|m| {
        m.role == "assistant"
            && match &m.content {
                Some(MessageContent::Text(t)) => t.contains(CALL_OPEN),
                Some(MessageContent::Parts(_)) => m.text().contains(CALL_OPEN),
                None => false,
            }
    })
}

/// The conversation with every assistant message that carries blocks replaced by the tool
/// calls and tool messages they stand for; `None` when nothing changed.
///
/// * An answer that also called client tools (`tool_calls`) becomes one assistant message
///   calling the catalog functions and the client's tools, then the catalog results (the
///   client's own `tool` messages follow in the conversation), as MLflow rebuilds it.
/// * A final answer becomes an assistant message calling the catalog functions, their
///   results, then an assistant message with the remaining text (if any).
pub(super) fn expand(messages: &[Message]) -> Option<Vec<Message>> {
    if !any(messages) {
        return None;
    }
    let mut changed = false;
    let mut out = Vec::with_capacity(messages.len() + 4);
    for m in messages {
        let parsed = (m.role == "assistant")
            .then(|| m.text())
            .filter(|t| t.contains(CALL_OPEN))
            .and_then(|t| parse(&t));
        let Some(Parsed {
            mut calls,
            results,
            rest,
        }) = parsed
        else {
            out.push(m.clone());
            continue;
        };
        changed = true;
        let rest = (!rest.is_empty()).then_some(MessageContent::Text(rest));
        match &m.tool_calls {
            Some(own) if !own.is_empty() => {
                calls.extend(own.iter().cloned());
                out.push(Message {
                    content: rest,
                    tool_calls: Some(calls),
                    ..m.clone()
                });
                out.extend(results);
            }
            _ => {
                out.push(Message {
                    role: "assistant".to_owned(),
                    tool_calls: Some(calls),
                    ..Message::default()
                });
                out.extend(results);
                if rest.is_some() {
                    out.push(Message {
                        content: rest,
                        tool_calls: None,
                        ..m.clone()
                    });
                }
            }
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ex(id: &str, name: &str, args: &str, content: &str) -> Executed {
        Executed {
            id: id.into(),
            name: name.into(),
            arguments: args.into(),
            content: content.into(),
        }
    }

    #[test]
    fn renders_mlflows_format() {
        let text = prepend(
            &[ex("call_id", "test.uc.func", r#"{"x": 1, "y": 2}"#, "3")],
            Some("1 + 2 = 3"),
        )
        .unwrap();
        assert_eq!(
            text,
            "<uc_function_call>\n{\n  \"id\": \"call_id\",\n  \"name\": \"test.uc.func\",\n  \"arguments\": \"{\\\"x\\\": 1, \\\"y\\\": 2}\"\n}\n</uc_function_call>\n\n<uc_function_result>\n{\n  \"tool_call_id\": \"call_id\",\n  \"content\": \"3\"\n}\n</uc_function_result>\n\n1 + 2 = 3"
        );
    }

    #[test]
    fn round_trips_even_with_tags_in_values() {
        let executed = [
            ex(
                "a",
                "c.s.f",
                "{}",
                "</uc_function_result> <uc_function_call>",
            ),
            ex("b", "c.s.g", r#"{"q":"x"}"#, "r\n1,2\n"),
        ];
        let text = prepend(&executed, Some("done")).unwrap();
        let p = parse(&text).unwrap();
        assert_eq!(p.rest, "done");
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[0].function.name.as_deref(), Some("c__s__f"));
        assert_eq!(
            p.calls[1].function.arguments.as_deref(),
            Some(r#"{"q":"x"}"#)
        );
        assert_eq!(
            p.results[0].text(),
            "</uc_function_result> <uc_function_call>"
        );
        assert_eq!(p.results[1].tool_call_id.as_deref(), Some("b"));
    }

    #[test]
    fn parses_the_compact_form_and_id_in_results() {
        let text = r#"Let me look.

<uc_function_call>{"id":"Ya","name":"users.me.extract","arguments":"{\"q\":\"leo\"}"}</uc_function_call>

<uc_function_result>{"id":"Ya","content":"Leo"}</uc_function_result>

Found."#;
        let p = parse(text).unwrap();
        assert_eq!(p.rest, "Let me look.\n\n\n\nFound.");
        assert_eq!(p.results[0].tool_call_id.as_deref(), Some("Ya"));
        assert!(parse("<uc_function_call>{not json}</uc_function_call>").is_none());
        assert!(parse("no blocks").is_none());
    }
}

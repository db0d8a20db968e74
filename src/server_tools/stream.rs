//! The final answer as an event stream, for a client that asked for one (the rounds themselves
//! run without streaming).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::contract::{
    ChatCompletion, ChatCompletionChunk, ChunkChoice, Delta, Extra, FunctionCallDelta,
    ToolCallDelta,
};
use crate::sse;

/// A body of ready frames, one event each.
#[derive(Debug)]
pub(super) struct Events(VecDeque<Bytes>);

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

/// The chunks of `completion`: per choice a role chunk, a content chunk (when there is text), a
/// tool-calls chunk (when there are calls) and a finish chunk; then the usage chunk when
/// `include_usage`; then `[DONE]`.
pub(super) fn events(completion: &ChatCompletion, include_usage: bool) -> Events {
    let id = completion
        .id
        .clone()
        .unwrap_or_else(|| "chatcmpl-server-tools".to_owned());
    let chunk = |choices: Vec<ChunkChoice>, usage| ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk".to_owned(),
        created: completion.created,
        model: completion.model.clone(),
        choices,
        usage: include_usage.then_some(usage),
        extra: Extra::default(),
    };
    let one = |index: u32, delta: Delta, finish| {
        vec![ChunkChoice {
            index,
            delta,
            finish_reason: finish,
            extra: Extra::default(),
        }]
    };
    let mut out = VecDeque::new();
    let mut push = |c: ChatCompletionChunk| {
        out.push_back(sse::data(&serde_json::to_vec(&c).unwrap_or_default()));
    };
    for choice in &completion.choices {
        let m = &choice.message;
        push(chunk(
            one(
                choice.index,
                Delta {
                    role: Some("assistant".to_owned()),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            ),
            None,
        ));
        if let Some(text) = m.content.as_ref().filter(|t| !t.is_empty()) {
            push(chunk(
                one(
                    choice.index,
                    Delta {
                        content: Some(text.clone()),
                        ..Delta::default()
                    },
                    None,
                ),
                None,
            ));
        }
        if let Some(refusal) = &m.refusal {
            push(chunk(
                one(
                    choice.index,
                    Delta {
                        refusal: Some(refusal.clone()),
                        ..Delta::default()
                    },
                    None,
                ),
                None,
            ));
        }
        if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
            let deltas = calls
                .iter()
                .enumerate()
                .map(|(i, c)| ToolCallDelta {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    id: Some(c.id.clone()),
                    kind: Some(c.kind.clone()),
                    function: FunctionCallDelta {
                        name: c.function.name.clone(),
                        arguments: Some(c.function.arguments.clone().unwrap_or_default()),
                    },
                })
                .collect();
            push(chunk(
                one(
                    choice.index,
                    Delta {
                        tool_calls: Some(deltas),
                        ..Delta::default()
                    },
                    None,
                ),
                None,
            ));
        }
        push(chunk(
            one(choice.index, Delta::default(), choice.finish_reason),
            None,
        ));
    }
    if include_usage {
        push(chunk(Vec::new(), completion.usage));
    }
    out.push_back(Bytes::from_static(sse::DONE));
    Events(out)
}

//! The echo model's response body: a whole JSON document or an SSE stream produced on demand.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde::Serialize;

use super::plan::Plan;
use crate::sse;

pub(super) fn to_json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// The echo model's response body: a whole JSON document or an SSE stream produced on demand.
#[derive(Debug)]
pub struct EchoBody {
    kind: BodyKind,
}

#[derive(Debug)]
enum BodyKind {
    Whole(Option<Bytes>),
    Stream {
        plan: Box<Plan>,
        choice: u32,
        event: usize,
        usage_sent: bool,
        done: bool,
    },
}

impl EchoBody {
    pub(super) fn whole(bytes: Bytes) -> Self {
        Self {
            kind: BodyKind::Whole(Some(bytes)),
        }
    }

    pub(super) fn stream(plan: Plan) -> Self {
        Self {
            kind: BodyKind::Stream {
                plan: Box::new(plan),
                choice: 0,
                event: 0,
                usage_sent: false,
                done: false,
            },
        }
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let data = match &mut this.kind {
            BodyKind::Whole(data) => data.take(),
            BodyKind::Stream {
                plan,
                choice,
                event,
                usage_sent,
                done,
            } => {
                if *choice < plan.n {
                    let chunk = plan.choice_event(*choice, *event);
                    *event += 1;
                    if *event > plan.content_events() + 1 {
                        *event = 0;
                        *choice += 1;
                    }
                    Some(sse::data(&to_json(&chunk)))
                } else if plan.include_usage && !*usage_sent {
                    *usage_sent = true;
                    Some(sse::data(&to_json(
                        &plan.chunk(Vec::new(), Some(plan.usage)),
                    )))
                } else if !*done {
                    *done = true;
                    Some(Bytes::from_static(sse::DONE))
                } else {
                    None
                }
            }
        };
        Poll::Ready(data.map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Whole(data) => data.is_none(),
            BodyKind::Stream { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyKind::Stream { .. } => SizeHint::default(),
        }
    }
}

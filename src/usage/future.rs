//! The response futures of [`Usage`](super::Usage) and [`UsageMeter`](super::UsageMeter).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Response, header};
use http_body::Body;
use pin_project_lite::pin_project;

use super::UsageEnd;
use super::answer::CheckedAnswer;
use super::body::{MeterBody, Tally};
use super::draft::Draft;
use crate::BoxError;
use crate::body::{Gathered, OnEndBody};
use crate::error::ApiError;
use crate::route::{RoutedModel, UpstreamName};
use crate::sse::EndingHandoff;
use crate::upstream::UpstreamFailure;

pin_project! {
    /// Response future of [`Usage`](super::Usage).
    pub struct ResponseFuture<F> {
        // Boxed: the stack's futures inside are large, and a future is moved by value through
        // each layer's `call` on its way out; a box is moved as a pointer.
        inner: Pin<Box<F>>,
        draft: Option<Arc<Draft>>,
        span: tracing::Span,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, draft: Arc<Draft>, span: tracing::Span) -> Self {
        Self {
            inner: Box::pin(inner),
            draft: Some(draft),
            span,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<OnEndBody<B, UsageEnd>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // Polled often while it waits (a stream's head waits for its first events): this part
        // is kept small, the head's handling is out of line.
        let result = if this.span.is_disabled() {
            ready!(this.inner.as_mut().poll(cx))
        } else {
            let _entered = this.span.enter();
            ready!(this.inner.as_mut().poll(cx))
        };
        let draft = this.draft.take().expect("future polled after completion");
        Poll::Ready(head(result, draft))
    }
}

/// Notes the response head in the record; wraps the body in its end-of-response handler.
#[inline(never)]
fn head<B, E>(
    result: Result<Response<B>, E>,
    draft: Arc<Draft>,
) -> Result<Response<OnEndBody<B, UsageEnd>>, E>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let res = match result {
        Ok(res) => res,
        Err(e) => {
            let mut o = draft.outer();
            o.status = Some(500);
            o.error = Some("internal_error".into());
            return Err(e);
        }
    };
    let status = res.status();
    {
        let mut o = draft.outer();
        o.status = Some(status.as_u16());
        if let Some(r) = res.extensions().get::<RoutedModel>() {
            o.routed_model = Some(Arc::clone(r.shared()));
        }
        if let Some(u) = res.extensions().get::<UpstreamName>() {
            o.upstream = Some(Arc::clone(u.shared()));
        }
        if o.key_id.is_none()
            && let Some(p) = res.extensions().get::<crate::auth::Principal>()
        {
            o.key_id = Some(p.id().to_owned());
        }
    }
    let error = !status.is_success();
    // The clock the handler's `End` carries is not read: the record's own start serves.
    let started = draft.started();
    Ok(res.map(|b| OnEndBody::started_at(b, UsageEnd::new(draft, error), started)))
}

pin_project! {
    /// Response future of [`UsageMeter`](super::UsageMeter).
    pub struct MeterFuture<F, B> {
        // Polled in place until the head comes (a stream's head is polled for as often as its
        // first events arrive): no state to match on the way in.
        #[pin]
        future: F,
        // The rare case: an answer from an in-process service, read whole here (an upstream's
        // comes read and checked). Boxed, so that it costs the usual request no room.
        reading: Option<Box<Reading<B>>>,
        draft: Option<Arc<Draft>>,
        hide_usage: bool,
        max_body: usize,
    }
}

/// A non-streamed answer being read: a body that comes in one frame (the usual case) is kept
/// as it came, not copied; the inner service's body is read as it is, not boxed.
struct Reading<B> {
    parts: Option<http::response::Parts>,
    body: Option<B>,
    read: Gathered,
}

impl<F, B> std::fmt::Debug for MeterFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterFuture").finish_non_exhaustive()
    }
}

impl<F, B> MeterFuture<F, B> {
    pub(crate) fn new(
        future: F,
        draft: Option<Arc<Draft>>,
        hide_usage: bool,
        max_body: usize,
    ) -> Self {
        Self {
            future,
            reading: None,
            draft,
            hide_usage,
            max_body,
        }
    }
}

fn bad_gateway<B: Body>(message: &'static str) -> Response<MeterBody<B>> {
    ApiError::bad_gateway(message)
        .into_response()
        .map(|b| MeterBody::full(crate::body::full_into_bytes(b)))
}

/// What the meter does with a response head: hands it on, or reads its body first.
enum Head<B: Body> {
    Ready(Response<MeterBody<B>>),
    Read(http::response::Parts, B),
}

/// Notes the head of the answer in the record (`draft`, taken when the meter is done with it)
/// and decides what the body needs: a stream is watched as it passes, a non-streamed 2xx answer
/// is read whole, anything else passes as it is.
#[inline(never)]
fn meter_head<B>(mut res: Response<B>, draft: &mut Option<Arc<Draft>>, hide_usage: bool) -> Head<B>
where
    B: Body<Data = Bytes>,
{
    let Some(d) = draft.as_ref() else {
        return Head::Ready(res.map(MeterBody::inner));
    };
    let routed = res
        .extensions()
        .get::<RoutedModel>()
        .map(|r| Arc::clone(r.shared()));
    let success = res.status().is_success();
    let sse = success
        && res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // A non-streamed answer the upstream client already read and checked.
    let checked = if success && !sse {
        res.extensions_mut().remove::<CheckedAnswer>()
    } else {
        None
    };
    {
        let mut i = d.inner();
        i.answered = Some(res.status());
        i.streamed = sse;
        if success && !sse {
            i.observed.routed.clone_from(&routed);
        }
        if let Some(answer) = checked {
            i.observed.answer(answer);
            drop(i);
            draft.take();
            return Head::Ready(res.map(MeterBody::inner));
        }
        if res
            .extensions()
            .get::<UpstreamFailure>()
            .is_some_and(UpstreamFailure::is_invalid_answer)
        {
            // The upstream client's 502 for an answer that is not a chat completion (other
            // failures are recorded by their error's code, as any error status).
            i.error = Some("invalid_response".into());
        }
    }
    if !success {
        draft.take();
        return Head::Ready(res.map(MeterBody::inner));
    }
    if sse {
        let mut tally = Tally::new(draft.take().expect("checked above"));
        tally.observed.routed = routed;
        // The stream is decoded here anyway: the stream ending inside need not scan it too.
        tally.ending = res
            .extensions_mut()
            .remove::<EndingHandoff>()
            .and_then(EndingHandoff::claim);
        return Head::Ready(res.map(|b| MeterBody::stream(b, tally, hide_usage)));
    }
    let (parts, body) = res.into_parts();
    Head::Read(parts, body)
}

impl<F, B, E> Future for MeterFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<MeterBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.reading.is_none() {
            // Polled often while it waits: the head's handling is out of line.
            let res = ready!(this.future.poll(cx))?;
            match meter_head(res, this.draft, *this.hide_usage) {
                Head::Ready(res) => return Poll::Ready(Ok(res)),
                Head::Read(parts, body) => {
                    *this.reading = Some(Box::new(Reading {
                        parts: Some(parts),
                        body: Some(body),
                        read: Gathered::default(),
                    }));
                }
            }
        }
        let reading = this.reading.as_mut().expect("set above");
        read_answer(reading, this.draft, *this.max_body, cx).map(Ok)
    }
}

/// Reads a non-streamed answer whole (up to `max_body` bytes) and checks it; the response to
/// hand on.
#[inline(never)]
fn read_answer<B>(
    reading: &mut Reading<B>,
    draft_slot: &mut Option<Arc<Draft>>,
    max_body: usize,
    cx: &mut Context<'_>,
) -> Poll<Response<MeterBody<B>>>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let Reading { parts, body, read } = reading;
    loop {
        let inner = body.as_mut().expect("future polled after completion");
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        let draft = Arc::clone(draft_slot.as_ref().expect("kept while reading"));
        match frame {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let over = read.len() + data.len() > max_body;
                    read.push(data);
                    if over {
                        // Too long to read: it passes through, unread.
                        draft.inner().observed.unknown = true;
                        let parts = parts.take().expect("parts kept while reading");
                        let rest = body.take().expect("body kept while reading");
                        let prefix = read.take();
                        draft_slot.take();
                        let body = MeterBody::prefixed(prefix, rest);
                        return Poll::Ready(Response::from_parts(parts, body));
                    }
                }
            }
            Some(Err(_)) => {
                draft.inner().error = Some("upstream_failed".into());
                draft_slot.take();
                body.take();
                return Poll::Ready(bad_gateway("The upstream failed while sending its answer."));
            }
            None => {
                let answer = read.take();
                let parts = parts.take().expect("parts kept while reading");
                body.take();
                let ok = draft.inner().observed.completion(answer.clone());
                if !ok {
                    draft.inner().error = Some("invalid_response".into());
                }
                draft_slot.take();
                if !ok {
                    return Poll::Ready(bad_gateway(
                        "The upstream's answer is not a chat completion.",
                    ));
                }
                return Poll::Ready(Response::from_parts(parts, MeterBody::full(answer)));
            }
        }
    }
}

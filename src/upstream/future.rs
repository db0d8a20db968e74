use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Response, header};
use http_body::Body;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::body::UpstreamBody;
use super::error::{FailureKind, UpstreamFailure};
use super::headers::strip_response;
use crate::body::{Gathered, OnEndBody, full_into_bytes};
use crate::error::ApiError;
use crate::sse::SseEnding;
use crate::usage::CheckedAnswer;

pin_project! {
    /// Sends one request: the upstream's response with its raw body.
    pub(crate) struct SendFuture {
        #[pin]
        kind: Kind,
    }
}

/// The response body of [`Upstream`](super::Upstream): the upstream's body, with the
/// contract's stream ending ([`SseEnding`]) for event streams.
pub type ResponseBody = OnEndBody<UpstreamBody, Option<SseEnding>>;

/// Adds the contract's stream ending to an event stream.
pub(crate) fn with_ending(res: Response<UpstreamBody>) -> Response<ResponseBody> {
    if !res.body().is_event_stream() {
        return res.map(|body| OnEndBody::new(body, None));
    }
    // An observer further out that decodes the stream anyway may take the scanning over.
    let (ending, handoff) = SseEnding::handing_off();
    let mut res = res.map(|body| OnEndBody::new(body, Some(ending)));
    res.extensions_mut().insert(handoff);
    res
}

pin_project! {
    /// Response future of [`Upstream`](super::Upstream).
    pub struct ResponseFuture {
        #[pin]
        send: SendFuture,
    }
}

impl ResponseFuture {
    pub(crate) fn new(send: SendFuture) -> Self {
        Self { send }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = std::task::ready!(self.project().send.poll(cx))?;
        Poll::Ready(Ok(with_ending(res)))
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Sending {
            #[pin]
            call: hyper_util::client::legacy::ResponseFuture,
            #[pin]
            timer: Sleep,
            deadline: Instant,
            idle: Duration,
            max_answer: usize,
        },
        // An event stream: reading ahead what has already arrived (see
        // `UpstreamBody::poll_prefetch`), so that it leaves with the head.
        Prefetching { response: Option<Response<UpstreamBody>> },
        // A non-streamed 2xx answer: read whole and checked before its head goes on. A body
        // that comes in one frame (the usual case) is kept as it came, not copied.
        Checking {
            parts: Option<http::response::Parts>,
            body: Option<UpstreamBody>,
            read: Gathered,
            max: usize,
        },
        Done,
    }
}

impl std::fmt::Debug for SendFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFuture").finish_non_exhaustive()
    }
}

impl SendFuture {
    pub(crate) fn send(
        call: hyper_util::client::legacy::ResponseFuture,
        first_byte: Duration,
        idle: Duration,
        total: Duration,
        max_answer: usize,
    ) -> Self {
        let now = Instant::now();
        let deadline = now + total;
        Self {
            kind: Kind::Sending {
                call,
                timer: tokio::time::sleep_until((now + first_byte).min(deadline)),
                deadline,
                idle,
                max_answer,
            },
        }
    }
}

/// The gateway's own error response for a transport failure, carrying the failure.
pub(crate) fn failure_response(failure: UpstreamFailure) -> Response<UpstreamBody> {
    let err = if failure.is_timeout() {
        ApiError::upstream_timeout(failure.message())
    } else {
        ApiError::bad_gateway(failure.message())
    };
    let mut res = err
        .into_response()
        .map(|b| UpstreamBody::full(full_into_bytes(b)));
    res.extensions_mut().insert(failure);
    res
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamFailure {
    let mut detail = e.to_string();
    let mut timed_out = false;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            timed_out = true;
        }
        source = s.source();
    }
    let kind = match (e.is_connect(), timed_out) {
        (true, true) => FailureKind::ConnectTimeout,
        (true, false) => FailureKind::Connect,
        (false, _) => FailureKind::Protocol,
    };
    UpstreamFailure::new(kind, detail)
}

/// Whether `res` is a non-streamed answer to check: a 2xx whose body is not encoded (the
/// gateway does not ask for encodings; one it did not ask for is left to the client).
fn is_answer(res: &Response<Incoming>) -> bool {
    res.status().is_success()
        && res
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v == HeaderValue::from_static("identity"))
}

fn is_event_stream(res: &Response<Incoming>) -> bool {
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/event-stream")
        && res
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none_or(|v| v == HeaderValue::from_static("identity"))
}

impl Future for SendFuture {
    type Output = Result<Response<UpstreamBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = match self.as_mut().project().kind.project() {
            KindProj::Sending {
                call,
                timer,
                deadline,
                idle,
                max_answer,
            } => match call.poll(cx) {
                Poll::Ready(Ok(res)) => {
                    let sse = is_event_stream(&res);
                    let check = !sse && *max_answer > 0 && is_answer(&res);
                    let (mut parts, body) = res.into_parts();
                    strip_response(&mut parts.headers);
                    // The client's note of the connection's addresses, which nothing here reads:
                    // out, so that the extensions the gateway adds fit the map as it is.
                    parts
                        .extensions
                        .remove::<hyper_util::client::legacy::connect::HttpInfo>();
                    if sse {
                        // The gateway may append `[DONE]` or an error event.
                        parts.headers.remove(header::CONTENT_LENGTH);
                    }
                    let body = UpstreamBody::stream(body, *idle, *deadline, sse);
                    let response = Response::from_parts(parts, body);
                    if sse {
                        self.as_mut().project().kind.set(Kind::Prefetching {
                            response: Some(response),
                        });
                        return self.poll(cx);
                    }
                    if check {
                        let max = *max_answer;
                        let (parts, body) = response.into_parts();
                        self.as_mut().project().kind.set(Kind::Checking {
                            parts: Some(parts),
                            body: Some(body),
                            read: Gathered::default(),
                            max,
                        });
                        return self.poll(cx);
                    }
                    response
                }
                Poll::Ready(Err(e)) => failure_response(classify(&e)),
                Poll::Pending => {
                    if timer.poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let kind = if Instant::now() >= *deadline {
                        FailureKind::TotalTimeout
                    } else {
                        FailureKind::FirstByteTimeout
                    };
                    failure_response(UpstreamFailure::new(kind, ""))
                }
            },
            KindProj::Prefetching { response } => {
                let res = response.as_mut().expect("future polled after completion");
                if res.body_mut().poll_prefetch(cx).is_pending() {
                    return Poll::Pending;
                }
                response.take().expect("future polled after completion")
            }
            KindProj::Checking {
                parts,
                body,
                read,
                max,
            } => {
                let inner = body.as_mut().expect("future polled after completion");
                loop {
                    match ready!(Pin::new(&mut *inner).poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            // Trailers (not expected on an answer) are dropped.
                            let Ok(data) = frame.into_data() else {
                                continue;
                            };
                            let over = read.len() + data.len() > *max;
                            read.push(data);
                            if over {
                                // Too long to check: it passes through as it comes.
                                let mut rest = body.take().expect("future polled after completion");
                                rest.unread(read.take());
                                let parts = parts.take().expect("future polled after completion");
                                break Response::from_parts(parts, rest);
                            }
                        }
                        Some(Err(e)) => {
                            let failure = match e.downcast::<UpstreamFailure>() {
                                Ok(f) => *f,
                                Err(e) => {
                                    UpstreamFailure::new(FailureKind::Protocol, e.to_string())
                                }
                            };
                            break failure_response(failure);
                        }
                        None => {
                            let Some(answer) = CheckedAnswer::check(read.take()) else {
                                break failure_response(UpstreamFailure::new(
                                    FailureKind::InvalidAnswer,
                                    "",
                                ));
                            };
                            let parts = parts.take().expect("future polled after completion");
                            let body = UpstreamBody::full(answer.body().clone());
                            let mut res = Response::from_parts(parts, body);
                            res.extensions_mut().insert(answer);
                            break res;
                        }
                    }
                }
            }
            KindProj::Done => panic!("future polled after completion"),
        };
        self.project().kind.set(Kind::Done);
        Poll::Ready(Ok(out))
    }
}

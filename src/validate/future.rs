use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

use super::schema::validate_bytes;
use super::service::is_json_content;
use super::{ValidateConfig, ValidatedRequest, check_strict};
use crate::body::ResponseBody;
use crate::error::{ApiError, ErrorType};

pin_project! {
    /// Response future of [`Validate`](super::Validate): reads the body, validates it, then
    /// runs the inner service.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<ValidatedRequest>>,
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<ValidatedRequest>>,
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Early { response: Option<Response<Full<Bytes>>> },
        Collecting {
            #[pin] collect: Collect<Limited<B>>,
            #[pin] deadline: Option<Sleep>,
            parts: Option<Parts>,
            inner: Option<S>,
            config: Arc<ValidateConfig>,
        },
        Calling { #[pin] future: S::Future },
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<ValidatedRequest>>,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<ValidatedRequest>>,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub(super) fn early(response: Response<Full<Bytes>>) -> Self {
        Self {
            state: State::Early {
                response: Some(response),
            },
        }
    }

    pub(super) fn collecting(
        collect: Collect<Limited<B>>,
        parts: Parts,
        inner: S,
        config: Arc<ValidateConfig>,
    ) -> Self {
        Self {
            state: State::Collecting {
                collect,
                // Armed only if the body is not already complete (see `poll`): most bodies
                // arrive with the head and never need a timer.
                deadline: None,
                parts: Some(parts),
                inner: Some(inner),
                config,
            },
        }
    }
}

fn request_timeout() -> Response<Full<Bytes>> {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        ErrorType::InvalidRequestError,
        "The request body was not received in time.",
        None,
        Some("request_timeout".into()),
    )
    .into_response()
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<ValidatedRequest>, Response = Response<ResBody>>,
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Early { response } => {
                    let res = response.take().expect("future polled after completion");
                    return Poll::Ready(Ok(ResponseBody::from_full(res)));
                }
                StateProj::Collecting {
                    collect,
                    mut deadline,
                    parts,
                    inner,
                    config,
                } => {
                    let collected = match collect.poll(cx) {
                        Poll::Ready(r) => r,
                        Poll::Pending => {
                            if deadline.is_none()
                                && let Some(t) = config.body_timeout
                            {
                                deadline.set(Some(tokio::time::sleep(t)));
                            }
                            if let Some(d) = deadline.as_pin_mut() {
                                ready!(d.poll(cx));
                                state.set(State::Early {
                                    response: Some(request_timeout()),
                                });
                                continue;
                            }
                            return Poll::Pending;
                        }
                    };
                    let bytes = match collected {
                        Ok(c) => c.to_bytes(),
                        Err(e) => {
                            let res = if e.downcast_ref::<LengthLimitError>().is_some() {
                                ApiError::request_too_large(config.max_body).into_response()
                            } else {
                                ApiError::new(
                                    StatusCode::BAD_REQUEST,
                                    ErrorType::InvalidRequestError,
                                    "The request body could not be read.",
                                    None,
                                    Some("body_read_error".into()),
                                )
                                .into_response()
                            };
                            state.set(State::Early {
                                response: Some(res),
                            });
                            continue;
                        }
                    };
                    let mut parts = parts.take().expect("future polled after completion");
                    let json = is_json_content(&parts.headers);
                    let validated = match validate_bytes(bytes, json, config) {
                        Ok(v) => v,
                        Err(errors) => {
                            state.set(State::Early {
                                response: Some(errors.into_response()),
                            });
                            continue;
                        }
                    };
                    if config.strict
                        && let Err(e) = check_strict(&validated.request)
                    {
                        state.set(State::Early {
                            response: Some(e.into_response()),
                        });
                        continue;
                    }
                    parts.headers.remove(http::header::CONTENT_LENGTH);
                    let body = ValidatedRequest::from_parts(
                        validated.request,
                        validated.original,
                        validated.patches,
                        validated.spans,
                    );
                    let mut inner = inner.take().expect("future polled after completion");
                    let future = inner.call(Request::from_parts(parts, body));
                    state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let res = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                }
            }
        }
    }
}

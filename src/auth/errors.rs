//! The responses of the auth layers (docs/contract.md, "Errors"). None of them contains the
//! presented key.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::error::{ApiError, ErrorType};

fn invalid_api_key(message: &'static str) -> Response<Full<Bytes>> {
    // `ApiError::into_response` adds `WWW-Authenticate: Bearer` to every 401.
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorType::InvalidRequestError,
        message,
        None,
        Some("invalid_api_key".into()),
    )
    .into_response()
}

/// 401: no key presented.
pub(super) fn missing_key() -> Response<Full<Bytes>> {
    invalid_api_key(
        "You didn't provide an API key. Provide it in the Authorization header \
         (Authorization: Bearer YOUR_KEY).",
    )
}

/// 401: a key that is malformed, unknown, disabled or expired (one answer for all).
pub(super) fn invalid_key() -> Response<Full<Bytes>> {
    invalid_api_key("Incorrect API key provided.")
}

/// 503: the key store could not answer; the request is refused (fail closed).
pub(super) fn store_unavailable() -> Response<Full<Bytes>> {
    let mut res = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorType::ServerError,
        "The API key could not be checked; try again shortly.",
        None,
        Some("service_unavailable".into()),
    )
    .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// 403: the key may not use `model`.
pub(super) fn model_not_allowed(model: &str) -> Response<Full<Bytes>> {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorType::InvalidRequestError,
        format!("The API key is not allowed to use the model `{model}`."),
        Some("model".into()),
        Some("model_not_allowed".into()),
    )
    .into_response()
}

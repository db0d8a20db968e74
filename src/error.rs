//! The two error bodies of the contract and the responses that carry them.
//!
//! * [`ValidationErrors`]: the 422 FastAPI/pydantic body `{"detail":[{"type","loc","msg","input","ctx"?}]}`.
//! * [`ApiError`]: every other error, in OpenAI's envelope
//!   `{"error":{"message","type","param","code"}}` (docs/contract.md, "Errors").

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use serde_json::value::RawValue;

/// The `type` of an OpenAI error envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorType {
    /// The request is wrong (400, 401, 404, 413).
    InvalidRequestError,
    /// A limit was hit (429).
    RateLimitError,
    /// The gateway or what it fronts failed (500, 502, 503, 504).
    ServerError,
}

/// An error in OpenAI's envelope, with the HTTP status it is sent with.
///
/// ```
/// use chatgate::error::ApiError;
/// let e = ApiError::model_not_found("gpt-9");
/// assert_eq!(e.status(), 404);
/// assert_eq!(e.code(), Some("model_not_found"));
/// ```
#[derive(Clone, Debug)]
pub struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    kind: ErrorType,
    param: Option<Cow<'static, str>>,
    code: Option<Cow<'static, str>>,
}

impl ApiError {
    /// An error with every field given.
    pub fn new(
        status: StatusCode,
        kind: ErrorType,
        message: impl Into<Cow<'static, str>>,
        param: Option<Cow<'static, str>>,
        code: Option<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param,
            code,
        }
    }

    /// 400 `invalid_request_error` naming the offending `param` (strict mode).
    pub fn invalid_request(
        message: impl Into<Cow<'static, str>>,
        param: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequestError,
            message,
            Some(param.into()),
            None,
        )
    }

    /// 404: `model` names no configured endpoint.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequestError,
            format!("The model `{model}` does not exist or you do not have access to it."),
            Some("model".into()),
            Some("model_not_found".into()),
        )
    }

    /// 400: the model is configured but no endpoint for it is ready.
    pub fn model_not_ready(model: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorType::InvalidRequestError,
            format!("The model endpoint `{model}` is not ready."),
            Some("model".into()),
            Some("model_not_ready".into()),
        )
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn request_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequestError,
            format!("The request body exceeds the limit of {limit} bytes."),
            None,
            Some("request_too_large".into()),
        )
    }

    /// 502: the upstream could not be reached or answered garbage.
    pub fn bad_gateway(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            ErrorType::ServerError,
            message,
            None,
            Some("bad_gateway".into()),
        )
    }

    /// 504: the upstream did not answer in time.
    pub fn upstream_timeout(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorType::ServerError,
            message,
            None,
            Some("upstream_timeout".into()),
        )
    }

    /// 500: the gateway itself is misassembled or failed.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::ServerError,
            message,
            None,
            Some("internal_error".into()),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The envelope's `type`.
    pub fn kind(&self) -> ErrorType {
        self.kind
    }

    /// The envelope's `code`.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The envelope's `param`.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The envelope's `message`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body `{"error":{…}}`.
    pub fn to_bytes(&self) -> Bytes {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: ErrorType,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        let env = Envelope {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        };
        Bytes::from(serde_json::to_vec(&env).unwrap_or_default())
    }

    /// The response: status, `application/json`, the envelope (and `WWW-Authenticate` on 401).
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut res = json_response(self.status, self.to_bytes());
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// A `loc` segment: an object key or an array position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Loc {
    /// An object key or a union branch label.
    Key(Cow<'static, str>),
    /// An array position (for `json_invalid`, the character offset).
    Index(usize),
}

impl From<&'static str> for Loc {
    fn from(s: &'static str) -> Self {
        Loc::Key(Cow::Borrowed(s))
    }
}

impl From<usize> for Loc {
    fn from(i: usize) -> Self {
        Loc::Index(i)
    }
}

/// One entry of the 422 `detail` list.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorDetail {
    /// pydantic's error type, e.g. `missing`, `string_type`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where: always starts with `"body"`.
    pub loc: Vec<Loc>,
    /// pydantic's message.
    pub msg: Cow<'static, str>,
    /// The offending value as raw JSON (for `missing`, the object it is missing from).
    pub input: Box<RawValue>,
    /// Extra context for some types (`ge`, `le`, `expected`, `error`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The 422 body: every schema violation of one request, in validation order.
///
/// ```
/// use chatgate::validate::{validate, ValidateConfig};
/// let err = validate(bytes::Bytes::from_static(br#"{"model":"m","messages":[]}"#), &ValidateConfig::default()).unwrap_err();
/// let body: serde_json::Value = serde_json::from_slice(&err.to_bytes()).unwrap();
/// assert_eq!(body["detail"][0]["type"], "too_short");
/// ```
#[derive(Clone, Debug, Default, Serialize)]
pub struct ValidationErrors {
    /// The entries.
    pub detail: Vec<ErrorDetail>,
}

impl ValidationErrors {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.detail.is_empty()
    }

    /// The JSON body.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The 422 response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        json_response(StatusCode::UNPROCESSABLE_ENTITY, self.to_bytes())
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} validation error(s)", self.detail.len())?;
        for d in &self.detail {
            write!(f, "; {:?} {}: {}", d.loc, d.kind, d.msg)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A JSON response with the given status.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// 405 `{"detail":"Method Not Allowed"}`, as FastAPI answers.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut res = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        Bytes::from_static(br#"{"detail":"Method Not Allowed"}"#),
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    res
}

//! The rate-limit headers (OpenAI's names and formats) and the 429 / 503 answers.

use std::borrow::Cow;
use std::fmt::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::backend::{LimitKind, Refusal, Status, Window};
use crate::error::{ApiError, ErrorType};

/// `x-ratelimit-limit-requests`: the tightest scope's requests per minute.
pub const X_RATELIMIT_LIMIT_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-limit-requests");
/// `x-ratelimit-limit-tokens`: the tightest scope's tokens per minute.
pub const X_RATELIMIT_LIMIT_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-limit-tokens");
/// `x-ratelimit-remaining-requests`: requests that could be made now.
pub const X_RATELIMIT_REMAINING_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-requests");
/// `x-ratelimit-remaining-tokens`: tokens that could be reserved now.
pub const X_RATELIMIT_REMAINING_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining-tokens");
/// `x-ratelimit-reset-requests`: time until the requests allowance is full again (`1s`,
/// `6m0s`, `120ms`).
pub const X_RATELIMIT_RESET_REQUESTS: HeaderName =
    HeaderName::from_static("x-ratelimit-reset-requests");
/// `x-ratelimit-reset-tokens`: time until the tokens allowance is full again.
pub const X_RATELIMIT_RESET_TOKENS: HeaderName =
    HeaderName::from_static("x-ratelimit-reset-tokens");
/// `retry-after-ms`: milliseconds to wait (OpenAI's clients prefer it to `Retry-After`).
pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
/// `x-should-retry`: `false` on a request that can never fit (OpenAI's clients then do not
/// retry).
pub const X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// A duration as OpenAI writes its resets (Go's `time.Duration` format, to the millisecond,
/// rounded up): `0s`, `120ms`, `1s`, `1.5s`, `6m0s`, `1h0m0s`.
///
/// ```
/// use std::time::Duration;
/// use chatgate::rate_limit::format_reset;
/// assert_eq!(format_reset(Duration::from_millis(120)), "120ms");
/// assert_eq!(format_reset(Duration::from_secs(1)), "1s");
/// assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
/// assert_eq!(format_reset(Duration::from_micros(1_500_001)), "1.501s");
/// assert_eq!(format_reset(Duration::ZERO), "0s");
/// ```
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let digits = format!("{frac:03}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

fn int(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

fn text(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("0s"))
}

/// Writes the `x-ratelimit-*` headers of `status` (those of the dimensions it limits).
pub fn insert_status(headers: &mut HeaderMap, status: &Status) {
    let mut put = |w: &Option<Window>, names: [HeaderName; 3]| {
        if let Some(w) = w {
            let [limit, remaining, reset] = names;
            headers.insert(limit, int(w.limit));
            headers.insert(remaining, int(w.remaining));
            headers.insert(reset, text(&format_reset(w.reset)));
        }
    };
    put(
        &status.requests,
        [
            X_RATELIMIT_LIMIT_REQUESTS,
            X_RATELIMIT_REMAINING_REQUESTS,
            X_RATELIMIT_RESET_REQUESTS,
        ],
    );
    put(
        &status.tokens,
        [
            X_RATELIMIT_LIMIT_TOKENS,
            X_RATELIMIT_REMAINING_TOKENS,
            X_RATELIMIT_RESET_TOKENS,
        ],
    );
}

/// The 429 for `refusal` of the scope described as `scope` (e.g. "key `team-a`").
///
/// `rate_limit_error` / `rate_limit_exceeded`, a message naming the limit (requests, tokens or
/// concurrency), `Retry-After` (whole seconds, rounded up), `retry-after-ms` and the refusing
/// scope's `x-ratelimit-*` headers. A request that can never fit (it asks more tokens than the
/// whole per-minute limit, or the limit is 0) gets no `Retry-After` but `x-should-retry: false`.
///
/// A budget refusal ([`LimitKind::is_budget`]) is 429 `rate_limit_error` / `budget_exceeded`,
/// its `Retry-After` the time until the period ends (`x-should-retry: false` when the request
/// is larger than the whole budget), the `x-ratelimit-*` headers those of the per-minute
/// limits.
pub fn too_many_requests(refusal: &Refusal, scope: &str) -> Response<Full<Bytes>> {
    let what = refusal.limit.describe();
    let amount = |n: u64| match refusal.limit {
        LimitKind::BudgetUsd => format!("${:.6}", n as f64 / 1_000_000.0),
        _ => format!("{n} tokens"),
    };
    let message: Cow<'static, str> = match (refusal.retry_after, refusal.limit) {
        (None, kind) if kind.is_budget() => format!(
            "Request too large for the budget of {scope}: it may cost {}, more than the whole \
             budget of {} per period; it can never be admitted. Lower max_tokens / \
             max_completion_tokens or shorten the prompt.",
            amount(refusal.requested),
            amount(refusal.value)
        )
        .into(),
        (Some(wait), kind) if kind.is_budget() => format!(
            "Budget exhausted for {scope}: {} per period, this request may cost {}. The budget \
             resets in {}.",
            amount(refusal.value),
            amount(refusal.requested),
            format_reset(wait)
        )
        .into(),
        (None, LimitKind::Tokens) => format!(
            "Request too large: it needs {} tokens (prompt estimate plus the completion \
             reservation), more than the limit of {} {what} for {scope}; it can never be \
             admitted. Lower max_tokens / max_completion_tokens or shorten the prompt.",
            refusal.requested, refusal.value
        )
        .into(),
        (None, _) => {
            format!("Rate limit of 0 {what} for {scope}: no request can be admitted.").into()
        }
        (Some(wait), LimitKind::Concurrency) => format!(
            "Rate limit reached for {what} for {scope}: limit {}, all in use. Please retry after \
             {}.",
            refusal.value,
            format_reset(wait)
        )
        .into(),
        (Some(wait), _) => format!(
            "Rate limit reached for {what} for {scope}: limit {}, requested {}. Please retry \
             after {}.",
            refusal.value,
            refusal.requested,
            format_reset(wait)
        )
        .into(),
    };
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorType::RateLimitError,
        message,
        None,
        Some(if refusal.limit.is_budget() {
            "budget_exceeded".into()
        } else {
            "rate_limit_exceeded".into()
        }),
    )
    .into_response();
    let headers = res.headers_mut();
    insert_status(headers, &refusal.status);
    match refusal.retry_after {
        Some(wait) => {
            let ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            headers.insert(header::RETRY_AFTER, int(ms.div_ceil(1000).max(1)));
            headers.insert(RETRY_AFTER_MS, int(ms));
        }
        None => {
            headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
        }
    }
    res
}

/// 503 `service_unavailable`: the limiter's store is unreachable and the backend fails closed.
pub(super) fn unavailable() -> Response<Full<Bytes>> {
    let mut res = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorType::ServerError,
        "The rate limiter is unavailable; please retry shortly.",
        None,
        Some("service_unavailable".into()),
    )
    .into_response();
    res.headers_mut().insert(header::RETRY_AFTER, int(1));
    res
}

//! [`UsageRecord`]: what one request used, and the small helpers it needs (dates).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What one request used: exactly one per request that reached the [`UsageLayer`](super::UsageLayer),
/// served or rejected.
///
/// Token counts are the upstream's when it reported them (`estimated: false`), else counted by
/// the [`TokenCounter`](super::TokenCounter) (`estimated: true`); a request that was rejected
/// before it reached a model has zero tokens. Times are milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The request id (`x-request-id`), when the gateway assigned one.
    pub request_id: Option<String>,
    /// The API key's id ([`Principal::id`](crate::auth::Principal::id)), when authenticated.
    pub key_id: Option<String>,
    /// The `model` the client asked for (`None` when the body was never validated).
    pub model: Option<String>,
    /// The route that served it ([`RoutedModel`](crate::route::RoutedModel)): differs from
    /// `model` when a fallback served.
    pub routed_model: Option<String>,
    /// The model the upstream says answered (`model` of the response).
    pub response_model: Option<String>,
    /// The upstream that served it (its host and port), when known.
    pub upstream: Option<String>,
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens, over all choices.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
    /// `usage.prompt_tokens_details.cached_tokens`, when the upstream gives it.
    pub cached_tokens: Option<u64>,
    /// `usage.completion_tokens_details.reasoning_tokens`, when the upstream gives it.
    pub reasoning_tokens: Option<u64>,
    /// The cost in the prices' currency, when the model has a [price](super::Price).
    pub cost: Option<f64>,
    /// The HTTP status sent to the client; 499 when the client left before the response head.
    pub status: u16,
    /// Whether the response was an event stream.
    pub streamed: bool,
    /// Milliseconds from the request to the first content (first content delta of a stream, or
    /// the first body byte).
    pub ttft_ms: Option<f64>,
    /// Milliseconds from the request to the end of the response body.
    pub duration_ms: f64,
    /// The response ended early (the client left, or the upstream died mid-stream): the tokens
    /// are those up to there.
    pub partial: bool,
    /// The token counts were estimated, not reported by the upstream.
    pub estimated: bool,
    /// The tokens could not be read (a non-streamed body over the bound, or an event over the
    /// decoder's bound): the counts are zero.
    pub usage_unknown: bool,
    /// What went wrong, as OpenTelemetry's `error.type`: the error `code` or `type` for an
    /// error status, `client_closed`, `upstream_failed`, `invalid_response`; `None` on success.
    pub error: Option<String>,
    /// The `finish_reason`s, in choice order as they arrived.
    pub finish_reasons: Vec<String>,
    /// Unix milliseconds when the request arrived.
    pub started_at_ms: u64,
    /// Unix milliseconds when the response ended.
    pub ended_at_ms: u64,
}

impl UsageRecord {
    /// The UTC day the request arrived, `YYYY-MM-DD`.
    pub fn day(&self) -> String {
        day_of(self.started_at_ms)
    }

    /// Whether the request was rejected or failed (status not 2xx).
    pub fn is_error(&self) -> bool {
        !(200..300).contains(&self.status)
    }
}

/// Unix milliseconds of a time (0 before the epoch).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// `YYYY-MM-DD` (UTC) of unix milliseconds (Howard Hinnant's `civil_from_days`).
pub(crate) fn day_of(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_709_251_199_999), "2024-02-29");
        assert_eq!(day_of(1_735_689_600_000), "2025-01-01");
    }
}

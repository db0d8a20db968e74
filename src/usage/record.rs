//! [`UsageRecord`]: what one request used, and the small helpers it needs (dates).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one request used: exactly one per request that reached the [`UsageLayer`](super::UsageLayer),
/// served or rejected.
///
/// Token counts are the upstream's when it reported them (`estimated: false`), else counted by
/// the [`TokenCounter`](super::TokenCounter) (`estimated: true`); a request that was rejected
/// before it reached a model has zero tokens. Times are milliseconds (durations to the
/// microsecond).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The request id (`x-request-id`), when the gateway assigned one.
    pub request_id: Option<String>,
    /// The API key's id ([`Principal::id`](crate::auth::Principal::id)), when authenticated.
    pub key_id: Option<String>,
    /// The `model` the client asked for (`None` when the body was never validated).
    ///
    /// The names are shared (`Arc<str>`): a record holds the route's own name, not a copy,
    /// and a sink that keeps one keeps it for the cost of a reference count.
    pub model: Option<Arc<str>>,
    /// The route that served it ([`RoutedModel`](crate::route::RoutedModel)): differs from
    /// `model` when a fallback served.
    pub routed_model: Option<Arc<str>>,
    /// The model the upstream says answered (`model` of the response).
    pub response_model: Option<Arc<str>>,
    /// The upstream that served it (its host and port), when known.
    pub upstream: Option<Arc<str>>,
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

/// Appends `s` as a JSON string, as serde_json writes it (copied as it is when nothing needs an
/// escape).
pub(crate) fn json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly these bytes.
    if super::answer::next_special(s.as_bytes()).is_some() {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

impl UsageRecord {
    /// Appends the record as one line of JSON (without the line end): the same bytes as
    /// `serde_json::to_writer`, written field by field (strings that need no escape are copied
    /// as they are), which costs about half as much for the JSONL sink.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_with(out, None);
    }

    /// [`write_json`](Self::write_json), the parts of the line that mostly repeat from one
    /// record to the next taken from `cache` when the last record it wrote had the same.
    pub(crate) fn write_json_cached(&self, out: &mut Vec<u8>, cache: &mut LineCache) {
        self.write_json_with(out, Some(cache));
    }

    fn write_json_with(&self, out: &mut Vec<u8>, mut cache: Option<&mut LineCache>) {
        out.reserve(match &cache {
            Some(c) => 128 + c.names.json.len() + c.tail.json.len(),
            None => 512,
        });
        out.extend_from_slice(b"{\"request_id\":");
        opt_string(out, self.request_id.as_deref());
        match cache.as_deref_mut() {
            Some(c) => c.names.write(self, out),
            None => write_names(out, self),
        }
        int(out, self.prompt_tokens);
        out.extend_from_slice(b",\"completion_tokens\":");
        int(out, self.completion_tokens);
        out.extend_from_slice(b",\"total_tokens\":");
        int(out, self.total_tokens);
        if self.cached_tokens.is_none() && self.reasoning_tokens.is_none() {
            out.extend_from_slice(b",\"cached_tokens\":null,\"reasoning_tokens\":null,\"cost\":");
        } else {
            out.extend_from_slice(b",\"cached_tokens\":");
            opt_int(out, self.cached_tokens);
            out.extend_from_slice(b",\"reasoning_tokens\":");
            opt_int(out, self.reasoning_tokens);
            out.extend_from_slice(b",\"cost\":");
        }
        match self.cost {
            // Floats as serde_json writes them.
            Some(c) => {
                let _ = serde_json::to_writer(&mut *out, &c);
            }
            None => out.extend_from_slice(b"null"),
        }
        match (self.status, self.streamed) {
            (200, false) => {
                out.extend_from_slice(b",\"status\":200,\"streamed\":false,\"ttft_ms\":")
            }
            (200, true) => out.extend_from_slice(b",\"status\":200,\"streamed\":true,\"ttft_ms\":"),
            (status, streamed) => {
                out.extend_from_slice(b",\"status\":");
                int(out, u64::from(status));
                out.extend_from_slice(b",\"streamed\":");
                flag(out, streamed);
                out.extend_from_slice(b",\"ttft_ms\":");
            }
        }
        match self.ttft_ms {
            Some(ms) => json_ms(out, ms),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"duration_ms\":");
        json_ms(out, self.duration_ms);
        match cache {
            Some(c) => c.tail.write(self, out),
            None => write_tail(out, self),
        }
        int(out, self.started_at_ms);
        out.extend_from_slice(b",\"ended_at_ms\":");
        int(out, self.ended_at_ms);
        out.push(b'}');
    }
}

/// An integer as serde_json writes it (with the `itoa` it uses).
fn int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn opt_int(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => int(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

fn flag(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// What a JSON line of the last record had that the next one mostly repeats: the records of a
/// batch mostly share their key, names (the strings themselves, so the comparison is mostly
/// of pointers), how they ended and their finish reasons. Those parts are copied from the last
/// line when they are the same, not written again.
#[derive(Debug, Default)]
pub(crate) struct LineCache {
    names: NamesCache,
    tail: TailCache,
}

/// A record's four names: the model asked for, routed and answering, and the upstream.
type Names = [Option<Arc<str>>; 4];

/// `,"key_id":…,"model":…,"routed_model":…,"response_model":…,"upstream":…,"prompt_tokens":`
/// of the last record.
#[derive(Debug, Default)]
struct NamesCache {
    /// Whether `key_id` and `names` are the last record's (not at first).
    valid: bool,
    key_id: Option<String>,
    names: Names,
    json: Vec<u8>,
}

impl NamesCache {
    fn write(&mut self, r: &UsageRecord, out: &mut Vec<u8>) {
        let names = [&r.model, &r.routed_model, &r.response_model, &r.upstream];
        let same = self.valid
            && self.key_id == r.key_id
            && self.names.iter().zip(names).all(|(a, b)| match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            });
        if !same {
            self.json.clear();
            write_names(&mut self.json, r);
            // Into the buffers already there (keys that take turns cost no allocation).
            self.key_id.clone_from(&r.key_id);
            self.names = names.map(Clone::clone);
            self.valid = true;
        }
        out.extend_from_slice(&self.json);
    }
}

/// `,"key_id":…,"model":…,"routed_model":…,"response_model":…,"upstream":…,"prompt_tokens":`
fn write_names(out: &mut Vec<u8>, r: &UsageRecord) {
    out.extend_from_slice(b",\"key_id\":");
    opt_string(out, r.key_id.as_deref());
    out.extend_from_slice(b",\"model\":");
    opt_string(out, r.model.as_deref());
    out.extend_from_slice(b",\"routed_model\":");
    opt_string(out, r.routed_model.as_deref());
    out.extend_from_slice(b",\"response_model\":");
    opt_string(out, r.response_model.as_deref());
    out.extend_from_slice(b",\"upstream\":");
    opt_string(out, r.upstream.as_deref());
    out.extend_from_slice(b",\"prompt_tokens\":");
}

/// `,"partial":…,"estimated":…,"usage_unknown":…,"error":…,"finish_reasons":[…],"started_at_ms":`
/// of the last record.
#[derive(Debug, Default)]
struct TailCache {
    /// Whether the fields below are the last record's (not at first).
    valid: bool,
    flags: [bool; 3],
    error: Option<String>,
    finish_reasons: Vec<String>,
    json: Vec<u8>,
}

impl TailCache {
    fn write(&mut self, r: &UsageRecord, out: &mut Vec<u8>) {
        let flags = [r.partial, r.estimated, r.usage_unknown];
        let same = self.valid
            && self.flags == flags
            && self.error == r.error
            && self.finish_reasons == r.finish_reasons;
        if !same {
            self.json.clear();
            write_tail(&mut self.json, r);
            self.flags = flags;
            self.error.clone_from(&r.error);
            self.finish_reasons.clone_from(&r.finish_reasons);
            self.valid = true;
        }
        out.extend_from_slice(&self.json);
    }
}

/// `,"partial":…,"estimated":…,"usage_unknown":…,"error":…,"finish_reasons":[…],"started_at_ms":`
fn write_tail(out: &mut Vec<u8>, r: &UsageRecord) {
    out.extend_from_slice(b",\"partial\":");
    flag(out, r.partial);
    out.extend_from_slice(b",\"estimated\":");
    flag(out, r.estimated);
    out.extend_from_slice(b",\"usage_unknown\":");
    flag(out, r.usage_unknown);
    out.extend_from_slice(b",\"error\":");
    opt_string(out, r.error.as_deref());
    out.extend_from_slice(b",\"finish_reasons\":[");
    for (i, reason) in r.finish_reasons.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, reason);
    }
    out.extend_from_slice(b"],\"started_at_ms\":");
}

/// Milliseconds to the microsecond (as the record's times are): `d` as a float.
pub(crate) fn ms_of(d: Duration) -> f64 {
    // Exact for any duration a request takes (below 2^53 microseconds); in `u64`, as `u128`
    // to `f64` is a call to a slow library routine.
    let micros = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()));
    micros as f64 / 1000.0
}

/// Appends a count of milliseconds as serde_json writes an `f64`: whole microseconds (what
/// [`ms_of`] makes) with integer formatting, anything else through serde_json.
pub(crate) fn json_ms(out: &mut Vec<u8>, ms: f64) {
    // Below 1e9 ms (11 days), serde_json writes such a value as plain decimals.
    if ms.is_sign_positive() && ms < 1e9 {
        let micros = (ms * 1000.0 + 0.5) as u64;
        // Only when `ms` is exactly that many microseconds: the shortest decimals that
        // read back as `ms` are then these.
        if micros as f64 / 1000.0 == ms {
            write_micros(out, micros, true);
            return;
        }
    }
    let _ = serde_json::to_writer(&mut *out, &ms);
}

/// Appends `micros` microseconds as milliseconds with three decimals, or (`trim`) with the
/// fewest decimals that say it, at least one.
pub(crate) fn write_micros(out: &mut Vec<u8>, micros: u64, trim: bool) {
    // Made in a buffer wide enough for any `u64` (20 digits) and the decimals, the whole part
    // backwards from the point, then appended at once.
    let digit = |d: u64| b'0' + (d % 10) as u8;
    let frac = micros % 1000;
    let mut buf = [0; 24];
    buf[20..].copy_from_slice(&[b'.', digit(frac / 100), digit(frac / 10), digit(frac)]);
    let len = match (trim, frac) {
        (false, _) => 4,
        (true, f) if f % 100 == 0 => 2,
        (true, f) if f % 10 == 0 => 3,
        (true, _) => 4,
    };
    let mut start = 20;
    let mut whole = micros / 1000;
    loop {
        start -= 1;
        buf[start] = digit(whole);
        whole /= 10;
        if whole == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[start..20 + len]);
}

/// Unix milliseconds of a time since the epoch (`u64::MAX` past what it holds).
pub(crate) fn unix_ms(since_epoch: Duration) -> u64 {
    // Not `as_millis` (a `u128` division).
    since_epoch
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(since_epoch.subsec_millis()))
}

/// `YYYY-MM-DD` (UTC) of unix milliseconds.
pub(crate) fn day_of(ms: u64) -> String {
    let (y, m, d) = crate::auth::civil_from_days((ms / 86_400_000) as i64);
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

    #[test]
    fn milliseconds_are_written_as_serde_json_writes_them() {
        let mut values: Vec<f64> = (0..20_000u64).map(|m| m as f64 / 1000.0).collect();
        // Larger ones, up to the bound and past it, and some that are not whole microseconds.
        let mut m: u64 = 1;
        while m < 10_000_000_000_000 {
            for k in [m - 1, m, m + 1, m * 7 + 3] {
                values.push(k as f64 / 1000.0);
            }
            m *= 10;
        }
        values.extend([
            -0.0,
            -1.5,
            0.0005,
            1e-7,
            0.1 + 0.2,
            999_999_999.999,
            1e9,
            1e15,
            1e17,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            1.0351169999999998,
        ]);
        for d in [1, 999, 1_000, 1_035_117, 86_400_000_000, 1_234_567_891] {
            values.push(ms_of(Duration::from_micros(d)));
            values.push(ms_of(Duration::from_nanos(d * 1_000 + 999)));
        }
        for v in values {
            let mut ours = Vec::new();
            json_ms(&mut ours, v);
            let theirs = serde_json::to_vec(&v).expect("a float serialises");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{v:?}"
            );
        }
        assert_eq!(ms_of(Duration::from_nanos(1_035_117_999)), 1035.117);
    }

    #[test]
    fn microseconds_are_written_as_milliseconds_with_three_decimals() {
        for m in [
            0,
            1,
            10,
            999,
            1_000,
            1_001,
            12_345,
            9_999_999,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_micros(&mut out, m, false);
            assert_eq!(
                String::from_utf8(out).expect("ASCII"),
                format!("{}.{:03}", m / 1000, m % 1000)
            );
        }
    }

    #[test]
    fn write_json_writes_what_serde_json_writes() {
        let texts = [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}\n\t",
            "é ünï",
            "\u{7f}/",
        ];
        let floats = [0.0, 1.5, 1e-7, 123_456.789, f64::NAN, f64::INFINITY, 3.0];
        let pick = |i: usize| texts[i % texts.len()].to_owned();
        let mut records = Vec::new();
        for i in 0..200 {
            let r = UsageRecord {
                request_id: (i % 3 != 0).then(|| pick(i)),
                key_id: (i % 2 == 0).then(|| pick(i + 1)),
                model: Some(pick(i + 2).into()),
                routed_model: (i % 5 != 0).then(|| pick(i + 3).into()),
                response_model: (i % 4 == 0).then(|| pick(i + 4).into()),
                upstream: (i % 3 == 1).then(|| pick(i + 5).into()),
                prompt_tokens: i as u64 * 7,
                completion_tokens: u64::MAX - i as u64,
                total_tokens: i as u64,
                cached_tokens: (i % 2 == 1).then_some(i as u64),
                reasoning_tokens: (i % 3 == 2).then_some(0),
                cost: (i % 2 == 0).then(|| floats[i % floats.len()]),
                status: [200, 429, 499, 502][i % 4],
                streamed: i % 2 == 0,
                ttft_ms: (i % 3 == 0).then(|| floats[(i + 1) % floats.len()]),
                duration_ms: floats[(i + 2) % floats.len()],
                partial: i % 5 == 0,
                estimated: i % 7 == 0,
                usage_unknown: i % 11 == 0,
                error: (i % 4 == 3).then(|| pick(i + 6)),
                finish_reasons: (0..i % 3).map(|j| pick(i + j)).collect(),
                started_at_ms: i as u64,
                ended_at_ms: 1_795_658_489_693 + i as u64,
            };
            let mut ours = Vec::new();
            r.write_json(&mut ours);
            let theirs = serde_json::to_vec(&r).expect("a record serialises");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
            records.push(r);
        }
        // With the names' JSON kept from one record to the next: runs of the same names (the
        // same strings, and equal ones that are not the same strings), and changes.
        let mut cache = LineCache::default();
        let mut copy = records[7].clone();
        copy.model = copy.model.as_deref().map(Arc::from);
        // Records that differ from the last in one cached part only.
        let mut changed = Vec::new();
        for part in 0..6 {
            let mut r = copy.clone();
            match part {
                0 => r.key_id = Some("another key".into()),
                1 => r.finish_reasons.push("length".into()),
                2 => r.error = Some("client_closed".into()),
                3 => r.partial = !r.partial,
                4 => r.usage_unknown = !r.usage_unknown,
                _ => r.upstream = Some("elsewhere:1".into()),
            }
            changed.push(copy.clone());
            changed.push(r);
        }
        let runs = records.iter().chain(records.iter().rev()).chain([
            &records[7],
            &records[7],
            &copy,
            &records[8],
            &copy,
        ]);
        let runs = runs.chain(&changed);
        for r in runs {
            let mut ours = Vec::new();
            r.write_json_cached(&mut ours, &mut cache);
            let theirs = serde_json::to_vec(r).expect("a record serialises");
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }
}

//! [`MemorySink`]: usage and spend per key, model and day, served by [`UsageRoute`] at
//! `GET /v1/usage`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use super::{SinkFuture, UsageRecord, UsageSink};
use crate::auth::KeyDigest;
use crate::error::{ApiError, ErrorType};
use crate::gateway::RouteBody;
use crate::route::BoxBody;

/// One row of the aggregate: a key's use of a model on a day (UTC).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UsageRow {
    /// The key id (`""` for unauthenticated requests).
    pub key_id: String,
    /// The model asked for (`""` when the body was never validated).
    pub model: String,
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Requests.
    pub requests: u64,
    /// Requests that were not 2xx.
    pub errors: u64,
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
    /// Requests whose counts were estimated.
    pub estimated: u64,
    /// Spend, from the prices.
    pub cost: f64,
}

/// An in-memory aggregate of the records per key, model and day.
///
/// The model of a row is the model asked for when the request reached a route (so a configured
/// name); requests that reached none (rejected before routing, or naming a model that does not
/// exist) are counted under the model `""`, so made-up model names cannot grow the aggregate.
#[derive(Debug, Default)]
pub struct MemorySink {
    rows: Mutex<Rows>,
}

/// Rows by key, model and day: nested so that a record finds its row by borrowed names, without
/// building owned keys; the day's text is made once per day.
#[derive(Debug, Default)]
struct Rows {
    by_key: BTreeMap<String, BTreeMap<String, BTreeMap<String, UsageRow>>>,
    /// The last day seen (days since the epoch) and its text.
    day: Option<(u64, String)>,
    /// The sums of the last records that share a row, not yet added to it: the records of a
    /// batch mostly do, and then each costs a comparison instead of three lookups.
    pending: Pending,
}

/// Sums for the row of (`key`, `model`, `day`).
#[derive(Debug, Default)]
struct Pending {
    key: String,
    model: String,
    day: u64,
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    estimated: u64,
    cost: f64,
}

impl Pending {
    fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        self.errors += u64::from(r.is_error());
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.total_tokens += r.total_tokens;
        self.estimated += u64::from(r.estimated);
        self.cost += r.cost.unwrap_or(0.0);
    }
}

impl Rows {
    /// Adds the pending sums to their row (made when missing) and clears them.
    fn flush(&mut self) {
        let Rows {
            by_key,
            day,
            pending: p,
        } = self;
        if p.requests == 0 {
            return;
        }
        let day = match day {
            Some((n, text)) if *n == p.day => text,
            _ => {
                &mut day
                    .insert((p.day, super::record::day_of(p.day * 86_400_000)))
                    .1
            }
        };
        let by_day = entry(entry(by_key, &p.key), &p.model);
        if !by_day.contains_key(day.as_str()) {
            let row = UsageRow {
                key_id: p.key.clone(),
                model: p.model.clone(),
                day: day.clone(),
                ..UsageRow::default()
            };
            by_day.insert(day.clone(), row);
        }
        let row = by_day.get_mut(day.as_str()).expect("inserted above");
        row.requests += p.requests;
        row.errors += p.errors;
        row.prompt_tokens += p.prompt_tokens;
        row.completion_tokens += p.completion_tokens;
        row.total_tokens += p.total_tokens;
        row.estimated += p.estimated;
        row.cost += p.cost;
        let (key, model) = (std::mem::take(&mut p.key), std::mem::take(&mut p.model));
        // The strings' buffers are kept for the next row.
        *p = Pending {
            key,
            model,
            ..Pending::default()
        };
    }
}

/// The value of `key` in `map`, inserted (with an owned key) when missing.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

impl MemorySink {
    /// An empty aggregate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one record.
    pub fn add(&self, r: &UsageRecord) {
        let model = match (&r.routed_model, &r.model) {
            (Some(_), Some(m)) => &**m,
            _ => "",
        };
        let key = r.key_id.as_deref().unwrap_or("");
        let day = r.started_at_ms / 86_400_000;
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        let p = &rows.pending;
        if p.requests > 0 && (p.day != day || p.key != key || p.model != model) {
            rows.flush();
        }
        let p = &mut rows.pending;
        if p.requests == 0 {
            key.clone_into(&mut p.key);
            model.clone_into(&mut p.model);
            p.day = day;
        }
        p.add(r);
    }

    /// The rows, ordered by key, model and day.
    pub fn rows(&self) -> Vec<UsageRow> {
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        rows.flush();
        rows.by_key
            .values()
            .flat_map(BTreeMap::values)
            .flat_map(BTreeMap::values)
            .cloned()
            .collect()
    }
}

impl UsageSink for MemorySink {
    fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a> {
        for r in batch {
            self.add(r);
        }
        Box::pin(ready(Ok(())))
    }

    fn takes_records(&self) -> bool {
        true
    }

    fn take(&self, record: &UsageRecord) {
        self.add(record);
    }
}

/// `GET /v1/usage`: the [`MemorySink`]'s rows as JSON, for an admin (`Authorization: Bearer
/// <admin key>`, checked by its SHA-256 digest). Query parameters `key`, `model` and `day`
/// (`YYYY-MM-DD`) filter the rows; the answer also has the totals.
///
/// ```json
/// {"object":"list","data":[{"key_id":"team-a","model":"qwen","day":"2025-01-01","requests":3,…,"cost":0.0012}],
///  "total":{"requests":3,"prompt_tokens":…,"completion_tokens":…,"total_tokens":…,"cost":0.0012}}
/// ```
#[derive(Clone, Debug)]
pub struct UsageRoute {
    memory: Arc<MemorySink>,
    admin: Option<KeyDigest>,
}

impl UsageRoute {
    /// Serves `memory`'s rows to requests bearing the key whose digest is `admin`; with `None`,
    /// to nobody (401).
    pub fn new(memory: Arc<MemorySink>, admin: Option<KeyDigest>) -> Self {
        Self { memory, admin }
    }

    fn answer(&self, req: &Request<RouteBody>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return crate::error::method_not_allowed("GET, HEAD");
        }
        let bearer = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let allowed = match (bearer, &self.admin) {
            (Some(key), Some(digest)) => KeyDigest::of(key) == *digest,
            _ => false,
        };
        if !allowed {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorType::InvalidRequestError,
                "An admin key is required.",
                None,
                Some("invalid_api_key".into()),
            )
            .into_response();
        }
        let mut key = None;
        let mut model = None;
        let mut day = None;
        for pair in req.uri().query().unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = super::metrics::percent_decode(v);
            match k {
                "key" => key = Some(v),
                "model" => model = Some(v),
                "day" => day = Some(v),
                _ => {}
            }
        }
        let rows: Vec<UsageRow> = self
            .memory
            .rows()
            .into_iter()
            .filter(|r| key.as_ref().is_none_or(|k| *k == r.key_id))
            .filter(|r| model.as_ref().is_none_or(|m| *m == r.model))
            .filter(|r| day.as_ref().is_none_or(|d| *d == r.day))
            .collect();
        let total = serde_json::json!({
            "requests": rows.iter().map(|r| r.requests).sum::<u64>(),
            "errors": rows.iter().map(|r| r.errors).sum::<u64>(),
            "prompt_tokens": rows.iter().map(|r| r.prompt_tokens).sum::<u64>(),
            "completion_tokens": rows.iter().map(|r| r.completion_tokens).sum::<u64>(),
            "total_tokens": rows.iter().map(|r| r.total_tokens).sum::<u64>(),
            "cost": rows.iter().map(|r| r.cost).sum::<f64>(),
        });
        let body = serde_json::json!({"object": "list", "data": rows, "total": total});
        crate::error::json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        )
    }
}

impl tower::Service<Request<RouteBody>> for UsageRoute {
    type Response = Response<BoxBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<BoxBody>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RouteBody>) -> Self::Future {
        let res = self.answer(&req);
        ready(Ok(
            res.map(|b| b.map_err(|never| match never {}).boxed_unsync())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<&str>, model: &str, routed: bool, ms: u64, tokens: u64) -> UsageRecord {
        UsageRecord {
            key_id: key.map(str::to_owned),
            model: Some(model.into()),
            routed_model: routed.then(|| model.into()),
            status: 200,
            prompt_tokens: tokens,
            total_tokens: tokens,
            started_at_ms: ms,
            ..UsageRecord::default()
        }
    }

    #[test]
    fn runs_of_one_row_are_counted_once_whenever_the_rows_are_read() {
        let m = MemorySink::new();
        let day = 86_400_000;
        let totals = |m: &MemorySink| -> Vec<(String, u64, u64)> {
            m.rows()
                .into_iter()
                .map(|r| (r.key_id, r.requests, r.prompt_tokens))
                .collect()
        };
        assert_eq!(totals(&m), []);
        for _ in 0..3 {
            m.add(&record(Some("a"), "qwen", true, day, 1));
        }
        assert_eq!(totals(&m), [("a".to_owned(), 3, 3)]);
        // Read in the middle of a run: what follows adds to the same row, once.
        m.add(&record(Some("a"), "qwen", true, day, 10));
        assert_eq!(totals(&m), [("a".to_owned(), 4, 13)]);
        assert_eq!(totals(&m), [("a".to_owned(), 4, 13)]);
        m.add(&record(Some("b"), "qwen", true, day, 100));
        m.add(&record(Some("a"), "qwen", true, day, 1000));
        m.add(&record(Some("a"), "qwen", true, day, 1000));
        assert_eq!(
            totals(&m),
            [("a".to_owned(), 6, 2013), ("b".to_owned(), 1, 100)]
        );
    }

    #[test]
    fn rows_are_summed_per_key_model_and_day_and_ordered() {
        let m = MemorySink::new();
        let day = 86_400_000;
        for r in [
            record(Some("b"), "qwen", true, 3 * day + 5, 1),
            record(Some("a"), "qwen", true, 3 * day, 2),
            record(Some("b"), "llama", true, 2 * day, 4),
            record(Some("b"), "qwen", true, 3 * day + day - 1, 8),
            record(Some("b"), "qwen", true, 2 * day + 7, 16),
            record(None, "made-up", false, 3 * day, 32),
            record(Some("a"), "qwen", true, 4 * day, 64),
        ] {
            m.add(&r);
        }
        let rows: Vec<_> = m
            .rows()
            .into_iter()
            .map(|r| (r.key_id, r.model, r.day, r.requests, r.prompt_tokens))
            .collect();
        let row =
            |k: &str, m: &str, d: &str, n, t| (k.to_owned(), m.to_owned(), d.to_owned(), n, t);
        assert_eq!(
            rows,
            [
                row("", "", "1970-01-04", 1, 32),
                row("a", "qwen", "1970-01-04", 1, 2),
                row("a", "qwen", "1970-01-05", 1, 64),
                row("b", "llama", "1970-01-03", 1, 4),
                row("b", "qwen", "1970-01-03", 1, 16),
                row("b", "qwen", "1970-01-04", 2, 9),
            ]
        );
    }
}

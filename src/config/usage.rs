//! The `[usage]`, `[[prices]]` and `[log]` tables: usage accounting's sinks, the models' prices
//! and the proxy's log format.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::raw::Source;
use crate::auth::KeyDigest;
use crate::usage::{FlushPolicy, Overflow, Price, Prices};

/// `[usage]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsage {
    enabled: Option<bool>,
    jsonl: Option<String>,
    jsonl_flush: Option<Spanned<String>>,
    postgres: Option<String>,
    postgres_table: Option<Spanned<String>>,
    admin_sha256: Option<Spanned<String>>,
    on_full: Option<Spanned<String>>,
    capacity: Option<Spanned<u64>>,
    metrics_max_keys: Option<u64>,
}

/// `[[prices]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrice {
    model: Spanned<String>,
    input_per_million: Spanned<f64>,
    output_per_million: Spanned<f64>,
}

/// `[log]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: Option<Spanned<String>>,
}

/// The proxy's log format (`[log] format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Usage accounting's settings (`[usage]`).
#[derive(Clone, Debug)]
pub struct UsageConfig {
    /// Whether requests are accounted at all (`enabled = false` takes the usage layers out of
    /// the proxy's stack: no records, no per-request log line, nothing new at `/metrics`; streams
    /// are then not asked for usage, so token limits settle such streams on their reservation).
    pub enabled: bool,
    /// A JSONL file to append records to.
    pub jsonl: Option<PathBuf>,
    /// When the JSONL file is flushed (`jsonl_flush = "batch"` or a duration such as `"1s"`).
    pub jsonl_flush: FlushPolicy,
    /// A PostgreSQL URL to write records to (needs the `postgres` feature).
    pub postgres: Option<String>,
    /// The PostgreSQL table (default `usage_records`).
    pub postgres_table: String,
    /// The digest of the admin key that may read `GET /v1/usage` (none: nobody may).
    pub admin_sha256: Option<KeyDigest>,
    /// What happens when the sinks fall behind (`on_full = "drop"` (default) or `"wait"`).
    pub overflow: Overflow,
    /// Records queued before `on_full` applies (default 8192).
    pub capacity: usize,
    /// The most key ids with their own metrics label (default 100).
    pub metrics_max_keys: usize,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            jsonl: None,
            jsonl_flush: FlushPolicy::EveryBatch,
            postgres: None,
            postgres_table: "usage_records".to_owned(),
            admin_sha256: None,
            overflow: Overflow::Drop,
            capacity: 8192,
            metrics_max_keys: 100,
        }
    }
}

impl Source<'_> {
    pub(super) fn usage_config(&self, raw: Option<&RawUsage>) -> Result<UsageConfig, ConfigError> {
        let mut c = UsageConfig::default();
        let Some(raw) = raw else {
            return Ok(c);
        };
        c.enabled = raw.enabled.unwrap_or(true);
        let base = self.file.parent().unwrap_or(Path::new("."));
        c.jsonl = raw.jsonl.as_ref().map(|p| base.join(p));
        if let Some(f) = &raw.jsonl_flush {
            c.jsonl_flush = match f.get_ref().as_str() {
                "batch" => FlushPolicy::EveryBatch,
                other => FlushPolicy::Interval(
                    super::raw::parse_duration(other).map_err(|e| self.invalid(f, e))?,
                ),
            };
        }
        c.postgres = raw.postgres.clone();
        if let Some(t) = &raw.postgres_table {
            c.postgres_table = t.get_ref().clone();
        }
        if let Some(a) = &raw.admin_sha256 {
            c.admin_sha256 = Some(KeyDigest::from_hex(a.get_ref()).ok_or_else(|| {
                self.invalid(
                    a,
                    "admin_sha256: expected 64 hex digits (a SHA-256 digest)".into(),
                )
            })?);
        }
        if let Some(o) = &raw.on_full {
            c.overflow = match o.get_ref().as_str() {
                "drop" => Overflow::Drop,
                "wait" => Overflow::Wait,
                other => {
                    return Err(
                        self.invalid(o, format!(r#"on_full: {other:?} is not "drop" or "wait""#))
                    );
                }
            };
        }
        if let Some(n) = &raw.capacity {
            if *n.get_ref() == 0 {
                return Err(self.invalid(n, "capacity must be greater than zero".into()));
            }
            c.capacity = usize::try_from(*n.get_ref()).unwrap_or(usize::MAX);
        }
        if let Some(n) = raw.metrics_max_keys {
            c.metrics_max_keys = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(c)
    }

    pub(super) fn prices(&self, raw: &[RawPrice]) -> Result<Prices, ConfigError> {
        let mut prices = Prices::new();
        for p in raw {
            for v in [&p.input_per_million, &p.output_per_million] {
                if !v.get_ref().is_finite() || *v.get_ref() < 0.0 {
                    return Err(self.invalid(v, "a price must be a non-negative number".into()));
                }
            }
            if prices.get(p.model.get_ref()).is_some() {
                return Err(self.invalid(
                    &p.model,
                    format!("duplicate price for {:?}", p.model.get_ref()),
                ));
            }
            prices = prices.with(
                p.model.get_ref().clone(),
                Price {
                    input_per_million: *p.input_per_million.get_ref(),
                    output_per_million: *p.output_per_million.get_ref(),
                },
            );
        }
        Ok(prices)
    }

    pub(super) fn log_format(&self, raw: Option<&RawLog>) -> Result<LogFormat, ConfigError> {
        match raw.and_then(|l| l.format.as_ref()) {
            None => Ok(LogFormat::Text),
            Some(f) => match f.get_ref().as_str() {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                other => Err(self.invalid(
                    f,
                    format!(r#"log format {other:?} is not "text" or "json""#),
                )),
            },
        }
    }
}

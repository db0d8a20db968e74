//! The `[usage]`, `[[prices]]` and `[log]` tables: usage accounting's sinks, the models' prices
//! and the proxy's log format and span export.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::raw::Source;
use super::{ConfigError, ErrorKind};
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
    otlp_endpoint: Option<Spanned<String>>,
    otlp_service_name: Option<Spanned<String>>,
}

/// The environment variable naming the OTLP collector when `[log] otlp_endpoint` is absent
/// (OpenTelemetry's standard variable; a base URL, as the key).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The `service.name` exported spans carry when `[log] otlp_service_name` is absent.
pub const DEFAULT_OTLP_SERVICE_NAME: &str = "chatgate";

/// `[log]`, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LogConfig {
    pub(super) format: LogFormat,
    /// `otlp_endpoint`, checked.
    pub(super) otlp_endpoint: Option<String>,
    /// `otlp_service_name`.
    pub(super) otlp_service_name: Option<String>,
}

impl LogConfig {
    /// The span export: the file's `otlp_endpoint`, else `env` (the value of
    /// [`OTEL_EXPORTER_OTLP_ENDPOINT`]; empty counts as unset).
    pub(super) fn otlp(&self, env: Option<&str>) -> Result<Option<OtlpExport>, ConfigError> {
        let service_name = self
            .otlp_service_name
            .clone()
            .unwrap_or_else(|| DEFAULT_OTLP_SERVICE_NAME.to_owned());
        if let Some(endpoint) = &self.otlp_endpoint {
            return Ok(Some(OtlpExport {
                endpoint: endpoint.clone(),
                service_name,
                from_env: false,
            }));
        }
        let Some(value) = env.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let endpoint = otlp_endpoint(value).map_err(|problem| ConfigError {
            kind: ErrorKind::Env,
            file: None,
            position: None,
            problem: format!("{OTEL_EXPORTER_OTLP_ENDPOINT}: {problem}"),
        })?;
        Ok(Some(OtlpExport {
            endpoint,
            service_name,
            from_env: true,
        }))
    }
}

/// Where the proxy exports its request spans by OTLP/HTTP: `[log] otlp_endpoint` (else the
/// [`OTEL_EXPORTER_OTLP_ENDPOINT`] variable) and `otlp_service_name`. See
/// [`Config::otlp`](super::Config::otlp).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpExport {
    endpoint: String,
    service_name: String,
    from_env: bool,
}

impl OtlpExport {
    /// The collector's base URL (`http` or `https`, no trailing `/`), such as
    /// `http://127.0.0.1:4318`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where spans are posted: the endpoint followed by `/v1/traces`.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.endpoint)
    }

    /// The `service.name` resource (`otlp_service_name`, default `"chatgate"`).
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// Whether the endpoint came from [`OTEL_EXPORTER_OTLP_ENDPOINT`] rather than the file.
    pub fn from_env(&self) -> bool {
        self.from_env
    }

    /// Where the endpoint was set, for messages: `[log] otlp_endpoint` or the variable.
    pub fn origin(&self) -> &'static str {
        if self.from_env {
            OTEL_EXPORTER_OTLP_ENDPOINT
        } else {
            "[log] otlp_endpoint"
        }
    }

    /// The library's export settings ([`crate::otlp::layer`]) for this endpoint and name.
    #[cfg(feature = "otlp")]
    pub fn otlp_config(&self) -> crate::otlp::OtlpConfig {
        crate::otlp::OtlpConfig {
            service_name: self.service_name.clone(),
            ..crate::otlp::OtlpConfig::new(self.endpoint.clone())
        }
    }
}

/// Checks an OTLP collector's base URL; returns it without a trailing `/`.
fn otlp_endpoint(text: &str) -> Result<String, String> {
    let base = super::raw::check_base_url(
        text,
        super::raw::BaseUrlRules {
            fragment: "must not have a query or fragment",
            query: "must not have a query or fragment",
            credentials: "give the collector's headers in OTEL_EXPORTER_OTLP_HEADERS",
        },
    )?;
    // The path: what follows the authority.
    let path = base
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("");
    if path.ends_with("/v1/traces") {
        return Err(format!(
            "invalid URL {text:?}: give the collector's base URL (such as http://127.0.0.1:4318): \
             /v1/traces is appended"
        ));
    }
    Ok(base)
}

pub use crate::usage::LogFormat;

/// Usage accounting's settings (`[usage]`).
#[derive(Clone, Debug, PartialEq)]
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

    pub(super) fn log_config(&self, raw: Option<&RawLog>) -> Result<LogConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(LogConfig::default());
        };
        let format = match &raw.format {
            None => LogFormat::Text,
            Some(f) => match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(self.invalid(
                        f,
                        format!(r#"log format {other:?} is not "text" or "json""#),
                    ));
                }
            },
        };
        let otlp_endpoint = match &raw.otlp_endpoint {
            None => None,
            Some(e) => Some(
                otlp_endpoint(e.get_ref())
                    .map_err(|problem| self.invalid(e, format!("otlp_endpoint: {problem}")))?,
            ),
        };
        let otlp_service_name = match &raw.otlp_service_name {
            Some(n) if n.get_ref().trim().is_empty() => {
                return Err(self.invalid(n, "otlp_service_name must not be empty".to_owned()));
            }
            n => n.as_ref().map(|n| n.get_ref().clone()),
        };
        Ok(LogConfig {
            format,
            otlp_endpoint,
            otlp_service_name,
        })
    }
}

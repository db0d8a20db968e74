//! The `[server]` and `[validation]` tables: the HTTP server's and the validation layer's
//! settings ([`ServeConfig`], [`ValidateConfig`]).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::ConfigError;
use super::raw::{Dur, Source, parse_duration};
use crate::gateway::ServeConfig;
use crate::validate::ValidateConfig;

/// Smallest `max_header_bytes`: hyper's smallest HTTP/1 read buffer.
pub(super) const MIN_HEADER_BYTES: u64 = 8 * 1024;
/// Largest `max_header_bytes`: HTTP/2's header list size is a `u32`.
pub(super) const MAX_HEADER_BYTES: u64 = u32::MAX as u64;
/// Largest `max_depth`: the JSON parser recurses once per level, and serde's own recursion limit
/// is 128.
pub(super) const MAX_DEPTH: u64 = 128;

/// `[server]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    header_read_timeout: Option<Dur>,
    shutdown_grace: Option<Dur>,
    max_header_bytes: Option<Spanned<Size>>,
}

/// `[validation]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidation {
    max_body: Option<Spanned<Size>>,
    max_depth: Option<Spanned<u64>>,
    strict: Option<bool>,
    apply_defaults: Option<bool>,
    body_timeout: Option<BodyTimeout>,
}

/// A size: a byte count, or a string with a binary unit (`"4MiB"`), checked while
/// deserializing so the error carries the value's position.
#[derive(Clone, Copy, Debug)]
pub(super) struct Size(pub(super) u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a size: a number of bytes, or a string such as "64KiB" or "4MiB""#)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                match u64::try_from(v) {
                    Ok(0) | Err(_) => Err(E::custom(format!(
                        "invalid size {v}: must be greater than zero"
                    ))),
                    Ok(n) => Ok(Size(n)),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// Parses `<integer><unit>` with the unit `B`, `KiB`, `MiB` or `GiB` (powers of 1024); the size
/// must be positive.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("invalid size {text:?}: {why}");
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(bad(
            r#"expected a number followed by a unit, such as "4MiB""#,
        ));
    }
    let n: u64 = text[..digits].parse().map_err(|_| bad("too large"))?;
    let per_unit: u64 = match text[digits..].trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        u @ ("K" | "KB" | "kB" | "M" | "MB" | "G" | "GB") => {
            return Err(bad(&format!(
                "unit {u:?} is ambiguous; use KiB, MiB or GiB (powers of 1024) or a byte count"
            )));
        }
        u => return Err(bad(&format!("unknown unit {u:?} (use B, KiB, MiB or GiB)"))),
    };
    let bytes = n.checked_mul(per_unit).ok_or_else(|| bad("too large"))?;
    if bytes == 0 {
        return Err(bad("must be greater than zero"));
    }
    Ok(bytes)
}

/// `body_timeout`: a duration, or `"none"` to wait for the body forever.
#[derive(Clone, Copy, Debug)]
pub(super) struct BodyTimeout(Option<Duration>);

impl<'de> Deserialize<'de> for BodyTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TimeoutVisitor;
        impl Visitor<'_> for TimeoutVisitor {
            type Value = BodyTimeout;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string such as "30s", or "none""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BodyTimeout, E> {
                if v == "none" {
                    return Ok(BodyTimeout(None));
                }
                parse_duration(v)
                    .map(|d| BodyTimeout(Some(d)))
                    .map_err(|e| E::custom(format!(r#"{e} (or "none" to wait forever)"#)))
            }
        }
        d.deserialize_str(TimeoutVisitor)
    }
}

impl Source<'_> {
    pub(super) fn serve_config(&self, raw: Option<&RawServer>) -> Result<ServeConfig, ConfigError> {
        let mut out = ServeConfig::default();
        let Some(raw) = raw else { return Ok(out) };
        if let Some(d) = raw.header_read_timeout {
            out.header_read_timeout = d.0;
        }
        if let Some(d) = raw.shutdown_grace {
            out.shutdown_grace = d.0;
        }
        if let Some(size) = &raw.max_header_bytes {
            let n = size.get_ref().0;
            if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&n) {
                let msg = format!(
                    "max_header_bytes {n} is out of range: at least 8KiB ({MIN_HEADER_BYTES}, \
                     hyper's smallest HTTP/1 buffer) and at most {MAX_HEADER_BYTES}"
                );
                return Err(self.invalid(size, msg));
            }
            out.max_header_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(out)
    }

    pub(super) fn validate_config(
        &self,
        raw: Option<&RawValidation>,
    ) -> Result<ValidateConfig, ConfigError> {
        let mut out = ValidateConfig::default();
        let Some(raw) = raw else { return Ok(out) };
        if let Some(size) = &raw.max_body {
            out.max_body = usize::try_from(size.get_ref().0).map_err(|_| {
                self.invalid(
                    size,
                    "max_body is larger than this machine's memory".to_owned(),
                )
            })?;
        }
        if let Some(depth) = &raw.max_depth {
            let n = *depth.get_ref();
            if !(1..=MAX_DEPTH).contains(&n) {
                let msg = format!("max_depth {n} is out of range: 1 to {MAX_DEPTH}");
                return Err(self.invalid(depth, msg));
            }
            out.max_depth = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(strict) = raw.strict {
            out.strict = strict;
        }
        if let Some(apply) = raw.apply_defaults {
            out.apply_defaults = apply;
        }
        if let Some(t) = raw.body_timeout {
            out.body_timeout = t.0;
        }
        Ok(out)
    }
}

//! `[[keys]]` (API keys in the file), `[auth]`, `[postgres]` and `[admin]`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::raw::{Dur, Source};
use super::{ConfigError, ErrorKind, Position};
use crate::auth::{ConfigKeyStore, KeyDigest, KeyRecord, parse_rfc3339};
use crate::rate_limit::{Budget, BudgetPeriod, Limits, ModelLimits};

/// Default `[auth] cache_ttl`: how long a PostgreSQL key is trusted before it is read again.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Default `[auth] negative_ttl`: how long an unknown key is remembered as unknown.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Default `[auth] cache_size`: entries (known and unknown keys) kept at most.
pub const DEFAULT_CACHE_SIZE: usize = 100_000;

/// `[[keys]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    id: Spanned<String>,
    sha256: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    models: Vec<Spanned<String>>,
    rpm: Option<Spanned<u32>>,
    tpm: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<u32>>,
    expires: Option<Spanned<RawTime>>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    model_limits: Vec<RawModelLimits>,
    budget_tokens: Option<Spanned<u64>>,
    budget_usd: Option<Spanned<f64>>,
    budget_period: Option<Spanned<String>>,
}

/// `[[keys.model_limits]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModelLimits {
    model: Spanned<String>,
    rpm: Option<Spanned<u32>>,
    tpm: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<u32>>,
}

/// A timestamp: an RFC 3339 string, or a TOML offset date-time written without quotes.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawTime {
    Text(String),
    Toml(toml::value::Datetime),
}

/// `[auth]`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    store: Option<Spanned<String>>,
    cache_ttl: Option<Dur>,
    negative_ttl: Option<Dur>,
    cache_size: Option<Spanned<u64>>,
}

/// `[postgres]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    url: Option<Spanned<String>>,
    url_env: Option<Spanned<String>>,
    schema: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    sha256: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

/// The key settings of a configuration: where keys come from, and the admin key.
#[derive(Clone, Debug, Default)]
pub(super) struct KeysConfig {
    pub(super) keys: Vec<(KeyDigest, KeyRecord)>,
    pub(super) postgres: Option<PostgresKeys>,
    pub(super) admin: Option<KeyDigest>,
}

/// Where the PostgreSQL key store is and how it caches (`[auth] store = "postgres"`,
/// `[postgres]`). See the [module docs](crate::config#keys).
#[derive(Clone)]
pub struct PostgresKeys {
    url: PgUrl,
    schema: Option<String>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    cache_size: usize,
    file: std::path::PathBuf,
    position: Option<Position>,
}

#[derive(Clone)]
enum PgUrl {
    Inline(String),
    Env(String),
}

impl fmt::Debug for PostgresKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password: only its source is shown.
        let url = match &self.url {
            PgUrl::Inline(_) => "url = …".to_owned(),
            PgUrl::Env(name) => format!("url_env = {name:?}"),
        };
        f.debug_struct("PostgresKeys")
            .field("url", &url)
            .field("schema", &self.schema)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("cache_size", &self.cache_size)
            .finish()
    }
}

impl PostgresKeys {
    /// The connection URL (`url`, or the variable named by `url_env`, read now).
    ///
    /// # Errors
    /// `url_env` names a variable that is unset or empty (the error never shows a value).
    pub fn url(&self) -> Result<String, ConfigError> {
        match &self.url {
            PgUrl::Inline(u) => Ok(u.clone()),
            PgUrl::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(ConfigError {
                    kind: ErrorKind::Env,
                    file: Some(self.file.clone()),
                    position: self.position,
                    problem: format!(
                        "environment variable `{name}` ([postgres] url_env) is not set or empty"
                    ),
                }),
            },
        }
    }

    /// The schema holding the keys table (`schema`; `None`: the connection's search path).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// How long a key read from the database is used before it is read again (`cache_ttl`).
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// How long an unknown key is remembered as unknown (`negative_ttl`).
    pub fn negative_ttl(&self) -> Duration {
        self.negative_ttl
    }

    /// The most entries the cache keeps (`cache_size`).
    pub fn cache_size(&self) -> usize {
        self.cache_size
    }
}

impl KeysConfig {
    /// The in-memory store of the `[[keys]]` tables, `None` when there are none.
    pub(super) fn key_store(&self) -> Option<ConfigKeyStore> {
        if self.keys.is_empty() {
            return None;
        }
        // Duplicates were refused while loading.
        ConfigKeyStore::new(self.keys.iter().cloned()).ok()
    }
}

impl Source<'_> {
    /// A digest from `sha256 = "<hex>"` or `key = "<secret>"`, exactly one of them; `at` is
    /// where to report "neither".
    fn digest<T>(
        &self,
        sha256: Option<&Spanned<String>>,
        key: Option<&Spanned<String>>,
        at: &Spanned<T>,
        what: &str,
    ) -> Result<KeyDigest, ConfigError> {
        match (sha256, key) {
            (Some(hex), None) => KeyDigest::from_hex(hex.get_ref()).ok_or_else(|| {
                // The value is not shown: it may be a secret pasted into the wrong field.
                self.invalid(
                    hex,
                    format!(
                        "{what}: invalid sha256: expected 64 hexadecimal digits \
                         (the output of `proxy --hash-key`)"
                    ),
                )
            }),
            (None, Some(secret)) => {
                if secret.get_ref().is_empty()
                    || !secret.get_ref().bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(self.invalid(
                        secret,
                        format!("{what}: key must be printable ASCII without spaces"),
                    ));
                }
                Ok(KeyDigest::of(secret.get_ref()))
            }
            (Some(_), Some(secret)) => Err(self.invalid(
                secret,
                format!("{what} sets both `sha256` and `key`; keep one"),
            )),
            (None, None) => Err(self.invalid(at, format!("{what} has neither `sha256` nor `key`"))),
        }
    }

    fn limit_u32(&self, v: &Option<Spanned<u32>>, key: &str) -> Result<Option<u32>, ConfigError> {
        match v {
            Some(n) if *n.get_ref() == 0 => {
                Err(self.invalid(n, format!("{key} must be at least 1")))
            }
            Some(n) => Ok(Some(*n.get_ref())),
            None => Ok(None),
        }
    }

    fn limits(
        &self,
        rpm: &Option<Spanned<u32>>,
        tpm: &Option<Spanned<u64>>,
        max_concurrent: &Option<Spanned<u32>>,
    ) -> Result<Limits, ConfigError> {
        let mut limits = Limits::none();
        limits.rpm = self.limit_u32(rpm, "rpm")?;
        limits.max_concurrent = self.limit_u32(max_concurrent, "max_concurrent")?;
        limits.tpm = match tpm {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.invalid(n, "tpm must be at least 1".to_owned()));
            }
            Some(n) => Some(*n.get_ref()),
            None => None,
        };
        Ok(limits)
    }

    fn key(&self, k: &RawKey) -> Result<(KeyDigest, KeyRecord), ConfigError> {
        let id = k.id.get_ref();
        let what = format!("key {id:?}");
        let digest = self.digest(k.sha256.as_ref(), k.key.as_ref(), &k.id, &what)?;
        let mut record = KeyRecord::new(id.clone());
        for m in &k.models {
            if m.get_ref().trim().is_empty() {
                return Err(self.invalid(m, format!("{what}: model patterns must not be empty")));
            }
            record.models.push(m.get_ref().clone());
        }
        record.limits = self.limits(&k.rpm, &k.tpm, &k.max_concurrent)?;
        for ml in &k.model_limits {
            if ml.model.get_ref().trim().is_empty() {
                return Err(self.invalid(
                    &ml.model,
                    format!("{what}: model_limits model must not be empty"),
                ));
            }
            let limits = self.limits(&ml.rpm, &ml.tpm, &ml.max_concurrent)?;
            if limits.is_unlimited() {
                return Err(self.invalid(
                    &ml.model,
                    format!(
                        "{what}: model_limits for {:?} sets no limit (rpm, tpm or max_concurrent)",
                        ml.model.get_ref()
                    ),
                ));
            }
            record.model_limits.push(ModelLimits {
                model: ml.model.get_ref().clone(),
                limits,
            });
        }
        if let Some(t) = &k.expires {
            let text = match t.get_ref() {
                RawTime::Text(s) => s.clone(),
                RawTime::Toml(d) => d.to_string(),
            };
            record.expires_at = Some(
                parse_rfc3339(&text)
                    .map_err(|e| self.invalid(t, format!("{what}: expires: {e}")))?,
            );
        }
        record.disabled = k.disabled;
        record.metadata = k.metadata.clone();
        record.budget = self.budget(k, &what)?;
        Ok((digest, record))
    }

    /// A `budget_usd` without any `[[prices]]` would never be charged: refused.
    pub(super) fn money_budgets_need_prices(
        &self,
        keys: &[RawKey],
        has_prices: bool,
    ) -> Result<(), ConfigError> {
        match keys
            .iter()
            .find_map(|k| k.budget_usd.as_ref().map(|u| (k, u)))
        {
            Some((k, usd)) if !has_prices => Err(self.invalid(
                usd,
                format!(
                    "key {:?}: budget_usd needs [[prices]] for the models (without a price a \
                     request costs nothing)",
                    k.id.get_ref()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `budget_tokens`, `budget_usd` and `budget_period` (default `month`).
    fn budget(&self, k: &RawKey, what: &str) -> Result<Option<Budget>, ConfigError> {
        let period = match &k.budget_period {
            Some(p) => p
                .get_ref()
                .parse::<BudgetPeriod>()
                .map_err(|e| self.invalid(p, format!("{what}: {e}")))?,
            None => BudgetPeriod::Month,
        };
        let mut budget = Budget::new(period);
        if let Some(n) = &k.budget_tokens {
            if *n.get_ref() == 0 {
                return Err(self.invalid(n, format!("{what}: budget_tokens must be at least 1")));
            }
            budget = budget.tokens(*n.get_ref());
        }
        if let Some(usd) = &k.budget_usd {
            let v = *usd.get_ref();
            if !v.is_finite() || v <= 0.0 {
                return Err(self.invalid(
                    usd,
                    format!("{what}: budget_usd must be a positive number of dollars"),
                ));
            }
            budget = budget.usd(v);
        }
        if budget.is_unlimited() {
            if let Some(p) = &k.budget_period {
                return Err(self.invalid(
                    p,
                    format!("{what}: budget_period without budget_tokens or budget_usd"),
                ));
            }
            return Ok(None);
        }
        Ok(Some(budget))
    }

    pub(super) fn keys_config(
        &self,
        keys: &[RawKey],
        auth: Option<&RawAuth>,
        postgres: Option<&RawPostgres>,
        admin: Option<&Spanned<RawAdmin>>,
    ) -> Result<KeysConfig, ConfigError> {
        let mut out = KeysConfig::default();
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut digests: HashMap<KeyDigest, &str> = HashMap::new();
        for k in keys {
            let id = k.id.get_ref();
            if id.trim().is_empty() {
                return Err(self.invalid(&k.id, "key id must not be empty".to_owned()));
            }
            if let Some(line) = ids.insert(id, self.position(k.id.span().start).line) {
                return Err(self.invalid(
                    &k.id,
                    format!("duplicate key id {id:?} (first defined at line {line})"),
                ));
            }
            let (digest, record) = self.key(k)?;
            if let Some(first) = digests.insert(digest, id) {
                let at = k.sha256.as_ref().or(k.key.as_ref()).unwrap_or(&k.id);
                return Err(self.invalid(
                    at,
                    format!("key {id:?} has the same secret as key {first:?}"),
                ));
            }
            out.keys.push((digest, record));
        }

        let default_auth = RawAuth::default();
        let auth = auth.unwrap_or(&default_auth);
        let postgres_store = match &auth.store {
            None => false,
            Some(s) => match s.get_ref().as_str() {
                "config" => false,
                "postgres" => true,
                other => {
                    return Err(self.invalid(
                        s,
                        format!(r#"unknown key store {other:?} (use "config" or "postgres")"#),
                    ));
                }
            },
        };
        if postgres_store {
            if let Some(k) = keys.first() {
                return Err(self.invalid(
                    &k.id,
                    r#"[[keys]] cannot be combined with [auth] store = "postgres"; create the keys through the admin endpoints"#.to_owned(),
                ));
            }
            let Some(pg) = postgres else {
                return Err(self.error(
                    ErrorKind::Invalid,
                    auth.store.as_ref().map(Spanned::span),
                    r#"[auth] store = "postgres" needs a [postgres] table with `url` or `url_env`"#
                        .to_owned(),
                ));
            };
            let (url, position) = match (&pg.url, &pg.url_env) {
                (Some(u), None) => (PgUrl::Inline(u.get_ref().clone()), u.span()),
                (None, Some(e)) => (PgUrl::Env(e.get_ref().clone()), e.span()),
                (Some(u), Some(_)) => {
                    return Err(self.invalid(
                        u,
                        "[postgres] sets both `url` and `url_env`; keep one".to_owned(),
                    ));
                }
                (None, None) => {
                    return Err(self.error(
                        ErrorKind::Invalid,
                        auth.store.as_ref().map(Spanned::span),
                        "[postgres] needs `url` or `url_env`".to_owned(),
                    ));
                }
            };
            if let PgUrl::Inline(u) = &url
                && !(u.starts_with("postgres://")
                    || u.starts_with("postgresql://")
                    || u.contains('='))
            {
                return Err(self.error(
                    ErrorKind::Invalid,
                    Some(position.clone()),
                    "[postgres] url: expected postgres://… or key=value pairs".to_owned(),
                ));
            }
            let schema = match &pg.schema {
                Some(s) if !valid_identifier(s.get_ref()) => {
                    return Err(self.invalid(
                        s,
                        "[postgres] schema: expected an identifier (ASCII letters, digits, '_')"
                            .to_owned(),
                    ));
                }
                s => s.as_ref().map(|s| s.get_ref().clone()),
            };
            let cache_size = match &auth.cache_size {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(self.invalid(n, "cache_size must be at least 1".to_owned()));
                }
                Some(n) => usize::try_from(*n.get_ref()).unwrap_or(usize::MAX),
                None => DEFAULT_CACHE_SIZE,
            };
            out.postgres = Some(PostgresKeys {
                url,
                schema,
                cache_ttl: auth.cache_ttl.map_or(DEFAULT_CACHE_TTL, |d| d.0),
                negative_ttl: auth.negative_ttl.map_or(DEFAULT_NEGATIVE_TTL, |d| d.0),
                cache_size,
                file: self.file.to_path_buf(),
                position: Some(self.position(position.start)),
            });
        }
        if let Some(admin) = admin {
            if !postgres_store {
                return Err(self.invalid(
                    admin,
                    r#"[admin] needs [auth] store = "postgres" (the admin endpoints manage keys in the database)"#
                        .to_owned(),
                ));
            }
            let a = admin.get_ref();
            out.admin = Some(self.digest(a.sha256.as_ref(), a.key.as_ref(), admin, "[admin]")?);
        }
        Ok(out)
    }
}

/// An SQL identifier we can put in a statement unquoted.
pub(crate) fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

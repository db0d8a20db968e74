use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Value, json};
use tokio_postgres::Row;

use super::cache::Cache;
use crate::auth::{KeyDigest, KeyRecord, KeyStore, KeyStoreError, Lookup};
use crate::rate_limit::{Budget, BudgetPeriod, Limits, ModelLimits};

/// The migration, as in the repository's `migrations/0001_keys.sql`.
pub const MIGRATION: &str = include_str!("../../../migrations/0001_keys.sql");

/// The budget columns, as in the repository's `migrations/0003_budgets.sql` (applied after
/// [`MIGRATION`] by [`PgKeyStore::migrate`]).
pub const BUDGETS_MIGRATION: &str = include_str!("../../../migrations/0003_budgets.sql");

/// Settings of a [`PgKeyStore`]: schema and cache.
#[derive(Clone, Debug)]
pub struct PgKeyStoreConfig {
    schema: Option<String>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    cache_size: usize,
    pool_size: usize,
}

impl Default for PgKeyStoreConfig {
    fn default() -> Self {
        Self {
            schema: None,
            cache_ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            cache_size: 100_000,
            pool_size: 8,
        }
    }
}

impl PgKeyStoreConfig {
    /// The defaults: the connection's search path, keys cached 30 s, unknown keys 5 s, 100,000
    /// entries, 8 connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// The schema of the `chatgate_keys` table (created by [`PgKeyStore::migrate`]). Must be a
    /// plain identifier (ASCII letters, digits, `_`); anything else is ignored by
    /// [`PgKeyStore::connect`], which refuses it.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// How long a key read from the table is used before it is read again: the longest time a
    /// key revoked by another process (or by hand in SQL) keeps working here.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How long an unknown key is remembered as unknown (spares the database a query per
    /// request with a wrong key; a key created by another process works after this).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// The most cache entries (known and unknown keys).
    pub fn cache_size(mut self, entries: usize) -> Self {
        self.cache_size = entries;
        self
    }

    /// The most database connections.
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections.max(1);
        self
    }
}

/// API keys in a PostgreSQL table, with an in-process cache. See the
/// [module docs](crate::auth::postgres).
///
/// Cheap to clone (clones share the pool and the cache): make it once and hand it to every
/// stack a reload builds.
#[derive(Clone)]
pub struct PgKeyStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    cache: Cache,
    table: String,
    schema: Option<String>,
}

impl fmt::Debug for PgKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgKeyStore")
            .field("table", &self.inner.table)
            .finish_non_exhaustive()
    }
}

/// Why a [`PgKeyStore`] operation failed. Never contains a secret (nor the connection URL).
#[derive(Debug)]
pub struct PgKeyStoreError {
    kind: PgErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgErrorKind {
    Config,
    Database,
    Conflict,
}

impl PgKeyStoreError {
    fn config(message: impl Into<String>) -> Self {
        Self {
            kind: PgErrorKind::Config,
            message: message.into(),
        }
    }

    fn database(e: impl fmt::Display) -> Self {
        Self {
            kind: PgErrorKind::Database,
            message: e.to_string(),
        }
    }

    /// Whether a key with the same id (or, against all odds, the same secret) exists.
    pub fn is_conflict(&self) -> bool {
        self.kind == PgErrorKind::Conflict
    }

    /// Whether the settings were refused (a bad URL or schema name).
    pub fn is_config(&self) -> bool {
        self.kind == PgErrorKind::Config
    }
}

impl fmt::Display for PgKeyStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgKeyStoreError {}

fn db_error(e: tokio_postgres::Error) -> PgKeyStoreError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        return PgKeyStoreError {
            kind: PgErrorKind::Conflict,
            message: "a key with this id already exists".to_owned(),
        };
    }
    PgKeyStoreError::database(e)
}

/// A key as the admin endpoints show it: the record and when it was created, never the secret
/// nor its digest.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The record.
    pub record: KeyRecord,
    /// When it was created.
    pub created_at: SystemTime,
}

impl KeyInfo {
    /// The JSON the admin endpoints answer with.
    pub fn to_json(&self) -> Value {
        let r = &self.record;
        json!({
            "id": r.id,
            "models": r.models,
            "rpm": r.limits.rpm,
            "tpm": r.limits.tpm,
            "max_concurrent": r.limits.max_concurrent,
            "model_limits": model_limits_json(&r.model_limits),
            "expires": r.expires_at.map(crate::auth::format_rfc3339),
            "disabled": r.disabled,
            "metadata": r.metadata,
            "budget_tokens": r.budget.and_then(|b| b.tokens),
            "budget_usd": r.budget.and_then(|b| b.usd_value()),
            "budget_period": r.budget.map(|b| b.period.to_string()),
            "created": crate::auth::format_rfc3339(self.created_at),
        })
    }
}

pub(super) fn model_limits_json(limits: &[ModelLimits]) -> Value {
    Value::Array(
        limits
            .iter()
            .map(|m| {
                json!({
                    "model": m.model,
                    "rpm": m.limits.rpm,
                    "tpm": m.limits.tpm,
                    "max_concurrent": m.limits.max_concurrent,
                })
            })
            .collect(),
    )
}

pub(super) fn model_limits_from_json(v: &Value) -> Result<Vec<ModelLimits>, String> {
    let Some(items) = v.as_array() else {
        return Err("model_limits: expected an array".to_owned());
    };
    items
        .iter()
        .map(|item| {
            let Some(obj) = item.as_object() else {
                return Err("model_limits: expected objects".to_owned());
            };
            if let Some(k) = obj
                .keys()
                .find(|k| !matches!(k.as_str(), "model" | "rpm" | "tpm" | "max_concurrent"))
            {
                return Err(format!("model_limits: unknown field {k:?}"));
            }
            let model = obj
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .ok_or("model_limits: `model` must be a non-empty string")?;
            let limits = Limits {
                rpm: positive(obj.get("rpm"), "model_limits.rpm")?,
                tpm: positive(obj.get("tpm"), "model_limits.tpm")?,
                max_concurrent: positive(obj.get("max_concurrent"), "model_limits.max_concurrent")?,
            };
            Ok(ModelLimits {
                model: model.to_owned(),
                limits,
            })
        })
        .collect()
}

/// `null`/absent → `None`, a positive integer that fits → `Some`.
pub(super) fn positive<T: TryFrom<u64>>(
    v: Option<&Value>,
    what: &str,
) -> Result<Option<T>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("{what}: expected a positive integer or null")),
    }
}

const COLUMNS: &str = "id, models, rpm, tpm, max_concurrent, model_limits, expires_at, disabled, metadata, created_at, budget_tokens, budget_micro_usd, budget_period";

/// A budget as its three columns.
fn budget_columns(b: Option<Budget>) -> (Option<i64>, Option<i64>, Option<String>) {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    match b {
        Some(b) => (
            b.tokens.map(int),
            b.micro_usd.map(int),
            Some(b.period.to_string()),
        ),
        None => (None, None, None),
    }
}

fn record_from_row(row: &Row) -> Result<KeyInfo, PgKeyStoreError> {
    let bad = |what: &str| PgKeyStoreError::database(format!("unreadable key row: {what}"));
    let mut record = KeyRecord::new(row.try_get::<_, String>("id").map_err(|_| bad("id"))?);
    record.models = row.try_get("models").map_err(|_| bad("models"))?;
    let rpm: Option<i32> = row.try_get("rpm").map_err(|_| bad("rpm"))?;
    let tpm: Option<i64> = row.try_get("tpm").map_err(|_| bad("tpm"))?;
    let mc: Option<i32> = row
        .try_get("max_concurrent")
        .map_err(|_| bad("max_concurrent"))?;
    record.limits = Limits {
        rpm: rpm.and_then(|n| u32::try_from(n).ok()),
        tpm: tpm.and_then(|n| u64::try_from(n).ok()),
        max_concurrent: mc.and_then(|n| u32::try_from(n).ok()),
    };
    let ml: Value = row
        .try_get("model_limits")
        .map_err(|_| bad("model_limits"))?;
    record.model_limits = model_limits_from_json(&ml).map_err(|e| bad(&e))?;
    record.expires_at = row.try_get("expires_at").map_err(|_| bad("expires_at"))?;
    record.disabled = row.try_get("disabled").map_err(|_| bad("disabled"))?;
    let meta: Value = row.try_get("metadata").map_err(|_| bad("metadata"))?;
    record.metadata = metadata_from_json(&meta).map_err(|e| bad(&e))?;
    let created_at = row.try_get("created_at").map_err(|_| bad("created_at"))?;
    let tokens: Option<i64> = row
        .try_get("budget_tokens")
        .map_err(|_| bad("budget_tokens"))?;
    let micro_usd: Option<i64> = row
        .try_get("budget_micro_usd")
        .map_err(|_| bad("budget_micro_usd"))?;
    let period: Option<String> = row
        .try_get("budget_period")
        .map_err(|_| bad("budget_period"))?;
    let period = match period {
        Some(p) => p.parse::<BudgetPeriod>().map_err(|e| bad(&e))?,
        None => BudgetPeriod::Month,
    };
    let mut budget = Budget::new(period);
    budget.tokens = tokens.and_then(|n| u64::try_from(n).ok());
    budget.micro_usd = micro_usd.and_then(|n| u64::try_from(n).ok());
    record.budget = (!budget.is_unlimited()).then_some(budget);
    Ok(KeyInfo { record, created_at })
}

pub(super) fn metadata_from_json(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let Some(obj) = v.as_object() else {
        return Err("metadata: expected an object of strings".to_owned());
    };
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!("metadata.{k}: expected a string")),
        })
        .collect()
}

/// A new key for [`PgKeyStore::create`]: `id` and every limit optional.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct NewKey {
    /// The id (`None`: generated, `key-` and 12 hex digits).
    pub id: Option<String>,
    /// Everything else (its `id` is ignored; `disabled` too).
    pub record: KeyRecord,
}

/// The secret of a key just created, shown once. Its `Debug` hides it.
pub struct Secret(String);

impl Secret {
    /// The secret (`sk-cg-` and 64 hex digits).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

fn random_hex(bytes: usize) -> Result<String, PgKeyStoreError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| PgKeyStoreError::database(format!("no randomness: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

impl PgKeyStore {
    /// A store over a new connection pool to `url` (`postgres://…` or `key=value` pairs). No
    /// connection is made until first used; call [`migrate`](Self::migrate) to create the
    /// table (and to find out that the database is reachable).
    ///
    /// # Errors
    /// The URL does not parse, or the schema is not a plain identifier.
    pub fn connect(url: &str, config: PgKeyStoreConfig) -> Result<Self, PgKeyStoreError> {
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|_| PgKeyStoreError::config("invalid PostgreSQL connection URL"))?;
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .build()
            .map_err(|e| PgKeyStoreError::config(e.to_string()))?;
        Self::with_pool(pool, config)
    }

    /// A store over an existing pool.
    ///
    /// # Errors
    /// The schema is not a plain identifier.
    pub fn with_pool(pool: Pool, config: PgKeyStoreConfig) -> Result<Self, PgKeyStoreError> {
        let table = match &config.schema {
            None => "chatgate_keys".to_owned(),
            Some(s) if valid_identifier(s) => format!("{s}.chatgate_keys"),
            Some(_) => {
                return Err(PgKeyStoreError::config(
                    "schema: expected an identifier (ASCII letters, digits, '_')",
                ));
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                cache: Cache::new(config.cache_ttl, config.negative_ttl, config.cache_size),
                table,
                schema: config.schema,
            }),
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, PgKeyStoreError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| PgKeyStoreError::database(format!("no database connection: {e}")))
    }

    /// Creates the schema (when configured) and the table, if missing: `migrations/0001_keys.sql`
    /// ([`MIGRATION`]), then adds the budget columns if missing (`migrations/0003_budgets.sql`,
    /// [`BUDGETS_MIGRATION`]), under an advisory lock so several processes may start at once.
    ///
    /// # Errors
    /// The database is unreachable or refuses the statements.
    pub async fn migrate(&self) -> Result<(), PgKeyStoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute("SELECT pg_advisory_xact_lock(727386274)", &[])
            .await
            .map_err(db_error)?;
        if let Some(schema) = &self.inner.schema {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(db_error)?;
        }
        let sql = MIGRATION.replacen(
            "CREATE TABLE IF NOT EXISTS chatgate_keys",
            &format!("CREATE TABLE IF NOT EXISTS {}", self.inner.table),
            1,
        );
        tx.batch_execute(&sql).await.map_err(db_error)?;
        let sql = BUDGETS_MIGRATION.replacen(
            "ALTER TABLE chatgate_keys",
            &format!("ALTER TABLE {}", self.inner.table),
            1,
        );
        tx.batch_execute(&sql).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// Reads the key with this digest from the table (no cache).
    async fn fetch(&self, digest: &KeyDigest) -> Result<Option<KeyRecord>, PgKeyStoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE sha256 = $1",
            self.inner.table
        );
        let stmt = client.prepare_cached(&sql).await.map_err(db_error)?;
        let row = client
            .query_opt(&stmt, &[&&digest.0[..]])
            .await
            .map_err(db_error)?;
        row.map(|r| record_from_row(&r).map(|i| i.record))
            .transpose()
    }

    /// Creates a key; returns its generated secret (shown once: only its digest is stored) and
    /// what was stored.
    ///
    /// # Errors
    /// The id exists ([`PgKeyStoreError::is_conflict`]), or the database failed.
    pub async fn create(&self, new: NewKey) -> Result<(Secret, KeyInfo), PgKeyStoreError> {
        let secret = Secret(format!("sk-cg-{}", random_hex(32)?));
        let digest = KeyDigest::of(secret.expose());
        let id = match new.id {
            Some(id) => id,
            None => format!("key-{}", random_hex(6)?),
        };
        let r = &new.record;
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {} (id, sha256, models, rpm, tpm, max_concurrent, model_limits, \
             expires_at, metadata, budget_tokens, budget_micro_usd, budget_period) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}",
            self.inner.table
        );
        let (bt, bu, bp) = budget_columns(r.budget);
        let row = client
            .query_one(
                &sql,
                &[
                    &id,
                    &&digest.0[..],
                    &r.models,
                    &r.limits.rpm.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    &r.limits.tpm.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                    &r.limits
                        .max_concurrent
                        .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    &model_limits_json(&r.model_limits),
                    &r.expires_at,
                    &json!(r.metadata),
                    &bt,
                    &bu,
                    &bp,
                ],
            )
            .await
            .map_err(db_error)?;
        // It may have been cached as unknown (someone tried it before it existed).
        self.inner.cache.forget(&digest);
        Ok((secret, record_from_row(&row)?))
    }

    /// Every key, by id.
    ///
    /// # Errors
    /// The database failed.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, PgKeyStoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM {} ORDER BY id", self.inner.table);
        let rows = client.query(&sql, &[]).await.map_err(db_error)?;
        rows.iter().map(record_from_row).collect()
    }

    /// The key `id`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn get(&self, id: &str) -> Result<Option<KeyInfo>, PgKeyStoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE id = $1", self.inner.table);
        let row = client.query_opt(&sql, &[&id]).await.map_err(db_error)?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// Disables the key `id` (it stays listed); `None` when there is no such key. This
    /// process's cache forgets it at once; other processes stop accepting it within their
    /// cache TTL.
    ///
    /// # Errors
    /// The database failed.
    pub async fn revoke(&self, id: &str) -> Result<Option<KeyInfo>, PgKeyStoreError> {
        self.update(id, |r| r.disabled = true).await
    }

    /// Changes the key `id` with `change` (read, changed and written in one transaction; the id
    /// cannot change); `None` when there is no such key.
    ///
    /// # Errors
    /// The database failed.
    pub async fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut KeyRecord),
    ) -> Result<Option<KeyInfo>, PgKeyStoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE id = $1 FOR UPDATE",
            self.inner.table
        );
        let Some(row) = tx.query_opt(&sql, &[&id]).await.map_err(db_error)? else {
            return Ok(None);
        };
        let mut record = record_from_row(&row)?.record;
        change(&mut record);
        let r = &record;
        let sql = format!(
            "UPDATE {} SET models = $2, rpm = $3, tpm = $4, max_concurrent = $5, \
             model_limits = $6, expires_at = $7, disabled = $8, metadata = $9, \
             budget_tokens = $10, budget_micro_usd = $11, budget_period = $12 \
             WHERE id = $1 RETURNING {COLUMNS}",
            self.inner.table
        );
        let (bt, bu, bp) = budget_columns(r.budget);
        let row = tx
            .query_one(
                &sql,
                &[
                    &id,
                    &r.models,
                    &r.limits.rpm.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    &r.limits.tpm.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
                    &r.limits
                        .max_concurrent
                        .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    &model_limits_json(&r.model_limits),
                    &r.expires_at,
                    &r.disabled,
                    &json!(r.metadata),
                    &bt,
                    &bu,
                    &bp,
                ],
            )
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        self.inner.cache.forget_id(id);
        record_from_row(&row).map(Some)
    }
}

impl KeyStore for PgKeyStore {
    fn lookup(&self, digest: &KeyDigest) -> Lookup {
        if let Some(hit) = self.inner.cache.get(digest) {
            return Lookup::Ready(Ok(hit));
        }
        let store = self.clone();
        let digest = *digest;
        Lookup::Pending(Box::pin(async move {
            let found = store
                .fetch(&digest)
                .await
                // The message is the database's, without the URL; errors are not cached.
                .map_err(|e| KeyStoreError::new(e.to_string()))?
                .map(Arc::new);
            store.inner.cache.insert(digest, found.clone());
            Ok(found)
        }))
    }
}

fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 63
}

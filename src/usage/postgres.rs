//! [`PgSink`]: records in PostgreSQL (feature `postgres`), with a bounded buffer that rides out
//! the database going away.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::{SinkError, SinkFuture, UsageRecord, UsageSink};

/// The migration that creates the table (`migrations/0002_usage.sql`, for table `usage_records`).
pub const MIGRATION: &str = include_str!("../../migrations/0002_usage.sql");

const COLUMNS: &str = "request_id, key_id, model, routed_model, response_model, upstream, \
    prompt_tokens, completion_tokens, total_tokens, cached_tokens, reasoning_tokens, cost, status, \
    streamed, ttft_ms, duration_ms, partial, estimated, usage_unknown, error, finish_reasons, \
    started_at, ended_at";
const NCOLS: usize = 23;
const TYPES: [Type; NCOLS] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::INT4,
    Type::BOOL,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::BOOL,
    Type::BOOL,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT_ARRAY,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
];
/// Rows per statement (PostgreSQL allows 65535 parameters: 23 per row).
const ROWS_PER_STATEMENT: usize = 1000;

/// How rows are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PgWrite {
    /// One multi-row `INSERT … VALUES (…), (…)` per up to 1000 records.
    Insert,
    /// `COPY … FROM STDIN BINARY` (default: the faster, see BENCHMARKS.md).
    #[default]
    Copy,
}

/// One record as the row's values (a tuple, so `params` can lend them in column order).
#[allow(clippy::type_complexity)]
struct Row {
    v: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
        Option<f64>,
        i32,
        bool,
        Option<f64>,
        f64,
        bool,
        bool,
        bool,
        Option<String>,
        Vec<String>,
        SystemTime,
        SystemTime,
    ),
}

fn i(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl Row {
    fn of(r: &UsageRecord) -> Self {
        Self {
            v: (
                r.request_id.clone(),
                r.key_id.clone(),
                r.model.as_deref().map(str::to_owned),
                r.routed_model.as_deref().map(str::to_owned),
                r.response_model.as_deref().map(str::to_owned),
                r.upstream.as_deref().map(str::to_owned),
                i(r.prompt_tokens),
                i(r.completion_tokens),
                i(r.total_tokens),
                r.cached_tokens.map(i),
                r.reasoning_tokens.map(i),
                r.cost,
                i32::from(r.status),
                r.streamed,
                r.ttft_ms,
                r.duration_ms,
                r.partial,
                r.estimated,
                r.usage_unknown,
                r.error.clone(),
                r.finish_reasons.clone(),
                time(r.started_at_ms),
                time(r.ended_at_ms),
            ),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); NCOLS] {
        let v = &self.v;
        [
            &v.0, &v.1, &v.2, &v.3, &v.4, &v.5, &v.6, &v.7, &v.8, &v.9, &v.10, &v.11, &v.12, &v.13,
            &v.14, &v.15, &v.16, &v.17, &v.18, &v.19, &v.20, &v.21, &v.22,
        ]
    }
}

/// Writes records to a PostgreSQL table (created by [`migrate`](Self::migrate) or
/// `migrations/0002_usage.sql`) through a `deadpool-postgres` pool.
///
/// Records that cannot be written (the database is down) stay in a buffer of up to
/// `max_buffer` records and are written first on the next batch or flush; beyond it the
/// oldest are dropped and counted ([`lost`](Self::lost)).
#[derive(Debug)]
pub struct PgSink {
    pool: Pool,
    table: String,
    mode: PgWrite,
    max_buffer: usize,
    buffer: tokio::sync::Mutex<VecDeque<UsageRecord>>,
    lost: AtomicU64,
    // Only for `Debug`-free bookkeeping of the buffered count without the async lock.
    buffered: Mutex<usize>,
}

impl PgSink {
    /// A sink writing to `table` (`name` or `schema.name`: letters, digits, `_`) of the
    /// database at `url` (`postgres://user@host:port/db`); connects lazily.
    ///
    /// # Errors
    /// The URL or the table name is invalid.
    pub fn new(
        url: &str,
        table: &str,
        mode: PgWrite,
        max_buffer: usize,
    ) -> Result<Self, SinkError> {
        if table.is_empty()
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        {
            return Err(SinkError::new(format!("invalid table name {table:?}")));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| SinkError::new(format!("invalid PostgreSQL URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(2)
            .build()
            .map_err(|e| SinkError::new(format!("PostgreSQL pool: {e}")))?;
        Ok(Self {
            pool,
            table: table.to_owned(),
            mode,
            max_buffer: max_buffer.max(1),
            buffer: tokio::sync::Mutex::new(VecDeque::new()),
            lost: AtomicU64::new(0),
            buffered: Mutex::new(0),
        })
    }

    /// Creates the table and its index if they do not exist.
    ///
    /// # Errors
    /// The database cannot be reached or refuses.
    pub async fn migrate(&self) -> Result<(), SinkError> {
        let client = self.pool.get().await.map_err(pg)?;
        let index = self.table.replace('.', "_");
        let sql = MIGRATION
            .replace("ON usage_records (", &format!("ON {} (", self.table))
            .replace("usage_records_key_started", &format!("{index}_key_started"))
            .replace(
                "EXISTS usage_records (",
                &format!("EXISTS {} (", self.table),
            );
        client.batch_execute(&sql).await.map_err(pg)
    }

    /// What `key_id` spent in the requests recorded since `since` (by their `started_at`):
    /// total tokens and total cost (in the prices' currency; unpriced rows count 0). Used to
    /// re-seed a [budget](crate::rate_limit#budgets)'s spend in memory at start
    /// ([`LocalBackend::seed_budget`](crate::rate_limit::LocalBackend::seed_budget)). Records
    /// still buffered are not counted.
    ///
    /// # Errors
    /// The database cannot be reached or refuses.
    pub async fn spent_since(
        &self,
        key_id: &str,
        since: SystemTime,
    ) -> Result<(u64, f64), SinkError> {
        let client = self.pool.get().await.map_err(pg)?;
        let sql = format!(
            "SELECT COALESCE(SUM(total_tokens), 0)::bigint, COALESCE(SUM(cost), 0)::float8 \
             FROM {} WHERE key_id = $1 AND started_at >= $2",
            self.table
        );
        let row = client
            .query_one(&sql, &[&key_id, &since])
            .await
            .map_err(pg)?;
        let tokens: i64 = row.get(0);
        let cost: f64 = row.get(1);
        Ok((u64::try_from(tokens).unwrap_or(0), cost))
    }

    /// Records waiting for the database.
    pub fn buffered(&self) -> usize {
        *self
            .buffered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records dropped because the buffer was full while the database was away.
    pub fn lost(&self) -> u64 {
        self.lost.load(Relaxed)
    }

    /// Writes what is buffered, in chunks; stops at the first failure (the rest stays).
    async fn drain(&self, buffer: &mut VecDeque<UsageRecord>) -> Result<(), SinkError> {
        while !buffer.is_empty() {
            let n = buffer.len().min(ROWS_PER_STATEMENT);
            let rows: Vec<Row> = buffer.iter().take(n).map(Row::of).collect();
            self.write_rows(&rows).await?;
            buffer.drain(..n);
        }
        Ok(())
    }

    async fn write_rows(&self, rows: &[Row]) -> Result<(), SinkError> {
        let client = self.pool.get().await.map_err(pg)?;
        match self.mode {
            PgWrite::Insert => {
                let mut sql = format!("INSERT INTO {} ({COLUMNS}) VALUES ", self.table);
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows.len() * NCOLS);
                for (k, row) in rows.iter().enumerate() {
                    sql.push_str(if k == 0 { "(" } else { ",(" });
                    for c in 0..NCOLS {
                        if c > 0 {
                            sql.push(',');
                        }
                        sql.push('$');
                        sql.push_str(&(k * NCOLS + c + 1).to_string());
                    }
                    sql.push(')');
                    params.extend(row.params());
                }
                client.execute(&sql, &params).await.map_err(pg)?;
            }
            PgWrite::Copy => {
                let sink = client
                    .copy_in(&format!(
                        "COPY {} ({COLUMNS}) FROM STDIN BINARY",
                        self.table
                    ))
                    .await
                    .map_err(pg)?;
                let writer = BinaryCopyInWriter::new(sink, &TYPES);
                let mut writer = std::pin::pin!(writer);
                for row in rows {
                    writer.as_mut().write(&row.params()).await.map_err(pg)?;
                }
                writer.finish().await.map_err(pg)?;
            }
        }
        Ok(())
    }

    fn note(&self, n: usize) {
        *self
            .buffered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = n;
    }
}

fn pg(e: impl std::fmt::Display) -> SinkError {
    SinkError::new(format!("postgres: {e}"))
}

impl UsageSink for PgSink {
    fn write<'a>(&'a self, batch: &'a [UsageRecord]) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut buffer = self.buffer.lock().await;
            buffer.extend(batch.iter().cloned());
            let over = buffer.len().saturating_sub(self.max_buffer);
            if over > 0 {
                buffer.drain(..over);
                self.lost.fetch_add(over as u64, Relaxed);
            }
            let result = self.drain(&mut buffer).await;
            self.note(buffer.len());
            result
        })
    }

    fn flush(&self) -> SinkFuture<'_> {
        Box::pin(async move {
            let mut buffer = self.buffer.lock().await;
            let result = self.drain(&mut buffer).await;
            self.note(buffer.len());
            result
        })
    }
}

//! API keys in PostgreSQL (feature `postgres`): [`PgKeyStore`] and the admin endpoints
//! [`AdminKeys`].
//!
//! # The table
//!
//! `migrations/0001_keys.sql` ([`MIGRATION`]) creates `chatgate_keys` (in the configured schema,
//! if any): `id` (primary key), `sha256` (bytea, unique: the digest, never the secret), `models`
//! (text[] of glob patterns), `rpm`, `tpm`, `max_concurrent`, `model_limits` (jsonb), `expires_at`,
//! `disabled`, `metadata` (jsonb of strings), `created_at`. `migrations/0003_budgets.sql`
//! ([`BUDGETS_MIGRATION`]) adds the key's [budget](crate::rate_limit#budgets): `budget_tokens`,
//! `budget_micro_usd` (bigint micro-dollars) and `budget_period` (text, `month` when null); the
//! admin endpoints read and write them as `budget_tokens`, `budget_usd` (dollars) and
//! `budget_period` (`null` clears one). [`PgKeyStore::migrate`] applies both idempotently, under
//! an advisory lock.
//!
//! # The cache
//!
//! Every lookup first asks an in-process cache: a hit is [`Lookup::Ready`](crate::auth::Lookup)
//! (no allocation, no await); a miss queries the table ([`Lookup::Pending`](crate::auth::Lookup))
//! and caches the answer. Known keys are cached for `cache_ttl` (default 30 s), unknown ones for
//! `negative_ttl` (default 5 s: a stream of wrong keys costs one query per key per 5 s, not one
//! per request), at most `cache_size` entries (default 100,000; when full, expired entries go
//! first, then an arbitrary tenth). Database errors are not cached, and the auth layer answers
//! them with 503 (fail closed).
//!
//! Revocation: a key revoked or changed through this process's admin endpoints is dropped from
//! its cache at once; in other processes (or after an `UPDATE` by hand) it keeps working for at
//! most `cache_ttl`. Choose the TTL as the revocation delay you accept. The cache lives in the
//! store, which the proxy makes once at start, so it survives reloads.
//!
//! # Admin endpoints
//!
//! [`AdminKeys`] answers under `/admin/keys`, for callers presenting the admin key
//! (`Authorization: Bearer <admin key>`, compared by digest; anything else is 401):
//!
//! | request | answer |
//! |---|---|
//! | `POST /admin/keys` `{"id"?, "models"?, "rpm"?, "tpm"?, "max_concurrent"?, "model_limits"?, "expires"?, "metadata"?}` | 201, the key **with its secret** `"key": "sk-cg-…"` (64 hex digits from the OS's random source), shown this once; 409 `key_exists` for a taken id |
//! | `GET /admin/keys` | 200 `{"object":"list","data":[…]}`: ids, models, limits, expiry, state, metadata, creation time; never a secret nor a digest |
//! | `GET /admin/keys/{id}` | 200 the key, 404 `key_not_found` |
//! | `PATCH /admin/keys/{id}` `{"models"?, "rpm"?, …, "expires"?, "disabled"?}` | 200 the changed key; `null` clears a limit or the expiry |
//! | `POST /admin/keys/{id}/revoke`, `DELETE /admin/keys/{id}` | 200 the key, now `"disabled": true` (kept for the record) |
//!
//! Bodies are JSON objects (at most 64 KiB); an unknown field or a wrong type is 400. Database
//! failures are 503 `service_unavailable`.
//!
//! # Example
//!
//! ```no_run
//! use chatgate::auth::postgres::{AdminKeys, PgKeyStore, PgKeyStoreConfig};
//! use chatgate::auth::{AuthLayer, KeyDigest};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgKeyStore::connect(
//!     "postgres://postgres@127.0.0.1/test",
//!     PgKeyStoreConfig::new().cache_ttl(Duration::from_secs(30)),
//! )?;
//! store.migrate().await?;
//! let auth = AuthLayer::from_shared(Arc::new(store.clone()));   // once; reused by every reload
//! let admin = AdminKeys::new(store, KeyDigest::of("the admin key"));
//! // gateway.with_route("/admin/keys", admin.clone()).with_route("/admin/keys/", admin)
//! # let _ = (auth, admin);
//! # Ok(())
//! # }
//! ```

mod admin;
mod cache;
mod store;

pub use admin::{AdminFuture, AdminKeys};
pub use store::{
    BUDGETS_MIGRATION, KeyInfo, MIGRATION, NewKey, PgKeyStore, PgKeyStoreConfig, PgKeyStoreError,
    Secret,
};

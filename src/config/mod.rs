//! The TOML configuration of the bundled proxy (feature `config`).
//!
//! [`Config::load`] reads a file, [`Config::from_toml_str`] parses text, and both validate
//! everything before returning: a [`Config`] in hand is a usable one. Every error names the
//! file, the line and column, and the problem, as `proxy.toml:9:7: invalid URL "ftp://x":
//! scheme must be http or https`.
//!
//! # The file
//!
//! ```toml
//! listen = "127.0.0.1:8080"          # optional; an IP:port (default 127.0.0.1:8080)
//!
//! [[models]]
//! name = "echo"
//! builtin = "echo"                    # an in-process model; only "echo" exists
//!
//! [[models]]
//! name = "qwen"
//! fallback = ["echo"]                 # optional: models tried when this one is unavailable
//! max_attempts = 2                    # optional: tries per request, across replicas
//! connect_timeout = "2s"              # optional: applies to every upstream of the model
//! [[models.upstreams]]
//! url = "http://127.0.0.1:9001/v1"   # base URL; the proxy appends /chat/completions
//! model = "Qwen/Qwen2.5-7B-Instruct" # optional: the name sent upstream (default: `name`)
//! api_key_env = "QWEN_KEY"           # optional: the variable holding the upstream's key
//! weight = 1                          # optional: share of the traffic, >= 1
//! health_check = { path = "/models", interval = "10s" }  # optional active probe of …/v1/models
//! # ca_file = "certs/internal-ca.pem"  # optional, https only: trust this private CA instead
//! ```
//!
//! Unknown keys are errors at every level, so a typo never silently falls back to a default.
//!
//! ## `[[models]]`
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `name` | required | the public name clients put in `model`; non-empty, unique |
//! | `builtin` | — | an in-process model (`"echo"`); excludes `upstreams` |
//! | `upstreams` | — | one or more `[[models.upstreams]]` replicas; excludes `builtin` |
//! | `fallback` | `[]` | configured models tried, in order, when this one is unavailable; not transitive (a fallback's own fallbacks are not tried), so cycles are harmless |
//! | `max_attempts` | `2` | tries per request, each on another replica when there is one (2 = one retry); >= 1 |
//!
//! ## Timeouts and health
//!
//! These keys may be set on a model (applying to all its upstreams) and on an upstream (overriding
//! the model's value); builtin models ignore them. `health_check` is replaced as a whole, not
//! merged key by key.
//!
//! The health keys (`eject_after`, `readmit_after`, `health_check`) describe the model's
//! replica set as a whole, so every replica of a model must end up with the same values: a file
//! where one replica's differ from the first replica's is refused (at load, `--check` and
//! reload) with the position of the overriding key, never loaded with some values dropped. Set
//! them on the `[[models]]` table.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `connect_timeout` | `"5s"` | establishing the connection (TCP and TLS) |
//! | `first_byte_timeout` | `"60s"` | from sending the request to the response head |
//! | `idle_timeout` | `"60s"` | longest gap between two chunks of a streamed body |
//! | `total_timeout` | `"10m"` | the whole exchange, body included |
//! | `max_answer_bytes` | `8388608` | the most bytes of a non-streamed answer read whole and checked to be a chat completion (a longer one passes unchecked; `0`: none is checked) |
//! | `eject_after` | `3` | consecutive failures before a replica is ejected; >= 1 |
//! | `readmit_after` | `"5s"` | base backoff before an ejected replica is tried again |
//! | `health_check` | none | `{ path = "/models", interval = "10s", timeout = "5s" }`: an active probe, `GET url + path`; each key optional with the default shown (the library's [`HealthCheck`](crate::route::HealthCheck) defaults) |
//!
//! The probe's `path` starts with `/` and is relative to the upstream's base URL: `/models` of
//! `http://h:8000/v1` is `http://h:8000/v1/models`. `.` and `..` segments are resolved as in any
//! URL, which reaches the host's root: `/../health` of `http://h:8000/v1` is
//! `http://h:8000/health` (vLLM's health endpoint). A replica that does not answer 2xx within
//! `timeout` takes no traffic until a probe succeeds.
//!
//! ## `[server]` and `[validation]`
//!
//! Both tables are optional, and so is each key; a file without them gets the library's
//! defaults. [`Config::serve_config`] and [`Config::validate_config`] hand them to
//! [`serve_with`](crate::gateway::serve_with) and the [`Gateway`](crate::gateway::Gateway).
//!
//! ```toml
//! [server]
//! header_read_timeout = "30s"   # longest wait for an HTTP/1 request head
//! shutdown_grace = "30s"        # how long requests and streams in flight may finish on shutdown
//! max_header_bytes = "64KiB"    # largest request head (HTTP/1 buffer, HTTP/2 header list)
//!
//! [validation]
//! max_body = "4MiB"             # largest request body (413 above)
//! max_depth = 64                # deepest JSON nesting (422 above)
//! strict = false                # also enforce OpenAI's semantic rules (400)
//! apply_defaults = true         # write absent `temperature` and `n` into the forwarded body
//! body_timeout = "30s"          # longest wait for the whole body, or "none"
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `server.header_read_timeout` | `"30s"` | [`ServeConfig::header_read_timeout`] |
//! | `server.shutdown_grace` | `"30s"` | [`ServeConfig::shutdown_grace`] |
//! | `server.max_header_bytes` | `"64KiB"` | [`ServeConfig::max_header_bytes`]; 8 KiB (hyper's smallest HTTP/1 buffer) to 4 GiB |
//! | `validation.max_body` | `"4MiB"` | [`ValidateConfig::max_body`] |
//! | `validation.max_depth` | `64` | [`ValidateConfig::max_depth`]; 1 to 128 |
//! | `validation.strict` | `false` | [`ValidateConfig::strict`] |
//! | `validation.apply_defaults` | `true` | [`ValidateConfig::apply_defaults`] |
//! | `validation.body_timeout` | `"30s"` | [`ValidateConfig::body_timeout`]; `"none"` waits forever |
//!
//! Sizes are a number of bytes (`65536`) or a string with a binary unit: `"512B"`, `"64KiB"`,
//! `"4MiB"`, `"1GiB"`. `"MB"` and friends are refused as ambiguous (1000 or 1024?). Sizes and
//! durations must be greater than zero.
//!
//! The `[server]` settings take effect at start; a reload (SIGHUP) applies `[validation]` and
//! the models, and reports a changed `[server]` or `listen` as needing a restart.
//!
//! ## `[limits]`
//!
//! The rate limiter's settings ([`Config::limits_config`]); the table and each key are optional.
//! Per-key limits (`rpm`, `tpm`, `max_concurrent`) belong to the keys (`[[keys]]`), not here.
//!
//! ```toml
//! [limits]
//! default_completion_tokens = 1024    # reserved when a request sets no max_tokens
//! anonymous = { rpm = 60, tpm = 20000, max_concurrent = 4 }  # callers without a key, per IP; off when absent
//! backend = "local"                   # or "redis" (cargo feature `redis`)
//! # redis_url = "redis://127.0.0.1:6379"
//! # redis_prefix = "chatgate:rl:"
//! # on_redis_error = "open"           # or "closed" (503 while Redis is unreachable)
//! ```
//!
//! The backend is made once at start ([`LimitsConfig::make_backend`]) and kept across reloads,
//! so counters survive them; a reload applies `default_completion_tokens` and `anonymous`, and
//! reports a changed `backend` as needing a restart.
//!
//! ## Durations
//!
//! Durations are strings: one or more `<integer><unit>` groups with the unit `ms`, `s`, `m`
//! (minutes) or `h`, such as `"500ms"`, `"5s"`, `"2m"` or `"1m30s"`. They must be greater than
//! zero. A bare number is rejected because it has no unit. The parser is the crate's own
//! rather than `humantime`: the grammar is a dozen lines, it keeps the accepted set to units
//! that make sense for a timeout (no `"2months"`, no `"µs"`), and its errors carry the file
//! position like every other error here.
//!
//! ## Private CAs
//!
//! An `https` upstream is verified against the bundled webpki (Mozilla) roots. `ca_file` on an
//! upstream names a PEM file of CA certificates to trust *instead* (see
//! [`UpstreamConfig::root_certificates`](crate::upstream::UpstreamConfig::root_certificates)
//! for why instead rather than in addition); a relative path is resolved against the directory
//! of the configuration file. Setting it on an `http` URL is an error. Like credentials, the
//! file is read by [`Config::router`] (at start, `--check` and every reload, so a renewed CA is
//! picked up by a reload), and an unreadable file or one without a usable certificate is an
//! error at the position of `ca_file`.
//!
//! ## Credentials
//!
//! The file holds only the *name* of the variable with an upstream's key (`api_key_env`).
//! Nothing reads the environment while parsing: [`ApiKeyEnv::resolve`] does, when the proxy
//! needs the key, and an [`ApiKey`] never shows its value in `Debug` or in an error. URLs with
//! `user:password@` are rejected for the same reason.
//!
//! ## `[usage]`, `[[prices]]` and `[log]`
//!
//! ```toml
//! [usage]
//! # enabled = false                # accounting off: no usage layers in the proxy's stack
//! jsonl = "usage.jsonl"            # append one JSON record per request (relative to this file)
//! jsonl_flush = "batch"            # or a duration: flush at most that often ("1s")
//! # postgres = "postgres://postgres@127.0.0.1:5432/test"   # feature `postgres`
//! # postgres_table = "usage_records"
//! admin_sha256 = "…"               # SHA-256 (hex) of the admin key that may GET /v1/usage
//! on_full = "drop"                 # or "wait": when the sinks fall behind
//! capacity = 8192                  # records queued before on_full applies
//! metrics_max_keys = 100           # key ids with their own /metrics label; others: "other"
//!
//! [[prices]]
//! model = "qwen"
//! input_per_million = 0.15
//! output_per_million = 0.60
//!
//! [log]
//! format = "text"                  # or "json"; the level comes from RUST_LOG
//! otlp_endpoint = "http://127.0.0.1:4318"   # export request spans by OTLP/HTTP (feature `otlp`)
//! otlp_service_name = "chatgate"   # the spans' service.name (default "chatgate")
//! ```
//!
//! `otlp_endpoint` is an OTLP/HTTP collector's base URL (`http` or `https`, no credentials):
//! spans are posted to `<otlp_endpoint>/v1/traces` (see [`Config::otlp`] and `crate::otlp`).
//! Without the key, the `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable is used the same
//! way. A proxy built without the `otlp` feature refuses to start with either set.
//!
//! Sinks are made once at start: a reload applies new prices, and reports other `[usage]`
//! changes as needing a restart.
//!
//! ## Keys
//!
//! Without `[[keys]]` (and without `[auth] store = "postgres"`) the gateway is open to anyone
//! who can reach it. With them, every chat request needs one of the keys
//! ([`AuthLayer`](crate::auth::AuthLayer), 401) and may only use the models its patterns allow
//! ([`ModelAccessLayer`](crate::auth::ModelAccessLayer), 403). [`Config::key_store`] builds the
//! in-memory store; a reload rebuilds it, so a key removed or disabled in the file stops at the
//! reload.
//!
//! ```toml
//! [[keys]]
//! id = "team-a"                       # required, unique; logged and recorded, not secret
//! sha256 = "9f86d0…"                  # the key's SHA-256 in hex (`proxy --hash-key KEY`)
//! # key = "sk-dev-…"                  # or, for development, the secret itself (one of the two)
//! models = ["echo", "qwen*"]          # glob patterns (`*`, `?`); absent or [] = every model
//! rpm = 600                           # optional limits: requests and tokens per minute,
//! tpm = 100000                        #   requests in flight (>= 1 each)
//! max_concurrent = 20
//! expires = "2027-01-01T00:00:00Z"    # optional RFC 3339 instant (with Z or an offset)
//! disabled = false                    # true refuses the key (401) without deleting it
//! metadata = { team = "a", user = "bob" }
//! budget_tokens = 5_000_000           # optional budget per period: tokens (prompt + completion),
//! budget_usd = 25.0                   #   and/or dollars at the [[prices]] of the models
//! budget_period = "month"             # "day", "week", "month" (UTC calendar) or "30d", "12h"; default month
//! [[keys.model_limits]]               # optional limits per key and model, for each model matching
//! model = "qwen*"
//! rpm = 60
//! ```
//!
//! Budgets are enforced by the rate limiter (reserved at admission, settled at the end, 429
//! `budget_exceeded`): see [budgets](crate::rate_limit#budgets).
//!
//! Errors (all at `file:line:column`, none showing a secret or a `sha256` value): a `sha256`
//! that is not 64 hex digits, both or neither of `sha256` and `key`, a duplicate id, two keys
//! with the same secret, an unknown field, a zero limit, an `expires` without an offset, a zero
//! `budget_tokens`, a `budget_usd` that is not positive or without any `[[prices]]`, an unknown
//! `budget_period`, a `budget_period` without a budget. With the in-memory limiter and usage
//! records in PostgreSQL, the proxy re-reads at start what each `[[keys]]` budget spent in its
//! current period.
//! `expires` may also be a TOML date-time without quotes. It is parsed by the crate's own RFC
//! 3339 reader ([`parse_rfc3339`](crate::auth::parse_rfc3339)), not a date crate: only UTC
//! instants are needed, `humantime` knows only `Z` and `httpdate` only HTTP dates.
//!
//! ### Keys in PostgreSQL (feature `postgres`)
//!
//! ```toml
//! [auth]
//! store = "postgres"        # "config" (the default: [[keys]]) or "postgres"
//! cache_ttl = "30s"         # a key read from the table is used this long (revocation delay)
//! negative_ttl = "5s"       # an unknown key is remembered as unknown this long
//! cache_size = 100000       # entries kept at most
//!
//! [postgres]
//! url_env = "DATABASE_URL"  # or url = "postgres://user@host/db" (kept out of Debug output)
//! schema = "chatgate"       # optional: the schema of the `chatgate_keys` table
//!
//! [admin]                   # optional: the key-management endpoints under /admin/keys
//! sha256 = "…"              # the admin key's digest (or key = "…" for development)
//! ```
//!
//! `[[keys]]` and `store = "postgres"` exclude each other; `[admin]` needs the PostgreSQL
//! store. See [`PostgresKeys`].
//!
//! ## `[[function_catalogs]]`
//!
//! Functions the gateway runs itself when a client names them as `uc_function` tools
//! ([`crate::server_tools`]). Each entry is one catalog; a name is looked up in them in file
//! order. Without any, `uc_function` tools are forwarded untouched. Catalogs are connected at
//! start; a reload keeps the running ones (a changed section needs a restart).
//!
//! ```toml
//! [[function_catalogs]]
//! kind = "postgres"                   # the only kind; needs the cargo feature `postgres`
//! url = "postgres://tools@127.0.0.1:5432/test"   # no password here: see password_env
//! # password_env = "TOOLS_DB_PASSWORD" # optional: the variable holding the password
//! role = "tools_runner"               # optional: functions run as this role (SET LOCAL ROLE)
//! schemas = ["public_tools"]          # exposed schemas; other names are unknown (400)
//! statement_timeout = "10s"           # per call (SET LOCAL statement_timeout)
//! max_rows = 100                      # rows of a table result; more are cut
//! max_bytes = "4KiB"                  # bytes of a result; more are cut
//! catalog = "main"                    # the first name segment: main.public_tools.fn
//! ```
//!
//! ## Later sections
//!
//! Each top-level section is an optional field of the private raw document and an accessor on
//! [`Config`] (as `[server]`, `[validation]` and `[[keys]]` are); `[limits]`, `[usage]` and
//! `[[prices]]` will be added that way, so existing files keep parsing.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use std::time::Duration;
//! use chatgate::config::{Builtin, Config};
//!
//! let text = r#"
//! [[models]]
//! name = "echo"
//! builtin = "echo"
//!
//! [[models]]
//! name = "qwen"
//! fallback = ["echo"]
//! [[models.upstreams]]
//! url = "http://127.0.0.1:9001/v1"
//! api_key_env = "QWEN_KEY"
//! idle_timeout = "30s"
//! "#;
//! let config = Config::from_toml_str(text, Path::new("proxy.toml")).unwrap();
//! assert_eq!(config.listen().to_string(), "127.0.0.1:8080");
//! assert_eq!(config.model("echo").unwrap().builtin(), Some(Builtin::Echo));
//!
//! let qwen = config.model("qwen").unwrap();
//! let upstream = &qwen.upstreams()[0];
//! assert_eq!(upstream.chat_completions_url(), "http://127.0.0.1:9001/v1/chat/completions");
//! assert_eq!(upstream.model(), "qwen");
//! assert_eq!(upstream.timeouts().idle, Duration::from_secs(30));
//! assert_eq!(upstream.api_key_env().unwrap().name(), "QWEN_KEY");
//!
//! let err = Config::from_toml_str("[[models]]\nnam = \"x\"\n", Path::new("proxy.toml")).unwrap_err();
//! assert!(err.to_string().starts_with("proxy.toml:2:1: unknown field `nam`"));
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

mod catalogs;
mod credentials;
mod error;
mod keys;
mod limits;
mod model;
mod raw;
mod server;
#[cfg(test)]
mod tests;
mod usage;

pub use catalogs::{FunctionCatalogConfig, PostgresCatalog};
pub use credentials::{ApiKey, ApiKeyEnv, CaFile};
pub use error::ConfigError;
use error::{ErrorKind, Position};
pub use keys::{DEFAULT_CACHE_SIZE, DEFAULT_CACHE_TTL, DEFAULT_NEGATIVE_TTL, PostgresKeys};
pub use limits::{LimiterBackend, LimitsConfig, OnRedisError};
pub use model::{Backend, Builtin, Health, HealthProbe, Model, Timeouts, Upstream};
use raw::{RawConfig, Source};
pub use usage::{
    DEFAULT_OTLP_SERVICE_NAME, LogFormat, OTEL_EXPORTER_OTLP_ENDPOINT, OtlpExport, UsageConfig,
};

use crate::gateway::ServeConfig;
use crate::validate::ValidateConfig;

/// The address the proxy listens on when the file sets none: `127.0.0.1:8080`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

// The library's defaults, so the file and the library never disagree.
use crate::route::{
    DEFAULT_EJECT_AFTER, DEFAULT_HEALTH_CHECK_INTERVAL as DEFAULT_PROBE_INTERVAL,
    DEFAULT_HEALTH_CHECK_PATH as DEFAULT_PROBE_PATH,
    DEFAULT_HEALTH_CHECK_TIMEOUT as DEFAULT_PROBE_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_READMIT_AFTER,
};

// ---------------------------------------------------------------------------------------------
// The validated configuration
// ---------------------------------------------------------------------------------------------

/// A parsed and validated proxy configuration. See the [module docs](crate::config).
#[derive(Clone, Debug)]
pub struct Config {
    listen: SocketAddr,
    serve: ServeConfig,
    validate: ValidateConfig,
    models: Vec<Model>,
    usage: UsageConfig,
    prices: crate::usage::Prices,
    log: usage::LogConfig,
    keys: keys::KeysConfig,
    limits: LimitsConfig,
    function_catalogs: Vec<FunctionCatalogConfig>,
}

impl Config {
    /// Parses and validates `text`; `origin` is the file name used in error messages.
    ///
    /// # Errors
    /// The first syntax error, unknown key or invalid value, as `origin:line:column: problem`.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let src = Source { text, file: origin };
        let raw: RawConfig = toml::from_str(text).map_err(|e| src.syntax(&e))?;
        src.config(raw)
    }

    /// Reads, parses and validates the file at `path`.
    ///
    /// # Errors
    /// The file cannot be read (see [`ConfigError::is_io`]), or as [`Config::from_toml_str`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            kind: ErrorKind::Io,
            file: Some(path.to_path_buf()),
            position: None,
            problem: format!("cannot read the file: {e}"),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// The configuration used when no file is given: the builtin `echo` model, listening on
    /// [`DEFAULT_LISTEN`].
    pub fn default_embedded() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            serve: ServeConfig::default(),
            validate: ValidateConfig::default(),
            models: vec![Model {
                name: "echo".to_owned(),
                backend: Backend::Builtin(Builtin::Echo),
                fallback: Vec::new(),
                max_attempts: DEFAULT_MAX_ATTEMPTS,
            }],
            usage: UsageConfig::default(),
            prices: crate::usage::Prices::new(),
            log: usage::LogConfig::default(),
            keys: keys::KeysConfig::default(),
            limits: LimitsConfig::default(),
            function_catalogs: Vec::new(),
        }
    }

    /// Usage accounting's settings (`[usage]`; see [`UsageConfig`]).
    pub fn usage_config(&self) -> &UsageConfig {
        &self.usage
    }

    /// The models' prices (`[[prices]]`: `model`, `input_per_million`, `output_per_million`).
    pub fn prices(&self) -> &crate::usage::Prices {
        &self.prices
    }

    /// The proxy's log format (`[log] format = "text" | "json"`).
    pub fn log_format(&self) -> LogFormat {
        self.log.format
    }

    /// Where to export the request spans by OTLP/HTTP: `[log] otlp_endpoint`, else the
    /// [`OTEL_EXPORTER_OTLP_ENDPOINT`] environment variable (read now, not when the file was
    /// parsed); `None` when neither is set. Exporting needs the `otlp` feature
    /// (`chatgate::otlp`); a proxy built without it must not drop the spans silently.
    ///
    /// # Errors
    /// The variable holds an invalid URL (the file's key was checked at load).
    pub fn otlp(&self) -> Result<Option<OtlpExport>, ConfigError> {
        let env = std::env::var(OTEL_EXPORTER_OTLP_ENDPOINT).ok();
        self.otlp_with_env(env.as_deref())
    }

    /// [`otlp`](Self::otlp) with `env` as the value of [`OTEL_EXPORTER_OTLP_ENDPOINT`]
    /// (`None`: unset).
    ///
    /// # Errors
    /// `env` is not a valid URL.
    pub fn otlp_with_env(&self, env: Option<&str>) -> Result<Option<OtlpExport>, ConfigError> {
        self.log.otlp(env)
    }

    /// The function catalogs (`[[function_catalogs]]`), in file order: where the gateway finds
    /// the `uc_function` tools it runs itself ([`crate::server_tools`]). Empty: `uc_function`
    /// tools are forwarded untouched.
    pub fn function_catalogs(&self) -> &[FunctionCatalogConfig] {
        &self.function_catalogs
    }

    /// The address to listen on (`listen`, default [`DEFAULT_LISTEN`]).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The HTTP server's settings (`[server]`; each key defaults to [`ServeConfig::default`]'s
    /// value), for [`serve_with`](crate::gateway::serve_with).
    pub fn serve_config(&self) -> ServeConfig {
        self.serve.clone()
    }

    /// The validation layer's settings (`[validation]`; each key defaults to
    /// [`ValidateConfig::default`]'s value), for [`Gateway`](crate::gateway::Gateway).
    pub fn validate_config(&self) -> ValidateConfig {
        self.validate.clone()
    }

    /// The rate limiter's settings (`[limits]`; see [`LimitsConfig`]).
    pub fn limits_config(&self) -> &LimitsConfig {
        &self.limits
    }

    /// The models, in file order (never empty).
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The model with this public name.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The in-memory key store of the `[[keys]]` tables; `None` when the file has none (the
    /// gateway is then open, unless [`postgres_keys`](Self::postgres_keys) is set).
    pub fn key_store(&self) -> Option<crate::auth::ConfigKeyStore> {
        self.keys.key_store()
    }

    /// The keys of the `[[keys]]` tables, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &crate::auth::KeyRecord> {
        self.keys.keys.iter().map(|(_, record)| record)
    }

    /// The PostgreSQL key store's settings, when `[auth] store = "postgres"`.
    pub fn postgres_keys(&self) -> Option<&PostgresKeys> {
        self.keys.postgres.as_ref()
    }

    /// The digest of the admin key (`[admin]`), which guards the key-management endpoints.
    pub fn admin_key(&self) -> Option<crate::auth::KeyDigest> {
        self.keys.admin
    }
}

impl Config {
    /// Builds the [`ModelRouter`](crate::route::ModelRouter) this configuration describes:
    /// builtin models as in-process services, upstream models as routes of
    /// [`Upstream`](crate::upstream::Upstream) replicas, with their timeouts, health settings
    /// and fallbacks. Resolves every `api_key_env` and reads every `ca_file` now, so a missing
    /// credential or CA fails here (at start, `--check` or reload) rather than on the first
    /// request.
    ///
    /// A route's health settings (`eject_after`, `readmit_after`, `health_check`) apply to all
    /// its replicas; loading refuses a file where replicas set them differently.
    ///
    /// Starts the active health probes, so it must run inside a Tokio runtime.
    ///
    /// # Errors
    /// An unset credential variable, an unusable `ca_file`, or a route the router rejects.
    pub fn router(&self) -> Result<crate::route::ModelRouter, ConfigError> {
        use crate::route::{HealthCheck, ModelRouter, RouteConfig};
        use crate::upstream::UpstreamConfig;

        let mut builder = ModelRouter::builder();
        for model in &self.models {
            match &model.backend {
                Backend::Builtin(Builtin::Echo) => {
                    builder = builder.service(model.name.clone(), crate::EchoModel::new());
                }
                Backend::Upstreams(upstreams) => {
                    let mut route = RouteConfig::new().max_attempts(model.max_attempts);
                    if let Some(first) = upstreams.first() {
                        let health = first.health();
                        route = route
                            .eject_after(health.eject_after)
                            .readmit_after(health.readmit_after);
                        if let Some(probe) = &health.probe {
                            route = route.health_check(
                                HealthCheck::new(probe.path())
                                    .interval(probe.interval())
                                    .timeout(probe.timeout()),
                            );
                        }
                    }
                    for up in upstreams {
                        let t = up.timeouts();
                        let mut replica = UpstreamConfig::new(up.url().clone())
                            .upstream_model(up.model())
                            .weight(up.weight())
                            .connect_timeout(t.connect)
                            .first_byte_timeout(t.first_byte)
                            .idle_timeout(t.idle)
                            .total_timeout(t.total)
                            .max_answer_bytes(up.max_answer_bytes());
                        if let Some(env) = up.api_key_env() {
                            replica = replica.api_key(env.resolve()?.expose());
                        }
                        if let Some(ca) = up.ca_file() {
                            replica = replica.root_certificates(ca.read()?);
                        }
                        route = route.replica(replica);
                    }
                    for f in &model.fallback {
                        route = route.fallback(f.clone());
                    }
                    builder =
                        builder
                            .upstream(model.name.clone(), route)
                            .map_err(|e| ConfigError {
                                kind: ErrorKind::Invalid,
                                file: None,
                                position: None,
                                problem: format!("model {:?}: {e}", model.name),
                            })?;
                }
            }
        }
        builder.try_build().map_err(|e| ConfigError {
            kind: ErrorKind::Invalid,
            file: None,
            position: None,
            problem: e.to_string(),
        })
    }
}

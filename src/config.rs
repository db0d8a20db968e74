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
//! health_check = { path = "/models", interval = "10s" }  # optional active probe
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
//! | key | default | meaning |
//! |---|---|---|
//! | `connect_timeout` | `"5s"` | establishing the connection (TCP and TLS) |
//! | `first_byte_timeout` | `"60s"` | from sending the request to the response head |
//! | `idle_timeout` | `"60s"` | longest gap between two chunks of a streamed body |
//! | `total_timeout` | `"10m"` | the whole exchange, body included |
//! | `eject_after` | `3` | consecutive failures before a replica is ejected; >= 1 |
//! | `readmit_after` | `"5s"` | base backoff before an ejected replica is tried again |
//! | `health_check` | none | `{ path = "/models", interval = "10s", timeout = "5s" }`: an active probe, `GET url + path`; each key optional with the default shown |
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
//! ## Later sections
//!
//! Each top-level section is an optional field of the private raw document and an accessor on
//! [`Config`]; `[[keys]]`, `[limits]`, `[usage]` and `[[prices]]` will be added that way, so
//! existing files keep parsing.
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
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderValue, Uri};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

/// The address the proxy listens on when the file sets none: `127.0.0.1:8080`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

const DEFAULT_MAX_ATTEMPTS: u32 = 2;
const DEFAULT_EJECT_AFTER: u32 = 3;
const DEFAULT_READMIT_AFTER: Duration = Duration::from_secs(5);
const DEFAULT_PROBE_PATH: &str = "/models";
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// The validated configuration
// ---------------------------------------------------------------------------------------------

/// A parsed and validated proxy configuration. See the [module docs](crate::config).
#[derive(Clone, Debug)]
pub struct Config {
    listen: SocketAddr,
    models: Vec<Model>,
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
            models: vec![Model {
                name: "echo".to_owned(),
                backend: Backend::Builtin(Builtin::Echo),
                fallback: Vec::new(),
                max_attempts: DEFAULT_MAX_ATTEMPTS,
            }],
        }
    }

    /// The address to listen on (`listen`, default [`DEFAULT_LISTEN`]).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The models, in file order (never empty).
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The model with this public name.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// One `[[models]]` entry: a public model name and what serves it.
#[derive(Clone, Debug)]
pub struct Model {
    name: String,
    backend: Backend,
    fallback: Vec<String>,
    max_attempts: u32,
}

impl Model {
    /// The public name clients send in `model`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What serves the model.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The builtin serving the model, if it is one.
    pub fn builtin(&self) -> Option<Builtin> {
        match &self.backend {
            Backend::Builtin(b) => Some(*b),
            Backend::Upstreams(_) => None,
        }
    }

    /// The replicas serving the model (empty for a builtin).
    pub fn upstreams(&self) -> &[Upstream] {
        match &self.backend {
            Backend::Builtin(_) => &[],
            Backend::Upstreams(u) => u,
        }
    }

    /// Configured models to try, in order, when this one is unavailable. Not transitive: only
    /// this list is tried, never the fallbacks' own fallbacks.
    pub fn fallback(&self) -> &[String] {
        &self.fallback
    }

    /// Tries per request across this model's replicas (`max_attempts`, default 2 = one retry
    /// on another replica); at least 1.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
}

/// What serves a model.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Backend {
    /// An in-process model (`builtin = "…"`).
    Builtin(Builtin),
    /// One or more OpenAI-compatible servers (`[[models.upstreams]]`); never empty.
    Upstreams(Vec<Upstream>),
}

/// The in-process models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Builtin {
    /// `"echo"`: answers with the last user message.
    Echo,
}

impl Builtin {
    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Echo => "echo",
        }
    }
}

/// One replica of a model: an OpenAI-compatible server (`[[models.upstreams]]`).
#[derive(Clone, Debug)]
pub struct Upstream {
    url: Uri,
    chat_completions_url: Uri,
    model: String,
    api_key_env: Option<ApiKeyEnv>,
    ca_file: Option<CaFile>,
    weight: u32,
    timeouts: Timeouts,
    health: Health,
}

impl Upstream {
    /// The base URL (`url`), `http` or `https`, without a trailing `/`, query or fragment.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The URL requests are sent to: the base URL with `/chat/completions` appended.
    pub fn chat_completions_url(&self) -> &Uri {
        &self.chat_completions_url
    }

    /// The model name sent upstream (`model`, default: the public name).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The variable holding this upstream's key, if it needs one (`api_key_env`).
    pub fn api_key_env(&self) -> Option<&ApiKeyEnv> {
        self.api_key_env.as_ref()
    }

    /// The private CA bundle this `https` upstream is verified against, if any (`ca_file`).
    pub fn ca_file(&self) -> Option<&CaFile> {
        self.ca_file.as_ref()
    }

    /// This replica's share of the model's traffic relative to the others (`weight`, default 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The effective timeouts (upstream value, else model value, else default).
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The effective health settings (upstream value, else model value, else default).
    pub fn health(&self) -> &Health {
        &self.health
    }
}

/// How long each phase of an upstream exchange may take. All are greater than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Establishing the connection, TCP and TLS (`connect_timeout`, default 5 s).
    pub connect: Duration,
    /// From sending the request to receiving the response head (`first_byte_timeout`,
    /// default 60 s).
    pub first_byte: Duration,
    /// Longest gap between two chunks of the response body (`idle_timeout`, default 60 s).
    pub idle: Duration,
    /// The whole exchange, body included (`total_timeout`, default 10 min).
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            total: Duration::from_secs(10 * 60),
        }
    }
}

/// When a replica is taken out of rotation and brought back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Consecutive failures before the replica is ejected (`eject_after`, default 3); >= 1.
    pub eject_after: u32,
    /// Base backoff before an ejected replica is tried again (`readmit_after`, default 5 s).
    pub readmit_after: Duration,
    /// The active probe (`health_check`), if any.
    pub probe: Option<HealthProbe>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            eject_after: DEFAULT_EJECT_AFTER,
            readmit_after: DEFAULT_READMIT_AFTER,
            probe: None,
        }
    }
}

/// An active health probe: `GET` on [`HealthProbe::url`] every [`HealthProbe::interval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthProbe {
    path: String,
    url: Uri,
    interval: Duration,
    timeout: Duration,
}

impl HealthProbe {
    /// The probed path relative to the upstream's base URL (`path`, default `/models`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The probed URL: the upstream's base URL followed by [`HealthProbe::path`].
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// Time between two probes (`interval`, default 10 s).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long one probe may take (`timeout`, default 5 s).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The name of the environment variable holding an upstream's key (`api_key_env`).
///
/// Only the name is kept; [`ApiKeyEnv::resolve`] reads the variable when it is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyEnv {
    name: String,
    model: String,
    file: PathBuf,
    position: Position,
}

impl ApiKeyEnv {
    /// The variable's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the variable now.
    ///
    /// # Errors
    /// The variable is unset, empty, not UTF-8, or holds characters other than printable ASCII
    /// without spaces. The error names the variable and where the file names it, never its
    /// value; [`ConfigError::is_env`] is true.
    pub fn resolve(&self) -> Result<ApiKey, ConfigError> {
        self.resolve_from(std::env::var_os(&self.name))
    }

    fn resolve_from(&self, value: Option<OsString>) -> Result<ApiKey, ConfigError> {
        let fail = |why: &str| ConfigError {
            kind: ErrorKind::Env,
            file: Some(self.file.clone()),
            position: Some(self.position),
            problem: format!(
                "environment variable `{}` (api_key_env of model {:?}) {why}",
                self.name, self.model
            ),
        };
        let value = value.ok_or_else(|| fail("is not set"))?;
        let value = value
            .into_string()
            .map_err(|_| fail("is not valid UTF-8"))?;
        if value.is_empty() {
            return Err(fail("is empty"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(
                "holds characters other than printable ASCII (spaces and newlines included)",
            ));
        }
        let mut header = HeaderValue::try_from(format!("Bearer {value}"))
            .map_err(|_| fail("cannot be sent in an HTTP header"))?;
        header.set_sensitive(true);
        Ok(ApiKey { value, header })
    }
}

/// A PEM file of CA certificates an `https` upstream is verified against, instead of the
/// bundled roots (`ca_file`).
///
/// Only the path is kept; [`CaFile::read`] reads and checks the file when it is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFile {
    path: PathBuf,
    file: PathBuf,
    position: Position,
}

impl CaFile {
    /// The path, resolved against the configuration file's directory when it was relative.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file now and checks that it holds at least one usable PEM certificate.
    ///
    /// # Errors
    /// The file cannot be read, holds malformed PEM or no certificate, or a certificate that
    /// cannot be a trust anchor; the error names the configuration file and the position of
    /// `ca_file`.
    pub fn read(&self) -> Result<bytes::Bytes, ConfigError> {
        let fail = |why: String| ConfigError {
            kind: ErrorKind::Invalid,
            file: Some(self.file.clone()),
            position: Some(self.position),
            problem: format!("ca_file {:?}: {why}", self.path.display().to_string()),
        };
        let pem = std::fs::read(&self.path).map_err(|e| fail(format!("cannot read: {e}")))?;
        crate::upstream::check_root_certificates(&pem).map_err(fail)?;
        Ok(pem.into())
    }
}

/// An upstream's key, read by [`ApiKeyEnv::resolve`]. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct ApiKey {
    value: String,
    header: HeaderValue,
}

impl ApiKey {
    /// The key itself. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The `Authorization: Bearer …` header value, marked sensitive.
    pub fn authorization(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a configuration could not be loaded, or a key not resolved.
///
/// Its `Display` is one line, `file:line:column: problem` (or `file: problem` when no position
/// applies), and never contains a credential. For an unreadable file it includes the I/O error.
#[derive(Debug)]
pub struct ConfigError {
    kind: ErrorKind,
    file: Option<PathBuf>,
    position: Option<Position>,
    problem: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    /// The file could not be read.
    Io,
    /// Not TOML, or not the expected shape (unknown key, wrong type, missing key).
    Syntax,
    /// Well-formed but invalid (bad URL, duplicate model, unknown fallback…).
    Invalid,
    /// An `api_key_env` variable could not be resolved.
    Env,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    line: usize,
    column: usize,
}

impl ConfigError {
    /// Whether the file could not be read.
    pub fn is_io(&self) -> bool {
        self.kind == ErrorKind::Io
    }

    /// Whether an `api_key_env` variable could not be resolved.
    pub fn is_env(&self) -> bool {
        self.kind == ErrorKind::Env
    }

    /// The configuration file concerned.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The 1-based line of the problem.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.line)
    }

    /// The 1-based column (in characters) of the problem.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|p| p.column)
    }

    /// The problem alone, without file and position.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(p) = self.position {
                write!(f, "{}:{}:", p.line, p.column)?;
            }
            f.write_str(" ")?;
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// The raw document, as deserialized (spans kept for the semantic checks)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    models: Vec<RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Spanned<String>,
    builtin: Option<Spanned<String>>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    #[serde(default)]
    fallback: Vec<Spanned<String>>,
    max_attempts: Option<Spanned<u32>>,
    // Shared with `RawUpstream` (`flatten` cannot be combined with `deny_unknown_fields`).
    connect_timeout: Option<Dur>,
    first_byte_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    total_timeout: Option<Dur>,
    eject_after: Option<Spanned<u32>>,
    readmit_after: Option<Dur>,
    health_check: Option<RawHealthCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Spanned<String>,
    model: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    weight: Option<Spanned<u32>>,
    connect_timeout: Option<Dur>,
    first_byte_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    total_timeout: Option<Dur>,
    eject_after: Option<Spanned<u32>>,
    readmit_after: Option<Dur>,
    health_check: Option<RawHealthCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    path: Option<Spanned<String>>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
}

/// A duration string (see the module docs), checked while deserializing so the error carries
/// the value's position.
#[derive(Clone, Copy, Debug)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurVisitor;
        impl Visitor<'_> for DurVisitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string such as "500ms", "5s" or "2m""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(DurVisitor)
    }
}

/// Parses `<integer><unit>` groups, units `ms`, `s`, `m`, `h`; the total must be positive.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {text:?}: {why}");
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = text;
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad(r#"expected a number followed by a unit, such as "5s""#));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad("too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(bad("missing unit (ms, s, m or h)")),
            u if u.starts_with('.') => {
                return Err(bad(
                    r#"fractions are not supported; use a smaller unit ("1500ms")"#,
                ));
            }
            u => return Err(bad(&format!("unknown unit {u:?} (use ms, s, m or h)"))),
        };
        millis = n
            .checked_mul(per_unit)
            .and_then(|v| millis.checked_add(v))
            .ok_or_else(|| bad("too large"))?;
    }
    if millis == 0 {
        return Err(bad("must be greater than zero"));
    }
    Ok(Duration::from_millis(millis))
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The text being validated and its file name, for turning byte spans into positions.
struct Source<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Source<'_> {
    fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    fn error(&self, kind: ErrorKind, span: Option<Range<usize>>, problem: String) -> ConfigError {
        ConfigError {
            kind,
            file: Some(self.file.to_path_buf()),
            position: span.map(|s| self.position(s.start)),
            problem,
        }
    }

    fn syntax(&self, e: &toml::de::Error) -> ConfigError {
        let problem = e.message().trim().replace('\n', " ");
        self.error(ErrorKind::Syntax, e.span(), problem)
    }

    fn invalid<T>(&self, at: &Spanned<T>, problem: String) -> ConfigError {
        self.error(ErrorKind::Invalid, Some(at.span()), problem)
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = match &raw.listen {
            None => DEFAULT_LISTEN,
            Some(s) => s.get_ref().parse().map_err(|_| {
                let msg = format!(
                    r#"invalid listen address {:?}: expected IP:port, such as "127.0.0.1:8080""#,
                    s.get_ref()
                );
                self.invalid(s, msg)
            })?,
        };
        if raw.models.is_empty() {
            return Err(self.error(
                ErrorKind::Invalid,
                None,
                "no models configured: add at least one [[models]] table".to_owned(),
            ));
        }
        let mut names: HashMap<&str, Position> = HashMap::new();
        for m in &raw.models {
            let name = m.name.get_ref();
            if name.trim().is_empty() {
                return Err(self.invalid(&m.name, "model name must not be empty".to_owned()));
            }
            match names.entry(name) {
                Entry::Occupied(first) => {
                    let msg = format!(
                        "duplicate model {name:?} (first defined at line {})",
                        first.get().line
                    );
                    return Err(self.invalid(&m.name, msg));
                }
                Entry::Vacant(slot) => {
                    slot.insert(self.position(m.name.span().start));
                }
            }
        }
        let models = raw
            .models
            .iter()
            .map(|m| self.model(m, &names))
            .collect::<Result<_, _>>()?;
        Ok(Config { listen, models })
    }

    fn model(&self, m: &RawModel, names: &HashMap<&str, Position>) -> Result<Model, ConfigError> {
        let name = m.name.get_ref();
        let backend = match (&m.builtin, m.upstreams.is_empty()) {
            (Some(b), true) => match b.get_ref().as_str() {
                "echo" => Backend::Builtin(Builtin::Echo),
                other => {
                    let msg = format!(
                        r#"model {name:?}: unknown builtin {other:?} (the only builtin is "echo")"#
                    );
                    return Err(self.invalid(b, msg));
                }
            },
            (Some(b), false) => {
                let msg = format!(
                    "model {name:?} sets both `builtin` and [[models.upstreams]]; keep one"
                );
                return Err(self.invalid(b, msg));
            }
            (None, true) => {
                let msg = format!(
                    "model {name:?} has neither `builtin` nor a [[models.upstreams]] entry"
                );
                return Err(self.invalid(&m.name, msg));
            }
            (None, false) => Backend::Upstreams(
                m.upstreams
                    .iter()
                    .map(|u| self.upstream(m, u))
                    .collect::<Result<_, _>>()?,
            ),
        };

        let mut fallback: Vec<String> = Vec::with_capacity(m.fallback.len());
        for f in &m.fallback {
            let target = f.get_ref();
            let why = if target == name {
                "names the model itself"
            } else if !names.contains_key(target.as_str()) {
                "is not a configured model"
            } else if fallback.contains(target) {
                "is listed twice"
            } else {
                fallback.push(target.clone());
                continue;
            };
            return Err(self.invalid(f, format!("model {name:?}: fallback {target:?} {why}")));
        }

        Ok(Model {
            name: name.clone(),
            backend,
            fallback,
            max_attempts: self.at_least_one(
                &m.max_attempts,
                "max_attempts",
                DEFAULT_MAX_ATTEMPTS,
            )?,
        })
    }

    fn upstream(&self, m: &RawModel, u: &RawUpstream) -> Result<Upstream, ConfigError> {
        let (url, base) = self.base_url(&u.url)?;
        let chat_completions_url = format!("{base}/chat/completions")
            .parse()
            .map_err(|e| self.invalid(&u.url, format!("invalid URL {:?}: {e}", u.url.get_ref())))?;

        let api_key_env = match &u.api_key_env {
            None => None,
            Some(var) => {
                let name = var.get_ref();
                let mut chars = name.chars();
                let valid = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    let msg = format!(
                        "invalid api_key_env {name:?}: expected an environment variable name \
                         (ASCII letters, digits and '_', not starting with a digit)"
                    );
                    return Err(self.invalid(var, msg));
                }
                Some(ApiKeyEnv {
                    name: name.clone(),
                    model: m.name.get_ref().clone(),
                    file: self.file.to_path_buf(),
                    position: self.position(var.span().start),
                })
            }
        };

        let ca_file = match &u.ca_file {
            None => None,
            Some(p) if p.get_ref().trim().is_empty() => {
                return Err(self.invalid(p, "ca_file must not be empty".to_owned()));
            }
            Some(p) if url.scheme() != Some(&http::uri::Scheme::HTTPS) => {
                let msg = format!(
                    "ca_file {:?} is set but the upstream URL {:?} is not https",
                    p.get_ref(),
                    u.url.get_ref()
                );
                return Err(self.invalid(p, msg));
            }
            Some(p) => Some(CaFile {
                // `join` keeps an absolute path as it is.
                path: self
                    .file
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(p.get_ref()),
                file: self.file.to_path_buf(),
                position: self.position(p.span().start),
            }),
        };

        let model = match &u.model {
            None => m.name.get_ref().clone(),
            Some(s) if s.get_ref().trim().is_empty() => {
                return Err(self.invalid(s, "upstream model name must not be empty".to_owned()));
            }
            Some(s) => s.get_ref().clone(),
        };

        let pick = |up: Option<Dur>, model: Option<Dur>, default: Duration| {
            up.or(model).map_or(default, |d| d.0)
        };
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: pick(u.connect_timeout, m.connect_timeout, d.connect),
            first_byte: pick(u.first_byte_timeout, m.first_byte_timeout, d.first_byte),
            idle: pick(u.idle_timeout, m.idle_timeout, d.idle),
            total: pick(u.total_timeout, m.total_timeout, d.total),
        };
        let eject_after = u.eject_after.as_ref().or(m.eject_after.as_ref()).cloned();
        let probe = match u.health_check.as_ref().or(m.health_check.as_ref()) {
            None => None,
            Some(h) => Some(self.probe(h, &base)?),
        };
        let health = Health {
            eject_after: self.at_least_one(&eject_after, "eject_after", DEFAULT_EJECT_AFTER)?,
            readmit_after: pick(u.readmit_after, m.readmit_after, DEFAULT_READMIT_AFTER),
            probe,
        };

        Ok(Upstream {
            url,
            chat_completions_url,
            model,
            api_key_env,
            ca_file,
            weight: self.at_least_one(&u.weight, "weight", 1)?,
            timeouts,
            health,
        })
    }

    /// Checks an upstream base URL; returns it parsed and as text without a trailing `/`.
    fn base_url(&self, raw: &Spanned<String>) -> Result<(Uri, String), ConfigError> {
        let text = raw.get_ref();
        let fail = |why: &str| self.invalid(raw, format!("invalid URL {text:?}: {why}"));
        if text.contains('#') {
            return Err(fail("must not have a fragment (#…)"));
        }
        if text.contains('?') {
            return Err(fail(
                "must not have a query (?…); the proxy appends /chat/completions",
            ));
        }
        let uri: Uri = text.parse().map_err(|e| fail(&format!("{e}")))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s,
            _ => return Err(fail("scheme must be http or https")),
        };
        let Some(authority) = uri.authority() else {
            return Err(fail("missing host"));
        };
        if authority.as_str().contains('@') {
            // The URL itself is left out: it holds a credential.
            return Err(self.invalid(
                raw,
                "invalid URL: must not contain credentials (user:password@); use api_key_env"
                    .to_owned(),
            ));
        }
        if authority.host().is_empty() {
            return Err(fail("missing host"));
        }
        let base = format!("{scheme}://{authority}{}", uri.path().trim_end_matches('/'));
        let url = base.parse().map_err(|e| fail(&format!("{e}")))?;
        Ok((url, base))
    }

    fn probe(&self, h: &RawHealthCheck, base: &str) -> Result<HealthProbe, ConfigError> {
        let (path, at) = match &h.path {
            None => (DEFAULT_PROBE_PATH, None),
            Some(p) => (p.get_ref().as_str(), Some(p)),
        };
        let fail = |why: &str| {
            let problem = format!("invalid health_check path {path:?}: {why}");
            match at {
                Some(p) => self.invalid(p, problem),
                None => self.error(ErrorKind::Invalid, None, problem),
            }
        };
        if !path.starts_with('/') {
            return Err(fail("must start with '/'"));
        }
        if path.contains('#') {
            return Err(fail("must not have a fragment (#…)"));
        }
        let url = format!("{base}{path}")
            .parse()
            .map_err(|e| fail(&format!("{e}")))?;
        Ok(HealthProbe {
            path: path.to_owned(),
            url,
            interval: h.interval.map_or(DEFAULT_PROBE_INTERVAL, |d| d.0),
            timeout: h.timeout.map_or(DEFAULT_PROBE_TIMEOUT, |d| d.0),
        })
    }

    fn at_least_one(
        &self,
        value: &Option<Spanned<u32>>,
        key: &str,
        default: u32,
    ) -> Result<u32, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 => {
                Err(self.invalid(v, format!("{key} must be at least 1")))
            }
            Some(v) => Ok(*v.get_ref()),
        }
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
    /// its replicas; when replicas override them differently, the first replica's are used.
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
                            .total_timeout(t.total);
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

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"listen = "127.0.0.1:8080"          # optional; a SocketAddr
[[models]]
name = "echo"
builtin = "echo"                    # in-process model; only "echo" exists now
[[models]]
name = "qwen"
fallback = ["echo"]                 # optional
[[models.upstreams]]
url = "http://127.0.0.1:9001/v1"   # base URL
model = "Qwen/Qwen2.5-7B-Instruct" # optional
api_key_env = "QWEN_KEY"           # optional
weight = 1                          # optional, default 1, >= 1
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("config.toml"))
    }

    #[track_caller]
    fn fails(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[track_caller]
    fn assert_starts(msg: &str, prefix: &str) {
        assert!(
            msg.starts_with(prefix),
            "{msg:?} does not start with {prefix:?}"
        );
    }

    #[test]
    fn example_parses() {
        let c = parse(EXAMPLE).expect("valid");
        assert_eq!(
            c.listen(),
            "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(c.models().len(), 2);

        let echo = c.model("echo").expect("echo");
        assert_eq!(echo.builtin(), Some(Builtin::Echo));
        assert!(echo.upstreams().is_empty());
        assert!(echo.fallback().is_empty());

        let qwen = c.model("qwen").expect("qwen");
        assert_eq!(qwen.builtin(), None);
        assert_eq!(qwen.fallback(), ["echo"]);
        assert_eq!(qwen.max_attempts(), 2);
        let [up] = qwen.upstreams() else {
            panic!("one upstream")
        };
        assert_eq!(up.url(), "http://127.0.0.1:9001/v1");
        assert_eq!(
            up.chat_completions_url(),
            "http://127.0.0.1:9001/v1/chat/completions"
        );
        assert_eq!(up.model(), "Qwen/Qwen2.5-7B-Instruct");
        assert_eq!(up.weight(), 1);
        let env = up.api_key_env().expect("api_key_env");
        assert_eq!(env.name(), "QWEN_KEY");
        assert_eq!(*up.timeouts(), Timeouts::default());
        assert_eq!(*up.health(), Health::default());
        assert!(c.model("nope").is_none());
    }

    #[test]
    fn defaults_are_applied() {
        let c = parse("[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"https://h\"\n")
            .expect("valid");
        assert_eq!(c.listen(), DEFAULT_LISTEN);
        let m = &c.models()[0];
        assert_eq!(m.max_attempts(), 2);
        let up = &m.upstreams()[0];
        assert_eq!(up.model(), "m");
        assert_eq!(up.weight(), 1);
        assert!(up.api_key_env().is_none());
        assert_eq!(up.chat_completions_url(), "https://h/chat/completions");
        let t = up.timeouts();
        assert_eq!(t.connect, Duration::from_secs(5));
        assert_eq!(t.first_byte, Duration::from_secs(60));
        assert_eq!(t.idle, Duration::from_secs(60));
        assert_eq!(t.total, Duration::from_secs(600));
        let h = up.health();
        assert_eq!(h.eject_after, 3);
        assert_eq!(h.readmit_after, Duration::from_secs(5));
        assert_eq!(h.probe, None);
    }

    #[test]
    fn default_embedded_is_echo() {
        let c = Config::default_embedded();
        assert_eq!(c.listen().to_string(), "127.0.0.1:8080");
        assert_eq!(c.models().len(), 1);
        assert_eq!(c.models()[0].name(), "echo");
        assert_eq!(c.models()[0].builtin(), Some(Builtin::Echo));
        assert_eq!(Builtin::Echo.name(), "echo");
    }

    #[test]
    fn model_settings_apply_to_upstreams_and_upstreams_override() {
        let text = r#"
[[models]]
name = "m"
max_attempts = 3
connect_timeout = "1s"
first_byte_timeout = "30s"
idle_timeout = "15s"
total_timeout = "2m"
eject_after = 5
readmit_after = "500ms"
health_check = { interval = "20s" }
[[models.upstreams]]
url = "http://a/v1/"
[[models.upstreams]]
url = "http://b:8000"
weight = 3
connect_timeout = "250ms"
eject_after = 1
health_check = { path = "/health?deep=1", interval = "1m", timeout = "2s" }
"#;
        let c = parse(text).expect("valid");
        let m = &c.models()[0];
        assert_eq!(m.max_attempts(), 3);
        let [a, b] = m.upstreams() else {
            panic!("two upstreams")
        };

        assert_eq!(a.url(), "http://a/v1");
        assert_eq!(a.chat_completions_url(), "http://a/v1/chat/completions");
        assert_eq!(a.timeouts().connect, Duration::from_secs(1));
        assert_eq!(a.timeouts().first_byte, Duration::from_secs(30));
        assert_eq!(a.timeouts().idle, Duration::from_secs(15));
        assert_eq!(a.timeouts().total, Duration::from_secs(120));
        assert_eq!(a.health().eject_after, 5);
        assert_eq!(a.health().readmit_after, Duration::from_millis(500));
        let pa = a.health().probe.as_ref().expect("probe");
        assert_eq!(pa.path(), "/models");
        assert_eq!(pa.url(), "http://a/v1/models");
        assert_eq!(pa.interval(), Duration::from_secs(20));
        assert_eq!(pa.timeout(), Duration::from_secs(5));

        assert_eq!(b.weight(), 3);
        assert_eq!(b.chat_completions_url(), "http://b:8000/chat/completions");
        assert_eq!(b.timeouts().connect, Duration::from_millis(250));
        assert_eq!(b.timeouts().idle, Duration::from_secs(15));
        assert_eq!(b.health().eject_after, 1);
        let pb = b.health().probe.as_ref().expect("probe");
        assert_eq!(pb.url(), "http://b:8000/health?deep=1");
        assert_eq!(pb.interval(), Duration::from_secs(60));
        assert_eq!(pb.timeout(), Duration::from_secs(2));
    }

    #[test]
    fn durations_parse() {
        let ok = |s: &str| parse_duration(s).expect(s);
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1s250ms"), Duration::from_millis(1250));

        let err = |s: &str| parse_duration(s).expect_err(s);
        assert!(err("").contains("empty"));
        assert!(err("5").contains("missing unit"));
        assert!(err("5x").contains(r#"unknown unit "x""#));
        assert!(err("5 s").contains(r#"unknown unit " s""#));
        assert!(err("s").contains("expected a number"));
        assert!(err("-1s").contains("expected a number"));
        assert!(err("1.5s").contains("fractions"));
        assert!(err("0s").contains("greater than zero"));
        assert!(err("99999999999999999999s").contains("too large"));
        assert!(err("18446744073709551615h").contains("too large"));
    }

    #[test]
    fn duration_errors_name_the_position() {
        let base = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://h\"\n";
        let msg = fails(&format!("{base}idle_timeout = \"5x\"\n"));
        assert_starts(
            &msg,
            "config.toml:5:16: invalid duration \"5x\": unknown unit \"x\"",
        );
        let msg = fails(&format!("{base}connect_timeout = 5\n"));
        assert_starts(
            &msg,
            "config.toml:5:19: invalid type: integer `5`, expected a duration",
        );
    }

    #[test]
    fn unknown_fields_are_errors_at_every_level() {
        let msg = fails("lisen = \"127.0.0.1:1\"\n");
        assert_starts(&msg, "config.toml:1:1: unknown field `lisen`, expected ");

        let msg = fails("[[models]]\nname = \"m\"\nbuiltn = \"echo\"\n");
        assert_starts(
            &msg,
            "config.toml:3:1: unknown field `builtn`, expected one of ",
        );

        let text = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://h\"\n\
                    weight = 2\n\n\nurll = \"http://h\"\n";
        let msg = fails(text);
        assert_starts(
            &msg,
            "config.toml:8:1: unknown field `urll`, expected one of `url`",
        );

        let text = "[[models]]\nname = \"m\"\nbuiltin = \"echo\"\n\
                    health_check = { path = \"/x\", every = \"1s\" }\n";
        let msg = fails(text);
        assert_starts(&msg, "config.toml:4:31: unknown field `every`");
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let msg = fails("[[models]]\nname = \n");
        assert_starts(&msg, "config.toml:2:");
        let msg = fails("[[models]]\nbuiltin = \"echo\"\n");
        assert_starts(&msg, "config.toml:1:1: missing field `name`");
    }

    #[test]
    fn invalid_urls() {
        let base = "[[models]]\nname = \"m\"\n\n\n\n\n\n[[models.upstreams]]\n";
        let msg = fails(&format!("{base}url = \"ftp://x\"\n"));
        assert_eq!(
            msg,
            r#"config.toml:9:7: invalid URL "ftp://x": scheme must be http or https"#
        );
        for (url, why) in [
            ("127.0.0.1:9001", "scheme must be http or https"),
            ("/v1", "scheme must be http or https"),
            ("http://h/v1?x=1", "must not have a query"),
            ("http://h/v1#top", "must not have a fragment"),
            ("http://h w/v1", "invalid URL"),
            ("", "invalid URL"),
        ] {
            let msg = fails(&format!("{base}url = {url:?}\n"));
            assert_starts(&msg, "config.toml:9:7: invalid URL");
            assert!(msg.contains(why), "{msg}");
        }
        let msg = fails(&format!("{base}url = \"http://user:s3cret@h/v1\"\n"));
        assert_starts(
            &msg,
            "config.toml:9:7: invalid URL: must not contain credentials",
        );
        assert!(!msg.contains("s3cret"), "{msg}");
    }

    #[test]
    fn duplicate_model() {
        let text = r#"[[models]]
name = "echo"
name2 = 1
"#;
        // (unknown field first, to check the order of checks does not matter for positions)
        assert_starts(&fails(text), "config.toml:3:1: unknown field `name2`");

        let text = r#"[[models]]
builtin = "echo"
name = "qwen"
[[models]]
name = "other"
builtin = "echo"
[[models]]
builtin = "echo"
fallback = []
# a comment
max_attempts = 1
name = "qwen"
"#;
        assert_eq!(
            fails(text),
            r#"config.toml:12:8: duplicate model "qwen" (first defined at line 3)"#
        );
    }

    #[test]
    fn fallback_checks() {
        let text = "[[models]]\nname = \"b\"\nbuiltin = \"echo\"\n[[models]]\nname = \"a\"\n\
                    builtin = \"echo\"\nfallback = [\"b\", \"zzz\"]\n";
        assert_eq!(
            fails(text),
            r#"config.toml:7:18: model "a": fallback "zzz" is not a configured model"#
        );
        let text = "[[models]]\nname = \"a\"\nbuiltin = \"echo\"\nfallback = [\"a\"]\n";
        assert_eq!(
            fails(text),
            r#"config.toml:4:13: model "a": fallback "a" names the model itself"#
        );
        let text = "[[models]]\nname = \"b\"\nbuiltin = \"echo\"\n[[models]]\nname = \"a\"\n\
                    builtin = \"echo\"\nfallback = [\"b\", \"b\"]\n";
        assert_starts(
            &fails(text),
            r#"config.toml:7:18: model "a": fallback "b" is listed twice"#,
        );
        // A fallback may be defined later in the file, and cycles are allowed (not transitive).
        let text = "[[models]]\nname = \"a\"\nbuiltin = \"echo\"\nfallback = [\"b\"]\n\
                    [[models]]\nname = \"b\"\nbuiltin = \"echo\"\nfallback = [\"a\"]\n";
        let c = parse(text).expect("valid");
        assert_eq!(c.model("a").expect("a").fallback(), ["b"]);
    }

    #[test]
    fn backend_must_be_exactly_one() {
        let msg = fails("[[models]]\nname = \"m\"\nfallback = []\n");
        assert_eq!(
            msg,
            r#"config.toml:2:8: model "m" has neither `builtin` nor a [[models.upstreams]] entry"#
        );
        let msg = fails(
            "[[models]]\nname = \"m\"\nbuiltin = \"echo\"\n[[models.upstreams]]\nurl = \"http://h\"\n",
        );
        assert_starts(&msg, r#"config.toml:3:11: model "m" sets both `builtin`"#);
        let msg = fails("[[models]]\nname = \"m\"\nbuiltin = \"llama\"\n");
        assert_starts(
            &msg,
            r#"config.toml:3:11: model "m": unknown builtin "llama""#,
        );
    }

    #[test]
    fn names_and_values_are_checked() {
        let msg = fails("[[models]]\nname = \"\"\nbuiltin = \"echo\"\n");
        assert_eq!(msg, "config.toml:2:8: model name must not be empty");

        let msg = fails("listen = \"localhost\"\n[[models]]\nname = \"m\"\nbuiltin = \"echo\"\n");
        assert_starts(
            &msg,
            r#"config.toml:1:10: invalid listen address "localhost""#,
        );

        let msg = fails("");
        assert_eq!(
            msg,
            "config.toml: no models configured: add at least one [[models]] table"
        );

        let up = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://h\"\n";
        for bad in ["1KEY", "A-B", "", "KEY VAR", "ÉTÉ"] {
            let msg = fails(&format!("{up}api_key_env = {bad:?}\n"));
            assert_starts(
                &msg,
                &format!("config.toml:5:15: invalid api_key_env {bad:?}"),
            );
        }
        assert!(parse(&format!("{up}api_key_env = \"_Key_2\"\n")).is_ok());

        let msg = fails(&format!("{up}weight = 0\n"));
        assert_eq!(msg, "config.toml:5:10: weight must be at least 1");
        let msg = fails(&format!("{up}weight = -1\n"));
        assert_starts(&msg, "config.toml:5:10: invalid value: integer `-1`");
        let msg = fails(&format!("{up}eject_after = 0\n"));
        assert_eq!(msg, "config.toml:5:15: eject_after must be at least 1");
        let msg = fails("[[models]]\nname = \"m\"\nbuiltin = \"echo\"\nmax_attempts = 0\n");
        assert_eq!(msg, "config.toml:4:16: max_attempts must be at least 1");
        let msg = fails(&format!("{up}model = \"\"\n"));
        assert_eq!(
            msg,
            "config.toml:5:9: upstream model name must not be empty"
        );
        let msg = fails(&format!("{up}health_check = {{ path = \"models\" }}\n"));
        assert_starts(
            &msg,
            r#"config.toml:5:25: invalid health_check path "models""#,
        );
    }

    #[test]
    fn positions_count_characters() {
        let text = "# é\nkey = \"ü\" x";
        let src = Source {
            text,
            file: Path::new("f"),
        };
        assert_eq!(src.position(0), Position { line: 1, column: 1 });
        assert_eq!(
            src.position(text.find("key").expect("key")),
            Position { line: 2, column: 1 }
        );
        assert_eq!(
            src.position(text.find('x').expect("x")),
            Position {
                line: 2,
                column: 11
            }
        );
        // Past the end, or inside a multi-byte character, is clamped.
        assert_eq!(
            src.position(999),
            Position {
                line: 2,
                column: 12
            }
        );
        assert_eq!(src.position(3), Position { line: 1, column: 3 });
    }

    #[test]
    fn api_keys_resolve_lazily_and_never_print() {
        let c = parse(EXAMPLE).expect("valid");
        let env = c.models()[1].upstreams()[0]
            .api_key_env()
            .expect("env")
            .clone();

        let key = env
            .resolve_from(Some("sk-s3cret".into()))
            .expect("resolves");
        assert_eq!(key.expose(), "sk-s3cret");
        assert_eq!(key.authorization(), "Bearer sk-s3cret");
        assert!(key.authorization().is_sensitive());
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");

        let e = env.resolve_from(None).expect_err("unset");
        assert!(e.is_env());
        assert_eq!(
            e.to_string(),
            r#"config.toml:11:15: environment variable `QWEN_KEY` (api_key_env of model "qwen") is not set"#
        );
        for bad in ["", "sk s3cret", "sk-s3cret\n"] {
            let e = env.resolve_from(Some(bad.into())).expect_err(bad);
            assert!(e.is_env());
            assert!(e.to_string().contains("`QWEN_KEY`"), "{e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
            assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
        }

        // Through the real environment: a name nobody sets.
        let text = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://h\"\n\
                    api_key_env = \"CHATGATE_TEST_SURELY_UNSET_0F3A\"\n";
        let c = parse(text).expect("valid");
        let e = c.models()[0].upstreams()[0]
            .api_key_env()
            .expect("env")
            .resolve()
            .expect_err("unset");
        assert!(e.to_string().contains("`CHATGATE_TEST_SURELY_UNSET_0F3A`"));
        assert_eq!((e.line(), e.column()), (Some(5), Some(15)));
        assert_eq!(e.file(), Some(Path::new("config.toml")));
    }

    #[test]
    fn debug_shows_env_names_not_keys() {
        let c = parse(EXAMPLE).expect("valid");
        let dbg = format!("{c:?}");
        assert!(dbg.contains("QWEN_KEY"));
        assert!(!dbg.to_lowercase().contains("bearer"));
    }

    #[test]
    fn ca_file_resolves_against_the_config_directory_and_is_checked() {
        let up = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"https://h/v1\"\n";
        let ca_of = |c: &Config| c.models()[0].upstreams()[0].ca_file().cloned();

        // Relative to the file's directory; absolute as is; none by default.
        let text = format!("{up}ca_file = \"certs/ca.pem\"\n");
        let c = Config::from_toml_str(&text, Path::new("/etc/chatgate/proxy.toml")).expect("valid");
        let ca = ca_of(&c).expect("ca_file");
        assert_eq!(ca.path(), Path::new("/etc/chatgate/certs/ca.pem"));
        let c = parse(&format!("{up}ca_file = \"/srv/pki/ca.pem\"\n")).expect("valid");
        assert_eq!(
            ca_of(&c).expect("ca_file").path(),
            Path::new("/srv/pki/ca.pem")
        );
        assert!(ca_of(&parse(up).expect("valid")).is_none());

        // Checked while parsing: not empty, https only.
        let msg = fails(&format!("{up}ca_file = \"\"\n"));
        assert_eq!(msg, "config.toml:5:11: ca_file must not be empty");
        let http = up.replace("https://", "http://");
        let msg = fails(&format!("{http}ca_file = \"ca.pem\"\n"));
        assert_eq!(
            msg,
            r#"config.toml:5:11: ca_file "ca.pem" is set but the upstream URL "http://h/v1" is not https"#
        );

        // Read (by `router`, through `CaFile::read`): errors name the config file and position.
        let dir = std::env::temp_dir().join(format!("chatgate-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let config_path = dir.join("proxy.toml");
        std::fs::write(&config_path, format!("{up}\nca_file = \"ca.pem\"\n")).expect("write");
        let c = Config::load(&config_path).expect("valid");
        let ca = ca_of(&c).expect("ca_file");
        assert_eq!(ca.path(), dir.join("ca.pem"));
        let prefix = format!(
            "{}:6:11: ca_file {:?}: ",
            config_path.display(),
            ca.path().display().to_string()
        );

        let e = ca.read().expect_err("missing");
        assert_starts(&e.to_string(), &format!("{prefix}cannot read: "));
        assert_eq!((e.line(), e.column()), (Some(6), Some(11)));
        assert!(!e.is_io() && !e.is_env());

        std::fs::write(ca.path(), "not a certificate\n").expect("write");
        let e = c.router().expect_err("no certificate");
        assert_starts(&e.to_string(), &format!("{prefix}no certificate found"));

        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("ca").pem();
        std::fs::write(ca.path(), &pem).expect("write");
        assert_eq!(ca.read().expect("valid PEM"), pem.as_bytes());
        c.router().expect("the router takes the CA");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn load_reads_files_and_reports_io_errors() {
        let dir = std::env::temp_dir().join(format!("chatgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("proxy.toml");
        std::fs::write(&path, EXAMPLE).expect("write");
        let c = Config::load(&path).expect("loads");
        assert_eq!(c.models().len(), 2);

        std::fs::write(&path, "[[models]]\nname = 1\n").expect("write");
        let e = Config::load(&path).expect_err("invalid");
        assert!(!e.is_io());
        assert_eq!(e.file(), Some(path.as_path()));
        assert!(
            e.to_string()
                .starts_with(&format!("{}:2:8: ", path.display())),
            "{e}"
        );

        let missing = dir.join("missing.toml");
        let e = Config::load(&missing).expect_err("missing");
        assert!(e.is_io());
        assert_starts(
            &e.to_string(),
            &format!("{}: cannot read the file: ", missing.display()),
        );
        assert_eq!(e.line(), None);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

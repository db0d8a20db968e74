//! The bundled chatgate proxy.
//!
//! ```text
//! cargo run --release --example proxy                        # model `echo` on 127.0.0.1:8080
//! cargo run --release --example proxy -- --config gw.toml    # front OpenAI-compatible upstreams
//! cargo run --release --example proxy -- --config gw.toml --check
//! cargo run --release --example proxy -- --help
//! ```
//!
//! With no configuration it serves the embedded default: the deterministic in-process model
//! `echo`, through the validation layer, at `/v1/chat/completions` and
//! `/api/v1/compatibility/openai/v1/chat/completions`, plus `GET /v1/models` and `GET /healthz`.
//! With `--config FILE` (TOML, see `chatgate::config`) it routes each model to its upstream
//! replicas or builtin model. `--check` validates the file (syntax, fields, URLs, credentials'
//! environment variables) and exits. SIGHUP re-reads the file and swaps the routing atomically:
//! requests in flight finish where they started; a file with errors is reported and ignored.
//! Ctrl-C or SIGTERM stops accepting, lets requests and streams in flight finish (up to the
//! file's `[server] shutdown_grace`, 30 s by default), then exits. The runtime has one worker thread per core, or `TOKIO_WORKER_THREADS` of them;
//! accepting and serving both run on them. `TOKIO_WORKER_THREADS=1` runs everything on one
//! thread (a current-thread runtime, like a single nginx worker).
//!
//! API keys: with `[[keys]]` in the file (or `[auth] store = "postgres"`) every chat request needs
//! a key (401) and may use only its models (403); without them the gateway is open, and says so
//! at start. `--hash-key KEY` prints the SHA-256 digest to put in `sha256 = "…"` (`--hash-key -`
//! reads the key from stdin, so it stays out of the shell history).
//!
//! Logs: one line per request on stderr (`RUST_LOG`, default `info`; `[log] format`). Built with
//! `--features otlp`, `[log] otlp_endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) also exports each
//! request's `chat` span by OTLP/HTTP, flushed on shutdown; built without it, the proxy refuses
//! an endpoint in its file rather than ignore it (and warns about one in the environment).
//!
//! The command line: `--help` (to stdout, exit 0), `--version`, `--listen ADDR` (an `IP:port`
//! or a `host:port` resolved at start, overriding the file's `listen`), `--config FILE`,
//! `--check`; `--opt=value` works too. A usage error (unknown option, missing value) is
//! reported on stderr with the usage, exit status 2; a configuration error exits with 1.

/// `eprintln!`, in order with the request log: what the log buffer holds is written first.
macro_rules! say {
    ($($arg:tt)*) => {
        log_buffer::say(format_args!($($arg)*))
    };
}

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use chatgate::auth::{AuthLayer, KeyDigest, KeyStore, ModelAccessLayer};
use chatgate::config::{Config, LogFormat, OtlpExport};
use chatgate::gateway::{Gateway, ServeConfig, serve_with};
use chatgate::rate_limit::{LimitBackend, RateLimitLayer};
use chatgate::route::{BoxBody, ModelRouter};
use chatgate::server_tools::ServerToolsLayer;
use chatgate::usage::{
    JsonlSink, MemorySink, MetricsRoute, MetricsSink, UsageHandle, UsageLayer, UsageMeterLayer,
    UsageRoute,
};
use chatgate::validate::ValidateLayer;
use std::convert::Infallible;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

#[derive(Debug, Default, PartialEq)]
struct Args {
    listen: Option<SocketAddr>,
    config: Option<PathBuf>,
    check: bool,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Run(Args),
    Help,
    Version,
    /// Print the digest of a key (`-`: read it from stdin).
    HashKey(String),
}

const USAGE: &str =
    "usage: proxy [--listen ADDR] [--config FILE [--check]] | --hash-key KEY | --help | --version";

const HELP: &str = "\
The chatgate proxy: an OpenAI-compatible chat-completions gateway.

Without --config it serves the builtin model `echo`; with a TOML file it routes each model to
its upstream replicas (see the `chatgate::config` docs). SIGHUP reloads the file; Ctrl-C or
SIGTERM drains requests in flight, then exits.

options:
  --listen ADDR   listen on ADDR: IP:port (127.0.0.1:8080, [::1]:8080) or host:port
                  (localhost:8080, resolved at start); overrides the file's `listen`
                  (default 127.0.0.1:8080)
  --config FILE   read the configuration from FILE (TOML)
  --check         validate FILE (syntax, values, credentials' variables, CA files, keys),
                  print a summary and exit: 0 when valid, 1 otherwise; needs --config
  --hash-key KEY  print the SHA-256 digest of the API key KEY (for `sha256 = \"…\"` in
                  [[keys]]) and exit; KEY `-` reads the key from stdin (one line), so it
                  stays out of the shell history
  -h, --help      print this help and exit
  -V, --version   print the version and exit

environment:
  TOKIO_WORKER_THREADS   worker threads (default: one per core; 1: a single thread)
  RUST_LOG               which log lines are printed (default: info, one line per request)
  OTEL_EXPORTER_OTLP_ENDPOINT
                         an OTLP/HTTP collector's base URL to export request spans to, when
                         the file has no [log] otlp_endpoint (needs the otlp feature)

exit status: 0 success, 1 configuration or runtime error, 2 usage error";

/// `ADDR` as an IP:port, else a host:port resolved now (the first address wins).
fn resolve_listen(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    if !addr.contains(':') {
        return Err(format!(
            "--listen {addr}: expected IP:port or host:port, such as 127.0.0.1:8080"
        ));
    }
    let mut found = addr
        .to_socket_addrs()
        .map_err(|e| format!("--listen {addr}: {e}"))?;
    found
        .next()
        .ok_or_else(|| format!("--listen {addr}: the host name has no address"))
}

/// Parses the arguments after the program name. `Err` is a usage error (exit 2).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut out = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // `--opt=value` is `--opt value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs {what}"))
        };
        match name.as_str() {
            "--listen" => out.listen = Some(resolve_listen(&value("an address")?)?),
            "--config" => out.config = Some(value("a file")?.into()),
            "--hash-key" => return Ok(Command::HashKey(value("a key (or - for stdin)")?)),
            "--check" | "-h" | "--help" | "-V" | "--version" if inline.is_some() => {
                return Err(format!("{name} takes no value"));
            }
            "--check" => out.check = true,
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            other if other.starts_with('-') => return Err(format!("unknown option {other:?}")),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if out.check && out.config.is_none() {
        return Err("--check needs --config".to_owned());
    }
    Ok(Command::Run(out))
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default_embedded()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The chat stack, assembled from the library's layers, outermost first: this is where a layer
/// is added or left out. State that must outlive a reload (usage sinks, a database key store's
/// pool and cache) is made once in `run` and passed in as `state`; see the `chatgate::gateway`
/// docs. The stack is boxed: optional layers change its type, and one boxed service costs a
/// couple of small allocations per request.
///
/// Order, outermost first: `UsageLayer` (one record per request, rejections included),
/// `AuthLayer` when keys are configured (401 before the body is read), `ValidateLayer`,
/// `UsageMeterLayer` (reads the typed request and the answer's usage), `ModelAccessLayer` (403
/// before routing; passes every request when there is no principal), `RateLimitLayer` (429;
/// tokens reserved here and settled when the answer ends), `ServerToolsLayer` when
/// `[[function_catalogs]]` are configured (runs `uc_function` tools, calling the router once per
/// round), the router.
fn chat_stack(config: &Config, router: ModelRouter, state: &State) -> ChatStack {
    // `[usage] enabled = false` takes both usage layers out.
    let accounted = config.usage_config().enabled;
    let tail = ServiceBuilder::new()
        .layer(ModelAccessLayer::new())
        .layer(RateLimitLayer::from_shared(
            Arc::clone(&state.limiter),
            config
                .limits_config()
                .rate_limit_config()
                .prices(config.prices().clone())
                .models(router.models().iter().cloned()),
        ))
        .option_layer(state.tools.clone())
        .service(router);
    let validate = ValidateLayer::with_config(config.validate_config());
    let keys = key_store(config, state.shared_keys.as_ref());
    // Each combination of layers built as its own type and boxed once: no `Either` and no box
    // between layers (each would cost every request another poll or allocation).
    if accounted {
        let inner = validate.layer(UsageMeterLayer::new().layer(tail));
        let usage = UsageLayer::new(state.usage.handle.clone());
        match keys {
            Some(store) => boxed(usage.layer(AuthLayer::from_shared(store).layer(inner))),
            None => boxed(usage.layer(inner)),
        }
    } else {
        let inner = validate.layer(tail);
        match keys {
            Some(store) => boxed(AuthLayer::from_shared(store).layer(inner)),
            None => boxed(inner),
        }
    }
}

/// The stack's type: boxed, over the server's request body.
type ChatStack = BoxCloneSyncService<Request<Incoming>, Response<BoxBody>, Infallible>;

/// Boxes a stack (and its response body).
fn boxed<S, B>(svc: S) -> ChatStack
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<chatgate::BoxError>,
{
    BoxCloneSyncService::new(
        svc.map_response(|res: Response<B>| res.map(|b| b.map_err(Into::into).boxed_unsync())),
    )
}

/// What outlives reloads: made once in `run`.
struct State {
    usage: Accounting,
    shared_keys: Option<Arc<dyn KeyStore>>,
    /// The limiter's counters (local or Redis), kept by every reloaded stack.
    limiter: Arc<dyn LimitBackend>,
    limiter_backend: chatgate::config::LimiterBackend,
    /// Server-side tools (`[[function_catalogs]]`), their connection pools made once; `None`
    /// without catalogs (`uc_function` tools are then forwarded untouched).
    tools: Option<ServerToolsLayer>,
    /// The `[[function_catalogs]]` the proxy started with (a change needs a restart).
    catalogs: Vec<chatgate::config::FunctionCatalogConfig>,
    /// The `[usage]` the proxy started with (only `enabled` is applied by a reload).
    usage_config: chatgate::config::UsageConfig,
    /// The `[log]` format and span export the proxy started with, as configured (a change
    /// needs a restart).
    log: (LogFormat, Option<OtlpExport>),
}

/// What a reload of `config` cannot apply to a proxy started with `state`'s `[usage]` and
/// `[log]` (`otlp_env`: the value of `OTEL_EXPORTER_OTLP_ENDPOINT`): the messages to print.
fn unapplied_usage_and_log(
    state: &State,
    config: &Config,
    otlp_env: Option<&str>,
) -> Vec<&'static str> {
    let mut unapplied = Vec::new();
    let mut usage = config.usage_config().clone();
    usage.enabled = state.usage_config.enabled;
    if usage != state.usage_config {
        unapplied
            .push("reload: [usage] changed (besides `enabled`); a restart is needed to apply it");
    }
    let otlp = config.otlp_with_env(otlp_env).ok().flatten();
    if (config.log_format(), otlp) != state.log {
        unapplied.push("reload: [log] changed; a restart is needed to apply it");
    }
    unapplied
}

/// The server-side tools layer of `config`'s `[[function_catalogs]]`.
fn server_tools(config: &Config) -> Result<Option<ServerToolsLayer>, String> {
    if config.function_catalogs().is_empty() {
        return Ok(None);
    }
    #[cfg(not(feature = "postgres"))]
    return Err(
        "[[function_catalogs]] kind \"postgres\" needs the proxy built with `--features postgres`"
            .to_owned(),
    );
    #[cfg(feature = "postgres")]
    {
        let mut layer: Option<ServerToolsLayer> = None;
        for catalog in config.function_catalogs() {
            let chatgate::config::FunctionCatalogConfig::Postgres(pg) = catalog else {
                return Err("unsupported function catalog kind".to_owned());
            };
            let pg = pg.connect().map_err(|e| e.to_string())?;
            layer = Some(match layer {
                None => ServerToolsLayer::new(pg),
                Some(l) => l.catalog(pg),
            });
        }
        Ok(layer)
    }
}

/// The OTLP span export the configuration asks for (`[log] otlp_endpoint`, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT`). A proxy built without the `otlp` feature refuses one from
/// its configuration file (an endpoint silently ignored would look like a collector that lost
/// every span); one from the environment, often set for every program on the machine, it
/// leaves aside with a warning on stderr.
fn otlp_export(config: &Config, env: Option<&str>) -> Result<Option<OtlpExport>, String> {
    let export = config.otlp_with_env(env).map_err(|e| e.to_string())?;
    #[cfg(not(feature = "otlp"))]
    if let Some(e) = &export {
        if e.from_env() {
            say!(
                "warning: {} is set ({}), but this proxy was built without the otlp feature: \
                 no spans are exported (rebuild it with `--features otlp`)",
                e.origin(),
                e.endpoint()
            );
            return Ok(None);
        }
        return Err(format!(
            "{} is set ({}), but this proxy was built without the otlp feature: \
             rebuild it with `--features otlp`, or remove the setting",
            e.origin(),
            e.endpoint()
        ));
    }
    Ok(export)
}

/// The value of `OTEL_EXPORTER_OTLP_ENDPOINT`, when set.
fn otlp_env() -> Option<String> {
    std::env::var(chatgate::config::OTEL_EXPORTER_OTLP_ENDPOINT).ok()
}

/// What `init_logging` leaves running: the OTLP export, flushed when the proxy stops.
struct Telemetry {
    #[cfg(feature = "otlp")]
    otlp: Option<chatgate::otlp::OtlpGuard>,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter (it blocks: off the runtime).
    async fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(guard) = self.otlp {
            match tokio::task::spawn_blocking(move || guard.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => say!("{e}"),
                Err(e) => say!("OTLP shutdown failed: {e}"),
            }
        }
    }
}

/// Logging: one line per request (target `chatgate::usage`), level from `RUST_LOG` (default
/// `info`), format from `[log] format`; and, with `otlp` (feature `otlp`), the request spans
/// exported by OTLP/HTTP. The request lines themselves are made by a `LogSink` among the usage
/// sinks (see [`accounting`]), from the records, a batch at a time; the log layer here leaves
/// out the usage layer's `request` event, which would make the same line again.
///
/// Each layer has its own filter: `RUST_LOG` chooses the log lines only, and the OTLP layer
/// takes chatgate's request spans at `INFO` whatever `RUST_LOG` says (`RUST_LOG=warn` keeps the
/// export). The log layer formats events only: each request's line carries its own fields, so
/// the request's span (and its fields, recorded as the request goes) need not be. Lines go
/// through [`log_buffer`]: batched into one write every few milliseconds, warnings and errors at
/// once.
fn init_logging(format: LogFormat, otlp: Option<&OtlpExport>) -> Result<Telemetry, String> {
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer, Registry};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The request lines are written by the usage sinks' `LogSink` (see `accounting`), not here.
    let filter = filter.and(filter_fn(|m| !m.is_span() && !is_request_event(m)));
    log_buffer::start();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(log_time::Rfc3339)
        .with_writer(log_buffer::Writer);
    #[allow(unused_mut)] // without the `otlp` feature, nothing is added
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![match format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt
            .fmt_fields(log_fields::Plain)
            .with_filter(filter)
            .boxed(),
    }];
    #[cfg(feature = "otlp")]
    let telemetry = Telemetry {
        otlp: match otlp {
            None => None,
            Some(export) => {
                let (layer, guard) = chatgate::otlp::layer(&export.otlp_config())
                    .map_err(|e| format!("{}: {e}", export.origin()))?;
                layers.push(layer.boxed());
                say!(
                    "exporting request spans to {} (service.name {:?})",
                    export.traces_url(),
                    export.service_name()
                );
                Some(guard)
            }
        },
    };
    #[cfg(not(feature = "otlp"))]
    let telemetry = {
        // Refused by `otlp_export` before: never silently dropped.
        if let Some(export) = otlp {
            return Err(format!(
                "{}: built without the otlp feature",
                export.origin()
            ));
        }
        Telemetry {}
    };
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(telemetry)
}

/// The usage layer's per-request event, whose line the proxy writes with a `LogSink`.
fn is_request_event(m: &tracing::Metadata<'_>) -> bool {
    m.is_event() && m.name() == chatgate::usage::REQUEST_EVENT && m.target() == "chatgate::usage"
}

/// Whether `RUST_LOG` (default `info`) lets the request lines (target `chatgate::usage`,
/// `INFO`) through.
fn request_lines_enabled(directives: Option<&str>) -> bool {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    let filter = match directives {
        Some(d) => EnvFilter::try_new(d).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::new("info"),
    };
    let subscriber = tracing_subscriber::registry().with(filter);
    tracing::subscriber::with_default(
        subscriber,
        || tracing::enabled!(target: "chatgate::usage", tracing::Level::INFO),
    )
}

/// The text format's fields, as `tracing-subscriber` writes them (`name=value`, the message
/// bare) but cheaper: a string made only of plain characters is written as it is, any other
/// string quoted and escaped (so a client's model name cannot forge a line or a field);
/// numbers and booleans with `Display` (durations to the microsecond).
/// The log lines' time: RFC 3339 in UTC with microseconds, as `tracing-subscriber`'s default
/// writes it, with the date and time of day made once per second (per thread) rather than
/// formatted field by field for every line.
mod log_time {
    use std::cell::RefCell;
    use std::fmt;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    #[derive(Clone, Copy, Debug, Default)]
    pub(crate) struct Rfc3339;

    /// `YYYY-MM-DDTHH:MM:SS` of unix seconds.
    pub(crate) fn date_time(secs: u64) -> String {
        let mut text = chatgate::auth::format_rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        // Without its `Z`: the fraction of the second goes before it.
        text.pop();
        text
    }

    impl FormatTime for Rfc3339 {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            thread_local! {
                static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let (secs, micros) = (now.as_secs(), now.subsec_micros());
            // `.` and six digits: 1_000_000 + micros has seven, the first replaced by the dot.
            let mut n = itoa::Buffer::new();
            let digits = n.format(1_000_000 + micros);
            let fraction = digits.get(1..).ok_or(fmt::Error)?;
            SECOND.with(|c| {
                let mut c = c.borrow_mut();
                if c.0 != secs {
                    *c = (secs, date_time(secs));
                }
                w.write_str(&c.1)?;
                w.write_char('.')?;
                w.write_str(fraction)?;
                w.write_char('Z')
            })
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn dates() {
            assert_eq!(super::date_time(0), "1970-01-01T00:00:00");
            assert_eq!(super::date_time(951_825_599), "2000-02-29T11:59:59");
            assert_eq!(super::date_time(1_795_658_489), "2026-11-26T02:01:29");
        }

        #[test]
        fn the_time_reads_like_tracing_subscriber_s_own() {
            use tracing_subscriber::fmt::format::Writer;
            use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
            // Made in the same second (tried again if a second ended between the two).
            for _ in 0..3 {
                let (mut ours, mut theirs) = (String::new(), String::new());
                super::Rfc3339
                    .format_time(&mut Writer::new(&mut ours))
                    .expect("formats");
                SystemTime
                    .format_time(&mut Writer::new(&mut theirs))
                    .expect("formats");
                assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
                assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
                if ours[..19] == theirs[..19] {
                    return;
                }
            }
            panic!("the date and time differ");
        }
    }
}

mod log_fields {
    use std::fmt::{self, Write as _};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::field::RecordFields;
    use tracing_subscriber::fmt::FormatFields;
    use tracing_subscriber::fmt::format::Writer;

    /// The `FormatFields` of the text log layer.
    #[derive(Clone, Copy, Debug, Default)]
    pub(crate) struct Plain;

    impl<'w> FormatFields<'w> for Plain {
        fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
            thread_local! {
                static LINE: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
            }
            // The fields are written into a reused buffer, then handed over in one write.
            let mut v = Visitor {
                writer: LINE.take(),
                first: true,
                result: Ok(()),
            };
            v.writer.clear();
            fields.record(&mut v);
            let written = v.result.and_then(|()| writer.write_str(&v.writer));
            LINE.set(v.writer);
            written
        }
    }

    struct Visitor {
        writer: String,
        first: bool,
        result: fmt::Result,
    }

    fn plain(s: &str) -> bool {
        !s.is_empty()
            && s.bytes().all(|b| {
                matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' | b'/' | b'@' | b'+' | b'=')
            })
    }

    impl Visitor {
        /// Writes the separator and `name=` (nothing for the message).
        fn name(&mut self, field: &Field) -> fmt::Result {
            if !self.first {
                self.writer.write_char(' ')?;
            }
            self.first = false;
            if field.name() != "message" {
                self.writer.write_str(field.name())?;
                self.writer.write_char('=')?;
            }
            Ok(())
        }

        fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
            if self.result.is_ok() {
                self.result = self.name(field).and_then(|()| self.writer.write_fmt(value));
            }
        }

        fn raw(&mut self, field: &Field, value: &str) {
            if self.result.is_ok() {
                self.result = self.name(field).and_then(|()| self.writer.write_str(value));
            }
        }

        fn int(&mut self, field: &Field, negative: bool, n: u64) {
            if self.result.is_ok() {
                self.result = self.name(field);
                if negative {
                    self.writer.push('-');
                }
                self.writer.push_str(itoa::Buffer::new().format(n));
            }
        }
    }

    impl Visit for Visitor {
        fn record_str(&mut self, field: &Field, value: &str) {
            if plain(value) {
                self.raw(field, value);
            } else if value.is_empty() {
                self.raw(field, "\"\"");
            } else {
                self.field(field, format_args!("{value:?}"));
            }
        }

        fn record_u64(&mut self, field: &Field, value: u64) {
            self.int(field, false, value);
        }

        fn record_i64(&mut self, field: &Field, value: i64) {
            self.int(field, value < 0, value.unsigned_abs());
        }

        fn record_bool(&mut self, field: &Field, value: bool) {
            self.raw(field, if value { "true" } else { "false" });
        }

        fn record_f64(&mut self, field: &Field, value: f64) {
            if value.is_finite() && value.abs() < 1e12 {
                // Milliseconds to the microsecond: integer formatting, not a float's.
                let micros = (value * 1000.0).round() as i64;
                if self.result.is_ok() {
                    self.result = self.name(field);
                    if micros < 0 {
                        self.writer.push('-');
                    }
                    // Milliseconds, `.`, and three digits of microseconds (1000 + the
                    // microseconds has four, the first replaced by the dot).
                    let m = micros.unsigned_abs();
                    let mut n = itoa::Buffer::new();
                    self.writer.push_str(n.format(m / 1000));
                    self.writer.push('.');
                    self.writer.push_str(&n.format(1000 + m % 1000)[1..]);
                }
            } else {
                self.field(field, format_args!("{value}"));
            }
        }

        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            self.field(field, format_args!("{value:?}"));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn plain_strings_bare_others_escaped() {
            assert!(plain("3f2a-9c"));
            assert!(plain("Qwen/Qwen2.5-7B-Instruct"));
            assert!(!plain(""));
            assert!(!plain("a b"));
            assert!(!plain("x\ny=1"));
            assert!(!plain("say \"hi\""));
        }

        #[test]
        fn a_line_reads_like_tracing_s_own() {
            use tracing_subscriber::layer::SubscriberExt;
            let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
            let sink = out.clone();
            let layer = tracing_subscriber::fmt::layer()
                .without_time()
                .with_ansi(false)
                .with_target(false)
                .fmt_fields(Plain)
                .with_writer(move || Sink(sink.clone()));
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(
                    model = "evil\nINFO forged=1",
                    key_id = "k1",
                    status = 200u16,
                    zero = 0u64,
                    delta = -15i64,
                    streamed = true,
                    duration_ms = 1.2345,
                    ttft_ms = -1.0,
                    small = 0.0004,
                    big = 12_345.0,
                    neg = -0.4,
                    error = "",
                    "request"
                );
            });
            let line = String::from_utf8(out.lock().expect("lock").clone()).expect("UTF-8");
            assert_eq!(
                line,
                " INFO request model=\"evil\\nINFO forged=1\" key_id=k1 status=200 zero=0 delta=-15 streamed=true \
                 duration_ms=1.235 ttft_ms=-1.000 small=0.000 big=12345.000 neg=-0.400 error=\"\"\n"
            );
        }

        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(b);
                Ok(b.len())
            }

            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
    }
}

/// Log lines, batched: appended to one buffer (a lock and a copy per line), written to stderr
/// every 20 ms by a thread of their own, or at once when the buffer holds 64 KiB or a line is a
/// warning or an error. Writing each line as it is made costs a system call per request; nginx's
/// `access_log … buffer=` makes the same trade. [`flush`](log_buffer::flush) before exit.
mod log_buffer {
    use std::io::Write;
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    const FULL: usize = 64 * 1024;
    const EVERY: Duration = Duration::from_millis(20);

    fn write_out(buf: &mut Vec<u8>) {
        if !buf.is_empty() {
            let _ = std::io::stderr().lock().write_all(buf);
            buf.clear();
        }
    }

    /// Writes what the buffer holds, then `message` and a line end: the proxy's own messages
    /// come after the log lines made before them.
    pub(crate) fn say(message: std::fmt::Arguments<'_>) {
        let mut buf = BUFFER.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(buf, "{message}");
        write_out(&mut buf);
    }

    /// Writes what the buffer holds.
    pub(crate) fn flush() {
        write_out(&mut BUFFER.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Starts the thread that writes the buffer out.
    pub(crate) fn start() {
        let _ = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(EVERY);
                    flush();
                }
            });
    }

    /// The `MakeWriter` of the log layer.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Writer;

    /// One line's writer: `urgent` lines (warnings, errors) are written out at once.
    pub(crate) struct Line {
        urgent: bool,
    }

    fn push(bytes: &[u8], urgent: bool) {
        let mut buf = BUFFER.lock().unwrap_or_else(PoisonError::into_inner);
        buf.extend_from_slice(bytes);
        if urgent || buf.len() >= FULL {
            write_out(&mut buf);
        }
    }

    /// Takes lines (a batch of the request log's) to be written with the next: the vector
    /// itself when nothing is waiting (no copy), `lines` then left empty.
    pub(crate) fn append(lines: &mut Vec<u8>) {
        let mut buf = BUFFER.lock().unwrap_or_else(PoisonError::into_inner);
        if buf.is_empty() {
            std::mem::swap(&mut *buf, lines);
        } else {
            buf.extend_from_slice(lines);
        }
        if buf.len() >= FULL {
            write_out(&mut buf);
        }
    }

    impl Write for Line {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            push(bytes, self.urgent);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
        type Writer = Line;

        fn make_writer(&'a self) -> Line {
            Line { urgent: true }
        }

        fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
            Line {
                urgent: *meta.level() <= tracing::Level::WARN,
            }
        }
    }
}

/// The usage sinks and the routes that show them, made once (they survive reloads).
struct Accounting {
    handle: UsageHandle,
    memory: Arc<MemorySink>,
    metrics: Arc<MetricsSink>,
}

async fn accounting(config: &Config) -> Result<Accounting, String> {
    let usage = config.usage_config();
    // Metrics label only configured model names (public and upstream): bounded cardinality.
    let mut names: Vec<String> = Vec::new();
    for m in config.models() {
        names.push(m.name().to_owned());
        names.extend(m.upstreams().iter().map(|u| u.model().to_owned()));
    }
    let memory = Arc::new(MemorySink::new());
    let metrics = Arc::new(MetricsSink::new(names, usage.metrics_max_keys));
    let mut builder = UsageHandle::builder()
        .sink(memory.clone())
        .sink(metrics.clone())
        .overflow(usage.overflow)
        .capacity(usage.capacity)
        .prices(config.prices().clone())
        // Counts the upstream did not report are estimated with the model family's tokenizer.
        .counter(Arc::new(chatgate::tokens::Tokenizer));
    // One line per request, made from the records a batch at a time (the usage layer's
    // `tracing` event, which would make the same line, is left out of the log layer).
    let directives = std::env::var("RUST_LOG").ok();
    if request_lines_enabled(directives.as_deref()) {
        let log = chatgate::usage::LogSink::new(config.log_format(), log_buffer::append);
        builder = builder.sink(Arc::new(log));
    }
    if let Some(path) = &usage.jsonl {
        let sink = JsonlSink::open(path, usage.jsonl_flush)
            .map_err(|e| format!("usage jsonl {}: {e}", path.display()))?;
        builder = builder.sink(Arc::new(sink));
    }
    if let Some(url) = &usage.postgres {
        #[cfg(feature = "postgres")]
        {
            use chatgate::usage::{PgSink, PgWrite};
            let sink = PgSink::new(url, &usage.postgres_table, PgWrite::Copy, 100_000)
                .map_err(|e| format!("usage postgres: {e}"))?;
            if let Err(e) = sink.migrate().await {
                say!("usage postgres: {e} (records are kept until it is reachable)");
            }
            builder = builder.sink(Arc::new(sink));
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = url;
            return Err("[usage] postgres needs the proxy built with --features postgres".into());
        }
    }
    let handle = builder.build();
    metrics.watch(&handle);
    Ok(Accounting {
        handle,
        memory,
        metrics,
    })
}

/// The key store the configuration asks for: `[[keys]]` (rebuilt at every reload), the
/// PostgreSQL store made once at start (`shared`), or none (open).
/// Carries the budgets' spend over a restart: with the in-memory limiter and usage records in
/// PostgreSQL, what each `[[keys]]` key with a budget spent in its current period is read back
/// from the records. (Redis keeps the spend itself.)
#[cfg(feature = "postgres")]
async fn seed_budgets(config: &Config, local: &chatgate::rate_limit::LocalBackend) {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let usage = config.usage_config();
    let Some(url) = &usage.postgres else { return };
    let Ok(sink) = chatgate::usage::PgSink::new(
        url,
        &usage.postgres_table,
        chatgate::usage::PgWrite::Copy,
        1,
    ) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    for key in config.keys() {
        let Some(budget) = key.budget else { continue };
        let since = UNIX_EPOCH + Duration::from_millis(budget.period.start(now));
        match sink.spent_since(&key.id, since).await {
            Ok((tokens, cost)) => local.seed_budget(&key.id, &budget, tokens, cost),
            Err(e) => {
                say!(
                    "budgets: cannot read the spend so far from the usage records ({e}); budgets start from zero"
                );
                return;
            }
        }
    }
}

fn key_store(config: &Config, shared: Option<&Arc<dyn KeyStore>>) -> Option<Arc<dyn KeyStore>> {
    if config.postgres_keys().is_some() {
        return shared.cloned();
    }
    config
        .key_store()
        .map(|store| Arc::new(store) as Arc<dyn KeyStore>)
}

const OPEN_WARNING: &str = "no [[keys]] configured: the gateway is open to anyone who can reach it";

/// `--hash-key`: the digest of `key`, or of the first line of stdin for `-`.
fn hash_key(key: &str) -> Result<String, String> {
    let key = if key == "-" {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the key from stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        key.to_owned()
    };
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
        // Never echo the key.
        return Err("the key must be printable ASCII without spaces".to_owned());
    }
    Ok(KeyDigest::of(&key).to_hex())
}

/// Re-reads the configuration on every SIGHUP and swaps the gateway's stack.
#[cfg(unix)]
fn reload_on_sighup(
    gateway: Gateway<ChatStack>,
    path: PathBuf,
    listen: SocketAddr,
    server: ServeConfig,
    state: Arc<State>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        say!("SIGHUP reload unavailable");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // Log rotation: the usage files are reopened whatever the configuration says.
            state.usage.handle.reopen().await;
            let built = Config::load(&path)
                .and_then(|c| c.router().map(|r| (c, r)))
                .map_err(|e| e.to_string());
            match built {
                Ok((config, router)) => {
                    if config.listen() != listen {
                        say!(
                            "reload: `listen` changed to {}; a restart is needed to move the listener",
                            config.listen()
                        );
                    }
                    if !same_server(&config.serve_config(), &server) {
                        say!("reload: [server] changed; a restart is needed to apply it");
                    }
                    if config.function_catalogs() != state.catalogs.as_slice() {
                        say!(
                            "reload: [[function_catalogs]] changed; a restart is needed to apply it"
                        );
                    }
                    if config.limits_config().backend() != &state.limiter_backend {
                        say!(
                            "reload: [limits] backend changed; a restart is needed to move the counters"
                        );
                    }
                    if config.postgres_keys().is_some() != state.shared_keys.is_some() {
                        say!(
                            "reload: [auth] store changed; a restart is needed to switch key stores"
                        );
                    }
                    if key_store(&config, state.shared_keys.as_ref()).is_none() {
                        say!("reload: {OPEN_WARNING}");
                    }
                    for message in unapplied_usage_and_log(&state, &config, otlp_env().as_deref()) {
                        say!("{message}");
                    }
                    state.usage.handle.set_prices(config.prices().clone());
                    let models = router.models().to_vec();
                    gateway.reload_stack(chat_stack(&config, router, &state), models);
                    say!(
                        "reloaded {} (models: {})",
                        path.display(),
                        gateway.models().join(", ")
                    );
                }
                Err(e) => say!("reload failed, keeping the running configuration: {e}"),
            }
        }
    });
}

/// Whether two `[server]` settings are the same (`ServeConfig` has no `PartialEq`).
#[cfg(unix)]
fn same_server(a: &ServeConfig, b: &ServeConfig) -> bool {
    (a.header_read_timeout, a.shutdown_grace, a.max_header_bytes)
        == (b.header_read_timeout, b.shutdown_grace, b.max_header_bytes)
}

/// mimalloc rather than the system's allocator: a request's many small allocations and frees
/// cost less (see `BENCHMARKS.md`). Its version 2 (`Cargo.toml` says why not 3).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}\n\n{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("chatgate proxy {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::HashKey(key)) => {
            return match hash_key(&key) {
                Ok(hex) => {
                    println!("{hex}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    say!("proxy: --hash-key: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Err(e) => {
            say!("proxy: {e}\n{USAGE}\nTry `proxy --help` for more information.");
            return ExitCode::from(2);
        }
    };
    // One worker asked for (`TOKIO_WORKER_THREADS=1`): a current-thread runtime, which skips the
    // multi-thread scheduler's cross-thread wake-ups; otherwise one worker per core.
    let one = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let runtime = if one {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(rt) => {
            let code = rt.block_on(run(args));
            log_buffer::flush();
            code
        }
        Err(e) => {
            say!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let config = match load(args.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let router = match config.router() {
        Ok(r) => r,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let otlp = match otlp_export(&config, otlp_env().as_deref()) {
        Ok(o) => o,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        let keys = match (config.key_store(), config.postgres_keys()) {
            (Some(store), _) => format!("{} keys", store.len()),
            (None, Some(_)) => "keys in PostgreSQL".to_owned(),
            (None, None) => "no keys: open".to_owned(),
        };
        if let Some(pg) = config.postgres_keys()
            && let Err(e) = pg.url()
        {
            say!("{e}");
            return ExitCode::FAILURE;
        }
        let spans = otlp
            .as_ref()
            .map_or_else(String::new, |o| format!("; spans to {}", o.traces_url()));
        println!(
            "{}: ok ({} models: {}; {keys}{spans})",
            args.config
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string()),
            router.models().len(),
            router.models().join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let listen = args.listen.unwrap_or_else(|| config.listen());
    let pg = match postgres::start(&config).await {
        Ok(pg) => pg,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match init_logging(config.log_format(), otlp.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let usage = match accounting(&config).await {
        Ok(a) => a,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The limiter's counters: made once, kept by every reloaded stack.
    let local = matches!(
        config.limits_config().backend(),
        chatgate::config::LimiterBackend::Local
    )
    .then(chatgate::rate_limit::LocalBackend::new);
    let limiter = match &local {
        Some(l) => Ok(Arc::new(l.clone()) as Arc<dyn LimitBackend>),
        None => config.limits_config().make_backend(),
    };
    let limiter = match limiter {
        Ok(l) => l,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(feature = "postgres")]
    if let Some(local) = &local {
        seed_budgets(&config, local).await;
    }
    let tools = match server_tools(&config) {
        Ok(t) => t,
        Err(e) => {
            say!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let state = Arc::new(State {
        tools,
        catalogs: config.function_catalogs().to_vec(),
        usage,
        shared_keys: pg.as_ref().map(|p| p.store.clone()),
        limiter,
        limiter_backend: config.limits_config().backend().clone(),
        usage_config: config.usage_config().clone(),
        log: (
            config.log_format(),
            config.otlp_with_env(otlp_env().as_deref()).ok().flatten(),
        ),
    });
    if key_store(&config, state.shared_keys.as_ref()).is_none() {
        say!("{OPEN_WARNING}");
    }
    let models = router.models().to_vec();
    let mut gateway = Gateway::with_stack(chat_stack(&config, router, &state), models)
        .with_route("/metrics", MetricsRoute::new(state.usage.metrics.clone()))
        .with_route(
            "/v1/usage",
            UsageRoute::new(
                state.usage.memory.clone(),
                config.usage_config().admin_sha256,
            ),
        );
    if let Some(pg) = pg {
        gateway = pg.mount(gateway);
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            say!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    #[cfg(unix)]
    if let Some(path) = args.config.clone() {
        reload_on_sighup(
            gateway.clone(),
            path,
            config.listen(),
            config.serve_config(),
            Arc::clone(&state),
        );
    }
    say!(
        "chatgate listening on http://{addr} (models: {})",
        gateway.models().join(", ")
    );
    // On a worker, not on the main thread that `block_on`s: accepting and serving then share the
    // runtime's worker threads (`TOKIO_WORKER_THREADS`, default one per core), and the main
    // thread only waits.
    let server = serve_with(listener, gateway, shutdown_signal(), config.serve_config());
    let served = tokio::spawn(server).await;
    // Every record of the requests served reaches the sinks before exit, and every span the
    // collector.
    state.usage.handle.close().await;
    telemetry.shutdown().await;
    match served {
        Ok(Ok(())) => {
            say!("chatgate stopped");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            say!("server error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            say!("server task failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The PostgreSQL key store and its admin endpoints (feature `postgres`).
mod postgres {
    use std::sync::Arc;

    use chatgate::auth::KeyStore;
    use chatgate::config::Config;
    use chatgate::gateway::Gateway;

    /// The store made once at start (it outlives reloads), and the admin routes.
    pub(crate) struct Pg {
        pub(crate) store: Arc<dyn KeyStore>,
        #[cfg(feature = "postgres")]
        admin: Option<chatgate::auth::postgres::AdminKeys>,
    }

    impl Pg {
        /// Mounts the admin endpoints, when `[admin]` is configured.
        pub(crate) fn mount<S>(self, gateway: Gateway<S>) -> Gateway<S> {
            #[cfg(feature = "postgres")]
            if let Some(admin) = self.admin {
                return gateway
                    .with_route("/admin/keys", admin.clone())
                    .with_route("/admin/keys/", admin);
            }
            gateway
        }
    }

    #[cfg(feature = "postgres")]
    pub(crate) async fn start(config: &Config) -> Result<Option<Pg>, String> {
        use chatgate::auth::postgres::{AdminKeys, PgKeyStore, PgKeyStoreConfig};
        let Some(settings) = config.postgres_keys() else {
            return Ok(None);
        };
        let url = settings.url().map_err(|e| e.to_string())?;
        let mut pg_config = PgKeyStoreConfig::new()
            .cache_ttl(settings.cache_ttl())
            .negative_ttl(settings.negative_ttl())
            .cache_size(settings.cache_size());
        if let Some(schema) = settings.schema() {
            pg_config = pg_config.schema(schema);
        }
        let store =
            PgKeyStore::connect(&url, pg_config).map_err(|e| format!("postgres key store: {e}"))?;
        store
            .migrate()
            .await
            .map_err(|e| format!("postgres key store: {e}"))?;
        let admin = config.admin_key().map(|d| AdminKeys::new(store.clone(), d));
        Ok(Some(Pg {
            store: Arc::new(store),
            admin,
        }))
    }

    #[cfg(not(feature = "postgres"))]
    pub(crate) async fn start(config: &Config) -> Result<Option<Pg>, String> {
        match config.postgres_keys() {
            None => Ok(None),
            Some(_) => Err(
                "[auth] store = \"postgres\" needs the proxy built with --features postgres"
                    .to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
        // Help wins wherever it is, even after an incomplete command line.
        assert_eq!(parse(&["--check", "--help"]), Ok(Command::Help));
        for option in [
            "--listen",
            "--config",
            "--check",
            "--hash-key",
            "--help",
            "--version",
        ] {
            assert!(HELP.contains(option), "--help does not list {option}");
        }
    }

    #[test]
    fn options() {
        assert_eq!(parse(&[]), Ok(Command::Run(Args::default())));
        let Ok(Command::Run(a)) =
            parse(&["--config", "gw.toml", "--check", "--listen", "0.0.0.0:9"])
        else {
            panic!("valid")
        };
        assert_eq!(a.config, Some(PathBuf::from("gw.toml")));
        assert!(a.check);
        assert_eq!(a.listen, Some("0.0.0.0:9".parse().expect("addr")));
        let Ok(Command::Run(a)) = parse(&["--listen=[::1]:8080", "--config=x.toml"]) else {
            panic!("valid")
        };
        assert_eq!(a.listen, Some("[::1]:8080".parse().expect("addr")));
        assert_eq!(a.config, Some(PathBuf::from("x.toml")));
    }

    #[test]
    fn listen_resolves_host_names() {
        let Ok(Command::Run(a)) = parse(&["--listen", "localhost:8080"]) else {
            panic!("localhost resolves")
        };
        let addr = a.listen.expect("addr");
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr.port(), 8080);
    }

    #[test]
    fn usage_errors() {
        let err = |args: &[&str]| parse(args).expect_err("a usage error");
        assert_eq!(err(&["--bogus"]), r#"unknown option "--bogus""#);
        assert_eq!(err(&["-x"]), r#"unknown option "-x""#);
        assert_eq!(err(&["serve"]), r#"unexpected argument "serve""#);
        assert_eq!(err(&["--listen"]), "--listen needs an address");
        assert_eq!(err(&["--config"]), "--config needs a file");
        assert_eq!(err(&["--check"]), "--check needs --config");
        assert_eq!(err(&["--check=yes"]), "--check takes no value");
        assert!(err(&["--listen", "8080"]).contains("expected IP:port or host:port"));
        assert_eq!(
            err(&["--hash-key"]),
            "--hash-key needs a key (or - for stdin)"
        );
    }

    /// The state `run` makes for `config`, without keys, PostgreSQL or tools.
    async fn plain_state(config: &Config) -> State {
        State {
            usage: accounting(config).await.expect("accounting"),
            shared_keys: None,
            limiter: Arc::new(chatgate::rate_limit::LocalBackend::new()),
            limiter_backend: config.limits_config().backend().clone(),
            tools: None,
            catalogs: Vec::new(),
            usage_config: config.usage_config().clone(),
            log: (config.log_format(), None),
        }
    }

    #[tokio::test]
    async fn a_reload_names_the_usage_and_log_changes_it_cannot_apply() {
        let config = |extra: &str| {
            let text = format!("[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n{extra}");
            Config::from_toml_str(&text, std::path::Path::new("gw.toml")).expect("valid")
        };
        let started = config("[usage]\ncapacity = 100\n");
        let state = plain_state(&started).await;
        let unapplied = |extra: &str| unapplied_usage_and_log(&state, &config(extra), None);
        assert!(unapplied("[usage]\ncapacity = 100\n").is_empty());
        // `enabled` is applied by the reload itself.
        assert!(unapplied("[usage]\ncapacity = 100\nenabled = false\n").is_empty());
        let moved = unapplied("[usage]\ncapacity = 200\n");
        assert_eq!(moved.len(), 1);
        assert!(moved[0].contains("[usage] changed"), "{moved:?}");
        let both = unapplied("[log]\nformat = \"json\"\n");
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both[1].contains("[log] changed"), "{both:?}");
    }

    /// `[usage] enabled = false` takes the usage layers out of the stack: a request served over
    /// HTTP leaves no record; by default it leaves one.
    #[tokio::test]
    async fn usage_accounting_can_be_turned_off() {
        use http_body_util::Full;
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        for (extra, records) in [("", 1), ("[usage]\nenabled = false\n", 0)] {
            let text = format!("[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n{extra}");
            let config =
                Config::from_toml_str(&text, std::path::Path::new("gw.toml")).expect("valid");
            let state = plain_state(&config).await;
            let router = config.router().expect("router");
            let models = router.models().to_vec();
            let gateway = Gateway::with_stack(chat_stack(&config, router, &state), models);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("address");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve_with(
                listener,
                gateway,
                async {
                    let _ = stopped.await;
                },
                config.serve_config(),
            ));
            let client = Client::builder(TokioExecutor::new()).build_http();
            let body = r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#;
            let req = Request::post(format!("http://{addr}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
                .expect("request");
            let res = client.request(req).await.expect("response");
            assert_eq!(res.status(), 200);
            let _ = res.into_body().collect().await.expect("body");
            let _ = stop.send(());
            server.await.expect("server task").expect("served");
            state.usage.handle.close().await;
            assert_eq!(state.usage.handle.emitted(), records, "{extra:?}");
        }
    }

    #[test]
    fn request_lines_follow_rust_log() {
        assert!(request_lines_enabled(None));
        assert!(request_lines_enabled(Some("info")));
        assert!(request_lines_enabled(Some("warn,chatgate::usage=info")));
        assert!(request_lines_enabled(Some("chatgate=debug")));
        assert!(!request_lines_enabled(Some("warn")));
        assert!(!request_lines_enabled(Some("info,chatgate::usage=off")));
        assert!(!request_lines_enabled(Some("info,chatgate=warn")));
    }

    #[test]
    fn an_otlp_endpoint_needs_the_feature() {
        let text = "[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n\
                    [log]\notlp_endpoint = \"http://127.0.0.1:4318\"\n";
        let config = Config::from_toml_str(text, std::path::Path::new("gw.toml")).expect("valid");
        let result = otlp_export(&config, None);
        #[cfg(not(feature = "otlp"))]
        {
            let err = result.expect_err("refused without the feature");
            assert!(err.contains("built without the otlp feature"), "{err}");
            assert!(err.starts_with("[log] otlp_endpoint is set"), "{err}");
        }
        #[cfg(feature = "otlp")]
        assert_eq!(
            result.expect("accepted").map(|e| e.traces_url()),
            Some("http://127.0.0.1:4318/v1/traces".to_owned())
        );
    }

    #[test]
    fn an_otlp_endpoint_from_the_environment_is_left_aside_without_the_feature() {
        let text = "[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n";
        let config = Config::from_toml_str(text, std::path::Path::new("gw.toml")).expect("valid");
        let export = otlp_export(&config, Some("http://127.0.0.1:4318"))
            .expect("a proxy starts whatever the environment says");
        #[cfg(not(feature = "otlp"))]
        assert!(export.is_none());
        #[cfg(feature = "otlp")]
        assert!(export.is_some_and(|e| e.from_env()));
    }

    #[test]
    fn hash_key_prints_the_digest() {
        assert_eq!(
            parse(&["--hash-key", "sk-1"]),
            Ok(Command::HashKey("sk-1".to_owned()))
        );
        assert_eq!(
            hash_key("sk-1"),
            Ok(KeyDigest::of("sk-1").to_hex()),
            "the digest the config's sha256 expects"
        );
        let err = hash_key("sk 1").expect_err("spaces");
        assert!(!err.contains("sk"), "{err}");
    }
}

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
//! The command line: `--help` (to stdout, exit 0), `--version`, `--listen ADDR` (an `IP:port`
//! or a `host:port` resolved at start, overriding the file's `listen`), `--config FILE`,
//! `--check`; `--opt=value` works too. A usage error (unknown option, missing value) is
//! reported on stderr with the usage, exit status 2; a configuration error exits with 1.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use chatgate::config::Config;
use chatgate::gateway::{Gateway, ServeConfig, serve_with};
use chatgate::route::ModelRouter;
use chatgate::server_tools::{ServerTools, ServerToolsLayer};
use chatgate::validate::{Validate, ValidateLayer};
use tower::ServiceBuilder;
use tower::util::Either;

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
}

const USAGE: &str = "usage: proxy [--listen ADDR] [--config FILE [--check]] | --help | --version";

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
  --check         validate FILE (syntax, values, credentials' variables, CA files),
                  print a summary and exit: 0 when valid, 1 otherwise; needs --config
  -h, --help      print this help and exit
  -V, --version   print the version and exit

environment:
  TOKIO_WORKER_THREADS   worker threads (default: one per core; 1: a single thread)

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
/// is added or left out. (State that must outlive a reload would be made once in `main` and
/// passed in here; see the `chatgate::gateway` docs.)
fn chat_stack(config: &Config, router: ModelRouter) -> ChatStack {
    ServiceBuilder::new()
        .layer(ValidateLayer::with_config(config.validate_config()))
        .option_layer(SERVER_TOOLS.get().cloned().flatten())
        .service(router)
}

/// The type of [`chat_stack`].
type ChatStack = Validate<Either<ServerTools<ModelRouter>, ModelRouter>>;

/// Server-side tools (`[[function_catalogs]]`): made once in `run`, before the first stack, so
/// their connection pools outlive reloads; `None` without catalogs (`uc_function` tools are
/// then forwarded untouched).
static SERVER_TOOLS: std::sync::OnceLock<Option<ServerToolsLayer>> = std::sync::OnceLock::new();

/// The server-side tools layer of `config`'s `[[function_catalogs]]`.
fn server_tools(config: &Config) -> Result<Option<ServerToolsLayer>, String> {
    if config.function_catalogs().is_empty() {
        return Ok(None);
    }
    #[cfg(not(feature = "postgres"))]
    return Err(
        "[[function_catalogs]] kind \"postgres\" needs the proxy built with \
                `--features postgres`"
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

/// Re-reads the configuration on every SIGHUP and swaps the gateway's stack.
#[cfg(unix)]
fn reload_on_sighup(
    gateway: Gateway<ChatStack>,
    path: PathBuf,
    listen: SocketAddr,
    server: ServeConfig,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        eprintln!("SIGHUP reload unavailable");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let built = Config::load(&path)
                .and_then(|c| c.router().map(|r| (c, r)))
                .map_err(|e| e.to_string());
            match built {
                Ok((config, router)) => {
                    if !same_catalogs(&config) {
                        eprintln!(
                            "reload: [[function_catalogs]] changed; a restart is needed to apply it"
                        );
                    }
                    if config.listen() != listen {
                        eprintln!(
                            "reload: `listen` changed to {}; a restart is needed to move the listener",
                            config.listen()
                        );
                    }
                    if !same_server(&config.serve_config(), &server) {
                        eprintln!("reload: [server] changed; a restart is needed to apply it");
                    }
                    let models = router.models().to_vec();
                    gateway.reload_stack(chat_stack(&config, router), models);
                    eprintln!(
                        "reloaded {} (models: {})",
                        path.display(),
                        gateway.models().join(", ")
                    );
                }
                Err(e) => eprintln!("reload failed, keeping the running configuration: {e}"),
            }
        }
    });
}

/// Whether the reloaded `[[function_catalogs]]` are the ones the proxy started with.
#[cfg(unix)]
fn same_catalogs(config: &Config) -> bool {
    STARTED_CATALOGS
        .get()
        .is_some_and(|c| c.as_slice() == config.function_catalogs())
}

/// The `[[function_catalogs]]` the proxy started with.
static STARTED_CATALOGS: std::sync::OnceLock<Vec<chatgate::config::FunctionCatalogConfig>> =
    std::sync::OnceLock::new();

/// Whether two `[server]` settings are the same (`ServeConfig` has no `PartialEq`).
#[cfg(unix)]
fn same_server(a: &ServeConfig, b: &ServeConfig) -> bool {
    (a.header_read_timeout, a.shutdown_grace, a.max_header_bytes)
        == (b.header_read_timeout, b.shutdown_grace, b.max_header_bytes)
}

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
        Err(e) => {
            eprintln!("proxy: {e}\n{USAGE}\nTry `proxy --help` for more information.");
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
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let config = match load(args.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let router = match config.router() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let tools = match server_tools(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if args.check {
        println!(
            "{}: ok ({} models: {})",
            args.config
                .as_ref()
                .map_or_else(String::new, |p| p.display().to_string()),
            router.models().len(),
            router.models().join(", ")
        );
        return ExitCode::SUCCESS;
    }
    let listen = args.listen.unwrap_or_else(|| config.listen());
    let _ = SERVER_TOOLS.set(tools);
    let _ = STARTED_CATALOGS.set(config.function_catalogs().to_vec());
    let models = router.models().to_vec();
    let gateway = Gateway::with_stack(chat_stack(&config, router), models);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
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
        );
    }
    eprintln!(
        "chatgate listening on http://{addr} (models: {})",
        gateway.models().join(", ")
    );
    // On a worker, not on the main thread that `block_on`s: accepting and serving then share the
    // runtime's worker threads (`TOKIO_WORKER_THREADS`, default one per core), and the main
    // thread only waits.
    let server = serve_with(listener, gateway, shutdown_signal(), config.serve_config());
    match tokio::spawn(server).await {
        Ok(Ok(())) => {
            eprintln!("chatgate stopped");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("server task failed: {e}");
            ExitCode::FAILURE
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
        for option in ["--listen", "--config", "--check", "--help", "--version"] {
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
    }
}

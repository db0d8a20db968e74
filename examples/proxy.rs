//! The bundled chatgate proxy.
//!
//! ```text
//! cargo run --release --example proxy                        # model `echo` on 127.0.0.1:8080
//! cargo run --release --example proxy -- --config gw.toml    # front OpenAI-compatible upstreams
//! cargo run --release --example proxy -- --config gw.toml --check
//! ```
//!
//! With no configuration it serves the embedded default: the deterministic in-process model
//! `echo`, through the validation layer, at `/v1/chat/completions` and
//! `/api/v1/compatibility/openai/v1/chat/completions`, plus `GET /v1/models` and `GET /healthz`.
//! With `--config FILE` (TOML, see `chatgate::config`) it routes each model to its upstream
//! replicas or builtin model. `--check` validates the file (syntax, fields, URLs, credentials'
//! environment variables) and exits. SIGHUP re-reads the file and swaps the routing atomically:
//! requests in flight finish where they started; a file with errors is reported and ignored.
//! Ctrl-C or SIGTERM stops accepting, lets requests and streams in flight finish (up to 30 s),
//! then exits. The runtime has one worker thread per core, or `TOKIO_WORKER_THREADS` of them;
//! accepting and serving both run on them. `TOKIO_WORKER_THREADS=1` runs everything on one
//! thread (a current-thread runtime, like a single nginx worker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chatgate::config::Config;
use chatgate::gateway::{Gateway, serve};
use chatgate::validate::ValidateConfig;

struct Args {
    listen: Option<SocketAddr>,
    config: Option<PathBuf>,
    check: bool,
}

const USAGE: &str = "usage: proxy [--listen ADDR] [--config FILE [--check]]";

fn parse_args() -> Result<Args, String> {
    let mut out = Args {
        listen: None,
        config: None,
        check: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().ok_or("--listen needs an address")?;
                out.listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--config" => out.config = Some(args.next().ok_or("--config needs a file")?.into()),
            "--check" => out.check = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if out.check && out.config.is_none() {
        return Err(format!("--check needs --config\n{USAGE}"));
    }
    Ok(out)
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

/// Re-reads the configuration on every SIGHUP and swaps the gateway's routing.
#[cfg(unix)]
fn reload_on_sighup(gateway: Gateway, path: PathBuf, listen: SocketAddr) {
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
                    if config.listen() != listen {
                        eprintln!(
                            "reload: `listen` changed to {}; a restart is needed to move the listener",
                            config.listen()
                        );
                    }
                    gateway.reload(router, ValidateConfig::default());
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

fn main() -> ExitCode {
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
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
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
    let gateway = Gateway::new(router, ValidateConfig::default());
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
        reload_on_sighup(gateway.clone(), path, config.listen());
    }
    eprintln!(
        "chatgate listening on http://{addr} (models: {})",
        gateway.models().join(", ")
    );
    // On a worker, not on the main thread that `block_on`s: accepting and serving then share the
    // runtime's worker threads (`TOKIO_WORKER_THREADS`, default one per core), and the main
    // thread only waits.
    match tokio::spawn(serve(listener, gateway, shutdown_signal())).await {
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

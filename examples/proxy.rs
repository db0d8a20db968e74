//! The bundled chatgate proxy.
//!
//! ```text
//! cargo run --release --example proxy                       # model `echo` on 127.0.0.1:8080
//! cargo run --release --example proxy -- --listen 0.0.0.0:9000
//! ```
//!
//! With no configuration it serves the embedded default: the deterministic in-process model
//! `echo`, through the validation layer, at `/v1/chat/completions` and
//! `/api/v1/compatibility/openai/v1/chat/completions`, plus `GET /v1/models` and `GET /healthz`.
//! Ctrl-C or SIGTERM stops accepting, lets requests and streams in flight finish (up to 30 s),
//! then exits.

use std::net::SocketAddr;
use std::process::ExitCode;

use chatgate::EchoModel;
use chatgate::gateway::{Gateway, serve};
use chatgate::route::ModelRouter;
use chatgate::validate::ValidateConfig;

struct Args {
    listen: SocketAddr,
}

const USAGE: &str = "usage: proxy [--listen ADDR]";

fn parse_args() -> Result<Args, String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8080).into();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().ok_or("--listen needs an address")?;
                listen = v.parse().map_err(|e| format!("--listen {v}: {e}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args { listen })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let gateway = Gateway::new(router, ValidateConfig::default());
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    eprintln!(
        "chatgate listening on http://{addr} (models: {})",
        gateway.models().join(", ")
    );
    match serve(listener, gateway, shutdown_signal()).await {
        Ok(()) => {
            eprintln!("chatgate stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}

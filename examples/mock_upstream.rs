//! A mock OpenAI-compatible upstream as a process: the upstream of the load benchmark
//! (`bench/load/run.sh`).
//!
//! ```text
//! cargo run --release --example mock_upstream -- --listen 127.0.0.1:8090 [--chunks 50]
//!     [--chunk-delay-ms 0] [--header-delay-ms 0] [--status 500] [--record]
//! ```
//!
//! It answers `POST /v1/chat/completions` and `GET /v1/models` as described in
//! `tests/support/mock_upstream/`, prints `listening on http://ADDR` once bound, and runs until
//! interrupted. Requests are not recorded unless `--record` is given (nobody could read them).

#[path = "../tests/support/mock_upstream/mod.rs"]
mod mock_upstream;

use std::error::Error;
use std::time::Duration;

use http::StatusCode;
use mock_upstream::MockUpstream;

const USAGE: &str = "usage: mock_upstream [--listen ADDR] [--chunks N] [--chunk-delay-ms MS] \
                     [--header-delay-ms MS] [--status CODE] [--record]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut listen = "127.0.0.1:8090".to_owned();
    let mut builder = MockUpstream::builder().record_requests(false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--listen" => listen = value()?,
            "--chunks" => builder = builder.default_chunks(value()?.parse()?),
            "--chunk-delay-ms" => {
                builder = builder.chunk_delay(Duration::from_millis(value()?.parse()?));
            }
            "--header-delay-ms" => {
                builder = builder.header_delay(Duration::from_millis(value()?.parse()?));
            }
            "--status" => builder = builder.status(StatusCode::from_u16(value()?.parse()?)?),
            "--record" => builder = builder.record_requests(true),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let (addr, handle) = builder.start(listen.as_str()).await?;
    println!("listening on http://{addr}");
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}

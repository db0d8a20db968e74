//! Reloading the configuration under load loses no request: the same path the proxy's SIGHUP
//! handler takes (`Config` → `Config::router` → `Gateway::reload`), with real HTTP on loopback.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chatgate::config::Config;
use chatgate::gateway::Gateway;
use chatgate::validate::ValidateConfig;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::mock_upstream::MockUpstream;

fn config(upstream_a: &str, upstream_b: &str, weight_b: u32) -> Config {
    let text = format!(
        r#"
[[models]]
name = "echo"
builtin = "echo"
[[models]]
name = "mock"
[[models.upstreams]]
url = "{upstream_a}"
[[models.upstreams]]
url = "{upstream_b}"
weight = {weight_b}
"#
    );
    Config::from_toml_str(&text, Path::new("reload.toml")).expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request() {
    let (_, a) = MockUpstream::builder()
        .chunk_delay(Duration::from_millis(1))
        .default_chunks(5)
        .start("127.0.0.1:0")
        .await
        .expect("mock a");
    let (_, b) = MockUpstream::builder()
        .default_chunks(5)
        .start("127.0.0.1:0")
        .await
        .expect("mock b");
    let (url_a, url_b) = (a.base_url(), b.base_url());
    let gateway = Gateway::new(
        config(&url_a, &url_b, 1).router().expect("router"),
        ValidateConfig::default(),
    );
    let server = support::start_with(gateway.clone()).await;
    let client = support::client();

    const TASKS: usize = 8;
    const PER_TASK: usize = 40;
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let client = client.clone();
        let ok = Arc::clone(&ok);
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let (model, stream) = match (t + i) % 3 {
                    0 => ("echo", false),
                    1 => ("mock", false),
                    _ => ("mock", true),
                };
                let body = format!(
                    r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"stream":{stream}}}"#
                );
                let req = Request::post(format!("http://{addr}/v1/chat/completions"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("request");
                let res = client.request(req).await.expect("response");
                assert_eq!(res.status(), 200, "{model} stream={stream}");
                let bytes = res.into_body().collect().await.expect("body").to_bytes();
                if stream {
                    assert!(bytes.ends_with(b"data: [DONE]\n\n"), "stream cut: {bytes:?}");
                    assert!(!bytes.windows(8).any(|w| w == b"\"error\":"), "error event");
                } else {
                    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                    assert_eq!(v["object"], "chat.completion");
                }
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Reload while the load runs, alternating two configurations.
    let mut reloads = 0;
    while ok.load(Ordering::Relaxed) < TASKS * PER_TASK && reloads < 10_000 {
        let weight = if reloads % 2 == 0 { 3 } else { 1 };
        gateway.reload(
            config(&url_a, &url_b, weight).router().expect("router"),
            ValidateConfig::default(),
        );
        reloads += 1;
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.expect("task panicked");
    }
    assert_eq!(ok.load(Ordering::Relaxed), TASKS * PER_TASK);
    assert!(reloads >= 2, "the load ended before any reload");
    // Both upstreams served part of the load.
    assert!(a.request_count() > 0 && b.request_count() > 0);
}

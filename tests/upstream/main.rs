//! Upstream proxying end to end on loopback: a hyper gateway (`ValidateLayer` + `ModelRouter`),
//! a hyper-util client, and mock OpenAI upstreams (`support/mock_upstream`).
//!
//! `forwarding` (rewriting, headers, connections), `streaming`, `timeouts`, and `routing`
//! (replicas, failover, passive and active health, fallbacks).
//!
//! No test sleeps to synchronise: the mocks hold their streams on channels until the test says
//! so. Timeout tests use short timeouts (100–300 ms) and only assert generous upper bounds.

#![allow(clippy::unwrap_used)]

#[path = "../support/mod.rs"]
mod support;

mod answers;
mod forwarding;
mod routing;
mod streaming;
mod timeouts;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chatgate::EchoModel;
use chatgate::route::{HealthCheck, ModelRouter, RouteConfig, RoutedModel};
use chatgate::upstream::UpstreamConfig;
use support::mock_upstream::*;
use support::{chat, client, gateway, next_chunk, post, text};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Hang detection: every test finishes well within this.
const BOUND: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f).await.expect("test hung")
}

fn router(model: &str, route: RouteConfig) -> ModelRouter {
    ModelRouter::builder()
        .upstream(model, route)
        .unwrap()
        .build()
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// The JSON payloads of the `data:` lines of an SSE text.
fn data_lines(sse: &str) -> Vec<&str> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

/// A mock that sends one chunk and then holds the stream open until the connection goes.
async fn stalling_mock() -> Mock {
    Mock::start(|_| async {
        let (tx, _dropped, res) = sse();
        tokio::spawn(async move {
            tx.send(Ok(chunk("first"))).await.ok();
            tx.closed().await;
        });
        res
    })
    .await
}

async fn assert_stream_ends_with_error(gw: std::net::SocketAddr, code: &str) {
    let started = Instant::now();
    let res = post(&client(), gw, chat("m", true), &[]).await;
    assert_eq!(res.status(), 200);
    let body = text(res).await;
    let data = data_lines(&body);
    assert_eq!(data.len(), 2, "{body}");
    assert!(data[0].contains("first"));
    let err: serde_json::Value = serde_json::from_str(data[1]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    assert_eq!(err["error"]["code"], code);
    assert!(err["error"]["param"].is_null());
    assert!(err["error"]["message"].is_string());
    assert!(!body.contains("[DONE]"), "{body}");
    assert!(body.ends_with("\n\n"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

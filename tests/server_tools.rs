//! Server-side tools over real HTTP: the whole gateway on 127.0.0.1:0 with a `HandlerCatalog`
//! and the echo model, through the openai-style client path a user takes.
#![allow(clippy::unwrap_used)]

mod support;

use chatgate::gateway::Gateway;
use chatgate::route::ModelRouter;
use chatgate::server_tools::{HandlerCatalog, ServerToolsLayer};
use chatgate::{EchoModel, ValidateLayer};
use serde_json::{Value, json};
use tower::ServiceBuilder;

async fn start() -> support::Server {
    let catalog = HandlerCatalog::new().register(
        "main.tools.add",
        "Adds two integers.",
        json!({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}),
        |a: Value| async move {
            Ok((a["a"].as_i64().unwrap_or(0) + a["b"].as_i64().unwrap_or(0)).to_string())
        },
    );
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let stack = ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(ServerToolsLayer::new(catalog))
        .service(router);
    support::start_with(Gateway::with_stack(stack, ["echo"])).await
}

fn request(stream: bool) -> Value {
    json!({
        "model": "echo",
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
        "messages": [{"role": "user", "content": "call main__tools__add {\"a\": 40, \"b\": 2}"}],
        "tools": [{"type": "uc_function", "uc_function": {"name": "main.tools.add"}}],
    })
}

#[tokio::test]
async fn round_trip_over_http() {
    let server = start().await;
    let client = support::client();
    let res = support::post(&client, server.addr, request(false), &[]).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let v: Value = serde_json::from_str(&support::text(res).await).unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.contains("\"name\": \"main.tools.add\""),
        "{content}"
    );
    assert!(
        content.ends_with("\"content\": \"42\"\n}\n</uc_function_result>\n\nThe tool returned: 42"),
        "{content}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // The client sends the conversation back: the blocks become the call and its result again
    // before the model sees them (the echo model answers the last user message).
    let follow_up = json!({
        "model": "echo",
        "messages": [
            {"role": "user", "content": "call main__tools__add {\"a\": 40, \"b\": 2}"},
            {"role": "assistant", "content": content},
            {"role": "user", "content": "thanks"}
        ],
        "tools": [{"type": "uc_function", "uc_function": {"name": "main.tools.add"}}],
    });
    let res = support::post(&client, server.addr, follow_up, &[]).await;
    assert_eq!(res.status(), 200);
    let v: Value = serde_json::from_str(&support::text(res).await).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "thanks");
}

#[tokio::test]
async fn streamed_over_http() {
    let server = start().await;
    let client = support::client();
    let res = support::post(&client, server.addr, request(true), &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = support::text(res).await;
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks.len(), 4, "{text}");
    assert!(
        chunks[1]["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap()
            .ends_with("The tool returned: 42")
    );
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert!(chunks[3]["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

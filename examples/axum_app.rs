//! An existing axum application that mounts the chat-completions endpoint next to its own routes.
//!
//! ```text
//! cargo run --example axum_app            # serves on 127.0.0.1:3000
//! curl -s localhost:3000/hello
//! curl -s localhost:3000/v1/chat/completions -H 'content-type: application/json' \
//!      -d '{"model":"echo","messages":[{"role":"user","content":"hi"}]}'
//! ```
//!
//! The layer stack is a plain tower service, so axum takes it with `route_service`. The
//! application's own handler can also be a route of the [`ModelRouter`]: here model `shout`
//! is an axum handler. A route gets `Request<ValidatedRequest>` (the typed request is the
//! body); axum turns bodies into its own type, so the example first moves the typed request
//! into an extension the handler extracts.

use std::sync::Arc;

use axum::extract::Extension;
use axum::routing::get;
use axum::{Json, Router};
use chatgate::contract::ChatCompletionRequest;
use chatgate::route::ModelRouter;
use chatgate::{EchoModel, ValidateLayer, ValidatedRequest};
use http::Request;
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

/// The application's own model: answers with the last message in capitals.
async fn shout(Extension(request): Extension<Arc<ChatCompletionRequest>>) -> Json<Value> {
    let text = request
        .messages
        .last()
        .map(|m| m.text())
        .unwrap_or_default();
    Json(json!({
        "id": "chatcmpl-shout",
        "object": "chat.completion",
        "created": 0,
        "model": request.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text.to_uppercase()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    }))
}

fn app() -> Router {
    // An axum handler as a tower service, for the router; the typed request goes in an
    // extension (an `Arc`, no copy).
    let shout_service =
        Router::new()
            .fallback(shout)
            .map_request(|req: Request<ValidatedRequest>| {
                let typed = req.body().shared();
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(typed);
                Request::from_parts(parts, body)
            });
    let models = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .service("shout", shout_service)
        .build();
    let chat = ServiceBuilder::new()
        .layer(ValidateLayer::new().strict(false))
        .service(models);
    Router::new()
        .route(
            "/hello",
            get(|| async { "hello from the host application" }),
        )
        .route_service("/v1/chat/completions", chat)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;

    async fn post(body: &'static str) -> (u16, Value) {
        let req = http::Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("request");
        let res = app().oneshot(req).await.expect("infallible");
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn mounted_next_to_the_app_routes() {
        let (status, v) =
            post(r#"{"model":"shout","messages":[{"role":"user","content":"hi"}]}"#).await;
        assert_eq!(status, 200);
        assert_eq!(v["choices"][0]["message"]["content"], "HI");
        let (status, v) =
            post(r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#).await;
        assert_eq!(
            (status, &v["choices"][0]["message"]["content"]),
            (200, &json!("hi"))
        );
        let (status, v) =
            post(r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (404, &json!("model_not_found"))
        );
        let (status, v) = post(r#"{"model":"echo","messages":[]}"#).await;
        assert_eq!(
            (status, &v["detail"][0]["type"]),
            (422, &json!("too_short"))
        );
    }
}

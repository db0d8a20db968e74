//! Authentication over real HTTP through the whole gateway: 401 (contract vector S05), 403,
//! the principal, and no key ever echoed.

mod support;

use bytes::Bytes;
use chatgate::auth::{AuthLayer, ConfigKeyStore, KeyDigest, KeyRecord, ModelAccessLayer};
use chatgate::gateway::Gateway;
use chatgate::route::ModelRouter;
use chatgate::{EchoModel, ValidateLayer};
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tower::ServiceBuilder;

const KEY: &str = "sk-integration-5e3f0c2a9b";
const QWEN_KEY: &str = "sk-qwen-only-77aa";

async fn server() -> support::Server {
    let mut qwen = KeyRecord::new("qwen-team");
    qwen.models = vec!["qwen*".to_owned()];
    let store = ConfigKeyStore::new([
        (KeyDigest::of(KEY), KeyRecord::new("team-a")),
        (KeyDigest::of(QWEN_KEY), qwen),
    ])
    .expect("store");
    let router = ModelRouter::builder()
        .service("m", EchoModel::new())
        .service("echo", EchoModel::new())
        .service("qwen-7b", EchoModel::new())
        .build();
    let models = router.models().to_vec();
    let chat = ServiceBuilder::new()
        .layer(AuthLayer::new(store))
        .layer(ValidateLayer::new())
        .layer(ModelAccessLayer::new())
        .service(router);
    support::start_with(Gateway::with_stack(chat, models)).await
}

fn request(
    addr: std::net::SocketAddr,
    authorization: Option<&str>,
    body: &Value,
) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    req.body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

fn chat(model: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn contract_vector_s05_no_authorization_is_401() {
    let vectors = include_str!("data/contract_vectors.jsonl");
    let s05: Value = vectors
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("vector"))
        .find(|v| v["id"] == "S05")
        .expect("S05");
    let server = server().await;
    let client = support::client();
    let (status, headers, body) =
        support::send(&client, request(server.addr, None, &s05["body"])).await;
    assert_eq!(
        status.as_u16(),
        s05["status"].as_u64().expect("status") as u16
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    let json: Value = serde_json::from_slice(&body).expect("JSON");
    for (k, want) in s05["error"].as_object().expect("error") {
        assert_eq!(&json["error"][k], want, "error.{k}");
    }
    assert!(json["error"]["param"].is_null());
    assert!(json["error"]["message"].is_string());
}

#[tokio::test]
async fn keys_admit_refuse_and_are_never_echoed() {
    let server = server().await;
    let client = support::client();
    let cases = [
        (Some(format!("Bearer {KEY}")), "m", 200),
        (Some(format!("bearer  {KEY}")), "m", 200),
        (Some(KEY.to_owned()), "m", 200),
        (Some("Bearer sk-wrong-123456".to_owned()), "m", 401),
        (Some(format!("Basic {KEY}")), "m", 401),
        (Some(format!("Bearer {QWEN_KEY}")), "qwen-7b", 200),
        (Some(format!("Bearer {QWEN_KEY}")), "echo", 403),
        // 403 before 404: a key cannot probe for models outside its patterns.
        (Some(format!("Bearer {QWEN_KEY}")), "no-such-model", 403),
        (Some(format!("Bearer {QWEN_KEY}")), "qwen-unknown", 404),
        (Some(format!("Bearer {KEY}")), "no-such-model", 404),
    ];
    for (auth, model, want) in cases {
        let (status, headers, body) =
            support::send(&client, request(server.addr, auth.as_deref(), &chat(model))).await;
        assert_eq!(status, want, "{auth:?} {model}: {body:?}");
        let text = String::from_utf8_lossy(&body);
        for secret in [KEY, QWEN_KEY, "sk-wrong-123456"] {
            assert!(!text.contains(secret), "the body echoes a key: {text}");
            assert!(
                headers
                    .values()
                    .all(|v| !v.to_str().unwrap_or("").contains(secret)),
                "a header echoes a key"
            );
        }
        if want == 403 {
            let json: Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(json["error"]["code"], "model_not_allowed");
            assert_eq!(json["error"]["param"], "model");
        }
    }
}

#[tokio::test]
async fn the_model_never_sees_the_clients_authorization() {
    // An upstream that reports the Authorization it received.
    use chatgate::UpstreamConfig;
    use chatgate::route::RouteConfig;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: http::HeaderMap| {
            let record = record.clone();
            async move {
                record.lock().expect("lock").push(
                    headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap_or("").to_owned()),
                );
                axum::Json(serde_json::json!({
                    "id": "x", "object": "chat.completion", "created": 0, "model": "up",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let router = ModelRouter::builder()
        .upstream(
            "up",
            RouteConfig::new().replica(UpstreamConfig::new(
                format!("http://{up}/v1").parse::<http::Uri>().expect("uri"),
            )),
        )
        .expect("route")
        .build();
    let models = router.models().to_vec();
    let store =
        ConfigKeyStore::new([(KeyDigest::of(KEY), KeyRecord::new("team-a"))]).expect("store");
    let chat_stack = ServiceBuilder::new()
        .layer(AuthLayer::new(store))
        .layer(ValidateLayer::new())
        .layer(ModelAccessLayer::new())
        .service(router);
    let server = support::start_with(Gateway::with_stack(chat_stack, models)).await;
    let client = support::client();
    let (status, _, body) = support::send(
        &client,
        request(server.addr, Some(&format!("Bearer {KEY}")), &chat("up")),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].as_deref().is_none_or(|a| !a.contains(KEY)),
        "the client's key reached the upstream: {seen:?}"
    );
}

//! The gateway service over loopback: side routes, graceful shutdown, reload, order checks.

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chatgate::gateway::Gateway;
use chatgate::route::ModelRouter;
use chatgate::validate::ValidateConfig;
use chatgate::{EchoModel, ValidatedRequest};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

const HI: &str = r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn models_health_and_unknown_paths() {
    let server = support::start(ValidateConfig::default()).await;
    let client = support::client();
    let get = |path: &str| {
        Request::get(format!("http://{}{path}", server.addr))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let (status, _, body) = support::send(&client, get("/v1/models")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["echo", "m"]);
    let (status, _, _) = support::send(&client, get("/healthz")).await;
    assert_eq!(status, 200);
    let (status, _, body) = support::send(&client, get("/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(&body[..], br#"{"detail":"Not Found"}"#);
}

/// A model whose streamed body is fed by the test, to hold a response in flight.
fn held_model(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl tower::Service<
    Request<ValidatedRequest>,
    Response = Response<support::ChannelBody>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<support::ChannelBody>, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static {
    let slot = Arc::new(Mutex::new(Some(rx)));
    tower::service_fn(move |_req: Request<ValidatedRequest>| {
        let rx = slot.lock().expect("lock").take().expect("one request");
        std::future::ready(Ok(Response::new(support::ChannelBody::from_receiver(rx))))
    })
}

#[tokio::test]
async fn shutdown_lets_in_flight_streams_finish_and_refuses_new_connections() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let router = ModelRouter::builder()
        .service("held", held_model(rx))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chatgate::gateway::serve(
        listener,
        Gateway::new(router, ValidateConfig::default()),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let client = support::client();
    let req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"held","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .expect("request");
    let res = client.request(req).await.expect("response");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    tx.send(Bytes::from_static(b"data: 1\n\n"))
        .await
        .expect("send");
    let first = body
        .frame()
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    assert_eq!(&first[..], b"data: 1\n\n");

    // Shutdown begins while the stream is in flight.
    stop_tx.send(()).expect("stop");
    tokio::task::yield_now().await;
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "listener still accepting after shutdown");
    assert!(
        !server.is_finished(),
        "server must wait for the stream in flight"
    );

    // The stream in flight still completes.
    tx.send(Bytes::from_static(b"data: [DONE]\n\n"))
        .await
        .expect("send");
    drop(tx);
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(&rest[..], b"data: [DONE]\n\n");
    server.await.expect("join").expect("serve");
}

#[tokio::test]
async fn reload_switches_models_for_new_requests() {
    let gateway = Gateway::new(
        ModelRouter::builder()
            .service("echo", EchoModel::new())
            .build(),
        ValidateConfig::default(),
    );
    let server = support::start_with(gateway.clone()).await;
    let client = support::client();
    let ask = |model: &'static str| {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
    };
    assert_eq!(
        support::post_json(&client, server.addr, ask("echo"))
            .await
            .0,
        200
    );
    assert_eq!(
        support::post_json(&client, server.addr, ask("echo2"))
            .await
            .0,
        404
    );
    gateway.reload(
        ModelRouter::builder()
            .service("echo2", EchoModel::new())
            .build(),
        ValidateConfig::default(),
    );
    assert_eq!(
        support::post_json(&client, server.addr, ask("echo2"))
            .await
            .0,
        200
    );
    assert_eq!(
        support::post_json(&client, server.addr, ask("echo"))
            .await
            .0,
        404
    );
    assert_eq!(gateway.models(), ["echo2"]);
}

#[tokio::test]
async fn a_panicking_route_answers_500_in_the_envelope() {
    let panicking = tower::service_fn(|_req: Request<ValidatedRequest>| async move {
        if true {
            panic!("bug in a route");
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let router = ModelRouter::builder()
        .service("boom", panicking)
        .service("echo", EchoModel::new())
        .build();
    let server = support::start_with(Gateway::new(router, ValidateConfig::default())).await;
    let client = support::client();
    let (status, _, body) = support::post_json(
        &client,
        server.addr,
        r#"{"model":"boom","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 500);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["type"], "server_error");
    // The server still serves.
    assert_eq!(support::post_json(&client, server.addr, HI).await.0, 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let server = support::start(ValidateConfig {
        body_timeout: Some(std::time::Duration::from_millis(100)),
        ..ValidateConfig::default()
    })
    .await;
    let (tx, body) = support::ChannelBody::new();
    let req = Request::post(format!("http://{}/v1/chat/completions", server.addr))
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    tx.send(Bytes::from_static(b"{\"model\":"))
        .await
        .expect("send");
    // The rest never comes; the sender stays open until the answer is in.
    let res = support::channel_client()
        .request(req)
        .await
        .expect("response");
    assert_eq!(res.status(), 408);
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(v["error"]["code"], "request_timeout");
    drop(tx);
}

#[tokio::test]
async fn in_process_event_streams_get_done_appended() {
    let sse = tower::service_fn(|_req: Request<ValidatedRequest>| async move {
        let mut res = Response::new(Full::new(Bytes::from_static(b"data: {\"x\":1}\n\n")));
        res.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("text/event-stream"),
        );
        Ok::<_, Infallible>(res)
    });
    let router = ModelRouter::builder().service("sse", sse).build();
    let server = support::start_with(Gateway::new(router, ValidateConfig::default())).await;
    let (status, _, body) = support::post_json(
        &support::client(),
        server.addr,
        r#"{"model":"sse","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"data: {\"x\":1}\n\ndata: [DONE]\n\n");
}

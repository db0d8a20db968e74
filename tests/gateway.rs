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
    let (status, headers, body) = support::post_json(
        &client,
        server.addr,
        r#"{"model":"boom","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(
        headers["x-request-id"].len(),
        32,
        "a panic's 500 has an id too"
    );
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

/// `tower::limit::ConcurrencyLimit` in the stack: its `call` panics unless `poll_ready` came
/// first, so this fails (500 from the panic guard) when the gateway skips readiness.
#[tokio::test]
async fn readiness_based_layers_work_in_the_stack() {
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let models = router.models().to_vec();
    let chat = tower::ServiceBuilder::new()
        .concurrency_limit(2)
        .layer(chatgate::ValidateLayer::new())
        .service(router);
    let server = support::start_with(Gateway::with_stack(chat, models)).await;
    let client = support::client();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            support::post_json(&client, addr, HI).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = support::start(ValidateConfig::default()).await;
    let client = support::client();
    let send = |path: &str, method: http::Method, id: Option<&str>, body: &'static str| {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", server.addr))
            .header("content-type", "application/json");
        if let Some(id) = id {
            b = b.header("x-request-id", id);
        }
        b.body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request")
    };
    let cases = [
        ("/v1/chat/completions", http::Method::POST, HI, 200),
        ("/v1/chat/completions", http::Method::POST, "{", 422),
        ("/v1/chat/completions", http::Method::GET, "", 405),
        (
            "/v1/chat/completions",
            http::Method::POST,
            r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#,
            404,
        ),
        ("/nope", http::Method::GET, "", 404),
        ("/healthz", http::Method::GET, "", 200),
    ];
    let mut generated = std::collections::HashSet::new();
    for (path, method, body, status) in cases {
        // A sane client id comes back as sent.
        let (s, headers, _) = support::send(
            &client,
            send(path, method.clone(), Some("client-id-7"), body),
        )
        .await;
        assert_eq!(s, status, "{path}");
        assert_eq!(headers["x-request-id"], "client-id-7", "{path}");
        // None, or an insane one: a generated id.
        for id in [None, Some("has spaces"), Some("")] {
            let (s, headers, _) =
                support::send(&client, send(path, method.clone(), id, body)).await;
            assert_eq!(s, status);
            let got = headers["x-request-id"].to_str().expect("ascii").to_owned();
            assert_eq!(got.len(), 32, "{got}");
            assert!(generated.insert(got), "ids are unique");
        }
    }
}

#[tokio::test]
async fn request_id_and_peer_address_reach_the_model() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let model = tower::service_fn(move |req: Request<ValidatedRequest>| {
        let id = req
            .extensions()
            .get::<chatgate::request_id::RequestId>()
            .map(|i| i.as_str().to_owned());
        let peer = req
            .extensions()
            .get::<chatgate::request_id::PeerAddr>()
            .map(|p| p.0);
        let header = req.headers().get("x-request-id").cloned();
        record.lock().expect("lock").push((id, peer, header));
        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}")))) }
    });
    let router = ModelRouter::builder().service("m", model).build();
    let server = support::start_with(Gateway::new(router, ValidateConfig::default())).await;
    let client = support::client();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, headers, _) = support::post_json(&client, server.addr, body).await;
    assert_eq!(status, 200);
    let seen = seen.lock().expect("lock");
    let (id, peer, header) = &seen[0];
    assert_eq!(id.as_deref(), headers["x-request-id"].to_str().ok());
    assert_eq!(header.as_ref(), Some(&headers["x-request-id"]));
    let peer = peer.expect("peer address");
    assert!(peer.ip().is_loopback() && peer.port() != 0);
}

#[tokio::test]
async fn a_model_can_be_retrieved() {
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .service("org/name", EchoModel::new())
        .build();
    let server = support::start_with(Gateway::new(router, ValidateConfig::default())).await;
    let client = support::client();
    let get = |path: &str| {
        Request::get(format!("http://{}{path}", server.addr))
            .body(Full::new(Bytes::new()))
            .expect("request")
    };
    let (status, _, body) = support::send(&client, get("/v1/models/echo")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        (v["id"].as_str(), v["object"].as_str()),
        (Some("echo"), Some("model"))
    );
    for path in ["/v1/models/org/name", "/v1/models/org%2Fname"] {
        let (status, _, body) = support::send(&client, get(path)).await;
        assert_eq!(status, 200, "{path}");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["id"], "org/name");
    }
    let (status, _, body) = support::send(&client, get("/v1/models/gpt-9")).await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn extra_routes_are_served_and_survive_a_reload() {
    use chatgate::gateway::RouteBody;
    let router = || {
        ModelRouter::builder()
            .service("echo", EchoModel::new())
            .build()
    };
    let admin = tower::service_fn(|req: Request<RouteBody>| async move {
        let path = req.uri().path().to_owned();
        let body = req.into_body().collect().await.expect("body").to_bytes();
        let text = format!("{path}:{}", String::from_utf8_lossy(&body));
        Ok::<_, Infallible>(Response::new(
            Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed_unsync(),
        ))
    });
    let gateway = Gateway::new(router(), ValidateConfig::default()).with_route("/admin/", admin);
    let server = support::start_with(gateway.clone()).await;
    let client = support::client();
    let post = |path: &str| {
        Request::post(format!("http://{}{path}", server.addr))
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request")
    };
    let (status, _, body) = support::send(&client, post("/admin/keys")).await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, &b"/admin/keys:payload"[..])
    );
    gateway.reload(router(), ValidateConfig::default());
    let (status, _, body) = support::send(&client, post("/admin/x")).await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, &b"/admin/x:payload"[..])
    );
    // Not a prefix match without the slash; the chat path is untouched.
    let (status, _, _) = support::send(&client, post("/adminx")).await;
    assert_eq!(status, 404);
    assert_eq!(support::post_json(&client, server.addr, HI).await.0, 200);
}

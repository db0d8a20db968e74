#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};

use super::*;
use crate::validate::ValidatedRequest;

const SECRET: &str = "sk-test-0123456789abcdef";

fn store() -> ConfigKeyStore {
    let mut disabled = KeyRecord::new("disabled");
    disabled.disabled = true;
    let mut expired = KeyRecord::new("expired");
    expired.expires_at = Some(SystemTime::now() - Duration::from_secs(1));
    let mut future = KeyRecord::new("future");
    future.expires_at = Some(SystemTime::now() + Duration::from_secs(3600));
    let mut qwen = KeyRecord::new("qwen-only");
    qwen.models = vec!["qwen*".into(), "echo".into()];
    ConfigKeyStore::new([
        (KeyDigest::of(SECRET), KeyRecord::new("team-a")),
        (KeyDigest::of("sk-disabled"), disabled),
        (KeyDigest::of("sk-expired"), expired),
        (KeyDigest::of("sk-future"), future),
        (KeyDigest::of("sk-qwen"), qwen),
    ])
    .unwrap()
}

/// An inner service answering `principal-id|authorization-present`.
async fn echo<B>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = req
        .extensions()
        .get::<Principal>()
        .map_or("-", |p| p.id())
        .to_owned();
    let auth = req.headers().contains_key(header::AUTHORIZATION);
    Ok(Response::new(Full::new(Bytes::from(format!(
        "{id}|{auth}"
    )))))
}

async fn run(
    svc: impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<crate::body::ResponseBody<Full<Bytes>>>,
        Error = Infallible,
    >,
    authorization: Option<&[u8]>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::post("/v1/chat/completions");
    if let Some(v) = authorization {
        req = req.header(
            header::AUTHORIZATION,
            http::HeaderValue::from_bytes(v).unwrap(),
        );
    }
    let res = svc
        .oneshot(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn svc(
    store: impl KeyStore,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<crate::body::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
> + Clone {
    ServiceBuilder::new()
        .layer(AuthLayer::new(store))
        .service_fn(echo::<Full<Bytes>>)
}

fn assert_401(status: StatusCode, headers: &http::HeaderMap, body: &str) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert_eq!(json["error"]["code"], "invalid_api_key");
    assert!(json["error"]["param"].is_null());
    assert!(json["error"]["message"].is_string());
}

#[tokio::test]
async fn valid_key_admits_with_principal_and_no_authorization() {
    for value in [
        format!("Bearer {SECRET}"),
        format!("bearer {SECRET}"),
        format!("Bearer   {SECRET} "),
        SECRET.to_owned(),
    ] {
        let (status, _, body) = run(svc(store()), Some(value.as_bytes())).await;
        assert_eq!(status, 200, "{value:?}");
        assert_eq!(body, "team-a|false", "principal set, Authorization removed");
    }
    let (status, _, body) = run(svc(store()), Some(b"Bearer sk-future")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "future|false"));
}

#[tokio::test]
async fn refusals_are_401_without_the_key() {
    let (status, headers, body) = run(svc(store()), None).await;
    assert_401(status, &headers, &body);
    let missing = body;
    for value in [
        &b""[..],
        b"Bearer",
        b"Bearer sk-unknown",
        b"Bearer sk-disabled",
        b"Bearer sk-expired",
        b"Basic sk-test-0123456789abcdef",
        b"Bearer sk-test-0123456789abcdef extra",
        "Bearer sk-tést".as_bytes(),
        b"sk-expired",
    ] {
        let (status, headers, body) = run(svc(store()), Some(value)).await;
        assert_401(status, &headers, &body);
        for secret in ["sk-unknown", "sk-disabled", "sk-expired", SECRET, "sk-t"] {
            assert!(!body.contains(secret), "{body} echoes the key");
        }
    }
    // Unknown, disabled and expired keys cannot be told apart.
    let bodies: Vec<String> = futures_bodies(&["sk-unknown", "sk-disabled", "sk-expired"]).await;
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert_ne!(bodies[0], missing, "a missing key says how to send one");
}

async fn futures_bodies(keys: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for k in keys {
        let (_, _, body) = run(svc(store()), Some(format!("Bearer {k}").as_bytes())).await;
        out.push(body);
    }
    out
}

/// A store whose lookups are pending once, or fail.
#[derive(Clone)]
struct SlowStore {
    inner: Arc<ConfigKeyStore>,
    fail: bool,
}

impl KeyStore for SlowStore {
    fn lookup(&self, digest: &KeyDigest) -> Lookup {
        let inner = Arc::clone(&self.inner);
        let digest = *digest;
        let fail = self.fail;
        Lookup::Pending(Box::pin(async move {
            tokio::task::yield_now().await;
            if fail {
                return Err(KeyStoreError::new("database down"));
            }
            match inner.lookup(&digest) {
                Lookup::Ready(r) => r,
                Lookup::Pending(f) => f.await,
            }
        }))
    }
}

#[tokio::test]
async fn pending_lookups_are_awaited() {
    let slow = SlowStore {
        inner: Arc::new(store()),
        fail: false,
    };
    let (status, _, body) = run(
        svc(slow.clone()),
        Some(format!("Bearer {SECRET}").as_bytes()),
    )
    .await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "team-a|false"));
    let (status, headers, body) = run(svc(slow), Some(b"Bearer sk-disabled")).await;
    assert_401(status, &headers, &body);
}

#[tokio::test]
async fn store_errors_fail_closed_with_503() {
    let down = SlowStore {
        inner: Arc::new(store()),
        fail: true,
    };
    let (status, headers, body) = run(svc(down), Some(format!("Bearer {SECRET}").as_bytes())).await;
    assert_eq!(status, 503);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["type"], "server_error");
    assert_eq!(json["error"]["code"], "service_unavailable");
    assert!(!body.contains(SECRET) && !body.contains("database down"));
}

#[tokio::test]
async fn missing_key_costs_no_body_read() {
    // A body that panics if polled: the 401 must not touch it.
    struct Untouchable;
    impl http_body::Body for Untouchable {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            panic!("the body was read")
        }
    }
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(store()))
        .layer(crate::ValidateLayer::new())
        .service_fn(|_: Request<ValidatedRequest>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
    let res = svc
        .oneshot(Request::post("/").body(Untouchable).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

fn chat(key: &str, model: &str) -> Request<Full<Bytes>> {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    Request::post("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[tokio::test]
async fn model_access_is_403_outside_the_patterns() {
    let svc = ServiceBuilder::new()
        .layer(AuthLayer::new(store()))
        .layer(crate::ValidateLayer::new())
        .layer(ModelAccessLayer::new())
        .service_fn(|req: Request<ValidatedRequest>| async move {
            let model = req.body().request().model.clone();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(model))))
        });
    for (key, model, want) in [
        ("sk-qwen", "qwen2.5-7b", 200),
        ("sk-qwen", "qwen", 200),
        ("sk-qwen", "echo", 200),
        ("sk-qwen", "echo2", 403),
        ("sk-qwen", "gpt-4o", 403),
        ("sk-qwen", "Qwen2", 403),
        (SECRET, "gpt-4o", 200),
    ] {
        let res = svc.clone().oneshot(chat(key, model)).await.unwrap();
        assert_eq!(res.status(), want, "{key} {model}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        if want == 403 {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"]["type"], "invalid_request_error");
            assert_eq!(json["error"]["param"], "model");
            assert_eq!(json["error"]["code"], "model_not_allowed");
            assert!(!String::from_utf8_lossy(&body).contains(key));
        }
    }
}

#[tokio::test]
async fn model_access_without_principal_passes() {
    let svc = ServiceBuilder::new()
        .layer(crate::ValidateLayer::new())
        .layer(ModelAccessLayer::new())
        .service_fn(|_: Request<ValidatedRequest>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
    let res = svc.oneshot(chat("anything", "gpt-4o")).await.unwrap();
    assert_eq!(res.status(), 200);
}

#[test]
fn config_store_refuses_duplicates() {
    let err = ConfigKeyStore::new([
        (KeyDigest::of("a"), KeyRecord::new("x")),
        (KeyDigest::of("b"), KeyRecord::new("x")),
    ])
    .unwrap_err();
    assert_eq!(err, ConfigKeyStoreError::DuplicateId("x".into()));
}

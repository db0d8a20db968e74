//! Tests of the mock upstream itself (`tests/support/mock_upstream/`), which later tests and the
//! load benchmark rely on.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use support::mock_upstream::{MockHandle, MockUpstream};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn client(http2: bool) -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

fn chat(mock: &MockHandle, body: &Value) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("{}/chat/completions", mock.base_url()))
        .header("content-type", "application/json")
        .header("authorization", "Bearer test-key")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid request")
}

/// The body frames of a response, each as its own buffer.
async fn frames(mut body: Incoming) -> Result<Vec<Bytes>, hyper::Error> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.push(data);
        }
    }
    Ok(out)
}

#[tokio::test]
async fn non_streamed_completion_is_valid_and_recorded() -> TestResult {
    let (_, mock) = MockUpstream::builder().start("127.0.0.1:0").await?;
    let body = json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]});
    let response = client(false).request(chat(&mock, &body)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = response.into_body().collect().await?.to_bytes();
    assert!(bytes.starts_with(br#"{"id":"chatcmpl-mock","object":"chat.completion","#));
    let completion: Value = serde_json::from_slice(&bytes)?;
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "mock");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    let usage = &completion["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap_or(0)
                + usage["completion_tokens"].as_u64().unwrap_or(0)
        )
    );

    assert_eq!(mock.request_count(), 1);
    let last = mock.last_request().expect("recorded");
    assert_eq!(last.method, Method::POST);
    assert_eq!(last.uri.path(), "/v1/chat/completions");
    assert_eq!(last.headers["authorization"], "Bearer test-key");
    assert_eq!(last.json(), body);
    Ok(())
}

#[tokio::test]
async fn stream_sends_n_chunks_usage_and_done_as_separate_frames() -> TestResult {
    let (_, mock) = MockUpstream::builder().start("127.0.0.1:0").await?;
    let body = json!({
        "model": "mock",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "mock_chunks": 7,
    });
    let response = client(false).request(chat(&mock, &body)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text: String = frames(response.into_body())
        .await?
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 7 + 2, "{text}");
    assert_eq!(events[8], "data: [DONE]");
    for (i, event) in events[..7].iter().enumerate() {
        let chunk: Value = serde_json::from_str(event.strip_prefix("data: ").expect("data event"))?;
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["usage"], Value::Null);
        let finish = &chunk["choices"][0]["finish_reason"];
        assert_eq!(*finish, if i == 6 { json!("stop") } else { Value::Null });
    }
    let usage: Value = serde_json::from_str(events[7].trim_start_matches("data: "))?;
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 7);
    Ok(())
}

#[tokio::test]
async fn stream_defaults_to_50_chunks_without_usage_and_delays_between_chunks() -> TestResult {
    let (_, mock) = MockUpstream::builder()
        .chunk_delay(Duration::from_millis(2))
        .start("127.0.0.1:0")
        .await?;
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let started = Instant::now();
    let response = client(false).request(chat(&mock, &body)).await?;
    let frames = frames(response.into_body()).await?;
    assert!(started.elapsed() >= Duration::from_millis(2 * 49));
    // One frame per event: the client may coalesce reads, so count events, not frames.
    let text: String = frames
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let events: Vec<&str> = text.split_terminator("\n\n").collect();
    assert_eq!(events.len(), 50 + 1);
    assert!(!events[0].contains("\"usage\""));
    assert_eq!(events[50], "data: [DONE]");
    Ok(())
}

#[tokio::test]
async fn injected_status_for_the_first_request_only() -> TestResult {
    let (_, mock) = MockUpstream::builder()
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .fault_first(1)
        .start("127.0.0.1:0")
        .await?;
    let body = json!({"model": "mock", "messages": []});
    let client = client(false);
    let first = client.request(chat(&mock, &body)).await?;
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let error: Value = serde_json::from_slice(&first.into_body().collect().await?.to_bytes())?;
    assert_eq!(error["error"]["type"], "server_error");
    let second = client.request(chat(&mock, &body)).await?;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(mock.request_count(), 2);
    Ok(())
}

#[tokio::test]
async fn injected_close_sends_no_response() -> TestResult {
    let (_, mock) = MockUpstream::builder()
        .close_without_response()
        .start("127.0.0.1:0")
        .await?;
    let body = json!({"model": "mock", "messages": []});
    let result = client(false).request(chat(&mock, &body)).await;
    assert!(result.is_err(), "expected no response, got {result:?}");
    assert_eq!(mock.request_count(), 1);
    Ok(())
}

#[tokio::test]
async fn header_delay_holds_the_response_head() -> TestResult {
    let (_, mock) = MockUpstream::builder()
        .header_delay(Duration::from_millis(50))
        .start("127.0.0.1:0")
        .await?;
    let body = json!({"model": "mock", "messages": []});
    let started = Instant::now();
    let response = client(false).request(chat(&mock, &body)).await?;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(response.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn http2_and_models() -> TestResult {
    let (_, mock) = MockUpstream::builder()
        .model("gpt-mock")
        .start("127.0.0.1:0")
        .await?;
    let request = Request::get(format!("{}/models", mock.base_url())).body(Full::default())?;
    let response = client(true).request(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    let models: Value = serde_json::from_slice(&response.into_body().collect().await?.to_bytes())?;
    assert_eq!(models["data"][0]["id"], "gpt-mock");
    assert_eq!(
        mock.last_request().expect("recorded").version,
        Version::HTTP_2
    );
    mock.shutdown().await;
    Ok(())
}

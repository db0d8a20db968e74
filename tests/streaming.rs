//! Streaming through a real server and client: chunk shapes, the usage chunk, `[DONE]`.

mod support;

use bytes::Bytes;
use chatgate::validate::ValidateConfig;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// Reads an SSE response frame by frame and returns the `data:` payloads in order.
async fn events(
    client: &support::HttpClient,
    addr: std::net::SocketAddr,
    body: &str,
) -> (http::HeaderMap, Vec<String>) {
    let req = Request::post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let res = client.request(req).await.expect("response");
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    let mut body = res.into_body();
    let mut buf = String::new();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            buf.push_str(std::str::from_utf8(data).expect("utf-8"));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let payload = event
                    .strip_prefix("data: ")
                    .expect("every event is a data line")
                    .trim_end_matches('\n');
                assert!(!payload.contains('\n'), "one line per event: {event:?}");
                out.push(payload.to_owned());
            }
        }
    }
    assert!(
        buf.is_empty(),
        "trailing bytes after the last event: {buf:?}"
    );
    (headers, out)
}

fn chunks(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .take(events.len() - 1)
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect()
}

#[tokio::test]
async fn stream_with_usage_over_http1_and_http2() {
    let server = support::start(ValidateConfig::default()).await;
    for client in [support::client(), support::http2_client()] {
        let (headers, events) = events(
            &client,
            server.addr,
            r#"{"model":"echo","messages":[{"role":"user","content":"Hello there, friend"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .await;
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
        let chunks = chunks(&events);
        let id = chunks[0]["id"].clone();
        let created = chunks[0]["created"].clone();
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], id);
            assert_eq!(c["created"], created);
            assert_eq!(c["model"], "echo");
        }
        // First chunk: the role; every normal chunk carries "usage": null.
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let (usage_chunk, normal) = chunks.split_last().expect("chunks");
        for c in normal {
            assert!(c.get("usage").is_some_and(Value::is_null), "{c}");
        }
        let text: String = normal
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello there, friend");
        let last = &normal[normal.len() - 1];
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(last["choices"][0]["delta"], serde_json::json!({}));
        // One content chunk per completion token.
        let content_chunks = normal
            .iter()
            .filter(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            })
            .count() as u64;
        assert_eq!(usage_chunk["choices"], serde_json::json!([]));
        let usage = &usage_chunk["usage"];
        assert_eq!(usage["completion_tokens"].as_u64(), Some(content_chunks));
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(usage["prompt_tokens"].as_u64().expect("prompt") + content_chunks)
        );
    }
}

#[tokio::test]
async fn stream_without_usage_has_no_usage_field() {
    let server = support::start(ValidateConfig::default()).await;
    let (_, events) = events(
        &support::client(),
        server.addr,
        r#"{"model":"echo","messages":[{"role":"user","content":"one two"}],"stream":"yes","max_tokens":1}"#,
    )
    .await;
    let chunks = chunks(&events);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().expect("choices").is_empty())
    );
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&Value::from("length")]);
}

#[tokio::test]
async fn n_choices_stream_with_their_indices() {
    let server = support::start(ValidateConfig::default()).await;
    let (_, events) = events(
        &support::client(),
        server.addr,
        r#"{"model":"echo","messages":[{"role":"user","content":"a b"}],"n":2,"stream":true}"#,
    )
    .await;
    let chunks = chunks(&events);
    for index in 0..2 {
        let text: String = chunks
            .iter()
            .filter(|c| c["choices"][0]["index"] == index)
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "a b", "choice {index}");
    }
}

#[tokio::test]
async fn streamed_tool_call_fragments_concatenate() {
    let server = support::start(ValidateConfig::default()).await;
    let (_, events) = events(
        &support::client(),
        server.addr,
        r#"{"model":"echo","messages":[{"role":"user","content":"call get_weather {\"city\": \"Paris\"}"}],
            "tools":[{"type":"function","function":{"name":"get_weather"}}],"stream":true}"#,
    )
    .await;
    let chunks = chunks(&events);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert_eq!(calls[0][0]["type"], "function");
    assert!(calls[0][0]["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(calls.iter().all(|c| c[0]["index"] == 0));
    assert!(
        calls[1..]
            .iter()
            .all(|c| c[0].get("id").is_none() && c[0]["function"].get("name").is_none())
    );
    let args: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"city": "Paris"}"#);
    let finish = chunks
        .iter()
        .rev()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .expect("finish");
    assert_eq!(finish, "tool_calls");
}

//! Unit tests of the echo model.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::validate::{ValidateConfig, validate};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};

/// The model's answer to `body`, validated first (through [`respond`], so independent of how
/// the service receives the request).
async fn answer(body: Value) -> (StatusCode, Bytes) {
    let v = validate(Bytes::from(body.to_string()), &ValidateConfig::default()).expect("valid");
    let res = respond(v.request());
    let status = res.status();
    (
        status,
        res.into_body().collect().await.expect("body").to_bytes(),
    )
}

async fn json_answer(body: Value) -> Value {
    let (status, bytes) = answer(body).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&bytes).expect("json")
}

fn msgs(text: &str) -> Value {
    json!([{"role":"system","content":"be brief"},{"role":"user","content":text}])
}

#[tokio::test]
async fn echoes_the_last_user_message_n_times() {
    let r = json_answer(json!({"model":"echo","messages":msgs("hello world"),"n":3})).await;
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["model"], "echo");
    let choices = r["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["content"], "hello world");
        assert_eq!(c["finish_reason"], "stop");
    }
    // 2 tokens per choice; prompt: 3 + (3 + 1 + 2) + (3 + 1 + 2).
    assert_eq!(
        r["usage"],
        json!({"prompt_tokens":15,"completion_tokens":6,"total_tokens":21})
    );
}

#[tokio::test]
async fn max_tokens_and_stop() {
    let r = json_answer(json!({"model":"e","messages":msgs("one two three"),"max_tokens":2})).await;
    assert_eq!(r["choices"][0]["message"]["content"], "one two");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 2);
    let r =
        json_answer(json!({"model":"e","messages":msgs("one two. three"),"stop":[".","three"]}))
            .await;
    assert_eq!(r["choices"][0]["message"]["content"], "one two");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn tool_calls_by_message_and_by_choice() {
    let tools = json!([{"type":"function","function":{"name":"get_weather"}},{"type":"function","function":{"name":"other"}}]);
    let r = json_answer(
        json!({"model":"e","messages":msgs(r#"call get_weather {"city":"Oslo"}"#),"tools":tools}),
    )
    .await;
    let call = &r["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Oslo"}"#);
    assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");
    assert!(r["choices"][0]["message"]["content"].is_null());
    // tool_choice "none" wins over the message.
    let r = json_answer(
        json!({"model":"e","messages":msgs("call get_weather"),"tools":tools,"tool_choice":"none"}),
    )
    .await;
    assert_eq!(r["choices"][0]["message"]["content"], "call get_weather");
    // "required" calls the first function; a named choice calls that one.
    let r = json_answer(
        json!({"model":"e","messages":msgs("hi"),"tools":tools,"tool_choice":"required"}),
    )
    .await;
    assert_eq!(
        r["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    let r = json_answer(json!({"model":"e","messages":msgs("hi"),"tools":tools,
        "tool_choice":{"type":"function","function":{"name":"other"}}}))
    .await;
    assert_eq!(
        r["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "other"
    );
    // Unknown tool names in the message are just text.
    let r = json_answer(json!({"model":"e","messages":msgs("call nothing"),"tools":tools})).await;
    assert_eq!(r["choices"][0]["message"]["content"], "call nothing");
}

#[tokio::test]
async fn too_many_choices_is_a_400_not_a_huge_answer() {
    let (status, body) =
        answer(json!({"model":"e","messages":msgs("hi"),"n":1_000_000_000u64})).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["param"], "n");
    let (status, _) =
        answer(json!({"model":"e","messages":msgs("hi"),"stop":["a","b","c","d","e"]})).await;
    assert_eq!(status, 400);
    let r = json_answer(json!({"model":"e","messages":msgs("hi"),"n":128})).await;
    assert_eq!(r["choices"].as_array().expect("choices").len(), 128);
}

#[tokio::test]
async fn max_completion_tokens_is_a_limit_like_max_tokens() {
    let ask = |extra: Value| {
        let mut body = json!({"model":"e","messages":msgs("one two three four")});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        json_answer(body)
    };
    let r = ask(json!({"max_completion_tokens":2})).await;
    assert_eq!(r["choices"][0]["message"]["content"], "one two");
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 2);
    // Both set: the smaller wins, whichever it is.
    let r = ask(json!({"max_completion_tokens":3,"max_tokens":1})).await;
    assert_eq!(r["choices"][0]["message"]["content"], "one");
    let r = ask(json!({"max_completion_tokens":1,"max_tokens":3})).await;
    assert_eq!(r["choices"][0]["message"]["content"], "one");
    // null is no limit; a limit above the text's length changes nothing.
    let r = ask(json!({"max_completion_tokens":null})).await;
    assert_eq!(r["choices"][0]["message"]["content"], "one two three four");
    let r = ask(json!({"max_completion_tokens":100})).await;
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn max_completion_tokens_limits_the_stream_too() {
    let (status, body) = answer(json!({"model":"e","messages":msgs("one two three"),
        "stream":true,"max_completion_tokens":1}))
    .await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    assert!(text.contains(r#""content":"one""#), "{text}");
    assert!(!text.contains("two"), "{text}");
    assert!(text.contains(r#""finish_reason":"length""#), "{text}");
}

#[tokio::test]
async fn an_invalid_max_completion_tokens_is_a_400_on_it() {
    for bad in [json!(-1), json!("2"), json!(1.5)] {
        let (status, body) =
            answer(json!({"model":"e","messages":msgs("hi"),"max_completion_tokens":bad})).await;
        assert_eq!(status, 400, "{bad}");
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["param"], "max_completion_tokens");
    }
}

fn weather_tools() -> Value {
    json!([{"type":"function","function":{"name":"get_weather"}}])
}

/// The conversation after the model called `get_weather`, with the tool's `results`.
fn after_call(results: &[&str]) -> Value {
    let mut messages = vec![
        json!({"role":"user","content":"call get_weather {\"city\":\"Oslo\"}"}),
        json!({"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function",
            "function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]}),
    ];
    for (i, r) in results.iter().enumerate() {
        messages.push(json!({"role":"tool","tool_call_id":format!("call_{i}"),"content":r}));
    }
    Value::Array(messages)
}

#[tokio::test]
async fn after_a_tool_result_it_answers_with_text() {
    let r = json_answer(json!({"model":"e","messages":after_call(&["12 degrees"]),
        "tools":weather_tools()}))
    .await;
    let choice = &r["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "The tool returned: 12 degrees"
    );
    assert!(choice["message"]["tool_calls"].is_null());
    assert_eq!(choice["finish_reason"], "stop");
    // Even when a tool call is forced: a tool result always ends the turn.
    for choice in [
        json!("required"),
        json!({"type":"function","function":{"name":"get_weather"}}),
    ] {
        let r = json_answer(json!({"model":"e","messages":after_call(&["12 degrees"]),
            "tools":weather_tools(),"tool_choice":choice}))
        .await;
        assert_eq!(
            r["choices"][0]["message"]["content"],
            "The tool returned: 12 degrees"
        );
    }
    // Parallel results are all reported, in order; the limits apply to the text.
    let r = json_answer(json!({"model":"e","messages":after_call(&["a", "b"]),
        "tools":weather_tools()}))
    .await;
    assert_eq!(
        r["choices"][0]["message"]["content"],
        "The tool returned: a\nb"
    );
    let r = json_answer(json!({"model":"e","messages":after_call(&["12 degrees"]),
        "max_completion_tokens":2}))
    .await;
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn an_agent_loop_against_the_echo_model_terminates() {
    let mut messages = msgs(r#"call get_weather {"city":"Oslo"}"#);
    for round in 0..4 {
        let r = json_answer(json!({"model":"e","messages":messages,"tools":weather_tools()})).await;
        let message = r["choices"][0]["message"].clone();
        let list = messages.as_array_mut().expect("array");
        list.push(message.clone());
        let Some(calls) = message["tool_calls"].as_array() else {
            assert_eq!(round, 1, "one call, then the answer");
            assert_eq!(message["content"], r#"The tool returned: {"temp":12}"#);
            return;
        };
        for call in calls {
            list.push(json!({"role":"tool","tool_call_id":call["id"],"content":r#"{"temp":12}"#}));
        }
    }
    panic!("the loop did not end");
}

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

use super::*;
use crate::EchoModel;
use crate::contract::ChatCompletionRequest;
use crate::route::ModelRouter;
use crate::validate::{ValidateLayer, ValidatedRequest};

fn two_ints() -> Value {
    json!({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"],"additionalProperties":false})
}

/// `add`, `mul`, `fail`, `slow`, `table`, counting calls of each.
fn catalog(calls: Arc<AtomicUsize>) -> HandlerCatalog {
    let int = |v: &Value, k: &str| v[k].as_i64().unwrap_or(0);
    let c1 = Arc::clone(&calls);
    let c2 = Arc::clone(&calls);
    HandlerCatalog::new()
        .register("main.math.add", "Adds.", two_ints(), move |a: Value| {
            c1.fetch_add(1, Ordering::SeqCst);
            async move { Ok((int(&a, "a") + int(&a, "b")).to_string()) }
        })
        .register(
            "main.math.mul",
            "Multiplies.",
            two_ints(),
            move |a: Value| {
                c2.fetch_add(1, Ordering::SeqCst);
                async move { Ok((int(&a, "a") * int(&a, "b")).to_string()) }
            },
        )
        .register("main.math.fail", "", json!({"properties":{}}), |_| async {
            Err("division by zero".to_owned())
        })
        .register("main.math.slow", "", json!({"properties":{}}), |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok("late".to_owned())
        })
        .register("main.math.table", "", json!({"properties":{}}), |_| async {
            Ok(csv(
                &["n".to_owned(), "name".to_owned()],
                &[
                    vec![Some("1".into()), Some("one, uno".into())],
                    vec![Some("2".into()), None],
                ],
            ))
        })
}

fn completion(message: Value, finish: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "fake",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        "system_fingerprint": "fp"
    });
    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    res
}

fn calls(list: &[(&str, &str, &str)]) -> Response<Full<Bytes>> {
    let calls: Vec<Value> = list
        .iter()
        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    completion(
        json!({"role": "assistant", "content": null, "tool_calls": calls}),
        "tool_calls",
    )
}

fn text(t: &str) -> Response<Full<Bytes>> {
    completion(json!({"role": "assistant", "content": t}), "stop")
}

type Seen = Arc<Mutex<Vec<ChatCompletionRequest>>>;

/// A model answering round `k` (0-based) with `script(k)`; records every request it gets
/// (typed, after checking that the bytes say the same).
fn fake<F>(
    script: F,
) -> (
    impl tower::Service<
        Request<ValidatedRequest>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    Seen,
)
where
    F: Fn(usize) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let svc = tower::service_fn(move |req: Request<ValidatedRequest>| {
        let typed: ChatCompletionRequest = serde_json::from_slice(&req.body().to_bytes()).unwrap();
        assert_eq!(&typed, req.body().request());
        let mut seen = s.lock().unwrap();
        let k = seen.len();
        seen.push(typed);
        let res = script(k);
        async move { Ok::<_, Infallible>(res) }
    });
    (svc, seen)
}

fn body(messages: Value, tools: Value, extra: Value) -> Request<Full<Bytes>> {
    let mut b = json!({"model": "m", "messages": messages, "tools": tools});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(b.to_string())))
        .unwrap()
}

fn uc(names: &[&str]) -> Value {
    names
        .iter()
        .map(|n| json!({"type": "uc_function", "uc_function": {"name": n}}))
        .collect()
}

fn user(t: &str) -> Value {
    json!([{"role": "user", "content": t}])
}

type Res = Response<crate::body::ResponseBody<crate::route::BoxBody>>;

async fn json_of<B>(res: Response<B>) -> Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

async fn send<S>(svc: S, req: Request<Full<Bytes>>) -> Res
where
    S: tower::Service<
            Request<ValidatedRequest>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    send_with(ServerToolsLayer::new(catalog(Arc::default())), svc, req).await
}

async fn send_with<S>(layer: ServerToolsLayer, svc: S, req: Request<Full<Bytes>>) -> Res
where
    S: tower::Service<
            Request<ValidatedRequest>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(layer)
        .service(svc)
        .oneshot(req)
        .await
        .unwrap()
}

fn tool_messages(req: &ChatCompletionRequest) -> Vec<(String, String)> {
    req.messages
        .iter()
        .filter(|m| m.role == "tool")
        .map(|m| (m.tool_call_id.clone().unwrap_or_default(), m.text()))
        .collect()
}

#[tokio::test]
async fn one_round_with_the_echo_model() {
    let router = ModelRouter::builder()
        .service("echo", EchoModel::new())
        .build();
    let svc = ServiceBuilder::new()
        .layer(ValidateLayer::new())
        .layer(ServerToolsLayer::new(catalog(Arc::default())))
        .service(router);
    let mut req = body(
        user(r#"call main__math__add {"a":2,"b":40}"#),
        uc(&["main.math.add"]),
        json!({}),
    );
    *req.body_mut() = Full::new(Bytes::from(
        String::from_utf8(
            req.body()
                .clone()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap()
        .replace(r#""model":"m""#, r#""model":"echo""#),
    ));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.extensions().get::<ServerToolRounds>(),
        Some(&ServerToolRounds(2))
    );
    assert!(
        res.extensions()
            .get::<crate::route::RoutedModel>()
            .is_some()
    );
    let v = json_of(res).await;
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("<uc_function_call>\n{\n  \"id\": \"call_echo_"),
        "{content}"
    );
    assert!(content.contains("\"name\": \"main.math.add\""), "{content}");
    assert!(
        content.ends_with("\"content\": \"42\"\n}\n</uc_function_result>\n\nThe tool returned: 42"),
        "{content}"
    );
}

#[tokio::test]
async fn several_rounds_sum_usage_and_keep_the_conversation() {
    let (model, seen) = fake(|k| match k {
        0 => calls(&[("c1", "main__math__add", r#"{"a":1,"b":2}"#)]),
        1 => calls(&[("c2", "main__math__mul", r#"{"a":3,"b":4}"#)]),
        _ => text("done"),
    });
    let res = send(
        model,
        body(
            user("go"),
            uc(&["main.math.add", "main.math.mul"]),
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    // The client asked for a stream: checked in `streaming_final_answer`; here only rounds.
    assert_eq!(
        res.extensions().get::<ServerToolRounds>(),
        Some(&ServerToolRounds(3))
    );
    drop(res);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for r in seen.iter() {
        assert_eq!(r.stream, Some(false));
        assert!(r.stream_options.is_none());
        let tools = r.tools.as_ref().unwrap();
        assert_eq!(tools.len(), 2);
        let f = tools[0].function.as_ref().unwrap();
        assert_eq!(f.name, "main__math__add");
        assert_eq!(f.description.as_deref(), Some("Adds."));
        assert_eq!(f.parameters.as_ref().unwrap().properties.len(), 2);
        assert!(tools[0].uc_function.is_none());
    }
    assert_eq!(seen[2].messages.len(), 5);
    assert_eq!(seen[2].messages[1].tool_calls.as_ref().unwrap()[0].id, "c1");
    assert_eq!(
        tool_messages(&seen[2]),
        [
            ("c1".to_owned(), "3".to_owned()),
            ("c2".to_owned(), "12".to_owned())
        ]
    );
}

#[tokio::test]
async fn json_answer_has_blocks_text_and_summed_usage() {
    let (model, _) = fake(|k| match k {
        0 => calls(&[("c1", "main__math__add", r#"{"a":1,"b":2}"#)]),
        _ => text("1 + 2 = 3"),
    });
    let res = send(model, body(user("go"), uc(&["main.math.add"]), json!({}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let v = json_of(res).await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "<uc_function_call>\n{\n  \"id\": \"c1\",\n  \"name\": \"main.math.add\",\n  \"arguments\": \"{\\\"a\\\":1,\\\"b\\\":2}\"\n}\n</uc_function_call>\n\n<uc_function_result>\n{\n  \"tool_call_id\": \"c1\",\n  \"content\": \"3\"\n}\n</uc_function_result>\n\n1 + 2 = 3"
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30})
    );
    assert_eq!(v["system_fingerprint"], "fp");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn round_limit_is_a_502() {
    let ran = Arc::new(AtomicUsize::new(0));
    let (model, seen) =
        fake(|k| calls(&[(&format!("c{k}"), "main__math__add", r#"{"a":1,"b":1}"#)]));
    let res = send_with(
        ServerToolsLayer::new(catalog(Arc::clone(&ran))).max_rounds(3),
        model,
        body(user("go"), uc(&["main.math.add"]), json!({})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        res.extensions().get::<ServerToolRounds>(),
        Some(&ServerToolRounds(3))
    );
    let v = json_of(res).await;
    assert_eq!(v["error"]["code"], "server_tools_round_limit");
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(seen.lock().unwrap().len(), 3);
    // The last round's calls are not run: nobody would see their results.
    assert_eq!(ran.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn two_functions_in_one_answer_each_run_their_own() {
    let (model, seen) = fake(|k| match k {
        0 => calls(&[
            ("c1", "main__math__add", r#"{"a":6,"b":7}"#),
            ("c2", "main__math__mul", r#"{"a":6,"b":7}"#),
        ]),
        _ => text("ok"),
    });
    let res = send(
        model,
        body(
            user("go"),
            uc(&["main.math.add", "main.math.mul"]),
            json!({}),
        ),
    )
    .await;
    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(
        tool_messages(&seen[1]),
        [
            ("c1".to_owned(), "13".to_owned()),
            ("c2".to_owned(), "42".to_owned())
        ]
    );
    assert_eq!(seen[1].messages[1].tool_calls.as_ref().unwrap().len(), 2);
}

#[tokio::test]
async fn mixed_catalog_and_client_tools() {
    let (model, seen) = fake(|_| {
        calls(&[
            ("c1", "main__math__add", r#"{"a":1,"b":2}"#),
            ("c2", "get_weather", r#"{"city":"Oslo"}"#),
        ])
    });
    let mut tools = uc(&["main.math.add"]);
    tools.as_array_mut().unwrap().push(json!({"type":"function","function":{"name":"get_weather","parameters":{"properties":{"city":{"type":"string"}}}}}));
    let res = send(model, body(user("go"), tools, json!({}))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.extensions().get::<ServerToolRounds>(),
        Some(&ServerToolRounds(1))
    );
    let v = json_of(res).await;
    let m = &v["choices"][0]["message"];
    assert_eq!(m["tool_calls"].as_array().unwrap().len(), 1);
    assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let content = m["content"].as_str().unwrap();
    assert!(
        content.starts_with("<uc_function_call>") && content.ends_with("</uc_function_result>"),
        "{content}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The client's tool is passed on as it is.
    let sent = &seen.lock().unwrap()[0];
    assert_eq!(
        sent.tools.as_ref().unwrap()[1]
            .function
            .as_ref()
            .unwrap()
            .name,
        "get_weather"
    );
}

async fn one_call_result(name: &str, args: &str, layer: ServerToolsLayer) -> String {
    let name = name.to_owned();
    let args = args.to_owned();
    let (model, seen) = fake(move |k| match k {
        0 => calls(&[("c1", &name, &args)]),
        _ => text("ok"),
    });
    let res = send_with(
        layer,
        model,
        body(
            user("go"),
            uc(&[
                "main.math.add",
                "main.math.fail",
                "main.math.slow",
                "main.math.table",
            ]),
            json!({}),
        ),
    )
    .await;
    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    tool_messages(&seen[1]).remove(0).1
}

#[tokio::test]
async fn erroring_function_is_told_to_the_model() {
    let layer = ServerToolsLayer::new(catalog(Arc::default()));
    assert_eq!(
        one_call_result("main__math__fail", "{}", layer).await,
        "Error: division by zero"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_function_hits_its_timeout() {
    let layer = ServerToolsLayer::new(catalog(Arc::default())).call_timeout(Duration::from_secs(2));
    assert_eq!(
        one_call_result("main__math__slow", "", layer).await,
        "Error: the function did not finish within 2s."
    );
}

#[tokio::test]
async fn table_results_are_csv() {
    let layer = ServerToolsLayer::new(catalog(Arc::default()));
    assert_eq!(
        one_call_result("main__math__table", "{}", layer).await,
        "n,name\n1,\"one, uno\"\n2,\n"
    );
}

#[tokio::test]
async fn arguments_that_do_not_fit_the_schema() {
    let ran = Arc::new(AtomicUsize::new(0));
    let layer = || ServerToolsLayer::new(catalog(Arc::clone(&ran)));
    assert_eq!(
        one_call_result("main__math__add", r#"{"a":"1","b":2}"#, layer()).await,
        "Error: the parameter `a` must be integer, not a string."
    );
    assert_eq!(
        one_call_result("main__math__add", r#"{"a":1}"#, layer()).await,
        "Error: the required parameter `b` is missing."
    );
    assert_eq!(
        one_call_result("main__math__add", r#"{"a":1,"b":2,"c":3}"#, layer()).await,
        "Error: there is no parameter `c`."
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn invalid_json_arguments() {
    let layer = ServerToolsLayer::new(catalog(Arc::default()));
    let r = one_call_result("main__math__add", r#"{"a":1,"#, layer).await;
    assert!(
        r.starts_with("Error: the arguments are not valid JSON ("),
        "{r}"
    );
}

#[tokio::test]
async fn unknown_function_is_a_400() {
    let (model, seen) = fake(|_| text("never"));
    let res = send(
        model,
        body(
            user("go"),
            uc(&["main.math.add", "main.math.nope"]),
            json!({}),
        ),
    )
    .await;
    assert_eq!(res.status(), 400);
    let v = json_of(res).await;
    assert_eq!(v["error"]["param"], "tools[1].uc_function.name");
    assert_eq!(v["error"]["code"], "function_not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn model_errors_pass_through() {
    let (model, _) = fake(|k| match k {
        0 => calls(&[("c1", "main__math__add", r#"{"a":1,"b":2}"#)]),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                br#"{"error":{"message":"slow down"}}"#,
            )));
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r
        }
    });
    let res = send(model, body(user("go"), uc(&["main.math.add"]), json!({}))).await;
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.extensions().get::<ServerToolRounds>(),
        Some(&ServerToolRounds(2))
    );
    assert_eq!(json_of(res).await["error"]["message"], "slow down");
}

#[tokio::test]
async fn without_catalog_tools_the_request_is_untouched() {
    let (model, seen) = fake(|_| text("hi"));
    let raw = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{}}}}],"stream":true,"temperature":0,"n":1}"#;
    let got: Arc<Mutex<Option<Bytes>>> = Arc::default();
    let g = Arc::clone(&got);
    let inner = tower::service_fn(move |req: Request<ValidatedRequest>| {
        *g.lock().unwrap() = Some(req.body().to_bytes());
        async { Ok::<_, Infallible>(text("hi")) }
    });
    let req = Request::post("/")
        .body(Full::new(Bytes::from_static(raw.as_bytes())))
        .unwrap();
    let res = send(inner, req).await;
    assert_eq!(res.status(), 200);
    assert!(res.extensions().get::<ServerToolRounds>().is_none());
    assert_eq!(got.lock().unwrap().as_deref(), Some(raw.as_bytes()));
    drop((model, seen));
}

#[tokio::test]
async fn streaming_final_answer() {
    let (model, _) = fake(|k| match k {
        0 => calls(&[("c1", "main__math__add", r#"{"a":1,"b":2}"#)]),
        _ => completion(
            json!({"role":"assistant","content":"three","tool_calls":[{"id":"c9","type":"function","function":{"name":"get_weather","arguments":"{}"}}]}),
            "tool_calls",
        ),
    });
    let res = send(
        model,
        body(
            user("go"),
            uc(&["main.math.add"]),
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let raw = res.into_body().collect().await.unwrap().to_bytes();
    let text = std::str::from_utf8(&raw).unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks.len(), 5, "{text}");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "chatcmpl-1");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role":"assistant","content":""})
    );
    assert_eq!(chunks[0]["usage"], Value::Null);
    let content = chunks[1]["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap();
    assert!(content.starts_with("<uc_function_call>") && content.ends_with("\n\nthree"));
    assert_eq!(
        chunks[2]["choices"][0]["delta"]["tool_calls"],
        json!([{"index":0,"id":"c9","type":"function","function":{"name":"get_weather","arguments":"{}"}}])
    );
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[3]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["total_tokens"], 30);
}

#[tokio::test]
async fn the_prefix_is_parsed_back_on_the_next_turn() {
    // Turn 1: the gateway runs `add`, the model answers.
    let (model, _) = fake(|k| match k {
        0 => calls(&[("c1", "main__math__add", r#"{"a":1,"b":2}"#)]),
        _ => text("It is 3."),
    });
    let v = json_of(send(model, body(user("1+2?"), uc(&["main.math.add"]), json!({}))).await).await;
    let answer = v["choices"][0]["message"]["content"].clone();
    // Turn 2: the client sends the conversation back.
    let (model, seen) = fake(|_| text("You're welcome."));
    let messages = json!([
        {"role": "user", "content": "1+2?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "thanks"}
    ]);
    let res = send(model, body(messages, uc(&["main.math.add"]), json!({}))).await;
    assert_eq!(res.status(), 200);
    let seen = seen.lock().unwrap();
    let m = &seen[0].messages;
    assert_eq!(m.len(), 5, "{m:?}");
    assert_eq!(m[1].role, "assistant");
    assert!(m[1].content.is_none());
    let call = &m[1].tool_calls.as_ref().unwrap()[0];
    assert_eq!(
        (call.id.as_str(), call.function.name.as_deref()),
        ("c1", Some("main__math__add"))
    );
    assert_eq!(call.function.arguments.as_deref(), Some(r#"{"a":1,"b":2}"#));
    assert_eq!(
        (
            m[2].role.as_str(),
            m[2].tool_call_id.as_deref(),
            m[2].text().as_str()
        ),
        ("tool", Some("c1"), "3")
    );
    assert_eq!(
        (m[3].role.as_str(), m[3].text().as_str()),
        ("assistant", "It is 3.")
    );
    assert_eq!(m[4].text(), "thanks");
}

#[tokio::test]
async fn parsed_back_with_the_clients_own_tool_calls() {
    // Turn 1 ended with a client tool call next to a catalog call.
    let (model, _) = fake(|_| {
        calls(&[
            ("c1", "main__math__add", r#"{"a":1,"b":2}"#),
            ("c2", "get_weather", r#"{}"#),
        ])
    });
    let mut tools = uc(&["main.math.add"]);
    tools.as_array_mut().unwrap().push(
        json!({"type":"function","function":{"name":"get_weather","parameters":{"properties":{}}}}),
    );
    let v = json_of(send(model, body(user("go"), tools.clone(), json!({}))).await).await;
    let assistant = v["choices"][0]["message"].clone();
    // Turn 2: the client answers its own call; no catalog tool this time (no rounds needed).
    let (model, seen) = fake(|_| text("fine"));
    let messages = json!([
        {"role": "user", "content": "go"},
        assistant,
        {"role": "tool", "tool_call_id": "c2", "content": "sunny"}
    ]);
    let res = send(model, body(messages, json!([]), json!({}))).await;
    assert_eq!(res.status(), 200);
    let m = &seen.lock().unwrap()[0].messages;
    let ids: Vec<&str> = m[1]
        .tool_calls
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert!(m[1].content.is_none());
    assert_eq!(
        (m[2].tool_call_id.as_deref(), m[2].text().as_str()),
        (Some("c1"), "3")
    );
    assert_eq!(
        (m[3].tool_call_id.as_deref(), m[3].text().as_str()),
        (Some("c2"), "sunny")
    );
    assert_eq!(m.len(), 4);
}

#[tokio::test]
async fn n_above_one_is_a_400() {
    let (model, _) = fake(|_| text("x"));
    let res = send(
        model,
        body(user("go"), uc(&["main.math.add"]), json!({"n": 2})),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(json_of(res).await["error"]["param"], "n");
}

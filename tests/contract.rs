//! Runs the contract vectors (`tests/data/contract_vectors.jsonl`; format and meaning in
//! `docs/contract.md`, "Test vectors") against a real gateway on loopback through a real HTTP
//! client: every `V` vector, and S01–S04 (strict mode), S06 (unknown model) and S07 (body over
//! the limit). S05 (no key: 401) runs in `tests/auth.rs`; S08 (429) in `tests/rate_limit.rs`.

mod support;

use bytes::Bytes;
use chatgate::validate::ValidateConfig;
use http::Request;
use http_body_util::Full;
use serde_json::Value;

const VECTORS: &str = include_str!("data/contract_vectors.jsonl");

fn vectors() -> Vec<Value> {
    VECTORS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("vector is JSON"))
        .collect()
}

fn request(addr: std::net::SocketAddr, v: &Value) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("http://{addr}/v1/chat/completions"));
    let body = if let Some(raw) = v.get("raw") {
        match v.get("content_type") {
            Some(Value::Null) => {}
            Some(Value::String(ct)) => req = req.header("content-type", ct.as_str()),
            _ => req = req.header("content-type", "application/json"),
        }
        Bytes::from(raw.as_str().expect("raw is a string").to_owned())
    } else {
        req = req.header("content-type", "application/json");
        Bytes::from(serde_json::to_vec(&v["body"]).expect("body"))
    };
    req.body(Full::new(body)).expect("request")
}

/// Compares a response with a vector's expectation; returns a description of the mismatch.
fn check(v: &Value, status: u16, headers: &http::HeaderMap, body: &[u8]) -> Result<(), String> {
    let want = v["status"].as_u64().expect("status") as u16;
    if status != want {
        return Err(format!(
            "status {status} != {want}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    if headers
        .get("content-type")
        .is_some_and(|c| c == "text/event-stream")
    {
        // A stream: JSON chunks, then exactly one [DONE] at the end.
        let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        let (last, chunks) = events.split_last().ok_or("empty stream")?;
        if *last != "data: [DONE]" {
            return Err(format!("stream does not end with [DONE]: {last:?}"));
        }
        for c in chunks {
            let json: Value = serde_json::from_str(c.strip_prefix("data: ").ok_or("no data:")?)
                .map_err(|e| e.to_string())?;
            if json["object"] != "chat.completion.chunk" {
                return Err(format!("not a chunk: {json}"));
            }
        }
        return Ok(());
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("body not JSON: {e}"))?;
    if let Some(errors) = v.get("errors") {
        let detail = json["detail"].as_array().ok_or("no detail list")?;
        let got: Vec<Value> = detail
            .iter()
            .map(|d| Value::Array(vec![d["loc"].clone(), d["type"].clone()]))
            .collect();
        if &Value::Array(got.clone()) != errors {
            return Err(format!("detail {got:?} != {errors:?}"));
        }
        for d in detail {
            let msg = d["msg"].as_str().ok_or("msg missing")?;
            if msg.is_empty() {
                return Err("empty msg".into());
            }
        }
    }
    if let Some(error) = v.get("error") {
        let got = &json["error"];
        for key in ["message", "type", "param", "code"] {
            if got.get(key).is_none() {
                return Err(format!("envelope lacks {key}: {json}"));
            }
        }
        for (k, want) in error.as_object().expect("error object") {
            if &got[k] != want {
                return Err(format!("error.{k} = {} != {want}", got[k]));
            }
        }
    }
    if status == 200 && json["object"] != "chat.completion" {
        return Err(format!("not a chat.completion: {json}"));
    }
    Ok(())
}

#[tokio::test]
async fn faithful_vectors() {
    let server = support::start(ValidateConfig::default()).await;
    let client = support::client();
    let mut failures = Vec::new();
    let mut ran = 0;
    for v in vectors() {
        let id = v["id"].as_str().expect("id").to_owned();
        let runs = id.starts_with('V') || id == "S06";
        if !runs {
            continue;
        }
        ran += 1;
        let (status, headers, body) = support::send(&client, request(server.addr, &v)).await;
        if let Err(why) = check(&v, status.as_u16(), &headers, &body) {
            failures.push(format!("{id}: {why}"));
        }
    }
    assert!(ran >= 66, "ran only {ran} vectors");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn strict_vectors() {
    let server = support::start(ValidateConfig {
        strict: true,
        ..ValidateConfig::default()
    })
    .await;
    let client = support::client();
    let mut ran = 0;
    for v in vectors() {
        if v.get("mode").and_then(Value::as_str) != Some("strict") {
            continue;
        }
        ran += 1;
        let (status, headers, body) = support::send(&client, request(server.addr, &v)).await;
        if let Err(why) = check(&v, status.as_u16(), &headers, &body) {
            panic!("{}: {why}", v["id"]);
        }
    }
    assert_eq!(ran, 4);
}

#[tokio::test]
async fn oversized_body_is_413_by_declared_length_and_while_reading() {
    let server = support::start(ValidateConfig {
        max_body: 1024,
        ..ValidateConfig::default()
    })
    .await;
    let client = support::client();
    let s07 = vectors()
        .into_iter()
        .find(|v| v["id"] == "S07")
        .expect("S07");
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    // Content-Length known up front.
    let (status, headers, body) = support::post_json(&client, server.addr, big.clone()).await;
    check(&s07, status.as_u16(), &headers, &body).expect("declared length");

    // Chunked: the limit is found while reading.
    let (tx, body) = support::ChannelBody::new();
    let raw_client = support::channel_client();
    let req = Request::post(format!("http://{}/v1/chat/completions", server.addr))
        .header("content-type", "application/json")
        .body(body)
        .expect("request");
    let sender = tokio::spawn(async move {
        for chunk in big.as_bytes().chunks(512) {
            if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                break;
            }
        }
    });
    let res = raw_client.request(req).await.expect("response");
    assert_eq!(res.status(), 413);
    let _ = sender.await;
}

#[tokio::test]
async fn a_body_with_a_utf8_bom_is_accepted() {
    let server = support::start(ValidateConfig::default()).await;
    let client = support::client();
    let body = "\u{feff}{\"model\":\"echo\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    let (status, _, body) = support::post_json(&client, server.addr, body.to_owned()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn wrong_method_and_both_paths() {
    let server = support::start(ValidateConfig::default()).await;
    let client = support::client();
    let get = Request::get(format!("http://{}/v1/chat/completions", server.addr))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _, body) = support::send(&client, get).await;
    assert_eq!(status, 405);
    assert_eq!(&body[..], br#"{"detail":"Method Not Allowed"}"#);

    let ok = Request::post(format!(
        "http://{}/api/v1/compatibility/openai/v1/chat/completions",
        server.addr
    ))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(
        br#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#,
    )))
    .expect("request");
    let (status, _, _) = support::send(&client, ok).await;
    assert_eq!(status, 200);
}

/// Mutated vector bodies never panic the validator: every outcome is a typed request or a 422
/// body whose entries all have a `loc` starting with `"body"`, a `type` and a `msg`.
#[test]
fn mutated_bodies_get_a_clear_answer() {
    use chatgate::validate::{check_strict, validate};
    let seeds: Vec<Vec<u8>> = vectors()
        .iter()
        .filter_map(|v| v.get("body").map(|b| serde_json::to_vec(b).expect("json")))
        .collect();
    let alphabet = b"{}[]\",:0123456789-.etrufalsn \\/uabc\x01\xc3\xa9";
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let config = ValidateConfig::default();
    let (mut ok, mut rejected) = (0, 0);
    for _ in 0..30_000 {
        let mut doc = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..(1 + next() % 4) {
            let at = (next() % (doc.len() as u64 + 1)) as usize;
            let c = alphabet[(next() % alphabet.len() as u64) as usize];
            match next() % 3 {
                0 if at < doc.len() => doc[at] = c,
                1 if at < doc.len() => {
                    doc.remove(at);
                }
                _ => doc.insert(at, c),
            }
        }
        match validate(Bytes::from(doc), &config) {
            Ok(v) => {
                ok += 1;
                let _ = check_strict(v.request());
                // The forwarded body is still JSON.
                serde_json::from_slice::<Value>(&v.to_bytes()).expect("forwarded body is JSON");
            }
            Err(e) => {
                rejected += 1;
                let body: Value = serde_json::from_slice(&e.to_bytes()).expect("422 body is JSON");
                let detail = body["detail"].as_array().expect("detail");
                assert!(!detail.is_empty());
                for d in detail {
                    assert_eq!(d["loc"][0], "body", "{d}");
                    assert!(d["type"].is_string() && d["msg"].is_string(), "{d}");
                }
            }
        }
    }
    assert!(
        ok > 1_000 && rejected > 1_000,
        "ok {ok}, rejected {rejected}"
    );
}

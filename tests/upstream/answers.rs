//! Non-streamed answers: read whole and checked to be a chat completion before the head goes on,
//! with or without usage accounting.

use super::*;
use http::{Response, header};

/// What a non-streamed request gets through a gateway in front of one upstream.
async fn ask(upstream: UpstreamConfig) -> Response<hyper::body::Incoming> {
    let gw = gateway(router("m", RouteConfig::new().replica(upstream))).await;
    post(&client(), gw, chat("m", false), &[]).await
}

/// A mock answering every request 200 with `body` (as JSON), in the frames given.
async fn answering(frames: Vec<&'static [u8]>) -> Mock {
    Mock::start(move |_| {
        let frames = frames.clone();
        async move {
            let (tx, _dropped, body) = MockBody::channel();
            tokio::spawn(async move {
                for f in frames {
                    if tx.send(Ok(Bytes::from_static(f))).await.is_err() {
                        return;
                    }
                }
            });
            let mut res = Response::new(body);
            res.headers_mut()
                .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            res
        }
    })
    .await
}

#[tokio::test]
async fn a_200_that_is_not_a_completion_is_a_502() {
    bounded(async {
        for frames in [
            vec![&b"{not json"[..]],
            vec![
                &b"{\"object\":\"chat.completion\""[..],
                &b",\"usage\":null}"[..],
            ],
            vec![&b"<html>busy</html>"[..]],
            vec![&b"{\"choices\":[]} trailing"[..]],
        ] {
            let mock = answering(frames.clone()).await;
            let res = ask(UpstreamConfig::new(mock.url())).await;
            assert_eq!(res.status(), 502, "{frames:?}");
            let body = text(res).await;
            assert_eq!(error_code(&body), "bad_gateway", "{body}");
            assert!(body.contains("not a chat completion"), "{body}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_answer_is_passed_on_byte_for_byte() {
    bounded(async {
        let answer: &'static [u8] = b"{ \"id\" : \"x\", \"model\":\"caf\\u00e9\",\n\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hi \\\"there\\\"\"},\"finish_reason\":\"stop\"}], \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n";
        let (head, tail) = answer.split_at(40);
        let mock = answering(vec![head, tail]).await;
        let res = ask(UpstreamConfig::new(mock.url())).await;
        assert_eq!(res.status(), 200);
        if let Some(len) = res.headers().get(header::CONTENT_LENGTH) {
            assert_eq!(len.to_str().unwrap(), answer.len().to_string());
        }
        assert_eq!(text(res).await.as_bytes(), answer);
    })
    .await;
}

#[tokio::test]
async fn a_completion_with_odd_usage_passes() {
    bounded(async {
        // A completion all the same: the client gets it; only its usage cannot be read.
        let answer: &'static [u8] =
            br#"{"model":"m","choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1.0,"completion_tokens":2}}"#;
        let mock = answering(vec![answer]).await;
        let res = ask(UpstreamConfig::new(mock.url())).await;
        assert_eq!(res.status(), 200);
        assert_eq!(text(res).await.as_bytes(), answer);
    })
    .await;
}

#[tokio::test]
async fn an_answer_longer_than_the_bound_passes_unchecked() {
    bounded(async {
        let frames: Vec<&'static [u8]> = vec![&[b'a'; 40], &[b'b'; 40], &[b'c'; 40]];
        let mock = answering(frames).await;
        let res = ask(UpstreamConfig::new(mock.url()).max_answer_bytes(64)).await;
        assert_eq!(res.status(), 200);
        let body = text(res).await;
        assert_eq!(
            body,
            format!("{}{}{}", "a".repeat(40), "b".repeat(40), "c".repeat(40))
        );

        // 0 turns the check off.
        let mock = answering(vec![&b"{not json"[..]]).await;
        let res = ask(UpstreamConfig::new(mock.url()).max_answer_bytes(0)).await;
        assert_eq!(res.status(), 200);
        assert_eq!(text(res).await, "{not json");
    })
    .await;
}

#[tokio::test]
async fn an_answer_that_stops_half_way_is_a_504() {
    bounded(async {
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(());
        let mock = Mock::start(move |_| {
            let mut hold = hold_rx.clone();
            async move {
                let (tx, _dropped, body) = MockBody::channel();
                tokio::spawn(async move {
                    tx.send(Ok(Bytes::from_static(b"{\"choices\":[")))
                        .await
                        .ok();
                    let _ = hold.changed().await;
                });
                let mut res = Response::new(body);
                res.headers_mut()
                    .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
                res
            }
        })
        .await;
        let res =
            ask(UpstreamConfig::new(mock.url()).idle_timeout(Duration::from_millis(150))).await;
        assert_eq!(res.status(), 504);
        assert_eq!(error_code(&text(res).await), "upstream_timeout");
        drop(hold_tx);
    })
    .await;
}

//! Forwarding: the model alias, the upstream's key, kept-alive connections, HTTP/2, unknown models.

use super::*;

#[tokio::test]
async fn alias_is_rewritten_and_only_the_upstream_key_is_sent() {
    bounded(async {
        let mock = Mock::ok().await;
        let gw = gateway(router(
            "public",
            RouteConfig::new().replica(
                UpstreamConfig::new(mock.url())
                    .upstream_model("real-model")
                    .api_key("upstream-key"),
            ),
        ))
        .await;
        let c = client();
        let res = post(
            &c,
            gw,
            chat("public", false),
            &[
                ("authorization", "Bearer client-key"),
                ("x-custom", "kept"),
                ("connection", "x-hop"),
                ("x-hop", "dropped"),
            ],
        )
        .await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(body["model"], "real-model");

        let seen = mock.seen();
        assert_eq!(seen.len(), 1);
        let s = &seen[0];
        assert_eq!(s.path(), "/v1/chat/completions");
        assert_eq!(s.json()["model"], "real-model");
        assert_eq!(s.json()["messages"][0]["content"], "hi");
        let auth: Vec<_> = s.headers.get_all("authorization").iter().collect();
        assert_eq!(auth, ["Bearer upstream-key"]);
        assert_eq!(s.headers["x-custom"], "kept");
        assert!(!s.headers.contains_key("x-hop"));
        assert_eq!(s.headers["content-type"], "application/json");
        // The upstream's own host, not the gateway's.
        let host: Vec<_> = s.headers.get_all("host").iter().collect();
        assert_eq!(host, [mock.addr.to_string().as_str()]);
    })
    .await;
}

#[tokio::test]
async fn upstream_connections_are_kept_alive() {
    bounded(async {
        let mock = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let c = client();
        for _ in 0..5 {
            let res = post(&c, gw, chat("m", false), &[]).await;
            assert_eq!(res.status(), 200);
            text(res).await;
        }
        assert_eq!(mock.hits(), 5);
        assert_eq!(mock.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn http2_prior_knowledge_streams_over_one_connection() {
    bounded(async {
        let mock = Mock::start(|s: RecordedRequest| async move {
            assert_eq!(s.version, http::Version::HTTP_2);
            let (tx, _d, res) = sse();
            tokio::spawn(async move {
                tx.send(Ok(chunk("a"))).await.ok();
            });
            res
        })
        .await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url()).http2_only(true)),
        ))
        .await;
        let c = client();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let body = text(post(&c, gw, chat("m", true), &[]).await).await;
                assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(mock.hits(), 4);
        assert_eq!(mock.connections(), 1);
    })
    .await;
}

#[tokio::test]
async fn no_key_configured_means_no_authorization() {
    bounded(async {
        let mock = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let res = post(
            &client(),
            gw,
            chat("m", false),
            &[("authorization", "Bearer client-key")],
        )
        .await;
        assert_eq!(res.status(), 200);
        let s = &mock.seen()[0];
        assert!(!s.headers.contains_key("authorization"));
        // No alias: the body goes through with the client's model.
        assert_eq!(s.json()["model"], "m");
    })
    .await;
}

#[tokio::test]
async fn unknown_model_is_404() {
    bounded(async {
        let mock = Mock::ok().await;
        let gw = gateway(router(
            "m",
            RouteConfig::new().replica(UpstreamConfig::new(mock.url())),
        ))
        .await;
        let res = post(&client(), gw, chat("other", false), &[]).await;
        assert_eq!(res.status(), 404);
        assert_eq!(error_code(&text(res).await), "model_not_found");
        assert_eq!(mock.hits(), 0);
    })
    .await;
}

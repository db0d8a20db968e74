//! Health settings: the probe's URL, the library's defaults, one set per model.

use super::*;

#[test]
fn model_settings_apply_to_upstreams_and_upstreams_override() {
    let text = r#"
[[models]]
name = "m"
max_attempts = 3
connect_timeout = "1s"
first_byte_timeout = "30s"
idle_timeout = "15s"
total_timeout = "2m"
max_answer_bytes = 1024
eject_after = 5
readmit_after = "500ms"
health_check = { interval = "20s" }
[[models.upstreams]]
url = "http://a/v1/"
[[models.upstreams]]
url = "http://b:8000"
weight = 3
connect_timeout = "250ms"
max_answer_bytes = 0
"#;
    let c = parse(text).expect("valid");
    let m = &c.models()[0];
    assert_eq!(m.max_attempts(), 3);
    let [a, b] = m.upstreams() else {
        panic!("two upstreams")
    };

    assert_eq!(a.url(), "http://a/v1");
    assert_eq!(a.chat_completions_url(), "http://a/v1/chat/completions");
    assert_eq!(a.timeouts().connect, Duration::from_secs(1));
    assert_eq!(a.timeouts().first_byte, Duration::from_secs(30));
    assert_eq!(a.timeouts().idle, Duration::from_secs(15));
    assert_eq!(a.timeouts().total, Duration::from_secs(120));
    assert_eq!(a.max_answer_bytes(), 1024);
    assert_eq!(a.health().eject_after, 5);
    assert_eq!(a.health().readmit_after, Duration::from_millis(500));
    let pa = a.health().probe.as_ref().expect("probe");
    assert_eq!(pa.path(), "/models");
    assert_eq!(pa.url(), "http://a/v1/models");
    assert_eq!(pa.interval(), Duration::from_secs(20));
    assert_eq!(pa.timeout(), Duration::from_secs(5));

    assert_eq!(b.weight(), 3);
    assert_eq!(b.chat_completions_url(), "http://b:8000/chat/completions");
    assert_eq!(b.timeouts().connect, Duration::from_millis(250));
    assert_eq!(b.timeouts().idle, Duration::from_secs(15));
    assert_eq!(b.max_answer_bytes(), 0);
    // Health settings are the model's, for every replica.
    assert_eq!(b.health().eject_after, 5);
    let pb = b.health().probe.as_ref().expect("probe");
    assert_eq!(pb.url(), "http://b:8000/models");
    assert_eq!(pb.interval(), Duration::from_secs(20));
}

#[test]
fn probe_paths_are_relative_to_the_base_url() {
    let probe = |url: &str, check: &str| {
        let text = format!(
            "[[models]]\nname = \"m\"\nhealth_check = {check}\n[[models.upstreams]]\nurl = \"{url}\"\n"
        );
        let c = parse(&text).expect("valid");
        let p = c.models()[0].upstreams()[0].health().probe.clone();
        p.expect("probe").url().to_string()
    };
    assert_eq!(probe("http://h:8000/v1", "{}"), "http://h:8000/v1/models");
    assert_eq!(
        probe("http://h:8000/v1/", r#"{ path = "/models" }"#),
        "http://h:8000/v1/models"
    );
    // vLLM's /health is at the root: `..` climbs out of the base URL's path.
    assert_eq!(
        probe("http://h:8000/v1", r#"{ path = "/../health" }"#),
        "http://h:8000/health"
    );
    assert_eq!(
        probe(
            "https://h/openai/v1",
            r#"{ path = "/../../health?deep=1" }"#
        ),
        "https://h/health?deep=1"
    );
    assert_eq!(
        probe("http://h:8000", r#"{ path = "/health" }"#),
        "http://h:8000/health"
    );
}

#[test]
fn probe_defaults_are_the_librarys() {
    let c = parse("[[models]]\nname = \"m\"\nhealth_check = {}\n[[models.upstreams]]\nurl = \"http://h/v1\"\n")
        .expect("valid");
    let p = c.models()[0].upstreams()[0]
        .health()
        .probe
        .clone()
        .expect("probe");
    let lib = crate::route::HealthCheck::default();
    assert_eq!(p.path(), lib.path);
    assert_eq!(p.interval(), lib.interval);
    assert_eq!(p.timeout(), lib.timeout);
    let route = crate::route::RouteConfig::new();
    let h = Health::default();
    assert_eq!(h.eject_after, route.eject_after);
    assert_eq!(h.readmit_after, route.readmit_after);
    assert_eq!(c.models()[0].max_attempts(), route.max_attempts);
    let u = crate::upstream::UpstreamConfig::new("http://h/v1".parse().expect("uri"));
    assert_eq!(
        c.models()[0].upstreams()[0].max_answer_bytes(),
        u.max_answer_bytes
    );
    let t = Timeouts::default();
    assert_eq!(
        (t.connect, t.first_byte, t.idle, t.total),
        (
            u.connect_timeout,
            u.first_byte_timeout,
            u.idle_timeout,
            u.total_timeout
        )
    );
}

#[test]
fn replicas_with_different_health_settings_are_refused() {
    let two = |a: &str, b: &str| {
        format!(
            "[[models]]\nname = \"m\"\neject_after = 2\n\
             [[models.upstreams]]\nurl = \"http://a/v1\"\n{a}\
             [[models.upstreams]]\nurl = \"http://b/v1\"\n{b}"
        )
    };
    // At the differing replica's own key.
    let msg = fails(&two("", "health_check = { path = \"/../health\" }\n"));
    assert_starts(
        &msg,
        r#"config.toml:8:16: model "m": replica 2 has other health settings"#,
    );
    assert!(msg.contains("[[models]] table"), "{msg}");
    let msg = fails(&two("", "readmit_after = \"1s\"\neject_after = 9\n"));
    assert_starts(&msg, "config.toml:8:17: model \"m\": replica 2");
    // When only the first replica overrides, at the first replica's key.
    let msg = fails(&two("eject_after = 4\n", ""));
    assert_starts(&msg, "config.toml:6:15: model \"m\": replica 2");
    // Same values everywhere (explicit or inherited), or a single replica: accepted.
    parse(&two("eject_after = 2\n", "")).expect("same as the model's");
    parse(&two(
        "health_check = { interval = \"1s\" }\n",
        "health_check = { interval = \"1s\", path = \"/models\" }\n",
    ))
    .expect("same probe, one path implicit");
    parse("[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://a\"\neject_after = 7\n")
        .expect("one replica");
}

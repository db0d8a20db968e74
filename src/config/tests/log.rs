//! The `[log]` table: the log format and the OTLP span export.

use super::*;

const ECHO: &str = "[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n";

fn with_log(log: &str) -> String {
    format!("{ECHO}[log]\n{log}")
}

#[test]
fn no_export_without_an_endpoint() {
    let c = parse(ECHO).expect("valid");
    assert_eq!(c.log_format(), LogFormat::Text);
    assert_eq!(c.log.otlp(None).expect("no endpoint"), None);
    // An empty variable counts as unset, as OpenTelemetry's SDKs read it.
    assert_eq!(c.log.otlp(Some("  ")).expect("empty"), None);
    let c = parse(&with_log("format = \"json\"\notlp_service_name = \"gw\"\n")).expect("valid");
    assert_eq!(c.log_format(), LogFormat::Json);
    assert_eq!(c.log.otlp(None).expect("a name alone"), None);
    assert_eq!(
        Config::default_embedded().log.otlp(None).expect("embedded"),
        None
    );
}

#[test]
fn the_files_endpoint() {
    let c = parse(&with_log("otlp_endpoint = \"http://127.0.0.1:4318/\"\n")).expect("valid");
    let e = c.log.otlp(None).expect("valid").expect("an endpoint");
    assert_eq!(e.endpoint(), "http://127.0.0.1:4318", "no trailing /");
    assert_eq!(e.traces_url(), "http://127.0.0.1:4318/v1/traces");
    assert_eq!(e.service_name(), DEFAULT_OTLP_SERVICE_NAME);
    assert!(!e.from_env());
    assert_eq!(e.origin(), "[log] otlp_endpoint");
    // The file wins over the variable.
    assert_eq!(
        c.log.otlp(Some("http://elsewhere:4318")).expect("valid"),
        Some(e)
    );

    let c = parse(&with_log(
        "otlp_endpoint = \"https://collector.internal/otlp\"\notlp_service_name = \"gw-eu\"\n",
    ))
    .expect("valid");
    let e = c.log.otlp(None).expect("valid").expect("an endpoint");
    assert_eq!(e.traces_url(), "https://collector.internal/otlp/v1/traces");
    assert_eq!(e.service_name(), "gw-eu");
}

#[test]
fn the_variable_when_the_file_has_no_endpoint() {
    let c = parse(&with_log("otlp_service_name = \"gw\"\n")).expect("valid");
    let e = c
        .log
        .otlp(Some("http://127.0.0.1:4318/"))
        .expect("valid")
        .expect("an endpoint");
    assert_eq!(e.endpoint(), "http://127.0.0.1:4318");
    assert_eq!(e.service_name(), "gw");
    assert!(e.from_env());
    assert_eq!(e.origin(), OTEL_EXPORTER_OTLP_ENDPOINT);

    let err = c.log.otlp(Some("ftp://h")).expect_err("not http");
    assert!(err.is_env());
    assert_eq!(
        err.to_string(),
        r#"OTEL_EXPORTER_OTLP_ENDPOINT: invalid URL "ftp://h": scheme must be http or https"#
    );
}

#[test]
fn invalid_endpoints_are_refused_at_their_position() {
    for (value, problem) in [
        ("ftp://127.0.0.1:4318", "scheme must be http or https"),
        ("127.0.0.1:4318", "scheme must be http or https"),
        ("http://h:4318/?x=1", "must not have a query or fragment"),
        ("http://h:4318/v1/traces", "/v1/traces is appended"),
        ("not a url", "invalid URL"),
    ] {
        let msg = fails(&with_log(&format!("otlp_endpoint = {value:?}\n")));
        assert_starts(&msg, "config.toml:5:17: otlp_endpoint: invalid URL");
        assert!(msg.contains(problem), "{value}: {msg}");
    }
    let msg = fails(&with_log("otlp_endpoint = \"http://user:s3cret@h:4318\"\n"));
    assert_starts(
        &msg,
        "config.toml:5:17: otlp_endpoint: invalid URL: must not contain credentials",
    );
    assert!(!msg.contains("s3cret"), "{msg}");

    let msg = fails(&with_log("otlp_service_name = \" \"\n"));
    assert_eq!(msg, "config.toml:5:21: otlp_service_name must not be empty");
    let msg = fails(&with_log("otlp_endpoint = 4318\n"));
    assert_starts(&msg, "config.toml:5:17: invalid type");
    let msg = fails(&with_log("otlp_endpont = \"http://h:4318\"\n"));
    assert_starts(&msg, "config.toml:5:1: unknown field `otlp_endpont`");
}

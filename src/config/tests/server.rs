//! The `[server]` and `[validation]` tables.

use super::*;
use crate::gateway::ServeConfig;
use crate::validate::ValidateConfig;

const ECHO: &str = "[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n";

#[test]
fn server_and_validation_default_to_the_librarys() {
    let c = parse(ECHO).expect("a file without [server] or [validation]");
    let (v, d) = (c.validate_config(), ValidateConfig::default());
    assert_eq!(
        (
            v.max_body,
            v.max_depth,
            v.strict,
            v.apply_defaults,
            v.body_timeout
        ),
        (
            d.max_body,
            d.max_depth,
            d.strict,
            d.apply_defaults,
            d.body_timeout
        )
    );
    let (s, d) = (c.serve_config(), ServeConfig::default());
    assert_eq!(
        (s.header_read_timeout, s.shutdown_grace, s.max_header_bytes),
        (d.header_read_timeout, d.shutdown_grace, d.max_header_bytes)
    );
    let e = Config::default_embedded();
    assert_eq!(
        e.validate_config().max_body,
        ValidateConfig::default().max_body
    );
    assert_eq!(
        e.serve_config().shutdown_grace,
        ServeConfig::default().shutdown_grace
    );
}

#[test]
fn server_and_validation_tables_parse() {
    let text = format!(
        r#"
[server]
header_read_timeout = "5s"
shutdown_grace = "1m"
max_header_bytes = "16KiB"

[validation]
max_body = "1MiB"
max_depth = 32
strict = true
apply_defaults = false
body_timeout = "10s"

{ECHO}"#
    );
    let c = parse(&text).expect("valid");
    let s = c.serve_config();
    assert_eq!(s.header_read_timeout, Duration::from_secs(5));
    assert_eq!(s.shutdown_grace, Duration::from_secs(60));
    assert_eq!(s.max_header_bytes, 16 * 1024);
    let v = c.validate_config();
    assert_eq!(v.max_body, 1 << 20);
    assert_eq!(v.max_depth, 32);
    assert!(v.strict);
    assert!(!v.apply_defaults);
    assert_eq!(v.body_timeout, Some(Duration::from_secs(10)));

    let c = parse(&format!(
        "[validation]\nmax_body = 1000\nbody_timeout = \"none\"\n[server]\nmax_header_bytes = 8192\n{ECHO}"
    ))
    .expect("valid");
    assert_eq!(c.validate_config().max_body, 1000);
    assert_eq!(c.validate_config().body_timeout, None);
    assert_eq!(c.serve_config().max_header_bytes, 8192);
}

#[test]
fn sizes_parse() {
    use crate::config::server::parse_size;
    assert_eq!(parse_size("4MiB"), Ok(4 << 20));
    assert_eq!(parse_size("64KiB"), Ok(64 << 10));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("512"), Ok(512));
    assert_eq!(parse_size("512B"), Ok(512));
    assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
    for bad in [
        "",
        "MiB",
        "0",
        "0KiB",
        "4MB",
        "4mb",
        "1.5MiB",
        "99999999999999999999GiB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
    assert!(
        parse_size("4MB")
            .expect_err("ambiguous")
            .contains("ambiguous; use KiB, MiB or GiB")
    );
}

#[test]
fn server_and_validation_errors_name_the_position() {
    let cases = [
        (
            "[validation]\nmax_body = \"4MB\"\n",
            r#"config.toml:2:12: invalid size "4MB": unit "MB" is ambiguous"#,
        ),
        (
            "[validation]\nmax_body = 0\n",
            "config.toml:2:12: invalid size 0: must be greater than zero",
        ),
        (
            "[validation]\nmax_depth = 0\n",
            "config.toml:2:13: max_depth 0 is out of range: 1 to 128",
        ),
        (
            "[validation]\nmax_depth = 1000\n",
            "config.toml:2:13: max_depth 1000 is out of range",
        ),
        (
            "[validation]\nstrict = \"yes\"\n",
            "config.toml:2:10: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[validation]\nbody_timeout = \"0s\"\n",
            r#"config.toml:2:16: invalid duration "0s": must be greater than zero (or "none""#,
        ),
        (
            "[validation]\nmax_bdy = 1\n",
            "config.toml:2:1: unknown field `max_bdy`",
        ),
        (
            "[server]\nmax_header_bytes = \"1KiB\"\n",
            "config.toml:2:20: max_header_bytes 1024 is out of range: at least 8KiB",
        ),
        (
            "[server]\nshutdown_grace = 30\n",
            "config.toml:2:18: invalid type: integer `30`, expected a duration string",
        ),
        (
            "[server]\nlisten = \"x\"\n",
            "config.toml:2:1: unknown field `listen`",
        ),
    ];
    for (text, prefix) in cases {
        assert_starts(&fails(&format!("{text}{ECHO}")), prefix);
    }
}

#[test]
fn usage_accounting_is_on_unless_turned_off() {
    assert!(parse(ECHO).expect("no [usage]").usage_config().enabled);
    let on = format!("{ECHO}[usage]\njsonl = \"u.jsonl\"\n");
    assert!(
        parse(&on)
            .expect("[usage] without enabled")
            .usage_config()
            .enabled
    );
    let off = format!("{ECHO}[usage]\nenabled = false\n");
    assert!(!parse(&off).expect("enabled = false").usage_config().enabled);
    let bad = format!("{ECHO}[usage]\nenabled = \"no\"\n");
    assert!(fails(&bad).contains("config.toml:5"), "{}", fails(&bad));
}

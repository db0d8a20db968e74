//! The `[limits]` table.

use super::*;
use crate::rate_limit::Limits;

const ECHO: &str = "[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n";

#[test]
fn limits_default_to_local_without_anonymous_limits() {
    let c = parse(ECHO).expect("no [limits]");
    let l = c.limits_config();
    assert_eq!(l.backend(), &LimiterBackend::Local);
    let r = l.rate_limit_config();
    assert_eq!(
        r.get_default_completion_tokens(),
        crate::rate_limit::DEFAULT_COMPLETION_TOKENS
    );
    assert_eq!(r.get_anonymous(), None);
}

#[test]
fn limits_table_is_read() {
    let text = format!(
        "{ECHO}[limits]\ndefault_completion_tokens = 256\nanonymous = {{ rpm = 10, tpm = 5000 }}\n"
    );
    let c = parse(&text).expect("valid");
    let r = c.limits_config().rate_limit_config();
    assert_eq!(r.get_default_completion_tokens(), 256);
    assert_eq!(r.get_anonymous(), Some(Limits::none().rpm(10).tpm(5000)));
}

#[test]
fn limits_errors_name_the_position() {
    let e = fails(&format!("{ECHO}[limits]\nbackend = \"memcached\"\n"));
    assert!(
        e.starts_with("config.toml:5:11: unknown backend \"memcached\""),
        "{e}"
    );
    let e = fails(&format!("{ECHO}[limits]\nrpm = 3\n"));
    assert!(e.contains("unknown field `rpm`"), "{e}");
    let e = fails(&format!("{ECHO}[limits]\ndefault_completion_tokens = 0\n"));
    assert!(e.contains("at least 1"), "{e}");
    let e = fails(&format!("{ECHO}[limits]\non_redis_error = \"maybe\"\n"));
    assert!(e.contains(r#"expected "open" or "closed""#), "{e}");
    let e = fails(&format!("{ECHO}[limits]\nredis_url = \"redis://x\"\n"));
    assert!(e.contains("backend is not"), "{e}");
}

#[cfg(feature = "redis")]
#[test]
fn redis_backend_is_read() {
    let text = format!(
        "{ECHO}[limits]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\non_redis_error = \"closed\"\n"
    );
    let c = parse(&text).expect("valid");
    assert_eq!(
        c.limits_config().backend(),
        &LimiterBackend::Redis {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "chatgate:rl:".into(),
            on_error: OnRedisError::Closed,
        }
    );
    let e = fails(&format!(
        "{ECHO}[limits]\nbackend = \"redis\"\nredis_url = \"http://secret@x\"\n"
    ));
    assert!(
        e.contains("invalid redis_url") && !e.contains("secret"),
        "{e}"
    );
}

#[cfg(not(feature = "redis"))]
#[test]
fn redis_backend_needs_the_feature() {
    let e = fails(&format!(
        "{ECHO}[limits]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n"
    ));
    assert!(e.contains("cargo feature `redis`"), "{e}");
}

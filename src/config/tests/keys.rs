//! `[[keys]]`, `[auth]`, `[postgres]` and `[admin]`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::auth::{KeyDigest, KeyStore, Lookup};

const ECHO: &str = "[[models]]\nname = \"echo\"\nbuiltin = \"echo\"\n";

fn with(keys: &str) -> String {
    format!("{ECHO}{keys}")
}

const HEX_A: &str = "5f1c1c3bd3c8a5a0b3e4a3f1f3b1a6e4d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5";

#[test]
fn no_keys_means_no_store() {
    let c = parse(ECHO).unwrap();
    assert!(c.key_store().is_none());
    assert!(c.postgres_keys().is_none());
    assert!(c.admin_key().is_none());
}

#[test]
fn budgets_parse_with_the_key() {
    use crate::rate_limit::{Budget, BudgetPeriod};
    let c = parse(&with(
        "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nbudget_tokens = 5_000_000\nbudget_usd = 25.0\n\
         budget_period = \"week\"\n[[keys]]\nid = \"b\"\nkey = \"sk-2\"\nbudget_usd = 0.5\n\
         [[keys]]\nid = \"c\"\nkey = \"sk-3\"\nbudget_tokens = 10\nbudget_period = \"30d\"\n\
         [[keys]]\nid = \"d\"\nkey = \"sk-4\"\n\
         [[prices]]\nmodel = \"echo\"\ninput_per_million = 1.0\noutput_per_million = 2.0\n",
    ))
    .unwrap();
    let budget = |secret: &str| match c.key_store().unwrap().lookup(&KeyDigest::of(secret)) {
        Lookup::Ready(Ok(Some(k))) => k.budget,
        _ => panic!("key"),
    };
    assert_eq!(
        budget("sk-1"),
        Some(Budget::new(BudgetPeriod::Week).tokens(5_000_000).usd(25.0))
    );
    assert_eq!(
        budget("sk-2"),
        Some(Budget::new(BudgetPeriod::Month).usd(0.5))
    );
    assert_eq!(
        budget("sk-3"),
        Some(Budget::new(BudgetPeriod::Every(Duration::from_secs(30 * 86_400))).tokens(10))
    );
    assert_eq!(budget("sk-4"), None);
}

#[test]
fn keys_parse_into_records() {
    let c = parse(&with(&format!(
        r#"
[[keys]]
id = "team-a"
sha256 = "{HEX_A}"
models = ["echo", "qwen*"]
rpm = 600
tpm = 100000
max_concurrent = 20
expires = "2027-01-01T00:00:00Z"
disabled = false
metadata = {{ team = "a", user = "bob" }}
[[keys.model_limits]]
model = "qwen*"
rpm = 60

[[keys]]
id = "dev"
key = "sk-dev-123"
expires = 2027-01-01T01:00:00+01:00
"#
    )))
    .unwrap();
    let store = c.key_store().unwrap();
    assert_eq!(store.len(), 2);
    let a = store.get(&KeyDigest::from_hex(HEX_A).unwrap()).unwrap();
    assert_eq!(a.id, "team-a");
    assert_eq!(a.models, ["echo", "qwen*"]);
    assert_eq!(a.limits.rpm, Some(600));
    assert_eq!(a.limits.tpm, Some(100_000));
    assert_eq!(a.limits.max_concurrent, Some(20));
    assert_eq!(a.limits_for("qwen-7b").and_then(|l| l.rpm), Some(60));
    assert_eq!(a.metadata["user"], "bob");
    let expiry = UNIX_EPOCH + Duration::from_secs(1_798_761_600);
    assert_eq!(a.expires_at, Some(expiry));
    let Lookup::Ready(Ok(Some(dev))) = store.lookup(&KeyDigest::of("sk-dev-123")) else {
        panic!("dev key by its secret's digest")
    };
    assert_eq!(dev.id, "dev");
    assert_eq!(dev.expires_at, Some(expiry), "TOML date-time with offset");
}

#[test]
fn key_errors_name_file_line_column_and_never_the_secret() {
    let cases: &[(&str, &str)] = &[
        (
            "[[keys]]\nid = \"a\"\nsha256 = \"sk-oops-a-secret\"\n",
            "config.toml:6:10: key \"a\": invalid sha256: expected 64 hexadecimal digits",
        ),
        (
            "[[keys]]\nid = \"a\"\n",
            "config.toml:5:6: key \"a\" has neither `sha256` nor `key`",
        ),
        (
            &format!("[[keys]]\nid = \"a\"\nsha256 = \"{HEX_A}\"\nkey = \"sk-x\"\n"),
            "config.toml:7:7: key \"a\" sets both `sha256` and `key`",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\n[[keys]]\nid = \"a\"\nkey = \"sk-2\"\n",
            "config.toml:8:6: duplicate key id \"a\" (first defined at line 5)",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\n[[keys]]\nid = \"b\"\nkey = \"sk-1\"\n",
            "config.toml:9:7: key \"b\" has the same secret as key \"a\"",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nrole = \"x\"\n",
            "config.toml:7:1: unknown field `role`",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nrpm = 0\n",
            "config.toml:7:7: rpm must be at least 1",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nexpires = \"2027-01-01\"\n",
            "config.toml:7:11: key \"a\": expires: invalid RFC 3339 timestamp",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\n[[keys.model_limits]]\nmodel = \"q*\"\n",
            "config.toml:8:9: key \"a\": model_limits for \"q*\" sets no limit",
        ),
        (
            "[[keys]]\nid = \"\"\nkey = \"sk-1\"\n",
            "config.toml:5:6: key id must not be empty",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nbudget_tokens = 0\n",
            "config.toml:7:17: key \"a\": budget_tokens must be at least 1",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nbudget_usd = -1.0\n",
            "config.toml:7:14: key \"a\": budget_usd must be a positive number of dollars",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nbudget_usd = 1.0\nbudget_period = \"year\"\n",
            "config.toml:8:17: key \"a\": invalid budget period \"year\"",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nbudget_usd = 1.0\n",
            "config.toml:7:14: key \"a\": budget_usd needs [[prices]] for the models",
        ),
        (
            "[[keys]]\nid = \"a\"\nkey = \"sk-1\"\nbudget_period = \"day\"\n",
            "config.toml:7:17: key \"a\": budget_period without budget_tokens or budget_usd",
        ),
    ];
    for (keys, want) in cases {
        let msg = fails(&with(keys));
        assert_starts(&msg, want);
        assert!(!msg.contains("sk-"), "{msg} shows a secret");
    }
}

#[test]
fn postgres_and_admin() {
    let c = parse(&with(&format!(
        r#"
[auth]
store = "postgres"
cache_ttl = "10s"
[postgres]
url = "postgres://postgres@127.0.0.1/test"
schema = "keys_1"
[admin]
sha256 = "{HEX_A}"
"#
    )))
    .unwrap();
    let pg = c.postgres_keys().unwrap();
    assert_eq!(pg.url().unwrap(), "postgres://postgres@127.0.0.1/test");
    assert_eq!(pg.schema(), Some("keys_1"));
    assert_eq!(pg.cache_ttl(), Duration::from_secs(10));
    assert_eq!(pg.negative_ttl(), DEFAULT_NEGATIVE_TTL);
    assert_eq!(pg.cache_size(), DEFAULT_CACHE_SIZE);
    assert!(
        !format!("{pg:?}").contains("postgres://"),
        "Debug hides the URL"
    );
    assert_eq!(c.admin_key(), KeyDigest::from_hex(HEX_A));
    assert!(c.key_store().is_none());

    assert_starts(
        &fails(&with("[auth]\nstore = \"redis\"\n")),
        "config.toml:5:9: unknown key store \"redis\"",
    );
    assert_starts(
        &fails(&with("[auth]\nstore = \"postgres\"\n")),
        "config.toml:5:9: [auth] store = \"postgres\" needs a [postgres] table",
    );
    assert_starts(
        &fails(&with("[admin]\nkey = \"sk-admin\"\n")),
        "config.toml:4:1: [admin] needs [auth] store = \"postgres\"",
    );
    assert_starts(
        &fails(&with(
            "[auth]\nstore = \"postgres\"\n[postgres]\nurl_env = \"PG\"\nschema = \"a;drop\"\n",
        )),
        "config.toml:8:10: [postgres] schema: expected an identifier",
    );
}

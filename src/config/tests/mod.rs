//! Unit tests of the configuration: parsing, defaults, and every error's position. Health
//! settings, credentials and the `[server]`/`[validation]` tables have their own files.

use super::raw::parse_duration;
use super::*;

mod credentials;
mod health;
mod keys;
mod limits;
mod log;
mod server;

const EXAMPLE: &str = r#"listen = "127.0.0.1:8080"          # optional; a SocketAddr
[[models]]
name = "echo"
builtin = "echo"                    # in-process model; only "echo" exists now
[[models]]
name = "qwen"
fallback = ["echo"]                 # optional
[[models.upstreams]]
url = "http://127.0.0.1:9001/v1"   # base URL
model = "Qwen/Qwen2.5-7B-Instruct" # optional
api_key_env = "QWEN_KEY"           # optional
weight = 1                          # optional, default 1, >= 1
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("config.toml"))
}

#[track_caller]
fn fails(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[track_caller]
fn assert_starts(msg: &str, prefix: &str) {
    assert!(
        msg.starts_with(prefix),
        "{msg:?} does not start with {prefix:?}"
    );
}

#[test]
fn example_parses() {
    let c = parse(EXAMPLE).expect("valid");
    assert_eq!(
        c.listen(),
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.models().len(), 2);

    let echo = c.model("echo").expect("echo");
    assert_eq!(echo.builtin(), Some(Builtin::Echo));
    assert!(echo.upstreams().is_empty());
    assert!(echo.fallback().is_empty());

    let qwen = c.model("qwen").expect("qwen");
    assert_eq!(qwen.builtin(), None);
    assert_eq!(qwen.fallback(), ["echo"]);
    assert_eq!(qwen.max_attempts(), 2);
    let [up] = qwen.upstreams() else {
        panic!("one upstream")
    };
    assert_eq!(up.url(), "http://127.0.0.1:9001/v1");
    assert_eq!(
        up.chat_completions_url(),
        "http://127.0.0.1:9001/v1/chat/completions"
    );
    assert_eq!(up.model(), "Qwen/Qwen2.5-7B-Instruct");
    assert_eq!(up.weight(), 1);
    let env = up.api_key_env().expect("api_key_env");
    assert_eq!(env.name(), "QWEN_KEY");
    assert_eq!(*up.timeouts(), Timeouts::default());
    assert_eq!(*up.health(), Health::default());
    assert!(c.model("nope").is_none());
}

#[test]
fn defaults_are_applied() {
    let c = parse("[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"https://h\"\n")
        .expect("valid");
    assert_eq!(c.listen(), DEFAULT_LISTEN);
    let m = &c.models()[0];
    assert_eq!(m.max_attempts(), 2);
    let up = &m.upstreams()[0];
    assert_eq!(up.model(), "m");
    assert_eq!(up.weight(), 1);
    assert!(up.api_key_env().is_none());
    assert_eq!(up.chat_completions_url(), "https://h/chat/completions");
    let t = up.timeouts();
    assert_eq!(t.connect, Duration::from_secs(5));
    assert_eq!(t.first_byte, Duration::from_secs(60));
    assert_eq!(t.idle, Duration::from_secs(60));
    assert_eq!(t.total, Duration::from_secs(600));
    let h = up.health();
    assert_eq!(h.eject_after, 3);
    assert_eq!(h.readmit_after, Duration::from_secs(5));
    assert_eq!(h.probe, None);
}

#[test]
fn default_embedded_is_echo() {
    let c = Config::default_embedded();
    assert_eq!(c.listen().to_string(), "127.0.0.1:8080");
    assert_eq!(c.models().len(), 1);
    assert_eq!(c.models()[0].name(), "echo");
    assert_eq!(c.models()[0].builtin(), Some(Builtin::Echo));
    assert_eq!(Builtin::Echo.name(), "echo");
}

#[test]
fn durations_parse() {
    let ok = |s: &str| parse_duration(s).expect(s);
    assert_eq!(ok("500ms"), Duration::from_millis(500));
    assert_eq!(ok("5s"), Duration::from_secs(5));
    assert_eq!(ok("2m"), Duration::from_secs(120));
    assert_eq!(ok("1h"), Duration::from_secs(3600));
    assert_eq!(ok("1m30s"), Duration::from_secs(90));
    assert_eq!(ok("1s250ms"), Duration::from_millis(1250));

    let err = |s: &str| parse_duration(s).expect_err(s);
    assert!(err("").contains("empty"));
    assert!(err("5").contains("missing unit"));
    assert!(err("5x").contains(r#"unknown unit "x""#));
    assert!(err("5 s").contains(r#"unknown unit " s""#));
    assert!(err("s").contains("expected a number"));
    assert!(err("-1s").contains("expected a number"));
    assert!(err("1.5s").contains("fractions"));
    assert!(err("0s").contains("greater than zero"));
    assert!(err("99999999999999999999s").contains("too large"));
    assert!(err("18446744073709551615h").contains("too large"));
}

#[test]
fn duration_errors_name_the_position() {
    let base = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://h\"\n";
    let msg = fails(&format!("{base}idle_timeout = \"5x\"\n"));
    assert_starts(
        &msg,
        "config.toml:5:16: invalid duration \"5x\": unknown unit \"x\"",
    );
    let msg = fails(&format!("{base}connect_timeout = 5\n"));
    assert_starts(
        &msg,
        "config.toml:5:19: invalid type: integer `5`, expected a duration",
    );
}

#[test]
fn unknown_fields_are_errors_at_every_level() {
    let msg = fails("lisen = \"127.0.0.1:1\"\n");
    assert_starts(&msg, "config.toml:1:1: unknown field `lisen`, expected ");

    let msg = fails("[[models]]\nname = \"m\"\nbuiltn = \"echo\"\n");
    assert_starts(
        &msg,
        "config.toml:3:1: unknown field `builtn`, expected one of ",
    );

    let text = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://h\"\n\
                weight = 2\n\n\nurll = \"http://h\"\n";
    let msg = fails(text);
    assert_starts(
        &msg,
        "config.toml:8:1: unknown field `urll`, expected one of `url`",
    );

    let text = "[[models]]\nname = \"m\"\nbuiltin = \"echo\"\n\
                health_check = { path = \"/x\", every = \"1s\" }\n";
    let msg = fails(text);
    assert_starts(&msg, "config.toml:4:31: unknown field `every`");
}

#[test]
fn syntax_errors_name_the_position() {
    let msg = fails("[[models]]\nname = \n");
    assert_starts(&msg, "config.toml:2:");
    let msg = fails("[[models]]\nbuiltin = \"echo\"\n");
    assert_starts(&msg, "config.toml:1:1: missing field `name`");
}

#[test]
fn invalid_urls() {
    let base = "[[models]]\nname = \"m\"\n\n\n\n\n\n[[models.upstreams]]\n";
    let msg = fails(&format!("{base}url = \"ftp://x\"\n"));
    assert_eq!(
        msg,
        r#"config.toml:9:7: invalid URL "ftp://x": scheme must be http or https"#
    );
    for (url, why) in [
        ("127.0.0.1:9001", "scheme must be http or https"),
        ("/v1", "scheme must be http or https"),
        ("http://h/v1?x=1", "must not have a query"),
        ("http://h/v1#top", "must not have a fragment"),
        ("http://h w/v1", "invalid URL"),
        ("", "invalid URL"),
    ] {
        let msg = fails(&format!("{base}url = {url:?}\n"));
        assert_starts(&msg, "config.toml:9:7: invalid URL");
        assert!(msg.contains(why), "{msg}");
    }
    let msg = fails(&format!("{base}url = \"http://user:s3cret@h/v1\"\n"));
    assert_starts(
        &msg,
        "config.toml:9:7: invalid URL: must not contain credentials",
    );
    assert!(!msg.contains("s3cret"), "{msg}");
}

#[test]
fn duplicate_model() {
    let text = r#"[[models]]
name = "echo"
name2 = 1
"#;
    // (unknown field first, to check the order of checks does not matter for positions)
    assert_starts(&fails(text), "config.toml:3:1: unknown field `name2`");

    let text = r#"[[models]]
builtin = "echo"
name = "qwen"
[[models]]
name = "other"
builtin = "echo"
[[models]]
builtin = "echo"
fallback = []
# a comment
max_attempts = 1
name = "qwen"
"#;
    assert_eq!(
        fails(text),
        r#"config.toml:12:8: duplicate model "qwen" (first defined at line 3)"#
    );
}

#[test]
fn fallback_checks() {
    let text = "[[models]]\nname = \"b\"\nbuiltin = \"echo\"\n[[models]]\nname = \"a\"\n\
                builtin = \"echo\"\nfallback = [\"b\", \"zzz\"]\n";
    assert_eq!(
        fails(text),
        r#"config.toml:7:18: model "a": fallback "zzz" is not a configured model"#
    );
    let text = "[[models]]\nname = \"a\"\nbuiltin = \"echo\"\nfallback = [\"a\"]\n";
    assert_eq!(
        fails(text),
        r#"config.toml:4:13: model "a": fallback "a" names the model itself"#
    );
    let text = "[[models]]\nname = \"b\"\nbuiltin = \"echo\"\n[[models]]\nname = \"a\"\n\
                builtin = \"echo\"\nfallback = [\"b\", \"b\"]\n";
    assert_starts(
        &fails(text),
        r#"config.toml:7:18: model "a": fallback "b" is listed twice"#,
    );
    // A fallback may be defined later in the file, and cycles are allowed (not transitive).
    let text = "[[models]]\nname = \"a\"\nbuiltin = \"echo\"\nfallback = [\"b\"]\n\
                [[models]]\nname = \"b\"\nbuiltin = \"echo\"\nfallback = [\"a\"]\n";
    let c = parse(text).expect("valid");
    assert_eq!(c.model("a").expect("a").fallback(), ["b"]);
}

#[test]
fn backend_must_be_exactly_one() {
    let msg = fails("[[models]]\nname = \"m\"\nfallback = []\n");
    assert_eq!(
        msg,
        r#"config.toml:2:8: model "m" has neither `builtin` nor a [[models.upstreams]] entry"#
    );
    let msg = fails(
        "[[models]]\nname = \"m\"\nbuiltin = \"echo\"\n[[models.upstreams]]\nurl = \"http://h\"\n",
    );
    assert_starts(&msg, r#"config.toml:3:11: model "m" sets both `builtin`"#);
    let msg = fails("[[models]]\nname = \"m\"\nbuiltin = \"llama\"\n");
    assert_starts(
        &msg,
        r#"config.toml:3:11: model "m": unknown builtin "llama""#,
    );
}

#[test]
fn names_and_values_are_checked() {
    let msg = fails("[[models]]\nname = \"\"\nbuiltin = \"echo\"\n");
    assert_eq!(msg, "config.toml:2:8: model name must not be empty");

    let msg = fails("listen = \"localhost\"\n[[models]]\nname = \"m\"\nbuiltin = \"echo\"\n");
    assert_starts(
        &msg,
        r#"config.toml:1:10: invalid listen address "localhost""#,
    );

    let msg = fails("");
    assert_eq!(
        msg,
        "config.toml: no models configured: add at least one [[models]] table"
    );

    let up = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://h\"\n";
    for bad in ["1KEY", "A-B", "", "KEY VAR", "ÉTÉ"] {
        let msg = fails(&format!("{up}api_key_env = {bad:?}\n"));
        assert_starts(
            &msg,
            &format!("config.toml:5:15: invalid api_key_env {bad:?}"),
        );
    }
    assert!(parse(&format!("{up}api_key_env = \"_Key_2\"\n")).is_ok());

    let msg = fails(&format!("{up}weight = 0\n"));
    assert_eq!(msg, "config.toml:5:10: weight must be at least 1");
    let msg = fails(&format!("{up}weight = -1\n"));
    assert_starts(&msg, "config.toml:5:10: invalid value: integer `-1`");
    let msg = fails(&format!("{up}eject_after = 0\n"));
    assert_eq!(msg, "config.toml:5:15: eject_after must be at least 1");
    let msg = fails("[[models]]\nname = \"m\"\nbuiltin = \"echo\"\nmax_attempts = 0\n");
    assert_eq!(msg, "config.toml:4:16: max_attempts must be at least 1");
    let msg = fails(&format!("{up}model = \"\"\n"));
    assert_eq!(
        msg,
        "config.toml:5:9: upstream model name must not be empty"
    );
    let msg = fails(&format!("{up}health_check = {{ path = \"models\" }}\n"));
    assert_starts(
        &msg,
        r#"config.toml:5:25: invalid health_check path "models""#,
    );
}

#[test]
fn positions_count_characters() {
    let text = "# é\nkey = \"ü\" x";
    let src = Source {
        text,
        file: Path::new("f"),
    };
    assert_eq!(src.position(0), Position { line: 1, column: 1 });
    assert_eq!(
        src.position(text.find("key").expect("key")),
        Position { line: 2, column: 1 }
    );
    assert_eq!(
        src.position(text.find('x').expect("x")),
        Position {
            line: 2,
            column: 11
        }
    );
    // Past the end, or inside a multi-byte character, is clamped.
    assert_eq!(
        src.position(999),
        Position {
            line: 2,
            column: 12
        }
    );
    assert_eq!(src.position(3), Position { line: 1, column: 3 });
}

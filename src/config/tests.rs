//! Unit tests of the configuration: parsing, defaults, and every error's position.

use super::raw::parse_duration;
use super::*;
use crate::gateway::ServeConfig;
use crate::validate::ValidateConfig;

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
fn model_settings_apply_to_upstreams_and_upstreams_override() {
    let text = r#"
[[models]]
name = "m"
max_attempts = 3
connect_timeout = "1s"
first_byte_timeout = "30s"
idle_timeout = "15s"
total_timeout = "2m"
eject_after = 5
readmit_after = "500ms"
health_check = { interval = "20s" }
[[models.upstreams]]
url = "http://a/v1/"
[[models.upstreams]]
url = "http://b:8000"
weight = 3
connect_timeout = "250ms"
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

#[test]
fn api_keys_resolve_lazily_and_never_print() {
    let c = parse(EXAMPLE).expect("valid");
    let env = c.models()[1].upstreams()[0]
        .api_key_env()
        .expect("env")
        .clone();

    let key = env
        .resolve_from(Some("sk-s3cret".into()))
        .expect("resolves");
    assert_eq!(key.expose(), "sk-s3cret");
    assert_eq!(key.authorization(), "Bearer sk-s3cret");
    assert!(key.authorization().is_sensitive());
    assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");

    let e = env.resolve_from(None).expect_err("unset");
    assert!(e.is_env());
    assert_eq!(
        e.to_string(),
        r#"config.toml:11:15: environment variable `QWEN_KEY` (api_key_env of model "qwen") is not set"#
    );
    for bad in ["", "sk s3cret", "sk-s3cret\n"] {
        let e = env.resolve_from(Some(bad.into())).expect_err(bad);
        assert!(e.is_env());
        assert!(e.to_string().contains("`QWEN_KEY`"), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
    }

    // Through the real environment: a name nobody sets.
    let text = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"http://h\"\n\
                api_key_env = \"CHATGATE_TEST_SURELY_UNSET_0F3A\"\n";
    let c = parse(text).expect("valid");
    let e = c.models()[0].upstreams()[0]
        .api_key_env()
        .expect("env")
        .resolve()
        .expect_err("unset");
    assert!(e.to_string().contains("`CHATGATE_TEST_SURELY_UNSET_0F3A`"));
    assert_eq!((e.line(), e.column()), (Some(5), Some(15)));
    assert_eq!(e.file(), Some(Path::new("config.toml")));
}

#[test]
fn debug_shows_env_names_not_keys() {
    let c = parse(EXAMPLE).expect("valid");
    let dbg = format!("{c:?}");
    assert!(dbg.contains("QWEN_KEY"));
    assert!(!dbg.to_lowercase().contains("bearer"));
}

#[test]
fn ca_file_resolves_against_the_config_directory_and_is_checked() {
    let up = "[[models]]\nname = \"m\"\n[[models.upstreams]]\nurl = \"https://h/v1\"\n";
    let ca_of = |c: &Config| c.models()[0].upstreams()[0].ca_file().cloned();

    // Relative to the file's directory; absolute as is; none by default.
    let text = format!("{up}ca_file = \"certs/ca.pem\"\n");
    let c = Config::from_toml_str(&text, Path::new("/etc/chatgate/proxy.toml")).expect("valid");
    let ca = ca_of(&c).expect("ca_file");
    assert_eq!(ca.path(), Path::new("/etc/chatgate/certs/ca.pem"));
    let c = parse(&format!("{up}ca_file = \"/srv/pki/ca.pem\"\n")).expect("valid");
    assert_eq!(
        ca_of(&c).expect("ca_file").path(),
        Path::new("/srv/pki/ca.pem")
    );
    assert!(ca_of(&parse(up).expect("valid")).is_none());

    // Checked while parsing: not empty, https only.
    let msg = fails(&format!("{up}ca_file = \"\"\n"));
    assert_eq!(msg, "config.toml:5:11: ca_file must not be empty");
    let http = up.replace("https://", "http://");
    let msg = fails(&format!("{http}ca_file = \"ca.pem\"\n"));
    assert_eq!(
        msg,
        r#"config.toml:5:11: ca_file "ca.pem" is set but the upstream URL "http://h/v1" is not https"#
    );

    // Read (by `router`, through `CaFile::read`): errors name the config file and position.
    let dir = std::env::temp_dir().join(format!("chatgate-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let config_path = dir.join("proxy.toml");
    std::fs::write(&config_path, format!("{up}\nca_file = \"ca.pem\"\n")).expect("write");
    let c = Config::load(&config_path).expect("valid");
    let ca = ca_of(&c).expect("ca_file");
    assert_eq!(ca.path(), dir.join("ca.pem"));
    let prefix = format!(
        "{}:6:11: ca_file {:?}: ",
        config_path.display(),
        ca.path().display().to_string()
    );

    let e = ca.read().expect_err("missing");
    assert_starts(&e.to_string(), &format!("{prefix}cannot read: "));
    assert_eq!((e.line(), e.column()), (Some(6), Some(11)));
    assert!(!e.is_io() && !e.is_env());

    std::fs::write(ca.path(), "not a certificate\n").expect("write");
    let e = c.router().expect_err("no certificate");
    assert_starts(&e.to_string(), &format!("{prefix}no certificate found"));

    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).expect("ca").pem();
    std::fs::write(ca.path(), &pem).expect("write");
    assert_eq!(ca.read().expect("valid PEM"), pem.as_bytes());
    c.router().expect("the router takes the CA");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn load_reads_files_and_reports_io_errors() {
    let dir = std::env::temp_dir().join(format!("chatgate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("proxy.toml");
    std::fs::write(&path, EXAMPLE).expect("write");
    let c = Config::load(&path).expect("loads");
    assert_eq!(c.models().len(), 2);

    std::fs::write(&path, "[[models]]\nname = 1\n").expect("write");
    let e = Config::load(&path).expect_err("invalid");
    assert!(!e.is_io());
    assert_eq!(e.file(), Some(path.as_path()));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:2:8: ", path.display())),
        "{e}"
    );

    let missing = dir.join("missing.toml");
    let e = Config::load(&missing).expect_err("missing");
    assert!(e.is_io());
    assert_starts(
        &e.to_string(),
        &format!("{}: cannot read the file: ", missing.display()),
    );
    assert_eq!(e.line(), None);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

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
    use super::server::parse_size;
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

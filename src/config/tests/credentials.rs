//! Credentials and CA files: resolved lazily, never printed, errors at their position; and
//! reading files.

use super::*;

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

//! The TOML document as deserialized (spans kept) and its validation into [`Config`](super::Config).

use super::keys::{RawAdmin, RawAuth, RawKey, RawPostgres};
use super::server::{RawServer, RawValidation};
use super::usage::{RawLog, RawPrice, RawUsage};
use super::*;
use crate::upstream::DEFAULT_MAX_ANSWER_BYTES;

// ---------------------------------------------------------------------------------------------
// The raw document, as deserialized (spans kept for the semantic checks)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    listen: Option<Spanned<String>>,
    server: Option<RawServer>,
    validation: Option<RawValidation>,
    limits: Option<super::limits::RawLimits>,
    #[serde(default)]
    models: Vec<RawModel>,
    usage: Option<RawUsage>,
    #[serde(default)]
    prices: Vec<RawPrice>,
    log: Option<RawLog>,
    #[serde(default)]
    keys: Vec<RawKey>,
    auth: Option<RawAuth>,
    postgres: Option<RawPostgres>,
    admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    function_catalogs: Vec<super::catalogs::RawFunctionCatalog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    name: Spanned<String>,
    builtin: Option<Spanned<String>>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    #[serde(default)]
    fallback: Vec<Spanned<String>>,
    max_attempts: Option<Spanned<u32>>,
    // Shared with `RawUpstream` (`flatten` cannot be combined with `deny_unknown_fields`).
    connect_timeout: Option<Dur>,
    first_byte_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    total_timeout: Option<Dur>,
    max_answer_bytes: Option<Spanned<usize>>,
    eject_after: Option<Spanned<u32>>,
    readmit_after: Option<Dur>,
    health_check: Option<RawHealthCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    url: Spanned<String>,
    model: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    weight: Option<Spanned<u32>>,
    connect_timeout: Option<Dur>,
    first_byte_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    total_timeout: Option<Dur>,
    max_answer_bytes: Option<Spanned<usize>>,
    // Spanned, unlike the model's: a replica whose health settings differ from the others' is
    // reported at its own key.
    eject_after: Option<Spanned<u32>>,
    readmit_after: Option<Spanned<Dur>>,
    health_check: Option<Spanned<RawHealthCheck>>,
}

impl RawUpstream {
    /// Where the replica sets a health key (`eject_after`, `readmit_after`, `health_check`),
    /// the first of them in the file.
    fn health_span(&self) -> Option<Range<usize>> {
        [
            self.eject_after.as_ref().map(Spanned::span),
            self.readmit_after.as_ref().map(Spanned::span),
            self.health_check.as_ref().map(Spanned::span),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    path: Option<Spanned<String>>,
    interval: Option<Dur>,
    timeout: Option<Dur>,
}

/// A duration string (see the module docs), checked while deserializing so the error carries
/// the value's position.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dur(pub(super) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurVisitor;
        impl Visitor<'_> for DurVisitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string such as "500ms", "5s" or "2m""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(DurVisitor)
    }
}

/// Parses `<integer><unit>` groups, units `ms`, `s`, `m`, `h`; the total must be positive.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {text:?}: {why}");
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = text;
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad(r#"expected a number followed by a unit, such as "5s""#));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad("too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(bad("missing unit (ms, s, m or h)")),
            u if u.starts_with('.') => {
                return Err(bad(
                    r#"fractions are not supported; use a smaller unit ("1500ms")"#,
                ));
            }
            u => return Err(bad(&format!("unknown unit {u:?} (use ms, s, m or h)"))),
        };
        millis = n
            .checked_mul(per_unit)
            .and_then(|v| millis.checked_add(v))
            .ok_or_else(|| bad("too large"))?;
    }
    if millis == 0 {
        return Err(bad("must be greater than zero"));
    }
    Ok(Duration::from_millis(millis))
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// The text being validated and its file name, for turning byte spans into positions.
pub(super) struct Source<'a> {
    pub(super) text: &'a str,
    pub(super) file: &'a Path,
}

impl Source<'_> {
    pub(super) fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    pub(super) fn error(
        &self,
        kind: ErrorKind,
        span: Option<Range<usize>>,
        problem: String,
    ) -> ConfigError {
        ConfigError {
            kind,
            file: Some(self.file.to_path_buf()),
            position: span.map(|s| self.position(s.start)),
            problem,
        }
    }

    pub(super) fn syntax(&self, e: &toml::de::Error) -> ConfigError {
        let problem = e.message().trim().replace('\n', " ");
        self.error(ErrorKind::Syntax, e.span(), problem)
    }

    pub(super) fn invalid<T>(&self, at: &Spanned<T>, problem: String) -> ConfigError {
        self.error(ErrorKind::Invalid, Some(at.span()), problem)
    }

    pub(super) fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = match &raw.listen {
            None => DEFAULT_LISTEN,
            Some(s) => s.get_ref().parse().map_err(|_| {
                let msg = format!(
                    r#"invalid listen address {:?}: expected IP:port, such as "127.0.0.1:8080""#,
                    s.get_ref()
                );
                self.invalid(s, msg)
            })?,
        };
        if raw.models.is_empty() {
            return Err(self.error(
                ErrorKind::Invalid,
                None,
                "no models configured: add at least one [[models]] table".to_owned(),
            ));
        }
        let mut names: HashMap<&str, Position> = HashMap::new();
        for m in &raw.models {
            let name = m.name.get_ref();
            if name.trim().is_empty() {
                return Err(self.invalid(&m.name, "model name must not be empty".to_owned()));
            }
            match names.entry(name) {
                Entry::Occupied(first) => {
                    let msg = format!(
                        "duplicate model {name:?} (first defined at line {})",
                        first.get().line
                    );
                    return Err(self.invalid(&m.name, msg));
                }
                Entry::Vacant(slot) => {
                    slot.insert(self.position(m.name.span().start));
                }
            }
        }
        let models = raw
            .models
            .iter()
            .map(|m| self.model(m, &names))
            .collect::<Result<_, _>>()?;
        let config = Config {
            listen,
            serve: self.serve_config(raw.server.as_ref())?,
            validate: self.validate_config(raw.validation.as_ref())?,
            models,
            usage: self.usage_config(raw.usage.as_ref())?,
            prices: self.prices(&raw.prices)?,
            log: self.log_config(raw.log.as_ref())?,
            keys: self.keys_config(
                &raw.keys,
                raw.auth.as_ref(),
                raw.postgres.as_ref(),
                raw.admin.as_ref(),
            )?,
            limits: self.limits_config(raw.limits.as_ref())?,
            function_catalogs: raw
                .function_catalogs
                .iter()
                .map(|c| self.function_catalog(c))
                .collect::<Result<_, _>>()?,
        };
        self.money_budgets_need_prices(&raw.keys, !raw.prices.is_empty())?;
        Ok(config)
    }

    pub(super) fn model(
        &self,
        m: &RawModel,
        names: &HashMap<&str, Position>,
    ) -> Result<Model, ConfigError> {
        let name = m.name.get_ref();
        let backend = match (&m.builtin, m.upstreams.is_empty()) {
            (Some(b), true) => match b.get_ref().as_str() {
                "echo" => Backend::Builtin(Builtin::Echo),
                other => {
                    let msg = format!(
                        r#"model {name:?}: unknown builtin {other:?} (the only builtin is "echo")"#
                    );
                    return Err(self.invalid(b, msg));
                }
            },
            (Some(b), false) => {
                let msg = format!(
                    "model {name:?} sets both `builtin` and [[models.upstreams]]; keep one"
                );
                return Err(self.invalid(b, msg));
            }
            (None, true) => {
                let msg = format!(
                    "model {name:?} has neither `builtin` nor a [[models.upstreams]] entry"
                );
                return Err(self.invalid(&m.name, msg));
            }
            (None, false) => {
                let upstreams: Vec<Upstream> = m
                    .upstreams
                    .iter()
                    .map(|u| self.upstream(m, u))
                    .collect::<Result<_, _>>()?;
                self.same_health(m, &upstreams)?;
                Backend::Upstreams(upstreams)
            }
        };

        let mut fallback: Vec<String> = Vec::with_capacity(m.fallback.len());
        for f in &m.fallback {
            let target = f.get_ref();
            let why = if target == name {
                "names the model itself"
            } else if !names.contains_key(target.as_str()) {
                "is not a configured model"
            } else if fallback.contains(target) {
                "is listed twice"
            } else {
                fallback.push(target.clone());
                continue;
            };
            return Err(self.invalid(f, format!("model {name:?}: fallback {target:?} {why}")));
        }

        Ok(Model {
            name: name.clone(),
            backend,
            fallback,
            max_attempts: self.at_least_one(
                &m.max_attempts,
                "max_attempts",
                DEFAULT_MAX_ATTEMPTS,
            )?,
        })
    }

    pub(super) fn upstream(&self, m: &RawModel, u: &RawUpstream) -> Result<Upstream, ConfigError> {
        let (url, base) = self.base_url(&u.url)?;
        let chat_completions_url = format!("{base}/chat/completions")
            .parse()
            .map_err(|e| self.invalid(&u.url, format!("invalid URL {:?}: {e}", u.url.get_ref())))?;

        let api_key_env = match &u.api_key_env {
            None => None,
            Some(var) => {
                let name = var.get_ref();
                let mut chars = name.chars();
                let valid = chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    let msg = format!(
                        "invalid api_key_env {name:?}: expected an environment variable name \
                         (ASCII letters, digits and '_', not starting with a digit)"
                    );
                    return Err(self.invalid(var, msg));
                }
                Some(ApiKeyEnv {
                    name: name.clone(),
                    model: m.name.get_ref().clone(),
                    file: self.file.to_path_buf(),
                    position: self.position(var.span().start),
                })
            }
        };

        let ca_file = match &u.ca_file {
            None => None,
            Some(p) if p.get_ref().trim().is_empty() => {
                return Err(self.invalid(p, "ca_file must not be empty".to_owned()));
            }
            Some(p) if url.scheme() != Some(&http::uri::Scheme::HTTPS) => {
                let msg = format!(
                    "ca_file {:?} is set but the upstream URL {:?} is not https",
                    p.get_ref(),
                    u.url.get_ref()
                );
                return Err(self.invalid(p, msg));
            }
            Some(p) => Some(CaFile {
                // `join` keeps an absolute path as it is.
                path: self
                    .file
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(p.get_ref()),
                file: self.file.to_path_buf(),
                position: self.position(p.span().start),
            }),
        };

        let model = match &u.model {
            None => m.name.get_ref().clone(),
            Some(s) if s.get_ref().trim().is_empty() => {
                return Err(self.invalid(s, "upstream model name must not be empty".to_owned()));
            }
            Some(s) => s.get_ref().clone(),
        };

        let pick = |up: Option<Dur>, model: Option<Dur>, default: Duration| {
            up.or(model).map_or(default, |d| d.0)
        };
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: pick(u.connect_timeout, m.connect_timeout, d.connect),
            first_byte: pick(u.first_byte_timeout, m.first_byte_timeout, d.first_byte),
            idle: pick(u.idle_timeout, m.idle_timeout, d.idle),
            total: pick(u.total_timeout, m.total_timeout, d.total),
        };
        let eject_after = u.eject_after.as_ref().or(m.eject_after.as_ref()).cloned();
        let check = u.health_check.as_ref().map(Spanned::get_ref);
        let probe = match check.or(m.health_check.as_ref()) {
            None => None,
            Some(h) => Some(self.probe(h, &url)?),
        };
        let readmit_after = u.readmit_after.as_ref().map(|d| *d.get_ref());
        let health = Health {
            eject_after: self.at_least_one(&eject_after, "eject_after", DEFAULT_EJECT_AFTER)?,
            readmit_after: pick(readmit_after, m.readmit_after, DEFAULT_READMIT_AFTER),
            probe,
        };

        Ok(Upstream {
            url,
            chat_completions_url,
            model,
            api_key_env,
            ca_file,
            weight: self.at_least_one(&u.weight, "weight", 1)?,
            timeouts,
            max_answer_bytes: u
                .max_answer_bytes
                .as_ref()
                .or(m.max_answer_bytes.as_ref())
                .map_or(DEFAULT_MAX_ANSWER_BYTES, |b| *b.get_ref()),
            health,
        })
    }

    /// Checks an upstream base URL; returns it parsed and as text without a trailing `/`.
    pub(super) fn base_url(&self, raw: &Spanned<String>) -> Result<(Uri, String), ConfigError> {
        let text = raw.get_ref();
        let base = check_base_url(
            text,
            BaseUrlRules {
                fragment: "must not have a fragment (#…)",
                query: "must not have a query (?…); the proxy appends /chat/completions",
                credentials: "use api_key_env",
            },
        )
        .map_err(|problem| self.invalid(raw, problem))?;
        let url = base
            .parse()
            .map_err(|e| self.invalid(raw, format!("invalid URL {text:?}: {e}")))?;
        Ok((url, base))
    }

    /// Refuses a model whose replicas end up with different health settings: the router applies
    /// one set per model, and silently using the first replica's would drop the others'.
    fn same_health(&self, m: &RawModel, upstreams: &[Upstream]) -> Result<(), ConfigError> {
        let Some(first) = upstreams.first() else {
            return Ok(());
        };
        for (i, up) in upstreams.iter().enumerate().skip(1) {
            if up.health.same_for_route(&first.health) {
                continue;
            }
            // At this replica's own health key, else at the first replica's (one of the two
            // overrides the model's settings, or they would agree).
            let span = m.upstreams[i]
                .health_span()
                .or_else(|| m.upstreams[0].health_span());
            let problem = format!(
                "model {:?}: replica {} has other health settings than replica 1 \
                 (eject_after, readmit_after, health_check); they apply to the whole model: \
                 set them on the [[models]] table, or the same on every replica",
                m.name.get_ref(),
                i + 1
            );
            return Err(self.error(ErrorKind::Invalid, span, problem));
        }
        Ok(())
    }

    pub(super) fn probe(&self, h: &RawHealthCheck, base: &Uri) -> Result<HealthProbe, ConfigError> {
        let (path, at) = match &h.path {
            None => (DEFAULT_PROBE_PATH, None),
            Some(p) => (p.get_ref().as_str(), Some(p)),
        };
        let fail = |why: &str| {
            let problem = format!("invalid health_check path {path:?}: {why}");
            match at {
                Some(p) => self.invalid(p, problem),
                None => self.error(ErrorKind::Invalid, None, problem),
            }
        };
        if !path.starts_with('/') {
            return Err(fail("must start with '/'"));
        }
        if path.contains('#') {
            return Err(fail("must not have a fragment (#…)"));
        }
        let scheme = base.scheme_str().unwrap_or("http");
        let authority = base.authority().map_or("", |a| a.as_str());
        let resolved = crate::upstream::probe_path(base.path(), path);
        let url = format!("{scheme}://{authority}{resolved}")
            .parse()
            .map_err(|e| fail(&format!("{e}")))?;
        Ok(HealthProbe {
            path: path.to_owned(),
            url,
            interval: h.interval.map_or(DEFAULT_PROBE_INTERVAL, |d| d.0),
            timeout: h.timeout.map_or(DEFAULT_PROBE_TIMEOUT, |d| d.0),
        })
    }

    pub(super) fn at_least_one(
        &self,
        value: &Option<Spanned<u32>>,
        key: &str,
        default: u32,
    ) -> Result<u32, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() == 0 => {
                Err(self.invalid(v, format!("{key} must be at least 1")))
            }
            Some(v) => Ok(*v.get_ref()),
        }
    }
}

/// What [`check_base_url`] says about the parts a base URL must not have.
pub(super) struct BaseUrlRules {
    /// The problem when it has a fragment.
    pub(super) fragment: &'static str,
    /// The problem when it has a query.
    pub(super) query: &'static str,
    /// Where credentials go instead.
    pub(super) credentials: &'static str,
}

/// The checks every base URL of the configuration passes (upstreams, the OTLP collector):
/// `http` or `https`, a host, no query, fragment or `user:password@`. Returns the URL without a
/// trailing `/`, or the problem (which never shows a URL that holds a credential).
pub(super) fn check_base_url(text: &str, rules: BaseUrlRules) -> Result<String, String> {
    let fail = |why: &str| format!("invalid URL {text:?}: {why}");
    if text.contains('#') {
        return Err(fail(rules.fragment));
    }
    if text.contains('?') {
        return Err(fail(rules.query));
    }
    let uri: Uri = text.parse().map_err(|e| fail(&format!("{e}")))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(fail("scheme must be http or https")),
    };
    let Some(authority) = uri.authority() else {
        return Err(fail("missing host"));
    };
    if authority.as_str().contains('@') {
        // The URL itself is left out: it holds a credential.
        return Err(format!(
            "invalid URL: must not contain credentials (user:password@); {}",
            rules.credentials
        ));
    }
    if authority.host().is_empty() {
        return Err(fail("missing host"));
    }
    Ok(format!(
        "{scheme}://{authority}{}",
        uri.path().trim_end_matches('/')
    ))
}

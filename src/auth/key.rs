//! API keys as the gateway stores them: a SHA-256 digest, never the secret.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::rate_limit::{Budget, Limits, ModelLimits};

/// The SHA-256 digest of an API key's secret: what stores keep and look up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// The digest of `secret`.
    ///
    /// ```
    /// use chatgate::auth::KeyDigest;
    /// let d = KeyDigest::of("sk-test");
    /// assert_eq!(KeyDigest::from_hex(&d.to_hex()), Some(d));
    /// ```
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let s = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(Self(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl std::fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A digest is not a secret, but it need not be printed whole either.
        write!(f, "KeyDigest({}…)", &self.to_hex()[..8])
    }
}

/// One API key: who it is, what it may use, and its limits.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct KeyRecord {
    /// A stable, non-secret id (logged, recorded in usage, shown to admins).
    pub id: String,
    /// Models the key may use, as glob patterns (`*` any run of characters, `?` one); empty
    /// means every model.
    pub models: Vec<String>,
    /// Limits over all models.
    pub limits: Limits,
    /// Limits per model (glob); the first matching entry applies, besides [`limits`](Self::limits).
    pub model_limits: Vec<ModelLimits>,
    /// After this instant the key is refused.
    pub expires_at: Option<SystemTime>,
    /// A disabled (revoked) key is refused.
    pub disabled: bool,
    /// Free-form attributes (team, user, …), recorded with usage.
    pub metadata: BTreeMap<String, String>,
    /// Tokens and money the key may spend per period (see
    /// [budgets](crate::rate_limit#budgets)); `None`: unlimited.
    pub budget: Option<Budget>,
}

impl KeyRecord {
    /// A key with `id`, every model allowed, no limits.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }

    /// Whether the key may be used at `now` (not disabled, not expired).
    pub fn is_active(&self, now: SystemTime) -> bool {
        !self.disabled && self.expires_at.is_none_or(|t| now < t)
    }

    /// Whether the key may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|p| glob_match(p, model))
    }

    /// The per-model limits that apply to `model`, if any.
    pub fn limits_for(&self, model: &str) -> Option<&Limits> {
        self.model_limits_for(model).map(|m| &m.limits)
    }

    /// The first [`model_limits`](Self::model_limits) entry whose pattern matches `model`.
    pub fn model_limits_for(&self, model: &str) -> Option<&ModelLimits> {
        self.model_limits
            .iter()
            .find(|m| glob_match(&m.model, model))
    }
}

/// Glob matching with `*` (any run, including none) and `?` (one character).
///
/// ```
/// use chatgate::auth::glob_match;
/// assert!(glob_match("qwen*", "qwen2.5-7b"));
/// assert!(glob_match("gpt-4?", "gpt-4o"));
/// assert!(!glob_match("echo", "echo2"));
/// assert!(glob_match("*", ""));
/// ```
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Byte offsets at character boundaries: no allocation, `?` takes one character.
    let next = |s: &str, i: usize| s[i..].chars().next();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(tc) = next(text, ti) {
        match next(pattern, pi) {
            Some(pc) if pc == '?' || pc == tc => {
                pi += pc.len_utf8();
                ti += tc.len_utf8();
            }
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            _ => {
                let Some((sp, st)) = star else {
                    return false;
                };
                pi = sp + 1;
                ti = st + next(text, st).map_or(1, char::len_utf8);
                star = Some((sp, ti));
            }
        }
    }
    pattern[pi..].chars().all(|c| c == '*')
}

/// The authenticated caller, in the request extensions (put there by
/// [`AuthLayer`](super::AuthLayer)).
#[derive(Clone, Debug)]
pub struct Principal(pub Arc<KeyRecord>);

impl Principal {
    /// The key's id.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The key's record.
    pub fn key(&self) -> &KeyRecord {
        &self.0
    }
}

/// Why a key store could not answer (the store is down, not "unknown key").
#[derive(Debug)]
pub struct KeyStoreError {
    message: String,
}

impl KeyStoreError {
    /// An error with a message (never containing a secret).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KeyStoreError {}

/// What a lookup yields: the key, or `None` for an unknown digest.
pub type LookupResult = Result<Option<Arc<KeyRecord>>, KeyStoreError>;

/// The future of a [`Lookup::Pending`]: it owns what it needs (stores keep their state behind
/// `Arc`s), so the authentication layer can keep it across polls without borrowing the store.
pub type LookupFuture = Pin<Box<dyn Future<Output = LookupResult> + Send + 'static>>;

/// A lookup that is answered at once (in-memory stores, cache hits) or later (a database).
pub enum Lookup {
    /// Answered now: no allocation, no await.
    Ready(LookupResult),
    /// Answered by a future.
    Pending(LookupFuture),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Lookup::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Where API keys are kept, by digest. Implementations: [`ConfigKeyStore`](super::ConfigKeyStore)
/// (in memory, from configuration) and, with the `postgres` feature,
/// `postgres::PgKeyStore` (a PostgreSQL table with a cache).
pub trait KeyStore: Send + Sync + 'static {
    /// The key whose secret has this digest.
    ///
    /// An unknown digest is `Ok(None)`; disabled and expired keys are returned as they are (the
    /// layer refuses them), so a store need not know the time. `Err` means the store could not
    /// answer (the layer fails closed: 503).
    fn lookup(&self, digest: &KeyDigest) -> Lookup;
}

impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    fn lookup(&self, digest: &KeyDigest) -> Lookup {
        (**self).lookup(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    /// The textbook matcher, over characters collected into vectors.
    fn reference(pattern: &str, text: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        fn at(p: &[char], t: &[char]) -> bool {
            match p.first() {
                None => t.is_empty(),
                Some('*') => (0..=t.len()).any(|k| at(&p[1..], &t[k..])),
                Some(&c) => t
                    .first()
                    .is_some_and(|&d| (c == '?' || c == d) && at(&p[1..], &t[1..])),
            }
        }
        at(&p, &t)
    }

    #[test]
    fn globs_match_as_the_reference_does_on_every_short_string() {
        let alphabet = ['a', 'é', '*', '?'];
        // Every string of up to `n` characters of the alphabet.
        let words = |n: usize| -> Vec<String> {
            let mut all = vec![String::new()];
            let mut last = all.clone();
            for _ in 0..n {
                last = last
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                    .collect();
                all.extend(last.iter().cloned());
            }
            all
        };
        let patterns = words(4);
        let texts: Vec<String> = words(4)
            .into_iter()
            .filter(|w| !w.contains(['*', '?']))
            .collect();
        assert!(patterns.len() > 300 && texts.len() > 20);
        for p in &patterns {
            for t in &texts {
                assert_eq!(glob_match(p, t), reference(p, t), "{p:?} {t:?}");
            }
        }
        assert!(glob_match("q?en*", "qüen2.5"));
        assert!(!glob_match("é?", "é"));
    }
}

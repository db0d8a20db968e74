//! Tokenizer families and the model-name mapping.

use std::fmt;
use std::str::FromStr;

/// A tokenizer family: which vocabulary counts a model's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-5 and the `o` series.
    O200k,
    /// `cl100k_base`: GPT-4, GPT-3.5, `text-embedding-3`.
    Cl100k,
    /// Any other model: counted with a documented estimate
    /// (see [`count_text`](super::count_text)).
    Unknown,
}

impl Family {
    /// The canonical name: `o200k_base`, `cl100k_base` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::O200k => "o200k_base",
            Family::Cl100k => "cl100k_base",
            Family::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Family::from_str`]: the name is not a known family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFamily(String);

impl fmt::Display for UnknownFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown tokenizer family `{}` (expected o200k_base, cl100k_base or unknown)",
            self.0
        )
    }
}

impl std::error::Error for UnknownFamily {}

impl FromStr for Family {
    type Err = UnknownFamily;

    /// Parses a family name, as a configuration's override would give it: `o200k_base` (or
    /// `o200k`), `cl100k_base` (or `cl100k`), `unknown` (or `estimate`); ASCII case is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "o200k_base" | "o200k" => Ok(Family::O200k),
            "cl100k_base" | "cl100k" => Ok(Family::Cl100k),
            "unknown" | "estimate" => Ok(Family::Unknown),
            _ => Err(UnknownFamily(s.to_owned())),
        }
    }
}

/// The tokenizer family of an OpenAI model name.
///
/// | model name starts with | family |
/// |---|---|
/// | `gpt-4o`, `gpt-4.1`, `gpt-4.5`, `gpt-5`, `o1`, `o3`, `o4`, `chatgpt-4o` | [`Family::O200k`] |
/// | `gpt-4`, `gpt-3.5`, `gpt-35`, `text-embedding-3`, `text-embedding-ada-002` | [`Family::Cl100k`] |
/// | anything else | [`Family::Unknown`] |
///
/// ASCII case is ignored, and a provider prefix ending in `/` (`openai/gpt-4o`,
/// `azure/gpt-4o-mini`) is skipped. The longer prefixes win (`gpt-4o-mini` is o200k, `gpt-4-turbo`
/// cl100k).
///
/// This reads the name only. A gateway's route names are often aliases (`default`, `fast`,
/// `my-gpt`) and an upstream's deployment names may be anything (Azure): callers that know the
/// real model should pass its family explicitly (e.g. from configuration, parsed with
/// [`Family::from_str`]) rather than rely on this guess; every counting function takes the
/// family, not the name.
///
/// ```
/// use chatgate::tokens::{family_of, Family};
/// assert_eq!(family_of("gpt-4o-mini"), Family::O200k);
/// assert_eq!(family_of("openai/gpt-4-turbo"), Family::Cl100k);
/// assert_eq!(family_of("claude-sonnet-4"), Family::Unknown);
/// ```
pub fn family_of(model: &str) -> Family {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
    if starts(&[
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "chatgpt-4o",
        "o1",
        "o3",
        "o4",
    ]) {
        Family::O200k
    } else if starts(&[
        "gpt-4",
        "gpt-3.5",
        "gpt-35",
        "text-embedding-3",
        "text-embedding-ada-002",
    ]) {
        Family::Cl100k
    } else {
        Family::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        for m in [
            "gpt-4o",
            "gpt-4o-2024-08-06",
            "gpt-4o-mini",
            "gpt-4.1-nano",
            "gpt-5",
            "gpt-5-mini",
            "o1-preview",
            "o3-mini",
            "o4-mini",
            "GPT-4O",
            "openai/gpt-4o",
        ] {
            assert_eq!(family_of(m), Family::O200k, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-3.5-turbo",
            "gpt-35-turbo",
            "text-embedding-3-small",
        ] {
            assert_eq!(family_of(m), Family::Cl100k, "{m}");
        }
        for m in [
            "",
            "default",
            "claude-3-5-sonnet",
            "llama-3.1-70b",
            "mistral",
            "o",
        ] {
            assert_eq!(family_of(m), Family::Unknown, "{m}");
        }
    }

    #[test]
    fn parse_and_display() {
        for f in [Family::O200k, Family::Cl100k, Family::Unknown] {
            assert_eq!(f.to_string().parse::<Family>(), Ok(f));
        }
        assert_eq!("O200K".parse::<Family>(), Ok(Family::O200k));
        assert_eq!("cl100k".parse::<Family>(), Ok(Family::Cl100k));
        assert!("p50k_base".parse::<Family>().is_err());
    }
}

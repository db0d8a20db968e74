//! Configuration errors: `file:line:column: problem`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded, or a key not resolved.
///
/// Its `Display` is one line, `file:line:column: problem` (or `file: problem` when no position
/// applies), and never contains a credential. For an unreadable file it includes the I/O error.
#[derive(Debug)]
pub struct ConfigError {
    pub(super) kind: ErrorKind,
    pub(super) file: Option<PathBuf>,
    pub(super) position: Option<Position>,
    pub(super) problem: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ErrorKind {
    /// The file could not be read.
    Io,
    /// Not TOML, or not the expected shape (unknown key, wrong type, missing key).
    Syntax,
    /// Well-formed but invalid (bad URL, duplicate model, unknown fallback…).
    Invalid,
    /// An `api_key_env` variable could not be resolved.
    Env,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) line: usize,
    pub(super) column: usize,
}

impl ConfigError {
    /// Whether the file could not be read.
    pub fn is_io(&self) -> bool {
        self.kind == ErrorKind::Io
    }

    /// Whether an `api_key_env` variable could not be resolved.
    pub fn is_env(&self) -> bool {
        self.kind == ErrorKind::Env
    }

    /// The configuration file concerned.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The 1-based line of the problem.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.line)
    }

    /// The 1-based column (in characters) of the problem.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|p| p.column)
    }

    /// The problem alone, without file and position.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(p) = self.position {
                write!(f, "{}:{}:", p.line, p.column)?;
            }
            f.write_str(" ")?;
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for ConfigError {}

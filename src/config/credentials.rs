//! Credentials and CA files named by the configuration, read only when needed.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use http::HeaderValue;

use super::{ConfigError, ErrorKind, Position};

/// The name of the environment variable holding an upstream's key (`api_key_env`).
///
/// Only the name is kept; [`ApiKeyEnv::resolve`] reads the variable when it is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyEnv {
    pub(super) name: String,
    pub(super) model: String,
    pub(super) file: PathBuf,
    pub(super) position: Position,
}

impl ApiKeyEnv {
    /// The variable's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the variable now.
    ///
    /// # Errors
    /// The variable is unset, empty, not UTF-8, or holds characters other than printable ASCII
    /// without spaces. The error names the variable and where the file names it, never its
    /// value; [`ConfigError::is_env`] is true.
    pub fn resolve(&self) -> Result<ApiKey, ConfigError> {
        self.resolve_from(std::env::var_os(&self.name))
    }

    pub(super) fn resolve_from(&self, value: Option<OsString>) -> Result<ApiKey, ConfigError> {
        let fail = |why: &str| ConfigError {
            kind: ErrorKind::Env,
            file: Some(self.file.clone()),
            position: Some(self.position),
            problem: format!(
                "environment variable `{}` (api_key_env of model {:?}) {why}",
                self.name, self.model
            ),
        };
        let value = value.ok_or_else(|| fail("is not set"))?;
        let value = value
            .into_string()
            .map_err(|_| fail("is not valid UTF-8"))?;
        if value.is_empty() {
            return Err(fail("is empty"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail(
                "holds characters other than printable ASCII (spaces and newlines included)",
            ));
        }
        let mut header = HeaderValue::try_from(format!("Bearer {value}"))
            .map_err(|_| fail("cannot be sent in an HTTP header"))?;
        header.set_sensitive(true);
        Ok(ApiKey { value, header })
    }
}

/// A PEM file of CA certificates an `https` upstream is verified against, instead of the
/// bundled roots (`ca_file`).
///
/// Only the path is kept; [`CaFile::read`] reads and checks the file when it is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFile {
    pub(super) path: PathBuf,
    pub(super) file: PathBuf,
    pub(super) position: Position,
}

impl CaFile {
    /// The path, resolved against the configuration file's directory when it was relative.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file now and checks that it holds at least one usable PEM certificate.
    ///
    /// # Errors
    /// The file cannot be read, holds malformed PEM or no certificate, or a certificate that
    /// cannot be a trust anchor; the error names the configuration file and the position of
    /// `ca_file`.
    pub fn read(&self) -> Result<bytes::Bytes, ConfigError> {
        let fail = |why: String| ConfigError {
            kind: ErrorKind::Invalid,
            file: Some(self.file.clone()),
            position: Some(self.position),
            problem: format!("ca_file {:?}: {why}", self.path.display().to_string()),
        };
        let pem = std::fs::read(&self.path).map_err(|e| fail(format!("cannot read: {e}")))?;
        crate::upstream::check_root_certificates(&pem).map_err(fail)?;
        Ok(pem.into())
    }
}

/// An upstream's key, read by [`ApiKeyEnv::resolve`]. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct ApiKey {
    pub(super) value: String,
    pub(super) header: HeaderValue,
}

impl ApiKey {
    /// The key itself. Keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The `Authorization: Bearer …` header value, marked sensitive.
    pub fn authorization(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

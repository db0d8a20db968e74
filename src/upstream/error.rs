use std::borrow::Cow;
use std::fmt;

/// Why an [`UpstreamConfig`](super::UpstreamConfig) cannot be used.
#[derive(Debug)]
pub struct UpstreamConfigError {
    message: Cow<'static, str>,
}

impl UpstreamConfigError {
    pub(crate) const fn new(message: &'static str) -> Self {
        Self {
            message: Cow::Borrowed(message),
        }
    }

    pub(crate) fn owned(message: String) -> Self {
        Self {
            message: Cow::Owned(message),
        }
    }
}

impl fmt::Display for UpstreamConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UpstreamConfigError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Connect,
    ConnectTimeout,
    FirstByteTimeout,
    IdleTimeout,
    TotalTimeout,
    Protocol,
    /// A non-streamed 2xx answer that is not a chat completion.
    InvalidAnswer,
}

/// A transport failure talking to an upstream.
///
/// It is put in the extensions of the 502/504 responses that [`Upstream`](super::Upstream)
/// writes itself (so a router can tell them from an upstream's own 502), and it is the error of
/// a non-streamed [`UpstreamBody`](super::UpstreamBody) that fails mid-way.
#[derive(Clone, Debug)]
pub struct UpstreamFailure {
    kind: FailureKind,
    detail: Box<str>,
}

impl UpstreamFailure {
    pub(crate) fn new(kind: FailureKind, detail: impl Into<Box<str>>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// The connection could not be established (refused, unreachable, TLS failure, connect
    /// timeout): nothing reached the upstream, so another replica may be tried.
    pub fn is_connect(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Connect | FailureKind::ConnectTimeout
        )
    }

    /// A deadline passed (connect, first byte, idle gap or total).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::ConnectTimeout
                | FailureKind::FirstByteTimeout
                | FailureKind::IdleTimeout
                | FailureKind::TotalTimeout
        )
    }

    /// The text sent to the client (without the detail, which may name internal addresses).
    pub fn message(&self) -> &'static str {
        match self.kind {
            FailureKind::Connect => "could not connect to the upstream",
            FailureKind::ConnectTimeout => "timed out connecting to the upstream",
            FailureKind::FirstByteTimeout => "the upstream did not answer in time",
            FailureKind::IdleTimeout => "the upstream stopped sending",
            FailureKind::TotalTimeout => "the upstream exceeded the total time limit",
            FailureKind::Protocol => "the upstream connection failed",
            FailureKind::InvalidAnswer => "the upstream's answer is not a chat completion",
        }
    }

    /// The upstream answered 2xx with a body that is not a chat completion (not JSON, or JSON
    /// of another shape); the client got a 502 instead.
    pub fn is_invalid_answer(&self) -> bool {
        self.kind == FailureKind::InvalidAnswer
    }
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for UpstreamFailure {}

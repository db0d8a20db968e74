//! Limit values, shared by keys, configuration and the limiter.

/// Limits of one scope (a key, or a key and a model). `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
}

impl Limits {
    /// No limits.
    pub const fn none() -> Self {
        Self {
            rpm: None,
            tpm: None,
            max_concurrent: None,
        }
    }

    /// Sets [`rpm`](Self::rpm).
    pub const fn rpm(mut self, n: u32) -> Self {
        self.rpm = Some(n);
        self
    }

    /// Sets [`tpm`](Self::tpm).
    pub const fn tpm(mut self, n: u64) -> Self {
        self.tpm = Some(n);
        self
    }

    /// Sets [`max_concurrent`](Self::max_concurrent).
    pub const fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// Whether nothing is limited.
    pub const fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_concurrent.is_none()
    }
}

/// Limits for the models matching a glob pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelLimits {
    /// The model pattern (`*` and `?`).
    pub model: String,
    /// The limits.
    pub limits: Limits,
}

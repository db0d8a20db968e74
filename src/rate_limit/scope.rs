//! The scopes a request is counted in.

use std::fmt;
use std::net::IpAddr;

/// A scope of a request: whose counters it is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope<'a> {
    /// A key, over all models (`KeyRecord::limits`).
    Key {
        /// The key's id.
        id: &'a str,
    },
    /// A key and one model (`KeyRecord::limits_for(model)`): each model matching the key's
    /// pattern has its own counters.
    KeyModel {
        /// The key's id.
        id: &'a str,
        /// The requested model.
        model: &'a str,
    },
    /// A key and every model matching one of its `model_limits` patterns that is not a known
    /// model (see [`RateLimitConfig::models`](super::RateLimitConfig::models)): such names
    /// share one set of counters.
    KeyPattern {
        /// The key's id.
        id: &'a str,
        /// The pattern.
        pattern: &'a str,
    },
    /// A caller without a key, by IP address (the anonymous limits).
    Anonymous {
        /// The peer's address.
        ip: IpAddr,
    },
}

impl Scope<'_> {
    /// The counter key: `key:<id>`, `model:<id length>:<id>:<model>` (the length keeps ids with
    /// `:` unambiguous), `pattern:<id length>:<id>:<pattern>` or `ip:<address>`.
    ///
    /// ```
    /// use chatgate::rate_limit::Scope;
    /// assert_eq!(Scope::Key { id: "a" }.key(), "key:a");
    /// assert_eq!(Scope::KeyModel { id: "a:b", model: "m" }.key(), "model:3:a:b:m");
    /// assert_eq!(Scope::KeyPattern { id: "a", pattern: "q*" }.key(), "pattern:1:a:q*");
    /// assert_eq!(Scope::Anonymous { ip: [10, 0, 0, 1].into() }.key(), "ip:10.0.0.1");
    /// ```
    pub fn key(&self) -> String {
        match self {
            Scope::Key { id } => format!("key:{id}"),
            Scope::KeyModel { id, model } => format!("model:{}:{id}:{model}", id.len()),
            Scope::KeyPattern { id, pattern } => format!("pattern:{}:{id}:{pattern}", id.len()),
            Scope::Anonymous { ip } => format!("ip:{ip}"),
        }
    }
}

/// How a 429 names the scope: "key `a`", "key `a` and model `m`", "key `a` and models
/// matching `m*`", "this client address".
impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Key { id } => write!(f, "key `{id}`"),
            Scope::KeyModel { id, model } => write!(f, "key `{id}` and model `{model}`"),
            Scope::KeyPattern { id, pattern } => {
                write!(f, "key `{id}` and models matching `{pattern}`")
            }
            Scope::Anonymous { .. } => f.write_str("this client address"),
        }
    }
}

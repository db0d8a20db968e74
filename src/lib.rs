#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod body;
#[cfg(feature = "config")]
pub mod config;
pub mod contract;
pub mod echo;
pub mod error;
pub mod gateway;
mod json;
mod macros;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod rate_limit;
pub mod request_id;
pub mod route;
pub mod server_tools;
pub mod sse;
pub mod tokens;
pub mod upstream;
pub mod usage;
pub mod validate;

pub use echo::EchoModel;
pub use upstream::{Upstream, UpstreamConfig};
pub use validate::{ValidateLayer, ValidatedRequest};

/// A boxed, thread-safe error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

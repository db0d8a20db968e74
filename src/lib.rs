#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
#[cfg(feature = "config")]
pub mod config;
pub mod contract;
pub mod error;
mod json;
mod macros;
pub mod validate;

pub use validate::{ValidateLayer, ValidatedRequest};

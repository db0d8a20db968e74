//! Rate limiting per key and per (key, model): requests per minute, tokens per minute and
//! concurrent requests.

mod limits;

pub use limits::{Limits, ModelLimits};

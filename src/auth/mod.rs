//! API-key authentication ([`AuthLayer`], 401) and model access per key
//! ([`ModelAccessLayer`], 403).
//!
//! # Authentication (401)
//!
//! [`AuthLayer`] reads the key from `Authorization: Bearer <key>` (the scheme in any case, spaces
//! or tabs after it) or from a bare `Authorization: <key>`, hashes it with SHA-256 and looks the
//! [`KeyDigest`] up in a [`KeyStore`]. It reads only headers, so it is generic over the request
//! body and goes **before** [`ValidateLayer`](crate::ValidateLayer): a 401 costs no body read.
//!
//! | case | status | body |
//! |---|---|---|
//! | no `Authorization`, an empty one, or `Bearer` alone | 401, `WWW-Authenticate: Bearer` | envelope, `invalid_request_error`, `param: null`, `code: "invalid_api_key"` |
//! | malformed (another scheme, spaces inside the token, non-ASCII, several headers), unknown, disabled or expired key | 401, `WWW-Authenticate: Bearer` | the same envelope, one message for all of them |
//! | the key store cannot answer ([`KeyStoreError`]) | 503, `Retry-After: 1` | envelope, `server_error`, `code: "service_unavailable"` |
//!
//! The layer **fails closed**: when the store is down, nobody gets in (503, not a pass). No
//! response and no error message contains the presented key; disabled and expired keys get the
//! same answer as unknown ones, so a caller cannot tell which keys exist.
//!
//! On success the inner service gets the request with a [`Principal`] (the key's
//! [`KeyRecord`]) in its extensions, and **without** its `Authorization` header: the client's
//! credential is never forwarded (the upstream client replaces it anyway, belt and braces).
//!
//! Secrets are never stored: stores hold SHA-256 digests, and the presented key is hashed before
//! the lookup. The lookup compares digests, not secrets, so how long it takes tells an attacker
//! nothing usable about a secret (learning a prefix of a digest does not help to find a
//! preimage). API keys are long random strings, so a fast hash is the right one (no password
//! hashing).
//!
//! A [`KeyStore`] answers [`Lookup::Ready`] when it can without waiting (the in-memory
//! [`ConfigKeyStore`], a database store's cache hit): the layer then calls the inner service in
//! the same `call`, with no allocation. [`Lookup::Pending`] (a database query) is awaited in the
//! response future, which then calls the inner service it took when it was made ready.
//!
//! Open gateways: with no keys configured, don't mount the layer (the bundled proxy says so at
//! start). There is no "optional" mode that lets keyless requests through.
//!
//! # Model access (403)
//!
//! [`ModelAccessLayer`] needs the parsed model, so it is a `Service<Request<ValidatedRequest>>`
//! and goes **inside** [`ValidateLayer`](crate::ValidateLayer), in front of the router. When the
//! request's [`Principal`] may not use the model ([`KeyRecord::allows_model`]: the key's glob
//! patterns, none meaning every model) it answers 403 with `type: "invalid_request_error"`,
//! `param: "model"`, `code: "model_not_allowed"`. Without a principal it passes.
//!
//! **403 before 404.** Access is checked before routing, so a key learns nothing about models
//! outside its patterns: any model it may not use is 403, whether or not the gateway serves it.
//! A model inside its patterns that the gateway does not serve is the router's 404
//! `model_not_found`.
//!
//! ```text
//!   request ─▶ AuthLayer (401/503) ─▶ ValidateLayer (413/422/…) ─▶ ModelAccessLayer (403) ─▶ ModelRouter (404/…)
//! ```
//!
//! # Example
//!
//! ```
//! use chatgate::auth::{AuthLayer, ConfigKeyStore, KeyDigest, KeyRecord, ModelAccessLayer, Principal};
//! use chatgate::{route::ModelRouter, EchoModel, ValidateLayer};
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut team_a = KeyRecord::new("team-a");
//! team_a.models = vec!["echo*".to_owned()];
//! let store = ConfigKeyStore::new([(KeyDigest::of("sk-team-a"), team_a)]).unwrap();
//!
//! let router = ModelRouter::builder()
//!     .service("echo", EchoModel::new())
//!     .service("other", EchoModel::new())
//!     .build();
//! let chat = ServiceBuilder::new()
//!     .layer(AuthLayer::new(store))
//!     .layer(ValidateLayer::new())
//!     .layer(ModelAccessLayer::new())
//!     .service(router);
//!
//! let request = |key: Option<&str>, model: &str| {
//!     let mut req = Request::post("/v1/chat/completions").header("content-type", "application/json");
//!     if let Some(key) = key {
//!         req = req.header("authorization", format!("Bearer {key}"));
//!     }
//!     let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
//!     req.body(Full::new(Bytes::from(body))).unwrap()
//! };
//! let status = |req| {
//!     let chat = chat.clone();
//!     async move { chat.oneshot(req).await.unwrap().status() }
//! };
//! assert_eq!(status(request(Some("sk-team-a"), "echo")).await, 200);
//! assert_eq!(status(request(None, "echo")).await, 401);
//! assert_eq!(status(request(Some("sk-wrong"), "echo")).await, 401);
//! assert_eq!(status(request(Some("sk-team-a"), "other")).await, 403);
//! assert_eq!(status(request(Some("sk-team-a"), "no-such-model")).await, 403);
//! assert_eq!(status(request(Some("sk-team-a"), "echo-2")).await, 404);
//! # }
//! ```
//!
//! # Stores
//!
//! * [`ConfigKeyStore`]: in memory, from the `[[keys]]` of the configuration file (see
//!   `chatgate::config`); a reload rebuilds it, so a key removed or disabled in the file stops
//!   at the reload.
//! * With the `postgres` feature, `postgres::PgKeyStore`: a PostgreSQL table with an
//!   in-process cache (hits are `Ready`), and `postgres::AdminKeys`, endpoints to create, list,
//!   change and revoke keys.

mod access;
mod errors;
mod future;
mod header;
mod key;
mod layer;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
mod service;
mod store;
#[cfg(test)]
mod tests;
mod time;
pub(crate) use time::{civil_from_days, days_from_civil};

pub use access::{AccessFuture, ModelAccess, ModelAccessLayer};
pub use future::ResponseFuture;
pub use key::{
    KeyDigest, KeyRecord, KeyStore, KeyStoreError, Lookup, LookupFuture, LookupResult, Principal,
    glob_match,
};
pub use layer::AuthLayer;
pub use service::Auth;
pub use store::{ConfigKeyStore, ConfigKeyStoreError};
pub use time::{format_rfc3339, parse_rfc3339};

//! API-key authentication.

mod key;

pub use key::{
    KeyDigest, KeyRecord, KeyStore, KeyStoreError, Lookup, LookupResult, Principal, glob_match,
};

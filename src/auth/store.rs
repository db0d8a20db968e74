//! [`ConfigKeyStore`]: keys held in memory, from configuration.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;

use super::{KeyDigest, KeyRecord, KeyStore, Lookup};

/// Keys in memory, by digest: every lookup is [`Lookup::Ready`] (a hash-map probe).
///
/// Built from `(digest, record)` pairs; two keys with the same digest or the same id are an
/// error. A reload builds a new store from the file, so a key removed or disabled in the file
/// stops working at the reload.
///
/// ```
/// use chatgate::auth::{ConfigKeyStore, KeyDigest, KeyRecord};
/// let store = ConfigKeyStore::new([(KeyDigest::of("sk-a"), KeyRecord::new("team-a"))]).unwrap();
/// assert_eq!(store.len(), 1);
/// assert_eq!(store.get(&KeyDigest::of("sk-a")).unwrap().id, "team-a");
/// assert!(store.get(&KeyDigest::of("sk-b")).is_none());
///
/// let dup = ConfigKeyStore::new([
///     (KeyDigest::of("sk-a"), KeyRecord::new("a")),
///     (KeyDigest::of("sk-a"), KeyRecord::new("b")),
/// ]);
/// assert_eq!(dup.unwrap_err().to_string(), r#"keys "a" and "b" have the same secret"#);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConfigKeyStore {
    keys: HashMap<KeyDigest, Arc<KeyRecord>>,
}

impl ConfigKeyStore {
    /// A store of these keys.
    ///
    /// # Errors
    /// Two keys share a digest (the same secret) or an id.
    pub fn new(
        keys: impl IntoIterator<Item = (KeyDigest, KeyRecord)>,
    ) -> Result<Self, ConfigKeyStoreError> {
        let keys = keys.into_iter();
        let mut map: HashMap<KeyDigest, Arc<KeyRecord>> =
            HashMap::with_capacity(keys.size_hint().0);
        let mut ids = std::collections::HashSet::new();
        for (digest, record) in keys {
            if !ids.insert(record.id.clone()) {
                return Err(ConfigKeyStoreError::DuplicateId(record.id));
            }
            match map.entry(digest) {
                Entry::Occupied(first) => {
                    return Err(ConfigKeyStoreError::DuplicateDigest(
                        first.get().id.clone(),
                        record.id,
                    ));
                }
                Entry::Vacant(slot) => {
                    slot.insert(Arc::new(record));
                }
            }
        }
        Ok(Self { keys: map })
    }

    /// The key with this digest.
    pub fn get(&self, digest: &KeyDigest) -> Option<&Arc<KeyRecord>> {
        self.keys.get(digest)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values().map(|r| &**r)
    }
}

impl KeyStore for ConfigKeyStore {
    fn lookup(&self, digest: &KeyDigest) -> Lookup {
        Lookup::Ready(Ok(self.keys.get(digest).cloned()))
    }
}

/// Why a [`ConfigKeyStore`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigKeyStoreError {
    /// Two keys (these ids) have the same digest.
    DuplicateDigest(String, String),
    /// Two keys have this id.
    DuplicateId(String),
}

impl fmt::Display for ConfigKeyStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateDigest(a, b) => write!(f, "keys {a:?} and {b:?} have the same secret"),
            Self::DuplicateId(id) => write!(f, "two keys have the id {id:?}"),
        }
    }
}

impl std::error::Error for ConfigKeyStoreError {}

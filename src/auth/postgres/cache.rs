//! The key cache of [`PgKeyStore`](super::PgKeyStore): digest → record (or "unknown"), each
//! entry valid until its deadline; bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::auth::{KeyDigest, KeyRecord};

#[derive(Debug)]
struct Entry {
    record: Option<Arc<KeyRecord>>,
    until: Instant,
}

/// A TTL cache. `tokio::time::Instant`, so tests drive it with `tokio::time::pause`/`advance`.
#[derive(Debug)]
pub(super) struct Cache {
    // SipHash with a random key (the std default): negative entries are keyed by digests an
    // attacker chooses, so the hasher must not be predictable.
    entries: Mutex<HashMap<KeyDigest, Entry>>,
    ttl: Duration,
    negative_ttl: Duration,
    capacity: usize,
}

impl Cache {
    pub(super) fn new(ttl: Duration, negative_ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            negative_ttl,
            capacity: capacity.max(1),
        }
    }

    /// `Some(answer)` while the entry is fresh.
    pub(super) fn get(&self, digest: &KeyDigest) -> Option<Option<Arc<KeyRecord>>> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(digest)
            .filter(|e| e.until > now)
            .map(|e| e.record.clone())
    }

    pub(super) fn insert(&self, digest: KeyDigest, record: Option<Arc<KeyRecord>>) {
        let ttl = if record.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, e| e.until > now);
            // Still full of fresh entries: drop an arbitrary tenth (at least one), which keeps
            // eviction amortised O(1) without tracking recency.
            if entries.len() >= self.capacity {
                let drop: Vec<KeyDigest> = entries
                    .keys()
                    .take((self.capacity / 10).max(1))
                    .copied()
                    .collect();
                for d in drop {
                    entries.remove(&d);
                }
            }
        }
        entries.insert(
            digest,
            Entry {
                record,
                until: now + ttl,
            },
        );
    }

    /// Forgets the entries of the key `id` (after a change through this process).
    pub(super) fn forget_id(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, e| e.record.as_ref().is_none_or(|r| r.id != id));
    }

    /// Forgets one digest (a key just created may have been cached as unknown).
    pub(super) fn forget(&self, digest: &KeyDigest) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(digest);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_the_size_is_bounded() {
        let cache = Cache::new(Duration::from_secs(30), Duration::from_secs(5), 20);
        let known = KeyDigest::of("known");
        let unknown = KeyDigest::of("unknown");
        cache.insert(known, Some(Arc::new(KeyRecord::new("a"))));
        cache.insert(unknown, None);
        assert!(matches!(cache.get(&known), Some(Some(_))));
        assert!(matches!(cache.get(&unknown), Some(None)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(
            cache.get(&unknown).is_none(),
            "negative entries are short-lived"
        );
        assert!(cache.get(&known).is_some());
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(cache.get(&known).is_none());

        for i in 0..100 {
            cache.insert(KeyDigest::of(&i.to_string()), None);
            assert!(cache.len() <= 20);
        }
        cache.insert(known, Some(Arc::new(KeyRecord::new("a"))));
        cache.forget_id("a");
        assert!(cache.get(&known).is_none());
    }
}

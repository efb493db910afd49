use std::sync::Arc;
use std::time::{Duration, Instant};

use super::DataKey;
use crate::bounded_map::BoundedMap;

/// A wrapped key and the Transit key that wraps it: Transit decrypts a
/// wrapped key only under the key named, so two names with the same
/// wrapped string (an upstream can write any envelope) are two entries.
pub type CacheKey = (String, String);

/// Unwrapped data keys by (Transit key, wrapped key), bounded in count and
/// age. Evicted keys are zeroized when their last user drops them (see [`DataKey`]).
pub struct KeyCache {
    ttl: Duration,
    by_wrapped: BoundedMap<CacheKey, (Arc<DataKey>, Instant)>,
    /// Raised by every erasure: a key unwrapped before one and inserted
    /// after it must not survive it (see [`KeyCache::insert_unless_erased`]).
    erasures: std::sync::atomic::AtomicU64,
}

impl KeyCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = if ttl.is_zero() { 0 } else { capacity };
        Self { ttl, by_wrapped: BoundedMap::new(capacity), erasures: Default::default() }
    }

    pub fn get(&self, id: &CacheKey) -> Option<Arc<DataKey>> {
        let (key, inserted) = self.by_wrapped.get(id)?;
        if inserted.elapsed() < self.ttl {
            return Some(key);
        }
        self.by_wrapped.remove(id);
        None
    }

    pub fn insert(&self, id: CacheKey, key: Arc<DataKey>) {
        self.by_wrapped.insert(id, (key, Instant::now()));
    }

    /// Drops every key unwrapped under `transit_key` (erased in Vault:
    /// nothing of it may be served from memory either). Returns how many.
    pub fn forget_transit_key(&self, transit_key: &str) -> usize {
        // Raised first: an insert racing this either lands before the
        // sweep (and goes with it) or sees the new count (and undoes itself).
        self.erasures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.by_wrapped.retain(|(name, _), _| name != transit_key)
    }

    /// The erasure count now, taken before asking Vault for a key.
    pub fn erasures(&self) -> u64 {
        self.erasures.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Caches a key Vault gave when the erasure count was `seen`, unless a
    /// Transit key was erased since: the answer may predate the erasure.
    pub fn insert_unless_erased(&self, id: CacheKey, key: Arc<DataKey>, seen: u64) {
        self.insert(id.clone(), key);
        if self.erasures() != seen {
            self.by_wrapped.remove(&id);
        }
    }

    /// One wrapped key cached under `transit_key`, to ask Vault whether
    /// that key still exists.
    pub fn any_wrapped_under(&self, transit_key: &str) -> Option<String> {
        self.by_wrapped.find_key(|(name, _)| name == transit_key).map(|(_, wrapped)| wrapped)
    }

    pub fn len(&self) -> usize {
        self.by_wrapped.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_wrapped.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(wrapped: &str) -> CacheKey {
        ("app".into(), wrapped.into())
    }

    fn key(b: u8) -> Arc<DataKey> {
        Arc::new(DataKey::from_slice(&[b; 32]).unwrap())
    }

    #[test]
    fn an_erasure_sweeps_its_key_and_undoes_an_insert_that_raced_it() {
        let c = KeyCache::new(8, Duration::from_secs(60));
        c.insert(id("a1"), key(1));
        c.insert(("other".into(), "o1".into()), key(2));
        let seen = c.erasures();
        assert_eq!(c.any_wrapped_under("app").as_deref(), Some("a1"));
        assert_eq!(c.forget_transit_key("app"), 1);
        assert!(c.get(&id("a1")).is_none() && c.any_wrapped_under("app").is_none());
        assert!(c.get(&("other".into(), "o1".into())).is_some(), "another key's entries stay");
        // Vault answered before the erasure; the insert comes after it.
        c.insert_unless_erased(id("a2"), key(3), seen);
        assert!(c.get(&id("a2")).is_none());
        c.insert_unless_erased(id("a3"), key(4), c.erasures());
        assert!(c.get(&id("a3")).is_some());
    }

    #[test]
    fn bounded_by_count() {
        let c = KeyCache::new(2, Duration::from_secs(60));
        c.insert(id("a"), key(1));
        c.insert(id("b"), key(2));
        c.insert(id("c"), key(3));
        assert_eq!(c.len(), 2);
        assert!(c.get(&id("a")).is_none());
        assert_eq!(c.get(&id("c")).unwrap().bytes(), &[3; 32]);
    }

    #[test]
    fn expires_by_age() {
        let c = KeyCache::new(4, Duration::from_millis(20));
        c.insert(id("a"), key(1));
        assert!(c.get(&id("a")).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.get(&id("a")).is_none());
    }

    #[test]
    fn one_wrapped_string_under_two_transit_keys_is_two_entries() {
        let c = KeyCache::new(4, Duration::from_secs(60));
        c.insert(id("w"), key(1));
        assert!(c.get(&("other".into(), "w".into())).is_none());
    }

    #[test]
    fn disabled_with_zero_capacity() {
        let c = KeyCache::new(0, Duration::from_secs(60));
        c.insert(id("a"), key(1));
        assert!(c.is_empty());
    }
}

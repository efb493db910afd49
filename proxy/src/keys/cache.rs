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
}

impl KeyCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = if ttl.is_zero() { 0 } else { capacity };
        Self { ttl, by_wrapped: BoundedMap::new(capacity) }
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
        self.by_wrapped.retain(|(name, _), _| name != transit_key)
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

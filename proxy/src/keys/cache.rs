use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::DataKey;

/// Unwrapped data keys by wrapped key, bounded in count and age. Evicted
/// keys are zeroized when their last user drops them (see [`DataKey`]).
pub struct KeyCache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    by_wrapped: HashMap<String, (Arc<DataKey>, Instant)>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<String>,
}

impl KeyCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { capacity, ttl, inner: Mutex::new(Entries::default()) }
    }

    pub fn get(&self, wrapped: &str) -> Option<Arc<DataKey>> {
        let mut e = self.inner.lock().expect("key cache lock");
        let (key, inserted) = e.by_wrapped.get(wrapped)?;
        if inserted.elapsed() < self.ttl {
            return Some(key.clone());
        }
        e.by_wrapped.remove(wrapped);
        None
    }

    pub fn insert(&self, wrapped: &str, key: Arc<DataKey>) {
        if self.capacity == 0 || self.ttl.is_zero() {
            return;
        }
        let mut e = self.inner.lock().expect("key cache lock");
        if e.by_wrapped.insert(wrapped.to_owned(), (key, Instant::now())).is_none() {
            e.order.push_back(wrapped.to_owned());
        }
        while e.by_wrapped.len() > self.capacity || e.order.len() > 2 * self.capacity {
            let Some(oldest) = e.order.pop_front() else {
                break;
            };
            e.by_wrapped.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("key cache lock").by_wrapped.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Arc<DataKey> {
        Arc::new(DataKey::from_slice(&[b; 32]).unwrap())
    }

    #[test]
    fn bounded_by_count() {
        let c = KeyCache::new(2, Duration::from_secs(60));
        c.insert("a", key(1));
        c.insert("b", key(2));
        c.insert("c", key(3));
        assert_eq!(c.len(), 2);
        assert!(c.get("a").is_none());
        assert_eq!(c.get("c").unwrap().bytes(), &[3; 32]);
    }

    #[test]
    fn expires_by_age() {
        let c = KeyCache::new(4, Duration::from_millis(20));
        c.insert("a", key(1));
        assert!(c.get("a").is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.get("a").is_none());
    }

    #[test]
    fn disabled_with_zero_capacity() {
        let c = KeyCache::new(0, Duration::from_secs(60));
        c.insert("a", key(1));
        assert!(c.is_empty());
    }
}

//! A map bounded by count that forgets its oldest insertions first: the
//! storage behind the data-key cache and the ranged-read layout cache.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

pub struct BoundedMap<K, V> {
    capacity: usize,
    inner: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    /// Each value with the number of the insertion that put it there.
    map: HashMap<K, (V, u64)>,
    /// Insertions, oldest first. One whose key was since removed or
    /// replaced evicts nothing when it reaches the front; twice the
    /// capacity bounds how many such entries wait.
    order: VecDeque<(K, u64)>,
    inserted: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> BoundedMap<K, V> {
    /// A capacity of 0 keeps nothing.
    pub fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::new(Entries { map: HashMap::new(), order: VecDeque::new(), inserted: 0 }) }
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.lock().map.get(key).map(|(v, _)| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        let mut e = self.lock();
        e.inserted += 1;
        let n = e.inserted;
        e.map.insert(key.clone(), (value, n));
        e.order.push_back((key, n));
        while e.map.len() > self.capacity || e.order.len() > 2 * self.capacity {
            let Some((oldest, n)) = e.order.pop_front() else { break };
            if e.map.get(&oldest).is_some_and(|(_, current)| *current == n) {
                e.map.remove(&oldest);
            }
        }
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&self, key: &Q)
    where
        K: Borrow<Q>,
    {
        self.lock().map.remove(key);
    }

    /// A key of some entry `pick` accepts, if any.
    pub fn find_key(&self, mut pick: impl FnMut(&K) -> bool) -> Option<K> {
        self.lock().map.keys().find(|k| pick(k)).cloned()
    }

    /// Keeps only the entries `keep` accepts; returns how many went.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) -> usize {
        let mut e = self.lock();
        let before = e.map.len();
        e.map.retain(|k, (v, _)| keep(k, v));
        before - e.map.len()
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        self.inner.lock().expect("bounded map lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_and_stays_bounded_through_removals() {
        let m = BoundedMap::new(2);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            m.insert(k, i);
        }
        assert_eq!((m.get(&"a"), m.get(&"b"), m.get(&"c")), (None, Some(1), Some(2)));
        for i in 0..10 {
            m.insert("x", i);
            m.remove(&"x");
            assert!(m.len() <= 2);
        }
        m.insert("x", 99);
        assert_eq!(m.get(&"x"), Some(99));
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let m = BoundedMap::new(0);
        m.insert(1, 1);
        assert!(m.is_empty());
    }
}

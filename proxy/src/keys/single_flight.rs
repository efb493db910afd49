//! One Transit `decrypt` per (Transit key, wrapped key) at a time:
//! concurrent cold reads of one object wait for the first one's answer
//! instead of each paying a Vault round trip (with Vault 20 ms away, 32
//! readers made 32 calls).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub struct SingleFlight<K, V> {
    in_flight: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self { in_flight: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// Runs `work` for `key` unless a call for it is already running, in
    /// which case this waits for that call's result. If the caller running
    /// `work` goes away (its request was dropped), a waiter runs it instead.
    pub async fn run<F, Fut>(&self, key: &K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            let mut map = self.in_flight.lock().expect("single-flight lock");
            map.entry(key.clone()).or_default().clone()
        };
        let _leave = Leave { flight: self, key, cell: &cell };
        cell.get_or_init(work).await.clone()
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().expect("single-flight lock").len()
    }
}

/// Removes the entry once it has a result (later callers find the key in
/// the cache) or once nobody waits on it any more (all callers dropped).
struct Leave<'a, K: Eq + Hash, V> {
    flight: &'a SingleFlight<K, V>,
    key: &'a K,
    cell: &'a Arc<OnceCell<V>>,
}

impl<K: Eq + Hash, V> Drop for Leave<'_, K, V> {
    fn drop(&mut self) {
        let mut map = self.flight.in_flight.lock().expect("single-flight lock");
        let ours = map.get(self.key).is_some_and(|c| Arc::ptr_eq(c, self.cell));
        // Two references: the map's and this caller's.
        if ours && (self.cell.initialized() || Arc::strong_count(self.cell) <= 2) {
            map.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_call() {
        let flight = Arc::new(SingleFlight::<&str, u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (flight, calls) = (flight.clone(), calls.clone());
                tokio::spawn(async move {
                    flight
                        .run(&"k", || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            7
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flight.in_flight(), 0, "finished calls leave the map");
        assert_eq!(flight.run(&"k", || async { 8 }).await, 8, "a later call runs again");
    }

    #[tokio::test]
    async fn a_dropped_caller_leaves_nothing_behind() {
        let flight = SingleFlight::<&str, u32>::default();
        let slow = flight.run(&"k", std::future::pending);
        assert!(tokio::time::timeout(Duration::from_millis(20), slow).await.is_err());
        assert_eq!(flight.in_flight(), 0);
    }
}

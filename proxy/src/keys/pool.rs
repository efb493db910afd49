//! A pool of single-use data keys, wrapped by Transit before anyone asks for
//! them, so a PUT takes a key from memory instead of waiting a Vault round
//! trip. With Vault 20 ms away that round trip was 23 ms of a 25 ms 4 KiB PUT
//! (docs/PERFORMANCE.md). Keys are generated here with aws-lc-rs's CSPRNG and
//! wrapped in batches (Transit `encrypt` with `batch_input`); each is handed
//! out once and then belongs to one object or one multipart upload.
//!
//! A key leaves the pool on `take` or when it reaches `max_age`; either way
//! its bytes are wiped when the last reference drops ([`DataKey`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, join_all};
use tokio::sync::Notify;

use super::DataKey;
use super::vault::VaultError;

/// Most keys wrapped in one Transit call. Larger batches are split and sent
/// concurrently, so refilling 1,024 keys costs one round trip, not four.
pub const MAX_BATCH: usize = 256;

/// The wait after a failed refill, doubled per failure up to `MAX_BACKOFF`:
/// a PUT that finds the pool empty still calls Vault itself, so the refill
/// loop need not hammer a Vault that is down.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Keys the pool holds when full.
    pub size: usize,
    /// Refill (back to `size`) once fewer usable keys than this remain.
    pub low_water: usize,
    /// A key unused this long after it was wrapped is dropped, which bounds
    /// how long new objects keep a Transit key version after a rotation.
    pub max_age: Duration,
}

impl PoolSettings {
    /// Keys this old are replaced before they expire, so a pool at rest
    /// never runs dry at the moment its keys reach `max_age`.
    fn refresh_age(&self) -> Duration {
        self.max_age - self.max_age / 4
    }
}

/// Wraps freshly generated data keys; Transit in production, a fake in tests.
pub trait Wrapper: Send + Sync + 'static {
    /// One wrapped form (`vault:vN:…`) per key, in order.
    fn wrap<'a>(&'a self, keys: &'a [DataKey]) -> BoxFuture<'a, Result<Vec<String>, VaultError>>;
}

/// A key taken from the pool, with its wrapped form.
pub struct PooledKey {
    pub key: DataKey,
    pub wrapped: String,
    wrapped_at: Instant,
}

impl zeroize::ZeroizeOnDrop for PooledKey {}

pub struct KeyPool {
    settings: PoolSettings,
    /// Oldest first: keys are handed out in the order they were wrapped, so
    /// none sits unused until it expires while newer ones go out.
    keys: Mutex<VecDeque<PooledKey>>,
    /// Woken when a `take` leaves fewer than `low_water` keys.
    low: Notify,
}

impl KeyPool {
    pub fn new(settings: PoolSettings) -> Self {
        Self { settings, keys: Mutex::new(VecDeque::new()), low: Notify::new() }
    }

    pub fn settings(&self) -> PoolSettings {
        self.settings
    }

    /// Keys in the pool now, expired ones included until the next sweep.
    pub fn len(&self) -> usize {
        self.keys.lock().expect("pool lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest unexpired key, never handed out before; `None` when the
    /// pool is empty (the caller then asks Vault itself).
    pub fn take(&self) -> Option<PooledKey> {
        let (key, expired, left) = {
            let mut keys = self.keys.lock().expect("pool lock");
            let expired = drop_expired(&mut keys, self.settings.max_age);
            (keys.pop_front(), expired, keys.len())
        };
        let m = crate::metrics::metrics();
        m.key_pool(left, expired, key.is_none());
        if left < self.settings.low_water {
            self.low.notify_one();
        }
        key
    }

    /// Drops expired keys; returns how many keys are younger than the
    /// refresh age (the ones the pool can count on) and when the oldest of
    /// those reaches it.
    fn sweep(&self) -> (usize, Option<Instant>) {
        let refresh = self.settings.refresh_age();
        let (expired, len, stale, next) = {
            let mut keys = self.keys.lock().expect("pool lock");
            let expired = drop_expired(&mut keys, self.settings.max_age);
            let stale = keys.iter().take_while(|k| k.wrapped_at.elapsed() >= refresh).count();
            let next = keys.get(stale).map(|k| k.wrapped_at + refresh);
            (expired, keys.len(), stale, next)
        };
        crate::metrics::metrics().key_pool(len, expired, false);
        let fresh = len - stale;
        (fresh, next)
    }

    fn push(&self, batch: Vec<PooledKey>) {
        let len = {
            let mut keys = self.keys.lock().expect("pool lock");
            keys.extend(batch);
            keys.len()
        };
        crate::metrics::metrics().key_pool(len, 0, false);
    }

    /// Generates and wraps `n` keys.
    async fn wrap_batch(&self, wrapper: &dyn Wrapper, n: usize) -> Result<Vec<PooledKey>, RefillError> {
        let keys = (0..n).map(|_| DataKey::random()).collect::<Result<Vec<_>, _>>().map_err(|_| RefillError::Random)?;
        let wrapped = wrapper.wrap(&keys).await.map_err(RefillError::Vault)?;
        if wrapped.len() != keys.len() {
            return Err(RefillError::Vault(VaultError::BadResponse("batch result count differs from the request")));
        }
        let now = Instant::now();
        Ok(keys.into_iter().zip(wrapped).map(|(key, wrapped)| PooledKey { key, wrapped, wrapped_at: now }).collect())
    }

    /// One refill: tops the pool up to `size` fresh keys if fewer than
    /// `low_water` remain. Returns how many keys were added.
    pub async fn refill_once(&self, wrapper: &dyn Wrapper) -> Result<usize, RefillError> {
        let (fresh, _) = self.sweep();
        if fresh >= self.settings.low_water {
            return Ok(0);
        }
        let mut deficit = self.settings.size.saturating_sub(fresh);
        let mut sizes = Vec::new();
        while deficit > 0 {
            let n = deficit.min(MAX_BATCH);
            sizes.push(n);
            deficit -= n;
        }
        let results = join_all(sizes.into_iter().map(|n| self.wrap_batch(wrapper, n))).await;
        let mut added = 0;
        let mut failure = None;
        for r in results {
            crate::metrics::metrics().key_pool_refill(r.is_ok());
            match r {
                Ok(batch) => {
                    added += batch.len();
                    self.push(batch);
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(added),
        }
    }

    /// Keeps the pool topped up until the process ends: refills whenever a
    /// `take` leaves it below `low_water` and before its keys expire.
    pub async fn run(self: Arc<Self>, wrapper: Arc<dyn Wrapper>) {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.refill_once(wrapper.as_ref()).await {
                // Filled: PUTs may have drained it meanwhile, so look again.
                Ok(n) if n > 0 => {
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Ok(_) => backoff = MIN_BACKOFF,
                Err(e) => {
                    tracing::warn!(error = %e, "data key pool refill failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            let (_, next) = self.sweep();
            let wait = next.map_or(self.settings.refresh_age(), |t| t.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = self.low.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Pops expired keys off the front (the oldest); they are wiped as they drop.
fn drop_expired(keys: &mut VecDeque<PooledKey>, max_age: Duration) -> usize {
    let mut n = 0;
    while keys.front().is_some_and(|k| k.wrapped_at.elapsed() >= max_age) {
        keys.pop_front();
        n += 1;
    }
    n
}

#[derive(Debug, thiserror::Error)]
pub enum RefillError {
    #[error("the CSPRNG failed")]
    Random,
    #[error(transparent)]
    Vault(VaultError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Wraps by hex-encoding the key after a generation counter, so a test
    /// can tell keys and batches apart; fails while `down` is set.
    #[derive(Default)]
    struct FakeTransit {
        batches: Mutex<Vec<usize>>,
        generation: AtomicUsize,
        down: AtomicBool,
    }

    impl Wrapper for FakeTransit {
        fn wrap<'a>(&'a self, keys: &'a [DataKey]) -> BoxFuture<'a, Result<Vec<String>, VaultError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(VaultError::Unreachable("down".into()));
                }
                let g = self.generation.fetch_add(1, Ordering::SeqCst);
                self.batches.lock().unwrap().push(keys.len());
                Ok(keys.iter().map(|k| format!("vault:v1:{g}:{}", hex::encode(k.bytes()))).collect())
            })
        }
    }

    fn pool(size: usize, low_water: usize, max_age: Duration) -> KeyPool {
        KeyPool::new(PoolSettings { size, low_water, max_age })
    }

    #[tokio::test]
    async fn fills_in_batches_and_hands_each_key_out_once() {
        let t = FakeTransit::default();
        let p = pool(600, 300, Duration::from_secs(60));
        assert_eq!(p.refill_once(&t).await.unwrap(), 600);
        // Split into concurrent Transit calls of at most MAX_BATCH keys.
        let mut batches = t.batches.lock().unwrap().clone();
        batches.sort();
        assert_eq!(batches, vec![88, 256, 256]);
        let mut wrapped = HashSet::new();
        let mut keys = HashSet::new();
        while let Some(k) = p.take() {
            assert!(k.wrapped.ends_with(&hex::encode(k.key.bytes())));
            assert!(wrapped.insert(k.wrapped.clone()), "a wrapped key was handed out twice");
            assert!(keys.insert(*k.key.bytes()), "a data key was handed out twice");
        }
        assert_eq!(keys.len(), 600);
        assert!(p.take().is_none(), "an empty pool says so; the caller goes to Vault");
    }

    #[tokio::test]
    async fn refills_only_below_the_low_water_mark() {
        let t = FakeTransit::default();
        let p = pool(8, 4, Duration::from_secs(60));
        p.refill_once(&t).await.unwrap();
        for _ in 0..4 {
            p.take().unwrap();
        }
        assert_eq!(p.refill_once(&t).await.unwrap(), 0, "4 left is not below the mark");
        p.take().unwrap();
        assert_eq!(p.refill_once(&t).await.unwrap(), 5, "3 left: back up to 8");
        assert_eq!(p.len(), 8);
        assert_eq!(*t.batches.lock().unwrap(), vec![8, 5]);
    }

    #[tokio::test]
    async fn the_background_loop_refills_after_takes() {
        let t = Arc::new(FakeTransit::default());
        let p = Arc::new(pool(16, 8, Duration::from_secs(60)));
        let task = tokio::spawn(p.clone().run(t.clone()));
        wait_until(|| p.len() == 16).await;
        for _ in 0..10 {
            p.take().unwrap();
        }
        wait_until(|| p.len() == 16).await;
        assert_eq!(*t.batches.lock().unwrap(), vec![16, 10]);
        task.abort();
    }

    #[tokio::test]
    async fn expired_keys_are_dropped_never_handed_out() {
        let t = FakeTransit::default();
        let p = pool(4, 2, Duration::from_millis(80));
        p.refill_once(&t).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(p.take().is_none(), "every key is past max_age");
        assert_eq!(p.len(), 0, "expired keys left the pool (and were wiped as they dropped)");
        p.refill_once(&t).await.unwrap();
        assert!(p.take().unwrap().wrapped.starts_with("vault:v1:1:"), "only the new generation is used");
    }

    #[tokio::test]
    async fn keys_are_replaced_before_they_expire() {
        let t = FakeTransit::default();
        let p = pool(4, 4, Duration::from_millis(200));
        p.refill_once(&t).await.unwrap();
        // Past three quarters of max_age: the pool counts them as gone and
        // wraps replacements while the old ones can still be used.
        tokio::time::sleep(Duration::from_millis(160)).await;
        assert_eq!(p.refill_once(&t).await.unwrap(), 4);
        assert_eq!(p.len(), 8);
        assert!(p.take().unwrap().wrapped.starts_with("vault:v1:0:"), "the older keys go first");
    }

    #[tokio::test]
    async fn vault_down_leaves_the_pool_to_drain() {
        let t = FakeTransit::default();
        let p = pool(3, 3, Duration::from_secs(60));
        p.refill_once(&t).await.unwrap();
        t.down.store(true, Ordering::SeqCst);
        p.take().unwrap();
        assert!(p.refill_once(&t).await.is_err());
        assert!(p.take().is_some() && p.take().is_some());
        assert!(p.take().is_none(), "keys wrapped before the outage run out, then PUTs need Vault");
    }

    #[test]
    fn keys_are_wiped_on_drop() {
        // Checked by type: `Zeroizing` clears the bytes in `Drop`.
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<DataKey>();
        wiped_on_drop::<PooledKey>();
    }

    async fn wait_until(check: impl Fn() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }
}

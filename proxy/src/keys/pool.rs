//! A pool of single-use data keys, wrapped by Transit before anyone asks for
//! them, so a PUT takes a key from memory instead of waiting a Vault round
//! trip. With Vault 20 ms away that round trip was 23 ms of a 25 ms 4 KiB PUT
//! (docs/PERFORMANCE.md). Keys are generated here with aws-lc-rs's CSPRNG and
//! wrapped in batches (Transit `encrypt` with `batch_input`); each is handed
//! out once and then belongs to one object or one multipart upload.
//!
//! A key leaves the pool on `take` or when it reaches `max_age`; either way
//! its bytes are wiped when the last reference drops ([`DataKey`]).
//!
//! After a rotation of the Transit key the pool must not hand out a key
//! wrapped under an older version: `rewrap` would miss the object it ends
//! up in if that write lands after its listing, and raising
//! `min_decryption_version` then makes the object unreadable for good. So
//! the pool keeps a floor, the newest version Transit has answered with,
//! and drops every key below it the moment it rises. Transit's `encrypt`
//! always wraps under the latest version (and never below
//! `min_encryption_version`), so every answer tells the pool the current
//! version; a check wraps one key every `version_check` so a rotation is
//! seen within that interval even when no refill is due.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
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
    /// how long an unused key is kept.
    pub max_age: Duration,
    /// How often the pool asks Transit for its current key version (by
    /// wrapping one key), which bounds how long after a rotation the pool
    /// can still hand out a key of the previous version.
    pub version_check: Duration,
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

    /// One new data key from Transit (`datakey`), asked after a refusal:
    /// unlike `encrypt`, which Vault answers with a bare 403 when the key
    /// was deleted and the token may not create one, `datakey` says the key
    /// is gone.
    fn generate<'a>(&'a self) -> BoxFuture<'a, Result<(DataKey, String), VaultError>>;
}

/// A key taken from the pool, with its wrapped form.
pub struct PooledKey {
    pub key: DataKey,
    pub wrapped: String,
    /// The Transit key version of `wrapped` (`vault:vN:`).
    version: u32,
    wrapped_at: Instant,
}

impl zeroize::ZeroizeOnDrop for PooledKey {}

pub struct KeyPool {
    /// The Transit key the pool's keys are wrapped by: a metrics label.
    name: String,
    settings: PoolSettings,
    /// Oldest first: keys are handed out in the order they were wrapped, so
    /// none sits unused until it expires while newer ones go out.
    keys: Mutex<VecDeque<PooledKey>>,
    /// The newest Transit key version seen; no key below it is handed out.
    floor: AtomicU32,
    /// Woken when a `take` leaves fewer than `low_water` keys.
    low: Notify,
}

impl KeyPool {
    pub fn new(name: &str, settings: PoolSettings) -> Self {
        crate::metrics::metrics().key_pool_created(name);
        Self {
            name: name.to_owned(),
            settings,
            keys: Mutex::new(VecDeque::new()),
            floor: AtomicU32::new(0),
            low: Notify::new(),
        }
    }

    /// Wipes every pooled key: Vault refused the Transit key for good
    /// (erased, or the proxy's policy lost it), and a new object must not
    /// be written under a key nobody can unwrap. Returns how many went.
    pub fn clear(&self) -> usize {
        let dropped = {
            let mut keys = self.keys.lock().expect("pool lock");
            let n = keys.len();
            keys.clear();
            n
        };
        crate::metrics::metrics().key_pool(&self.name, 0, 0, false);
        dropped
    }

    /// The newest Transit key version the pool has seen (0: none yet).
    pub fn floor(&self) -> u32 {
        self.floor.load(Ordering::SeqCst)
    }

    /// Records that Transit wraps under `version` now. If that is newer than
    /// what the pool knew, the key was rotated: every pooled key of an older
    /// version is wiped at once, so no new object is written under it.
    /// Returns how many keys were dropped.
    pub fn observe_version(&self, version: u32) -> usize {
        let previous = self.floor.fetch_max(version, Ordering::SeqCst);
        if version <= previous {
            return 0;
        }
        let (dropped, len) = {
            let mut keys = self.keys.lock().expect("pool lock");
            let before = keys.len();
            keys.retain(|k| k.version >= version);
            (before - keys.len(), keys.len())
        };
        let m = crate::metrics::metrics();
        m.key_pool(&self.name, len, 0, false);
        m.key_version(&self.name, version);
        // The first version seen at start is not a rotation.
        if previous > 0 {
            m.key_rotation_seen(&self.name, dropped);
            tracing::info!(
                transit_key = self.name,
                version,
                retired = dropped,
                "Transit key rotation seen; older pooled keys wiped"
            );
        }
        if len < self.settings.low_water {
            self.low.notify_one();
        }
        dropped
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
        m.key_pool(&self.name, left, expired, key.is_none());
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
        crate::metrics::metrics().key_pool(&self.name, len, expired, false);
        let fresh = len - stale;
        (fresh, next)
    }

    /// Adds wrapped keys, except any below the floor: a batch wrapped just
    /// before a rotation can come back after a newer one raised it. The
    /// floor is read under the lock `observe_version` purges under, so a
    /// key is either refused here or purged there.
    fn push(&self, batch: Vec<PooledKey>) {
        let len = {
            let mut keys = self.keys.lock().expect("pool lock");
            let floor = self.floor.load(Ordering::SeqCst);
            keys.extend(batch.into_iter().filter(|k| k.version >= floor));
            keys.len()
        };
        crate::metrics::metrics().key_pool(&self.name, len, 0, false);
    }

    /// Generates and wraps `n` keys.
    async fn wrap_batch(&self, wrapper: &dyn Wrapper, n: usize) -> Result<Vec<PooledKey>, RefillError> {
        let keys = (0..n).map(|_| DataKey::random()).collect::<Result<Vec<_>, _>>().map_err(|_| RefillError::Random)?;
        let wrapped = wrapper.wrap(&keys).await.map_err(RefillError::Vault)?;
        if wrapped.len() != keys.len() {
            return Err(RefillError::Vault(VaultError::BadResponse("batch result count differs from the request")));
        }
        let now = Instant::now();
        let mut batch = Vec::with_capacity(keys.len());
        for (key, wrapped) in keys.into_iter().zip(wrapped) {
            let version = super::key_version(&wrapped)
                .ok_or(RefillError::Vault(VaultError::BadResponse("wrapped key is not in vault:vN: form")))?;
            batch.push(PooledKey { key, wrapped, version, wrapped_at: now });
        }
        // Any answer newer than the floor is a rotation: older keys go first.
        if let Some(newest) = batch.iter().map(|k| k.version).max() {
            self.observe_version(newest);
        }
        Ok(batch)
    }

    /// Wraps one key to learn the version Transit wraps under now; the key
    /// joins the pool (it is as good as any other).
    pub async fn check_version(&self, wrapper: &dyn Wrapper) -> Result<u32, RefillError> {
        let batch = self.wrap_batch(wrapper, 1).await?;
        let version = batch.iter().map(|k| k.version).max().unwrap_or(0);
        self.push(batch);
        Ok(version)
    }

    /// After Vault refused this key for good: wipes the pool, then asks
    /// `datakey` once, whose answer says whether the key was deleted (the
    /// wrapper then forgets its cached keys too). Returns that answer.
    async fn refused_for_good(&self, wrapper: &dyn Wrapper) -> Result<(), VaultError> {
        let dropped = self.clear();
        tracing::warn!(transit_key = self.name, dropped, "Transit refused the key; pooled keys wiped");
        wrapper.generate().await.map(|_| ())
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
            crate::metrics::metrics().key_pool_refill(&self.name, r.is_ok());
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
        // Refills see the version too; the check covers a pool at rest.
        let mut next_check = tokio::time::Instant::now() + self.settings.version_check;
        loop {
            match self.refill_once(wrapper.as_ref()).await {
                // Filled: PUTs may have drained it meanwhile, so look again.
                Ok(n) if n > 0 => {
                    backoff = MIN_BACKOFF;
                    continue;
                }
                Ok(_) => backoff = MIN_BACKOFF,
                Err(e) => {
                    tracing::warn!(transit_key = self.name, error = %e, "data key pool refill failed");
                    if e.is_permanent() {
                        // Refused for good (a bare 403 when the key was
                        // deleted and the token may not create it).
                        let _ = self.refused_for_good(wrapper.as_ref()).await;
                    }
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
                _ = tokio::time::sleep_until(next_check) => {
                    let checked = self.check_version(wrapper.as_ref()).await;
                    if let Err(e) = &checked {
                        tracing::warn!(transit_key = self.name, error = %e, "Transit key version check failed");
                        if e.is_permanent() {
                            let _ = self.refused_for_good(wrapper.as_ref()).await;
                        }
                    }
                    crate::metrics::metrics().key_version_check(checked.is_ok());
                    next_check = tokio::time::Instant::now() + self.settings.version_check;
                }
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

impl RefillError {
    /// Vault refused the key itself: retrying will not help, and keys
    /// wrapped by it must not be handed out.
    fn is_permanent(&self) -> bool {
        matches!(self, RefillError::Vault(e) if e.is_permanent() || e.is_auth())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// Wraps by hex-encoding the key after a generation counter, so a test
    /// can tell keys and batches apart; fails while `down` is set.
    #[derive(Default)]
    struct FakeTransit {
        batches: Mutex<Vec<usize>>,
        generation: AtomicUsize,
        down: AtomicBool,
        /// The Transit key version wrapped under (0 counts as 1).
        version: AtomicU32,
        /// The Transit key was deleted: `encrypt` gets a bare 403, `datakey` says so.
        gone: AtomicBool,
    }

    impl Wrapper for FakeTransit {
        fn wrap<'a>(&'a self, keys: &'a [DataKey]) -> BoxFuture<'a, Result<Vec<String>, VaultError>> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(VaultError::Unreachable("down".into()));
                }
                if self.gone.load(Ordering::SeqCst) {
                    return Err(VaultError::Refused { status: 403, message: "permission denied".into() });
                }
                let g = self.generation.fetch_add(1, Ordering::SeqCst);
                self.batches.lock().unwrap().push(keys.len());
                let v = self.version.load(Ordering::SeqCst).max(1);
                Ok(keys.iter().map(|k| format!("vault:v{v}:{g}:{}", hex::encode(k.bytes()))).collect())
            })
        }

        fn generate<'a>(&'a self) -> BoxFuture<'a, Result<(DataKey, String), VaultError>> {
            Box::pin(async move {
                if self.gone.load(Ordering::SeqCst) {
                    return Err(VaultError::Refused { status: 400, message: "encryption key not found".into() });
                }
                let key = DataKey::random().unwrap();
                let wrapped = self.wrap(std::slice::from_ref(&key)).await?.remove(0);
                Ok((key, wrapped))
            })
        }
    }

    #[tokio::test]
    async fn a_deleted_transit_key_empties_the_pool_instead_of_serving_its_keys() {
        let t = Arc::new(FakeTransit::default());
        let p = Arc::new(pool(8, 4, Duration::from_secs(60)));
        p.refill_once(t.as_ref()).await.unwrap();
        assert_eq!(p.len(), 8);
        t.gone.store(true, Ordering::SeqCst);
        // Encrypt gets a bare 403; `datakey` says the key is gone.
        let e = p.check_version(t.as_ref()).await.unwrap_err();
        assert!(e.is_permanent(), "{e:?}");
        assert!(p.refused_for_good(t.as_ref()).await.unwrap_err().is_key_gone());
        assert_eq!(p.len(), 0);
        p.refill_once(&FakeTransit::default()).await.unwrap();
        assert_eq!(p.len(), 8);
        // A refill refused for good wipes the pool on its own.
        let running = tokio::spawn(p.clone().run(t.clone()));
        for _ in 0..5 {
            assert!(p.take().is_some());
        }
        let mut left = p.len();
        for _ in 0..100 {
            left = p.len();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        running.abort();
        assert_eq!(left, 0, "keys wrapped by a deleted key stayed in the pool");
        assert!(p.take().is_none());
    }

    fn pool(size: usize, low_water: usize, max_age: Duration) -> KeyPool {
        KeyPool::new("app", PoolSettings { size, low_water, max_age, version_check: Duration::from_secs(3600) })
    }

    #[tokio::test]
    async fn a_rotation_wipes_older_keys_at_once_and_only_newer_ones_go_out() {
        let t = FakeTransit::default();
        let p = pool(8, 2, Duration::from_secs(60));
        p.refill_once(&t).await.unwrap();
        assert_eq!((p.len(), p.floor()), (8, 1));
        t.version.store(2, Ordering::SeqCst);
        // The check learns the new version by wrapping one key under it.
        assert_eq!(p.check_version(&t).await.unwrap(), 2);
        assert_eq!(p.len(), 1, "the eight v1 keys were wiped; the check's v2 key stays");
        assert!(p.take().unwrap().wrapped.starts_with("vault:v2:"));
        assert!(p.take().is_none(), "no v1 key is ever handed out after the rotation was seen");
        // A refill after the rotation: only v2.
        p.refill_once(&t).await.unwrap();
        while let Some(k) = p.take() {
            assert!(k.wrapped.starts_with("vault:v2:"), "{}", k.wrapped);
        }
    }

    #[tokio::test]
    async fn any_newer_answer_is_a_rotation_and_a_late_older_batch_is_not_pooled() {
        let t = FakeTransit::default();
        let p = pool(8, 8, Duration::from_secs(60));
        p.refill_once(&t).await.unwrap();
        // Another call (a PUT that found the pool empty) saw v3.
        assert_eq!(p.observe_version(3), 8, "all eight v1 keys retired");
        assert_eq!(p.observe_version(2), 0, "an older version does not lower the floor");
        assert_eq!(p.floor(), 3);
        // A batch wrapped under v1 that comes back after the floor rose.
        assert_eq!(p.refill_once(&t).await.unwrap(), 8, "wrapped, but below the floor");
        assert!(p.take().is_none(), "no key below the floor joins the pool");
    }

    #[tokio::test]
    async fn the_background_loop_sees_a_rotation_within_the_check_interval() {
        let t = Arc::new(FakeTransit::default());
        let p = Arc::new(KeyPool::new(
            "app",
            PoolSettings {
                size: 4,
                low_water: 2,
                max_age: Duration::from_secs(3600),
                version_check: Duration::from_millis(50),
            },
        ));
        let task = tokio::spawn(p.clone().run(t.clone()));
        wait_until(|| p.len() >= 4).await;
        t.version.store(2, Ordering::SeqCst);
        wait_until(|| p.floor() == 2).await;
        wait_until(|| p.len() >= 4).await;
        for _ in 0..4 {
            let k = p.take().expect("refilled");
            assert!(k.wrapped.starts_with("vault:v2:"), "{}", k.wrapped);
        }
        task.abort();
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

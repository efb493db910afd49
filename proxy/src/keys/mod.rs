//! Envelope key management: data keys from Vault/OpenBao Transit, a pool of
//! pre-wrapped keys per routed Transit key for writes and a bounded cache of
//! unwrapped keys for reads. No HTTP server in here.

pub mod audit;
mod auth;
mod cache;
mod coalesce;
pub mod health;
mod pool;
pub mod routing;
mod single_flight;
mod transit;
mod vault;

pub use crate::format::DataKey;
pub use auth::{AuthMethod, Secret, Session};
pub use cache::KeyCache;
pub use pool::{KeyPool, PoolSettings, RefillError};
pub use routing::{KeyRef, KeyRoutes, KeyRule, KmsKeyId, RouteError};
pub use transit::{KeyVersionInfo, TransitClient, key_version};
pub use vault::{
    Payload as VaultPayload, VaultAnswer, VaultCall, VaultEndpoint, VaultError, VaultHttp, VaultTransport,
};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A data key for writing, its Vault-wrapped form (`vault:vN:…`, safe to
/// store) and the Transit key that wrapped it.
#[derive(Clone)]
pub struct NewDataKey {
    pub key: Arc<DataKey>,
    pub wrapped: String,
    pub transit_key: String,
    /// Set when `wrapped` is a bucket key and `key` was derived from it
    /// with this salt (the envelope's `cloudtaser-key-salt`).
    pub key_salt: Option<[u8; 32]>,
}

/// Bucket keys (`CLOUDTASER_S3PROXY_BUCKET_KEYS`): single objects of one
/// Transit key written within `window` (and at most `max_objects` of them)
/// derive their data keys from one intermediate key, wrapped once, so a
/// reader unwraps it once for the whole window (docs/FORMAT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketKeySettings {
    pub window: Duration,
    pub max_objects: u64,
}

/// The bucket key objects are derived from now, for one Transit key.
struct Window {
    intermediate: Arc<DataKey>,
    wrapped: String,
    started: std::time::Instant,
    objects: u64,
}

type WindowSlot = Arc<std::sync::Mutex<Option<Window>>>;

/// The pool's wrapper for one Transit key: `encrypt` with `batch_input`,
/// each outcome recorded in the health state like any other Transit call.
/// A key Vault no longer has is forgotten at once: its cached data keys go
/// (they must not outlive the key they were wrapped by) and the pool wipes
/// its own.
struct TransitWrapper {
    transit: Arc<TransitClient>,
    health: Arc<health::VaultHealth>,
    cache: Arc<KeyCache>,
    window: WindowSlot,
}

impl TransitWrapper {
    fn watch<T>(&self, result: Result<T, VaultError>) -> Result<T, VaultError> {
        if let Err(e) = &result
            && e.is_key_gone()
        {
            forget_erased(&self.cache, Some(&self.window), self.transit.key_name());
        }
        self.health.observe(result)
    }
}

impl pool::Wrapper for TransitWrapper {
    fn wrap<'a>(&'a self, keys: &'a [DataKey]) -> futures_util::future::BoxFuture<'a, Result<Vec<String>, VaultError>> {
        Box::pin(async move {
            let audit = audit::Audit::fresh(audit::Reason::Pool);
            self.watch(audit::scope(audit, self.transit.wrap_data_keys(keys)).await)
        })
    }

    fn generate<'a>(&'a self) -> futures_util::future::BoxFuture<'a, Result<(DataKey, String), VaultError>> {
        Box::pin(async move {
            let audit = audit::Audit::fresh(audit::Reason::Pool);
            self.watch(audit::scope(audit, self.transit.generate_data_key()).await)
        })
    }
}

/// One more object from the open window, if it is still within its time,
/// its object count and the Transit key's current version.
fn claim_window(slot: &WindowSlot, settings: BucketKeySettings, current: u32) -> Option<(Arc<DataKey>, String)> {
    let mut slot = slot.lock().expect("window lock");
    slot.as_mut()
        .filter(|w| {
            w.started.elapsed() < settings.window
                && w.objects < settings.max_objects
                && key_version(&w.wrapped).is_some_and(|v| v >= current)
        })
        .map(|w| {
            w.objects += 1;
            (w.intermediate.clone(), w.wrapped.clone())
        })
}

/// Drops what memory holds of a Transit key Vault no longer has: its cached
/// data keys and, for a key that writes, its current bucket key (no object
/// is derived from it again).
fn forget_erased(cache: &KeyCache, window: Option<&WindowSlot>, transit_key: &str) {
    if let Some(window) = window {
        window.lock().expect("window lock").take();
    }
    let dropped = cache.forget_transit_key(transit_key);
    crate::metrics::metrics().key_erased(transit_key);
    tracing::warn!(transit_key, cached_keys_dropped = dropped, "Transit key not found in Vault (erased?)");
}

/// Whether `name` can be a Transit key name: one path segment of safe
/// characters, so no name read from an object or an upload id can steer a
/// Vault call to another path (`../keys/x` would create a key).
pub fn is_valid_key_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !matches!(name, "." | "..")
}

/// Whether `wrapped` has the shape of a Transit ciphertext (`vault:vN:base64`).
pub fn is_valid_wrapped_key(wrapped: &str) -> bool {
    let Some(rest) = wrapped.strip_prefix("vault:v") else { return false };
    let Some((version, body)) = rest.split_once(':') else { return false };
    !version.is_empty()
        && version.len() <= 10
        && version.bytes().all(|b| b.is_ascii_digit())
        && !body.is_empty()
        && body.len() <= 4096
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// One Transit key that wraps new data keys: its pool and the newest
/// version seen of it.
struct WriteKey {
    transit: Arc<TransitClient>,
    pool: Option<Arc<KeyPool>>,
    /// The newest version of this key seen in any Transit answer.
    latest: Arc<AtomicU32>,
    /// `None`: every object gets a data key of its own.
    bucket_keys: Option<BucketKeySettings>,
    window: WindowSlot,
    /// The opening of a new window, shared: writes arriving together at a
    /// window's start share one bucket key instead of each opening its own
    /// (every extra window is one more Transit `decrypt` for each cold
    /// reader), and share its failure too, so a Vault outage fails them all
    /// at once rather than one timeout after another.
    opening: Arc<single_flight::SingleFlight<(), Result<(), VaultError>>>,
}

/// The key service the request path talks to: Transit (one client per
/// configured key, on its mount), a pool of pre-wrapped keys per key that
/// wraps new objects, and the read cache.
pub struct KeyService {
    routes: KeyRoutes,
    /// Every configured key, by name: the only ones a wrapped key is ever
    /// sent to Vault under.
    transits: BTreeMap<String, Arc<TransitClient>>,
    /// Per key: cold reads that arrive while a `decrypt` is in flight share
    /// the next call (`coalesce`).
    coalescers: BTreeMap<String, Arc<coalesce::Coalescer>>,
    writers: BTreeMap<String, WriteKey>,
    health: Arc<health::VaultHealth>,
    cache: Arc<KeyCache>,
    /// How often the current version is checked when there is no pool to do it.
    version_check: Option<Duration>,
    unwrapping: single_flight::SingleFlight<cache::CacheKey, Result<Arc<DataKey>, VaultError>>,
}

impl KeyService {
    /// One Transit key that wraps everything, and the only one readable.
    pub fn new(transit: TransitClient, cache_capacity: usize, cache_ttl: Duration) -> Self {
        let default = KeyRef { mount: transit.mount().to_owned(), name: transit.key_name().to_owned() };
        Self::routed(transit.session().clone(), KeyRoutes::single(default), cache_capacity, cache_ttl)
    }

    /// New objects wrapped by the key `routes` names for them; reads
    /// unwrap under any key `routes` knows.
    pub fn routed(session: Arc<Session>, routes: KeyRoutes, cache_capacity: usize, cache_ttl: Duration) -> Self {
        let transits: BTreeMap<String, Arc<TransitClient>> = routes
            .keys()
            .map(|k| (k.name.clone(), Arc::new(TransitClient::new(session.clone(), &k.mount, &k.name))))
            .collect();
        let writers = routes
            .writers()
            .map(|k| {
                let transit = transits[&k.name].clone();
                let window = WindowSlot::default();
                let opening = Arc::default();
                (
                    k.name.clone(),
                    WriteKey { transit, pool: None, latest: Arc::default(), bucket_keys: None, window, opening },
                )
            })
            .collect();
        let coalescers = transits.keys().map(|name| (name.clone(), Arc::default())).collect();
        Self {
            routes,
            transits,
            coalescers,
            writers,
            health: Arc::default(),
            cache: Arc::new(KeyCache::new(cache_capacity, cache_ttl)),
            version_check: None,
            unwrapping: single_flight::SingleFlight::default(),
        }
    }

    /// Further Transit keys, on the default key's mount, whose data keys
    /// may be unwrapped for reads.
    pub fn with_read_keys(mut self, keys: &[String]) -> Self {
        let mount = self.routes.default_key().mount.clone();
        for name in keys {
            if !self.transits.contains_key(name) {
                let session = self.default_transit().session().clone();
                self.transits.insert(name.clone(), Arc::new(TransitClient::new(session, &mount, name)));
                self.coalescers.insert(name.clone(), Arc::default());
            }
        }
        self
    }

    /// Serves new data keys from a pool of pre-wrapped ones per writing
    /// key (`None` or a size of 0: a Transit call per key; a rule's
    /// `:pool=N` overrides the size for its key). Pools fill once
    /// [`KeyService::start_pool`] runs.
    pub fn with_pool(mut self, settings: Option<PoolSettings>) -> Self {
        for (name, writer) in &mut self.writers {
            let sized = settings.map(|s| match self.routes.pool_size(name) {
                Some(size) => PoolSettings { size, low_water: size.div_ceil(2), ..s },
                None => s,
            });
            writer.pool = sized.filter(|s| s.size > 0).map(|s| Arc::new(KeyPool::new(name, s)));
        }
        self
    }

    /// Derives single objects' data keys from bucket keys (`None`: off), for
    /// every writing key whose rule does not say otherwise (`:bucket-keys=`).
    pub fn with_bucket_keys(mut self, settings: Option<BucketKeySettings>) -> Self {
        const DEFAULT: BucketKeySettings = BucketKeySettings { window: Duration::from_secs(300), max_objects: 100_000 };
        for (name, writer) in &mut self.writers {
            writer.bucket_keys = match self.routes.bucket_keys(name) {
                Some(false) => None,
                Some(true) => Some(settings.unwrap_or(DEFAULT)),
                None => settings,
            };
        }
        self
    }

    /// Checks each writing key's current version this often even without a
    /// pool (which checks on its own), so a PUT that streams across a
    /// rotation is refused at its end ([`KeyService::is_current`]) and an
    /// erased key is noticed.
    pub fn with_version_check(mut self, interval: Duration) -> Self {
        self.version_check = Some(interval);
        self
    }

    /// Starts filling each pool in the background; a writing key without
    /// one gets the version check.
    pub fn start_pool(&self) {
        for writer in self.writers.values() {
            let wrapper = TransitWrapper {
                transit: writer.transit.clone(),
                health: self.health.clone(),
                cache: self.cache.clone(),
                window: writer.window.clone(),
            };
            match (&writer.pool, self.version_check) {
                (Some(pool), _) => {
                    tokio::spawn(pool.clone().run(Arc::new(wrapper)));
                }
                (None, Some(interval)) => {
                    let latest = writer.latest.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(interval).await;
                            // One throwaway key: Transit wraps under its current version.
                            let answer = match DataKey::random() {
                                Ok(key) => pool::Wrapper::wrap(&wrapper, std::slice::from_ref(&key)).await,
                                Err(_) => continue,
                            };
                            if answer.as_ref().is_err_and(|e| e.is_permanent() || e.is_auth()) {
                                // A deleted key gets a bare 403 here; `datakey` says so.
                                let _ = pool::Wrapper::generate(&wrapper).await;
                            }
                            let checked = answer.as_ref().ok().and_then(|w| w.first()).and_then(|w| key_version(w));
                            if let Some(v) = checked {
                                latest.fetch_max(v, Ordering::SeqCst);
                            }
                            crate::metrics::metrics().key_version_check(checked.is_some());
                        }
                    });
                }
                (None, None) => {}
            }
        }
    }

    /// Keys that are only read have no pool and no version check, so
    /// nothing would notice their erasure while their data keys sit in the
    /// cache. Each interval, one cached wrapped key of each is sent to
    /// Transit `decrypt` (only while the cache holds one: a key with nothing
    /// cached serves nothing from memory); Transit saying the key is gone
    /// wipes its entries, within the same bound as the writing keys.
    pub fn start_read_key_checks(self: &Arc<Self>, interval: Duration) {
        let read_only: Vec<String> =
            self.transits.keys().filter(|name| !self.writers.contains_key(*name)).cloned().collect();
        if read_only.is_empty() {
            return;
        }
        let service = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(service) = service.upgrade() else { return };
                for name in &read_only {
                    let Some(wrapped) = service.cache.any_wrapped_under(name) else { continue };
                    let audit = audit::Audit::fresh(audit::Reason::Pool);
                    let answer = audit::scope(audit, service.transits[name].decrypt_data_key(name, &wrapped)).await;
                    if let Err(e) = answer
                        && e.is_key_gone()
                    {
                        forget_erased(&service.cache, None, name);
                    }
                }
            }
        });
    }

    fn default_transit(&self) -> &Arc<TransitClient> {
        &self.transits[&self.routes.default_key().name]
    }

    /// The routing this service writes by.
    pub fn routes(&self) -> &KeyRoutes {
        &self.routes
    }

    /// The newest version of the default write key the proxy has seen (0: none yet).
    pub fn current_version(&self) -> u32 {
        self.current_version_of(self.key_name())
    }

    /// The newest version of `transit_key` seen (0: none yet, or not a writing key).
    pub fn current_version_of(&self, transit_key: &str) -> u32 {
        self.writers.get(transit_key).map_or(0, |w| {
            let pooled = w.pool.as_ref().map_or(0, |p| p.floor());
            w.latest.load(Ordering::SeqCst).max(pooled)
        })
    }

    /// Whether a data key wrapped as `wrapped` under `transit_key` is still
    /// under that key's current version.
    pub fn is_current(&self, transit_key: &str, wrapped: &str) -> bool {
        key_version(wrapped).is_some_and(|v| v >= self.current_version_of(transit_key))
    }

    /// The default key's pool.
    pub fn pool(&self) -> Option<&Arc<KeyPool>> {
        self.pool_of(self.key_name())
    }

    pub fn pool_of(&self, transit_key: &str) -> Option<&Arc<KeyPool>> {
        self.writers.get(transit_key).and_then(|w| w.pool.as_ref())
    }

    pub fn health(&self) -> &health::VaultHealth {
        &self.health
    }

    /// The default write key (`CLOUDTASER_S3PROXY_TRANSIT_KEY`).
    pub fn key_name(&self) -> &str {
        &self.routes.default_key().name
    }

    /// The default key's Transit client.
    pub fn transit(&self) -> &TransitClient {
        self.default_transit()
    }

    /// The Transit client of a configured key, on its own mount.
    pub fn transit_for(&self, transit_key: &str) -> Option<&TransitClient> {
        self.transits.get(transit_key).map(AsRef::as_ref)
    }

    /// A data key no other object or upload will use, wrapped by
    /// `transit_key` (a writing key: the default, a rule's or an allowed
    /// id's): from its pool while it has one (no Vault call), else straight
    /// from Transit `datakey`.
    pub async fn generate_fresh(&self, transit_key: &str) -> Result<NewDataKey, VaultError> {
        let writer = self.writers.get(transit_key).ok_or(VaultError::KeyNotAllowed)?;
        let seen = self.cache.erasures();
        let (key, wrapped) = match writer.pool.as_ref().and_then(|p| p.take()) {
            Some(pooled) => (pooled.key, pooled.wrapped),
            None => {
                let answer = writer.transit.generate_data_key().await;
                if let Err(e) = &answer
                    && e.is_key_gone()
                {
                    forget_erased(&self.cache, Some(&writer.window), transit_key);
                    if let Some(pool) = &writer.pool {
                        pool.clear();
                    }
                }
                let (key, wrapped) = self.health.observe(answer)?;
                // Transit answered with its current version: if that is a
                // rotation, the pool's older keys go now, not at the next check.
                if let Some(version) = key_version(&wrapped) {
                    writer.latest.fetch_max(version, Ordering::SeqCst);
                    if let Some(pool) = &writer.pool {
                        pool.observe_version(version);
                    }
                }
                (key, wrapped)
            }
        };
        let key = Arc::new(key);
        self.cache.insert_unless_erased((transit_key.to_owned(), wrapped.clone()), key.clone(), seen);
        Ok(NewDataKey { key, wrapped, transit_key: transit_key.to_owned(), key_salt: None })
    }

    /// The data key of a new single object under `transit_key`: derived
    /// from the key's current bucket key when bucket keys are on (a new one,
    /// from [`KeyService::generate_fresh`], once the window has passed, has
    /// served its objects, or is under an older key version), else a key of
    /// its own.
    pub async fn generate_for_object(&self, transit_key: &str) -> Result<NewDataKey, VaultError> {
        let writer = self.writers.get(transit_key).ok_or(VaultError::KeyNotAllowed)?;
        let Some(settings) = writer.bucket_keys else { return self.generate_fresh(transit_key).await };
        let current = self.current_version_of(transit_key);
        let (intermediate, wrapped) = match claim_window(&writer.window, settings, current) {
            Some(found) => found,
            None => {
                writer.opening.run(&(), || self.open_window(transit_key, &writer.window)).await?;
                match claim_window(&writer.window, settings, current) {
                    Some(found) => found,
                    // The new window filled up (or was ended) before this
                    // write claimed its share: a data key of its own rather
                    // than another round of waiting.
                    None => return self.generate_fresh(transit_key).await,
                }
            }
        };
        let mut key_salt = [0u8; 32];
        aws_lc_rs::rand::fill(&mut key_salt).map_err(|_| VaultError::BadResponse("the CSPRNG failed"))?;
        let key = Arc::new(crate::format::derive_object_key(intermediate.bytes(), &key_salt));
        Ok(NewDataKey { key, wrapped, transit_key: transit_key.to_owned(), key_salt: Some(key_salt) })
    }

    /// Opens a new bucket-key window for `transit_key` (run once for all
    /// the writes waiting on it). No window is installed if a key was erased
    /// meanwhile, as its key may come from the erased one: the waiting writes
    /// then take keys of their own, which the erasure has already cut off.
    async fn open_window(&self, transit_key: &str, slot: &WindowSlot) -> Result<(), VaultError> {
        let seen = self.cache.erasures();
        let fresh = self.generate_fresh(transit_key).await?;
        if self.cache.erasures() != seen {
            return Ok(());
        }
        let window =
            Window { intermediate: fresh.key, wrapped: fresh.wrapped, started: std::time::Instant::now(), objects: 0 };
        *slot.lock().expect("window lock") = Some(window);
        crate::metrics::metrics().bucket_key_started(transit_key);
        Ok(())
    }

    /// The data key inside a wrapped key, from the cache or Transit.
    /// Only keys the proxy is configured for are used, whatever the object's
    /// metadata or the upload id says. A key is cached, and concurrent
    /// misses share a single Transit call, per Transit key and wrapped key:
    /// an envelope naming another Transit key with a cached wrapped string
    /// is sent to Vault under the key it names, never served from the cache.
    pub async fn unwrap(&self, key_name: &str, wrapped: &str) -> Result<Arc<DataKey>, VaultError> {
        let Some(transit) = self.transits.get(key_name) else {
            return Err(VaultError::KeyNotAllowed);
        };
        if !is_valid_wrapped_key(wrapped) {
            return Err(VaultError::MalformedWrappedKey);
        }
        let id: cache::CacheKey = (key_name.to_owned(), wrapped.to_owned());
        let cached = self.cache.get(&id);
        crate::metrics::metrics().key_cache(cached.is_some(), self.cache.len());
        if let Some(key) = cached {
            return Ok(key);
        }
        self.unwrapping
            .run(&id, || async {
                let seen = self.cache.erasures();
                let answer = match self.coalescers.get(key_name) {
                    Some(coalescer) => coalescer.decrypt(transit, wrapped).await,
                    None => transit.decrypt_data_key(key_name, wrapped).await,
                };
                if let Err(e) = &answer
                    && e.is_key_gone()
                {
                    // Every other object of this key goes with it, now.
                    forget_erased(&self.cache, self.writers.get(key_name).map(|w| &w.window), key_name);
                    if let Some(pool) = self.pool_of(key_name) {
                        pool.clear();
                    }
                }
                let key = Arc::new(self.health.observe(answer)?);
                self.cache.insert_unless_erased(id.clone(), key.clone(), seen);
                Ok(key)
            })
            .await
    }

    /// One probe of Vault (token lookup), recorded in the health state.
    pub async fn probe(&self) -> Result<(), VaultError> {
        self.health.observe(self.default_transit().lookup_self().await)
    }

    /// Keeps the health state fresh: probes Vault every `interval` unless a
    /// real call already told us within it. Runs until the process ends.
    pub async fn watch_vault(self: Arc<Self>, interval: Duration) {
        loop {
            if self.health.last_answer_age().is_none_or(|age| age >= interval)
                && let Err(e) = self.probe().await
            {
                tracing::warn!(error = %e, "Vault health probe failed");
            }
            let wait = if self.health.ever_reached() { interval } else { Duration::from_secs(1) };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::testing::vault::FakeVault;

    fn service(vault: &Arc<FakeVault>) -> KeyService {
        vault.accept_token("s.proxy");
        let http = VaultHttp::with_transport(vault.clone());
        let session = Session::new(http, AuthMethod::Token(Secret::Value(zeroize::Zeroizing::new("s.proxy".into()))));
        KeyService::new(TransitClient::new(session, "transit", "app"), 16, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn a_fresh_key_unwraps_to_itself_and_reads_hit_the_cache() {
        let vault = FakeVault::new();
        let keys = service(&vault);
        let new = keys.generate_fresh("app").await.unwrap();
        assert!(is_valid_wrapped_key(&new.wrapped), "{}", new.wrapped);
        let read = keys.unwrap("app", &new.wrapped).await.unwrap();
        assert_eq!(read.bytes(), new.key.bytes());
        assert_eq!(vault.count("decrypt"), 0, "the writer's key is cached for its reads");
    }

    #[tokio::test]
    async fn concurrent_cold_reads_share_one_decrypt() {
        let vault = FakeVault::new();
        let writer = service(&vault);
        let wrapped = writer.generate_fresh("app").await.unwrap().wrapped;
        let reader = service(&vault);
        let keys = futures_util::future::join_all((0..16).map(|_| reader.unwrap("app", &wrapped))).await;
        assert!(keys.iter().all(|k| k.is_ok()));
        assert_eq!(vault.count("transit/decrypt/app"), 1, "{:?}", vault.calls());
    }

    #[tokio::test]
    async fn tampered_foreign_and_unconfigured_keys_are_refused_for_good() {
        let vault = FakeVault::new();
        let keys = service(&vault);
        let wrapped = keys.generate_fresh("app").await.unwrap().wrapped;
        let body = wrapped.strip_prefix("vault:v1:").unwrap();
        let flipped = if body.starts_with('B') { 'C' } else { 'B' };
        let tampered = format!("vault:v1:{flipped}{}", &body[1..]);
        let e = service(&vault).unwrap("app", &tampered).await.unwrap_err();
        assert!(e.is_permanent(), "{e:?}");
        assert!(matches!(keys.unwrap("other", &wrapped).await, Err(VaultError::KeyNotAllowed)));
        assert!(matches!(keys.unwrap("app", "vault:v1:../../x").await, Err(VaultError::MalformedWrappedKey)));
        assert!(matches!(keys.unwrap("../keys/app", &wrapped).await, Err(VaultError::KeyNotAllowed)));
        // A key version below min_decryption_version: the fixed sentence, not Vault's text.
        vault.min_decryption_version.store(2, Ordering::Relaxed);
        let e = service(&vault).unwrap("app", &wrapped).await.unwrap_err();
        assert!(e.client_message().contains("min_decryption_version"), "{}", e.client_message());
    }

    #[tokio::test]
    async fn a_wrapped_key_cached_under_one_transit_key_is_not_served_for_another() {
        // A hostile upstream writes an envelope naming Transit key `b`
        // with the wrapped string of a key `app` wrapped (and the proxy cached).
        let vault = FakeVault::new();
        let keys = service(&vault).with_read_keys(&["b".to_owned()]);
        let wrapped = keys.generate_fresh("app").await.unwrap().wrapped;
        assert!(keys.unwrap("app", &wrapped).await.is_ok());
        let e = keys.unwrap("b", &wrapped).await.unwrap_err();
        assert!(e.is_permanent(), "{e:?}");
        assert_eq!(vault.count("transit/decrypt/b"), 1, "Vault decides under `b`: {:?}", vault.calls());
        // And the other way round: a key unwrapped under `b` first.
        let cold = service(&vault).with_read_keys(&["b".to_owned()]);
        assert!(cold.unwrap("b", &wrapped).await.is_err());
        assert!(cold.unwrap("app", &wrapped).await.is_ok());
        assert_eq!(vault.count("transit/decrypt/b"), 2);
    }

    #[tokio::test]
    async fn writes_arriving_together_share_one_new_bucket_key() {
        let vault = FakeVault::new();
        let settings = BucketKeySettings { window: Duration::from_secs(300), max_objects: 1000 };
        let keys = service(&vault).with_bucket_keys(Some(settings));
        vault.delay_ms.store(20, Ordering::Relaxed);
        let new = futures_util::future::join_all((0..32).map(|_| keys.generate_for_object("app"))).await;
        let wrapped: std::collections::HashSet<_> = new.iter().map(|k| k.as_ref().unwrap().wrapped.clone()).collect();
        assert_eq!(wrapped.len(), 1, "one window, not one per concurrent write");
        assert_eq!(vault.count("datakey"), 1, "{:?}", vault.calls());
        let salts: std::collections::HashSet<_> = new.iter().map(|k| k.as_ref().unwrap().key_salt).collect();
        assert_eq!(salts.len(), 32, "each object still derives a key of its own");
    }

    #[tokio::test]
    async fn writes_waiting_for_a_new_bucket_key_share_its_failure() {
        // Found by the independent attack: behind a lock, each waiting write
        // made its own Vault call after the previous one failed, so during
        // an outage the k-th write failed only after k timeouts.
        let vault = FakeVault::new();
        let settings = BucketKeySettings { window: Duration::from_secs(300), max_objects: 1000 };
        let keys = service(&vault).with_bucket_keys(Some(settings));
        vault.delay_ms.store(20, Ordering::Relaxed);
        vault.transit_status.store(503, Ordering::Relaxed);
        let before = vault.count("datakey");
        let new = futures_util::future::join_all((0..8).map(|_| keys.generate_for_object("app"))).await;
        assert!(new.iter().all(|k| k.as_ref().is_err_and(VaultError::is_outage)));
        let calls = vault.count("datakey") - before;
        assert!(calls < 8, "one shared attempt (with its own retries), not one per write: {calls}");
        // Vault back: the next write opens the window; nothing was cached from the failure.
        vault.transit_status.store(0, Ordering::Relaxed);
        assert!(keys.generate_for_object("app").await.is_ok());
    }

    #[tokio::test]
    async fn a_sealed_vault_is_an_outage_and_is_recorded() {
        let vault = FakeVault::new();
        let keys = service(&vault);
        keys.generate_fresh("app").await.unwrap();
        assert!(keys.health().is_reachable());
        vault.transit_status.store(503, Ordering::Relaxed);
        let Err(e) = keys.generate_fresh("app").await else { panic!("a key from a sealed Vault") };
        assert!(e.is_outage() && !e.is_permanent(), "{e:?}");
        assert!(!keys.health().is_reachable(), "readiness follows the outage");
        vault.transit_status.store(429, Ordering::Relaxed);
        let Err(e) = keys.generate_fresh("app").await else { panic!("a key while rate-limited") };
        assert!(e.is_rate_limit(), "{e:?}");
    }

    #[tokio::test]
    async fn a_revoked_token_is_replaced_and_the_call_retried_once() {
        let vault = FakeVault::new();
        let http = VaultHttp::with_transport(vault.clone());
        let jwt = Secret::Value(zeroize::Zeroizing::new("good-jwt".into()));
        let session = Session::new(http, AuthMethod::Kubernetes { mount: "kubernetes".into(), role: "p".into(), jwt });
        let keys = KeyService::new(TransitClient::new(session, "transit", "app"), 16, Duration::from_secs(60));
        keys.generate_fresh("app").await.unwrap();
        vault.revoke_all_tokens();
        keys.generate_fresh("app").await.unwrap();
        assert_eq!(vault.logins(), 2);
        assert_eq!(vault.count("datakey"), 3, "one refused call, one retry after the login: {:?}", vault.calls());
    }

    #[tokio::test]
    async fn writes_take_pooled_keys_without_a_vault_call() {
        let vault = FakeVault::new();
        let settings = PoolSettings {
            size: 8,
            low_water: 2,
            max_age: Duration::from_secs(300),
            version_check: Duration::from_secs(10),
        };
        let keys = service(&vault).with_pool(Some(settings));
        keys.start_pool();
        for _ in 0..200 {
            if keys.pool().unwrap().len() == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(keys.pool().unwrap().len(), 8);
        let before = vault.calls().len();
        let a = keys.generate_fresh("app").await.unwrap();
        let b = keys.generate_fresh("app").await.unwrap();
        assert_ne!(a.wrapped, b.wrapped, "each key serves one object");
        assert_eq!(vault.calls().len(), before, "{:?}", vault.calls());
        assert_eq!(vault.count("datakey"), 0);
        // Pooled keys are wrapped by Transit: a reader elsewhere unwraps them.
        assert_eq!(service(&vault).unwrap("app", &a.wrapped).await.unwrap().bytes(), a.key.bytes());
    }
}

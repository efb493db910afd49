//! Envelope key management: data keys from Vault/OpenBao Transit, a pool of
//! pre-wrapped keys for writes and a bounded cache of unwrapped keys for
//! reads. No HTTP server in here.

mod auth;
mod cache;
pub mod health;
mod pool;
mod single_flight;
mod transit;
mod vault;

pub use crate::format::DataKey;
pub use auth::{AuthMethod, Secret, Session};
pub use cache::KeyCache;
pub use pool::{KeyPool, PoolSettings, RefillError};
pub use transit::{KeyVersionInfo, TransitClient, key_version};
pub use vault::{
    Payload as VaultPayload, VaultAnswer, VaultCall, VaultEndpoint, VaultError, VaultHttp, VaultTransport,
};

use std::sync::Arc;
use std::time::Duration;

/// A data key for writing and its Vault-wrapped form (`vault:vN:…`), safe to store.
#[derive(Clone)]
pub struct NewDataKey {
    pub key: Arc<DataKey>,
    pub wrapped: String,
}

/// The pool's wrapper: Transit `encrypt` with `batch_input`, its outcome
/// recorded in the health state like any other Transit call.
struct TransitWrapper {
    transit: Arc<TransitClient>,
    health: Arc<health::VaultHealth>,
}

impl pool::Wrapper for TransitWrapper {
    fn wrap<'a>(&'a self, keys: &'a [DataKey]) -> futures_util::future::BoxFuture<'a, Result<Vec<String>, VaultError>> {
        Box::pin(async move { self.health.observe(self.transit.wrap_data_keys(keys).await) })
    }
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

/// The key service the request path talks to: Transit, the pool of
/// pre-wrapped keys for writes and the read cache.
pub struct KeyService {
    transit: Arc<TransitClient>,
    /// Transit keys the proxy may unwrap with (the write key first).
    readable: Vec<String>,
    health: Arc<health::VaultHealth>,
    cache: KeyCache,
    pool: Option<Arc<KeyPool>>,
    /// The newest version of the write key seen in any Transit answer.
    latest: Arc<std::sync::atomic::AtomicU32>,
    /// How often the current version is checked when there is no pool to do it.
    version_check: Option<Duration>,
    unwrapping: single_flight::SingleFlight<cache::CacheKey, Result<Arc<DataKey>, VaultError>>,
}

impl KeyService {
    pub fn new(transit: TransitClient, cache_capacity: usize, cache_ttl: Duration) -> Self {
        let readable = vec![transit.key_name().to_owned()];
        Self {
            transit: Arc::new(transit),
            readable,
            health: Arc::default(),
            cache: KeyCache::new(cache_capacity, cache_ttl),
            pool: None,
            latest: Arc::default(),
            version_check: None,
            unwrapping: single_flight::SingleFlight::default(),
        }
    }

    /// Further Transit keys whose data keys may be unwrapped for reads.
    pub fn with_read_keys(mut self, keys: &[String]) -> Self {
        for k in keys {
            if !self.readable.contains(k) {
                self.readable.push(k.clone());
            }
        }
        self
    }

    /// Serves new data keys from a pool of pre-wrapped ones (`None` or a
    /// size of 0: a Transit call per key). The pool fills once
    /// [`KeyService::start_pool`] runs.
    pub fn with_pool(mut self, settings: Option<PoolSettings>) -> Self {
        self.pool = settings.filter(|s| s.size > 0).map(|s| Arc::new(KeyPool::new(s)));
        self
    }

    /// Checks the write key's current version this often even without a
    /// pool (which checks on its own), so a PUT that streams across a
    /// rotation is refused at its end ([`KeyService::is_current`]).
    pub fn with_version_check(mut self, interval: Duration) -> Self {
        self.version_check = Some(interval);
        self
    }

    /// Starts filling the pool in the background, if there is one; without
    /// one, starts the version check.
    pub fn start_pool(&self) {
        let wrapper = TransitWrapper { transit: self.transit.clone(), health: self.health.clone() };
        match (&self.pool, self.version_check) {
            (Some(pool), _) => {
                tokio::spawn(pool.clone().run(Arc::new(wrapper)));
            }
            (None, Some(interval)) => {
                let latest = self.latest.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(interval).await;
                        // One throwaway key: Transit wraps under its current version.
                        let answer = match DataKey::random() {
                            Ok(key) => pool::Wrapper::wrap(&wrapper, std::slice::from_ref(&key)).await,
                            Err(_) => continue,
                        };
                        let checked = answer.as_ref().ok().and_then(|w| w.first()).and_then(|w| key_version(w));
                        if let Some(v) = checked {
                            latest.fetch_max(v, std::sync::atomic::Ordering::SeqCst);
                        }
                        crate::metrics::metrics().key_version_check(checked.is_some());
                    }
                });
            }
            (None, None) => {}
        }
    }

    /// The newest version of the write key the proxy has seen (0: none yet).
    pub fn current_version(&self) -> u32 {
        let pooled = self.pool.as_ref().map_or(0, |p| p.floor());
        self.latest.load(std::sync::atomic::Ordering::SeqCst).max(pooled)
    }

    /// Whether a data key wrapped as `wrapped` is still under the current
    /// version of the write key.
    pub fn is_current(&self, wrapped: &str) -> bool {
        key_version(wrapped).is_some_and(|v| v >= self.current_version())
    }

    pub fn pool(&self) -> Option<&Arc<KeyPool>> {
        self.pool.as_ref()
    }

    pub fn health(&self) -> &health::VaultHealth {
        &self.health
    }

    pub fn key_name(&self) -> &str {
        self.transit.key_name()
    }

    pub fn transit(&self) -> &TransitClient {
        &self.transit
    }

    /// A data key no other object or upload will use: from the pool while
    /// it has one (no Vault call), else straight from Transit `datakey`.
    pub async fn generate_fresh(&self) -> Result<NewDataKey, VaultError> {
        let (key, wrapped) = match self.pool.as_ref().and_then(|p| p.take()) {
            Some(pooled) => (pooled.key, pooled.wrapped),
            None => {
                let (key, wrapped) = self.health.observe(self.transit.generate_data_key().await)?;
                // Transit answered with its current version: if that is a
                // rotation, the pool's older keys go now, not at the next check.
                if let Some(version) = key_version(&wrapped) {
                    self.latest.fetch_max(version, std::sync::atomic::Ordering::SeqCst);
                    if let Some(pool) = &self.pool {
                        pool.observe_version(version);
                    }
                }
                (key, wrapped)
            }
        };
        let key = Arc::new(key);
        self.cache.insert((self.key_name().to_owned(), wrapped.clone()), key.clone());
        Ok(NewDataKey { key, wrapped })
    }

    /// The data key inside a wrapped key, from the cache or Transit.
    /// Only keys the proxy is configured for are used, whatever the object's
    /// metadata or the upload id says. A key is cached, and concurrent
    /// misses share a single Transit call, per Transit key and wrapped key:
    /// an envelope naming another Transit key with a cached wrapped string
    /// is sent to Vault under the key it names, never served from the cache.
    pub async fn unwrap(&self, key_name: &str, wrapped: &str) -> Result<Arc<DataKey>, VaultError> {
        if !self.readable.iter().any(|k| k == key_name) {
            return Err(VaultError::KeyNotAllowed);
        }
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
                let key = Arc::new(self.health.observe(self.transit.decrypt_data_key(key_name, wrapped).await)?);
                self.cache.insert(id.clone(), key.clone());
                Ok(key)
            })
            .await
    }

    /// One probe of Vault (token lookup), recorded in the health state.
    pub async fn probe(&self) -> Result<(), VaultError> {
        self.health.observe(self.transit.lookup_self().await)
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
        let new = keys.generate_fresh().await.unwrap();
        assert!(is_valid_wrapped_key(&new.wrapped), "{}", new.wrapped);
        let read = keys.unwrap("app", &new.wrapped).await.unwrap();
        assert_eq!(read.bytes(), new.key.bytes());
        assert_eq!(vault.count("decrypt"), 0, "the writer's key is cached for its reads");
    }

    #[tokio::test]
    async fn concurrent_cold_reads_share_one_decrypt() {
        let vault = FakeVault::new();
        let writer = service(&vault);
        let wrapped = writer.generate_fresh().await.unwrap().wrapped;
        let reader = service(&vault);
        let keys = futures_util::future::join_all((0..16).map(|_| reader.unwrap("app", &wrapped))).await;
        assert!(keys.iter().all(|k| k.is_ok()));
        assert_eq!(vault.count("transit/decrypt/app"), 1, "{:?}", vault.calls());
    }

    #[tokio::test]
    async fn tampered_foreign_and_unconfigured_keys_are_refused_for_good() {
        let vault = FakeVault::new();
        let keys = service(&vault);
        let wrapped = keys.generate_fresh().await.unwrap().wrapped;
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
        let wrapped = keys.generate_fresh().await.unwrap().wrapped;
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
    async fn a_sealed_vault_is_an_outage_and_is_recorded() {
        let vault = FakeVault::new();
        let keys = service(&vault);
        keys.generate_fresh().await.unwrap();
        assert!(keys.health().is_reachable());
        vault.transit_status.store(503, Ordering::Relaxed);
        let Err(e) = keys.generate_fresh().await else { panic!("a key from a sealed Vault") };
        assert!(e.is_outage() && !e.is_permanent(), "{e:?}");
        assert!(!keys.health().is_reachable(), "readiness follows the outage");
        vault.transit_status.store(429, Ordering::Relaxed);
        let Err(e) = keys.generate_fresh().await else { panic!("a key while rate-limited") };
        assert!(e.is_rate_limit(), "{e:?}");
    }

    #[tokio::test]
    async fn a_revoked_token_is_replaced_and_the_call_retried_once() {
        let vault = FakeVault::new();
        let http = VaultHttp::with_transport(vault.clone());
        let jwt = Secret::Value(zeroize::Zeroizing::new("good-jwt".into()));
        let session = Session::new(http, AuthMethod::Kubernetes { mount: "kubernetes".into(), role: "p".into(), jwt });
        let keys = KeyService::new(TransitClient::new(session, "transit", "app"), 16, Duration::from_secs(60));
        keys.generate_fresh().await.unwrap();
        vault.revoke_all_tokens();
        keys.generate_fresh().await.unwrap();
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
        let a = keys.generate_fresh().await.unwrap();
        let b = keys.generate_fresh().await.unwrap();
        assert_ne!(a.wrapped, b.wrapped, "each key serves one object");
        assert_eq!(vault.calls().len(), before, "{:?}", vault.calls());
        assert_eq!(vault.count("datakey"), 0);
        // Pooled keys are wrapped by Transit: a reader elsewhere unwraps them.
        assert_eq!(service(&vault).unwrap("app", &a.wrapped).await.unwrap().bytes(), a.key.bytes());
    }
}

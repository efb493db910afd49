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

pub use auth::{AuthMethod, Secret, Session};
pub use cache::KeyCache;
pub use pool::{KeyPool, PoolSettings, RefillError};
pub use transit::{TransitClient, key_version};
pub use vault::{
    Payload as VaultPayload, VaultAnswer, VaultCall, VaultEndpoint, VaultError, VaultHttp, VaultTransport,
};

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

/// A 256-bit data key. The bytes are wiped when the last reference drops.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    /// A new key from aws-lc-rs's CSPRNG.
    pub fn random() -> Result<Self, aws_lc_rs::error::Unspecified> {
        let mut key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(key.as_mut())?;
        Ok(Self(key))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The bytes are in a `Zeroizing`, which wipes them in its `Drop`.
impl zeroize::ZeroizeOnDrop for DataKey {}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

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
    unwrapping: single_flight::SingleFlight<Result<Arc<DataKey>, VaultError>>,
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

    /// Starts filling the pool in the background, if there is one.
    pub fn start_pool(&self) {
        if let Some(pool) = &self.pool {
            let wrapper = TransitWrapper { transit: self.transit.clone(), health: self.health.clone() };
            tokio::spawn(pool.clone().run(Arc::new(wrapper)));
        }
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
            None => self.health.observe(self.transit.generate_data_key().await)?,
        };
        let key = Arc::new(key);
        self.cache.insert(&wrapped, key.clone());
        Ok(NewDataKey { key, wrapped })
    }

    /// The data key inside a wrapped key, from the cache or Transit.
    /// Only keys the proxy is configured for are used, whatever the object's
    /// metadata or the upload id says. Concurrent misses for one wrapped key
    /// share a single Transit call.
    pub async fn unwrap(&self, key_name: &str, wrapped: &str) -> Result<Arc<DataKey>, VaultError> {
        if !self.readable.iter().any(|k| k == key_name) {
            return Err(VaultError::KeyNotAllowed);
        }
        if !is_valid_wrapped_key(wrapped) {
            return Err(VaultError::MalformedWrappedKey);
        }
        let cached = self.cache.get(wrapped);
        crate::metrics::metrics().key_cache(cached.is_some(), self.cache.len());
        if let Some(key) = cached {
            return Ok(key);
        }
        self.unwrapping
            .run(wrapped, || async {
                let key = Arc::new(self.health.observe(self.transit.decrypt_data_key(key_name, wrapped).await)?);
                self.cache.insert(wrapped, key.clone());
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

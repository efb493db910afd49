//! Envelope key management: data keys from Vault/OpenBao Transit and a
//! bounded cache of unwrapped keys for reads. No HTTP server in here.

mod auth;
mod cache;
pub mod health;
mod transit;
mod vault;

pub use auth::{AuthMethod, Secret, Session};
pub use cache::KeyCache;
pub use transit::{TransitClient, key_version};
pub use vault::{VaultEndpoint, VaultError, VaultHttp};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// A 256-bit data key. The bytes are wiped when the last reference drops.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

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

/// How long one data key may serve new objects. Each object still gets its
/// own random salt and so its own derived key (docs/SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseWindow {
    pub max_objects: u32,
    pub max_age: Duration,
}

struct SharedKey {
    key: NewDataKey,
    issued: Instant,
    uses: u32,
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

/// The key service the request path talks to: Transit plus the read cache.
pub struct KeyService {
    transit: TransitClient,
    /// Transit keys the proxy may unwrap with (the write key first).
    readable: Vec<String>,
    health: health::VaultHealth,
    cache: KeyCache,
    reuse: Option<ReuseWindow>,
    shared: Mutex<Option<SharedKey>>,
}

impl KeyService {
    pub fn new(transit: TransitClient, cache_capacity: usize, cache_ttl: Duration) -> Self {
        let readable = vec![transit.key_name().to_owned()];
        Self {
            transit,
            readable,
            health: health::VaultHealth::default(),
            cache: KeyCache::new(cache_capacity, cache_ttl),
            reuse: None,
            shared: Mutex::new(None),
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

    pub fn health(&self) -> &health::VaultHealth {
        &self.health
    }

    /// Lets one data key serve up to `window` objects (`None`: one per object).
    pub fn with_reuse(mut self, window: Option<ReuseWindow>) -> Self {
        self.reuse = window.filter(|w| w.max_objects > 1 && !w.max_age.is_zero());
        self
    }

    pub fn key_name(&self) -> &str {
        self.transit.key_name()
    }

    pub fn transit(&self) -> &TransitClient {
        &self.transit
    }

    /// A data key for writing one object: a fresh one from Transit, or the
    /// current shared one while it is inside the reuse window.
    pub async fn generate(&self) -> Result<NewDataKey, VaultError> {
        if let Some(window) = self.reuse {
            let mut shared = self.shared.lock().expect("shared key lock");
            if let Some(s) =
                shared.as_mut().filter(|s| s.uses < window.max_objects && s.issued.elapsed() < window.max_age)
            {
                s.uses += 1;
                return Ok(s.key.clone());
            }
            *shared = None;
        }
        let fresh = self.generate_fresh().await?;
        if self.reuse.is_some() {
            *self.shared.lock().expect("shared key lock") =
                Some(SharedKey { key: fresh.clone(), issued: Instant::now(), uses: 1 });
        }
        Ok(fresh)
    }

    /// A data key no other object will use (multipart uploads: their part
    /// streams are only told apart by part number and salt).
    pub async fn generate_fresh(&self) -> Result<NewDataKey, VaultError> {
        let (key, wrapped) = self.health.observe(self.transit.generate_data_key().await)?;
        let key = Arc::new(key);
        self.cache.insert(&wrapped, key.clone());
        Ok(NewDataKey { key, wrapped })
    }

    /// The data key inside a wrapped key, from the cache or Transit.
    /// Only keys the proxy is configured for are used, whatever the object's
    /// metadata or the upload id says.
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
        let key = Arc::new(self.health.observe(self.transit.decrypt_data_key(key_name, wrapped).await)?);
        self.cache.insert(wrapped, key.clone());
        Ok(key)
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

//! Envelope key management: data keys from Vault/OpenBao Transit and a
//! bounded cache of unwrapped keys for reads. No HTTP server in here.

mod auth;
mod cache;
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

/// The key service the request path talks to: Transit plus the read cache.
pub struct KeyService {
    transit: TransitClient,
    cache: KeyCache,
    reuse: Option<ReuseWindow>,
    shared: Mutex<Option<SharedKey>>,
}

impl KeyService {
    pub fn new(transit: TransitClient, cache_capacity: usize, cache_ttl: Duration) -> Self {
        Self { transit, cache: KeyCache::new(cache_capacity, cache_ttl), reuse: None, shared: Mutex::new(None) }
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
        let (key, wrapped) = self.transit.generate_data_key().await?;
        let key = Arc::new(key);
        self.cache.insert(&wrapped, key.clone());
        Ok(NewDataKey { key, wrapped })
    }

    /// The data key inside a wrapped key, from the cache or Transit.
    pub async fn unwrap(&self, key_name: &str, wrapped: &str) -> Result<Arc<DataKey>, VaultError> {
        if let Some(key) = self.cache.get(wrapped) {
            return Ok(key);
        }
        let key = Arc::new(self.transit.decrypt_data_key(key_name, wrapped).await?);
        self.cache.insert(wrapped, key.clone());
        Ok(key)
    }

    /// Readiness: Vault answers and accepts our token.
    pub async fn check_ready(&self) -> Result<(), VaultError> {
        self.transit.lookup_self().await
    }
}

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

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A fresh data key and its Vault-wrapped form (`vault:vN:…`), safe to store.
pub struct NewDataKey {
    pub key: Arc<DataKey>,
    pub wrapped: String,
}

/// The key service the request path talks to: Transit plus the read cache.
pub struct KeyService {
    transit: TransitClient,
    cache: KeyCache,
}

impl KeyService {
    pub fn new(transit: TransitClient, cache_capacity: usize, cache_ttl: Duration) -> Self {
        Self { transit, cache: KeyCache::new(cache_capacity, cache_ttl) }
    }

    pub fn key_name(&self) -> &str {
        self.transit.key_name()
    }

    pub fn transit(&self) -> &TransitClient {
        &self.transit
    }

    /// A new data key for writing one object.
    pub async fn generate(&self) -> Result<NewDataKey, VaultError> {
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

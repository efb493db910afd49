//! Vault/OpenBao Transit: exactly the calls the proxy needs, each retried
//! once after a fresh login when the token is refused.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use zeroize::Zeroizing;

use super::DataKey;
use super::auth::Session;
use super::vault::{Payload, VaultError};

pub struct TransitClient {
    session: Arc<Session>,
    mount: String,
    key_name: String,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct DataKeyResponse {
    plaintext: Zeroizing<String>,
    ciphertext: String,
}

#[derive(Deserialize)]
struct DecryptResponse {
    plaintext: Zeroizing<String>,
}

#[derive(Deserialize)]
struct DecryptBatch {
    batch_results: Vec<DecryptItem>,
}

#[derive(Deserialize)]
struct DecryptItem {
    #[serde(default)]
    plaintext: Option<Zeroizing<String>>,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct RewrapResponse {
    ciphertext: String,
}

#[derive(Deserialize)]
struct BatchResponse {
    batch_results: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    #[serde(default)]
    ciphertext: String,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct KeyInfo {
    latest_version: u32,
    /// Version -> creation time: unix seconds for symmetric keys.
    #[serde(default)]
    keys: std::collections::HashMap<String, serde_json::Value>,
}

/// What `rewrap` needs to know of a Transit key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyVersionInfo {
    pub latest_version: u32,
    /// When the latest version was created, if Transit says (symmetric keys do).
    pub latest_created: Option<std::time::SystemTime>,
}

impl TransitClient {
    pub fn new(session: Arc<Session>, mount: &str, key_name: &str) -> Self {
        Self { session, mount: mount.trim_matches('/').to_owned(), key_name: key_name.to_owned() }
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The mount this client's key lives on (`transit`, `transit-eu`, …).
    pub fn mount(&self) -> &str {
        &self.mount
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// `<mount>/<endpoint>/<key>`, with the key name checked to be one
    /// path segment: names can come from stored metadata.
    fn path(&self, endpoint: &str, key_name: &str) -> Result<String, VaultError> {
        if !super::is_valid_key_name(key_name) {
            return Err(VaultError::KeyNotAllowed);
        }
        Ok(format!("{}/{endpoint}/{key_name}", self.mount))
    }

    pub async fn generate_data_key(&self) -> Result<(DataKey, String), VaultError> {
        let path = self.path("datakey/plaintext", &self.key_name)?;
        let resp: DataKeyResponse = self.call(reqwest::Method::POST, &path, Some(json!({"bits": 256}).into())).await?;
        if !resp.ciphertext.starts_with("vault:v") {
            return Err(VaultError::BadResponse("wrapped key is not in vault:vN: form"));
        }
        Ok((decode_key(&resp.plaintext)?, resp.ciphertext))
    }

    /// Wraps locally generated data keys in one call (`encrypt` with
    /// `batch_input`). The request body, which carries the keys, is built
    /// in a zeroizing buffer.
    pub async fn wrap_data_keys(&self, keys: &[DataKey]) -> Result<Vec<String>, VaultError> {
        let path = self.path("encrypt", &self.key_name)?;
        let mut body = Zeroizing::new(Vec::with_capacity(32 + keys.len() * 64));
        body.extend_from_slice(b"{\"batch_input\":[");
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"plaintext\":\"");
            let mut b64 = Zeroizing::new([0u8; 44]);
            let n = STANDARD
                .encode_slice(key.bytes(), b64.as_mut())
                .map_err(|_| VaultError::BadResponse("data key does not fit its base64 buffer"))?;
            body.extend_from_slice(&b64[..n]);
            body.extend_from_slice(b"\"}");
        }
        body.extend_from_slice(b"]}");
        let resp: BatchResponse = self.call(reqwest::Method::POST, &path, Some(Payload::Secret(body))).await?;
        if resp.batch_results.len() != keys.len() {
            return Err(VaultError::BadResponse("batch result count differs from the request"));
        }
        resp.batch_results
            .into_iter()
            .map(|item| {
                if !item.error.is_empty() {
                    // Per-item refusals come back with status 400 on the whole batch too.
                    return Err(VaultError::Refused { status: 400, message: super::vault::redact(&item.error) });
                }
                if !super::is_valid_wrapped_key(&item.ciphertext) {
                    return Err(VaultError::BadResponse("wrapped key is not in vault:vN: form"));
                }
                Ok(item.ciphertext)
            })
            .collect()
    }

    pub async fn decrypt_data_key(&self, key_name: &str, wrapped: &str) -> Result<DataKey, VaultError> {
        let path = self.path("decrypt", key_name)?;
        let resp: DecryptResponse =
            self.call(reqwest::Method::POST, &path, Some(json!({"ciphertext": wrapped}).into())).await?;
        decode_key(&resp.plaintext)
    }

    /// Several wrapped keys in one call (`decrypt` with `batch_input`), in
    /// order. An item Transit refuses is that item's error; Vault answering
    /// the whole call with an error is the call's.
    pub async fn decrypt_data_keys(
        &self,
        key_name: &str,
        wrapped: &[&str],
    ) -> Result<Vec<Result<DataKey, VaultError>>, VaultError> {
        let path = self.path("decrypt", key_name)?;
        let items: Vec<_> = wrapped.iter().map(|w| json!({"ciphertext": w})).collect();
        let resp: DecryptBatch =
            self.call(reqwest::Method::POST, &path, Some(json!({"batch_input": items}).into())).await?;
        if resp.batch_results.len() != wrapped.len() {
            return Err(VaultError::BadResponse("batch result count differs from the request"));
        }
        Ok(resp
            .batch_results
            .into_iter()
            .map(|item| match item.plaintext {
                Some(plaintext) if item.error.is_empty() => decode_key(&plaintext),
                _ => Err(VaultError::Refused { status: 400, message: super::vault::redact(&item.error) }),
            })
            .collect())
    }

    /// Re-wraps a wrapped key under the newest key version; the plaintext
    /// key never leaves Vault.
    pub async fn rewrap(&self, key_name: &str, wrapped: &str) -> Result<String, VaultError> {
        let path = self.path("rewrap", key_name)?;
        let resp: RewrapResponse =
            self.call(reqwest::Method::POST, &path, Some(json!({"ciphertext": wrapped}).into())).await?;
        Ok(resp.ciphertext)
    }

    pub async fn latest_version(&self, key_name: &str) -> Result<u32, VaultError> {
        Ok(self.key_versions(key_name).await?.latest_version)
    }

    /// The key's latest version and when it was created (needs `read` on
    /// `<mount>/keys/<key>`, which the admin commands' policy has).
    pub async fn key_versions(&self, key_name: &str) -> Result<KeyVersionInfo, VaultError> {
        let info: KeyInfo = self.call(reqwest::Method::GET, &self.path("keys", key_name)?, None).await?;
        let latest_created = info
            .keys
            .get(&info.latest_version.to_string())
            .and_then(serde_json::Value::as_u64)
            .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        Ok(KeyVersionInfo { latest_version: info.latest_version, latest_created })
    }

    pub async fn lookup_self(&self) -> Result<(), VaultError> {
        let _: serde_json::Value = self.call(reqwest::Method::GET, "auth/token/lookup-self", None).await?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Payload>,
    ) -> Result<T, VaultError> {
        let token = self.session.token().await?;
        let first =
            self.session.http().call_payload::<Envelope<T>>(method.clone(), path, Some(&token), body.clone()).await;
        match first {
            Err(e) if e.is_auth() => {
                // Expired or revoked mid-flight: log in again and retry once.
                let token = self.session.relogin(Some(&token)).await?;
                self.session.http().call_payload::<Envelope<T>>(method, path, Some(&token), body).await.map(|e| e.data)
            }
            other => other.map(|e| e.data),
        }
    }
}

/// The version N of a `vault:vN:…` wrapped key.
pub fn key_version(wrapped: &str) -> Option<u32> {
    wrapped.strip_prefix("vault:v")?.split(':').next()?.parse().ok()
}

fn decode_key(b64: &str) -> Result<DataKey, VaultError> {
    let raw = Zeroizing::new(STANDARD.decode(b64).map_err(|_| VaultError::BadResponse("data key is not base64"))?);
    DataKey::from_slice(&raw).ok_or(VaultError::BadResponse("data key is not 32 bytes"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_key_versions() {
        assert_eq!(super::key_version("vault:v12:abc"), Some(12));
        assert_eq!(super::key_version("nope"), None);
    }
}

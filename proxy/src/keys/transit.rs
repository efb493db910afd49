//! A minimal Vault/OpenBao Transit client: exactly the calls the proxy needs.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::DataKey;

#[derive(Debug, thiserror::Error)]
pub enum TransitError {
    #[error("Vault is unreachable: {0}")]
    Unreachable(String),
    #[error("Vault answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("Vault returned an unusable response: {0}")]
    BadResponse(&'static str),
}

impl TransitError {
    /// Refusals that retrying will not fix (a key version below
    /// `min_decryption_version`, a tampered wrapped key, a missing key).
    pub fn is_permanent(&self) -> bool {
        matches!(self, TransitError::Refused { status: 400 | 404, .. })
    }
}

#[derive(Clone)]
pub struct TransitConfig {
    pub address: String,
    pub token: Zeroizing<String>,
    pub namespace: Option<String>,
    pub ca_cert_pem: Option<Vec<u8>>,
    pub mount: String,
    pub key_name: String,
    pub timeout: Duration,
}

pub struct TransitClient {
    http: reqwest::Client,
    base: String,
    token: Zeroizing<String>,
    namespace: Option<String>,
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
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

impl TransitClient {
    pub fn new(config: TransitConfig) -> Result<Self, TransitError> {
        let mut builder = reqwest::Client::builder().timeout(config.timeout).connect_timeout(config.timeout);
        if let Some(pem) = &config.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|_| TransitError::BadResponse("VAULT_CACERT is not a PEM certificate bundle"))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| TransitError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base: config.address.trim_end_matches('/').to_owned(),
            token: config.token,
            namespace: config.namespace,
            mount: config.mount.trim_matches('/').to_owned(),
            key_name: config.key_name,
        })
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub async fn generate_data_key(&self) -> Result<(DataKey, String), TransitError> {
        let path = format!("{}/datakey/plaintext/{}", self.mount, self.key_name);
        let resp: DataKeyResponse = self.call(reqwest::Method::POST, &path, Some(json!({"bits": 256}))).await?;
        if !resp.ciphertext.starts_with("vault:v") {
            return Err(TransitError::BadResponse("wrapped key is not in vault:vN: form"));
        }
        Ok((decode_key(&resp.plaintext)?, resp.ciphertext))
    }

    pub async fn decrypt_data_key(&self, key_name: &str, wrapped: &str) -> Result<DataKey, TransitError> {
        let path = format!("{}/decrypt/{}", self.mount, key_name);
        let resp: DecryptResponse =
            self.call(reqwest::Method::POST, &path, Some(json!({"ciphertext": wrapped}))).await?;
        decode_key(&resp.plaintext)
    }

    pub async fn lookup_self(&self) -> Result<(), TransitError> {
        let _: serde_json::Value = self.call(reqwest::Method::GET, "auth/token/lookup-self", None).await?;
        Ok(())
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, TransitError> {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{}", self.base, path))
            .header("X-Vault-Token", self.token.as_str())
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| TransitError::Unreachable(redact(&e)))?;
        let status = resp.status();
        let bytes = Zeroizing::new(resp.bytes().await.map_err(|e| TransitError::Unreachable(redact(&e)))?.to_vec());
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .and_then(|b| (!b.errors.is_empty()).then(|| b.errors.join("; ")))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
            return Err(TransitError::Refused { status: status.as_u16(), message });
        }
        serde_json::from_slice::<Envelope<T>>(&bytes)
            .map(|e| e.data)
            .map_err(|_| TransitError::BadResponse("unexpected JSON shape"))
    }
}

fn decode_key(b64: &str) -> Result<DataKey, TransitError> {
    let raw = Zeroizing::new(STANDARD.decode(b64).map_err(|_| TransitError::BadResponse("data key is not base64"))?);
    DataKey::from_slice(&raw).ok_or(TransitError::BadResponse("data key is not 32 bytes"))
}

/// reqwest errors carry the URL, which is safe; strip nothing else but keep it short.
fn redact(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

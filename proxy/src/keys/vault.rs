//! The Vault/OpenBao HTTP API: one JSON call with a token, errors mapped.

use crate::error_chain::error_chain;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// `Clone`: one Transit answer can be shared by concurrent readers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VaultError {
    #[error("Vault is unreachable: {0}")]
    Unreachable(String),
    #[error("Vault answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("Vault returned an unusable response: {0}")]
    BadResponse(&'static str),
    #[error("Vault login failed: {0}")]
    Login(String),
    #[error("the object names a Transit key this proxy is not configured to use")]
    KeyNotAllowed,
    #[error("the object's wrapped data key is malformed")]
    MalformedWrappedKey,
}

impl VaultError {
    /// Refusals that retrying will not fix (a key version below
    /// `min_decryption_version`, a tampered wrapped key, a missing key).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            VaultError::Refused { status: 400 | 404, .. } | VaultError::KeyNotAllowed | VaultError::MalformedWrappedKey
        )
    }

    /// Transit has no key of that name: deleted (crypto-shredded) or never
    /// created. Transit's words for it on `decrypt` and `datakey`.
    pub fn is_key_gone(&self) -> bool {
        matches!(self, VaultError::Refused { status: 400 | 404, message } if message.contains("encryption key not found"))
    }

    /// Whether Vault itself could not be reached or failed (not a refusal
    /// of one request): what the health state tracks.
    pub fn is_outage(&self) -> bool {
        matches!(self, VaultError::Unreachable(_) | VaultError::Refused { status: 500..=599, .. })
    }

    /// What a workload is told about a refused data key: one of a few fixed
    /// sentences, never Vault's own text.
    pub fn client_message(&self) -> &'static str {
        match self {
            VaultError::KeyNotAllowed => "The object names a Transit key this proxy is not configured to use.",
            VaultError::MalformedWrappedKey => "The object's wrapped data key is malformed.",
            _ if self.is_key_gone() => {
                "The Transit key that wraps this object's data key no longer exists (erased); the object cannot be decrypted and nothing can be written under that key."
            }
            // Transit's words for a key version below min_decryption_version.
            VaultError::Refused { message, .. } if message.contains("too old") => {
                "The object's data key is wrapped under a Transit key version that is too old to decrypt (min_decryption_version)."
            }
            _ => "The key service refused the object's data key.",
        }
    }

    /// The token was rejected: log in again and retry once.
    pub fn is_auth(&self) -> bool {
        matches!(self, VaultError::Refused { status: 401 | 403, .. })
    }

    pub fn is_rate_limit(&self) -> bool {
        matches!(self, VaultError::Refused { status: 429, .. })
    }
}

/// A request body: plain JSON, or JSON carrying key material, which is held
/// in a zeroizing buffer that is wiped when the HTTP client drops it.
#[derive(Clone)]
pub enum Payload {
    Json(serde_json::Value),
    Secret(Zeroizing<Vec<u8>>),
}

impl From<serde_json::Value> for Payload {
    fn from(v: serde_json::Value) -> Self {
        Payload::Json(v)
    }
}

/// Lets `bytes::Bytes` own a zeroizing buffer without copying it.
struct WipedOnDrop(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Where Vault is and how to reach it.
#[derive(Clone)]
pub struct VaultEndpoint {
    pub address: String,
    pub namespace: Option<String>,
    pub ca_cert_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// One Vault API exchange as it goes on the wire.
pub struct VaultCall<'a> {
    pub method: reqwest::Method,
    /// Below `/v1/`, e.g. `transit/datakey/plaintext/k`.
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub body: Option<Payload>,
}

/// What a Vault exchange answered: the status and the body, which may carry
/// a data key or a token and is therefore wiped when dropped.
pub struct VaultAnswer {
    pub status: http::StatusCode,
    pub body: Zeroizing<Vec<u8>>,
}

/// Sends one Vault API call. The proxy uses reqwest ([`VaultHttp::new`]);
/// in-process tests use an in-memory Transit that can also produce the
/// faults a real OpenBao cannot be made to (an expired token mid-request).
pub trait VaultTransport: Send + Sync + 'static {
    fn send<'a>(&'a self, call: VaultCall<'a>) -> BoxFuture<'a, Result<VaultAnswer, VaultError>>;
}

/// Vault's HTTP API: calls timed into the metrics, errors mapped and
/// redacted, answers decoded. Cheap to clone.
#[derive(Clone)]
pub struct VaultHttp {
    transport: Arc<dyn VaultTransport>,
}

/// The real transport: reqwest with Vault's timeout and CA.
struct Reqwest {
    http: reqwest::Client,
    base: String,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

impl VaultHttp {
    pub fn new(endpoint: &VaultEndpoint) -> Result<Self, VaultError> {
        let mut builder = reqwest::Client::builder().timeout(endpoint.timeout).connect_timeout(endpoint.timeout);
        if let Some(pem) = &endpoint.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|_| VaultError::BadResponse("VAULT_CACERT is not a PEM certificate bundle"))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| VaultError::Unreachable(e.to_string()))?;
        let transport = Reqwest {
            http,
            base: endpoint.address.trim_end_matches('/').to_owned(),
            namespace: endpoint.namespace.clone(),
        };
        Ok(Self::with_transport(Arc::new(transport)))
    }

    pub fn with_transport(transport: Arc<dyn VaultTransport>) -> Self {
        Self { transport }
    }

    /// One API call, timed into the metrics under its operation's name.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<T, VaultError> {
        self.call_payload(method, path, token, body.map(Payload::Json)).await
    }

    /// [`VaultHttp::call`] with any [`Payload`].
    pub async fn call_payload<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Payload>,
    ) -> Result<T, VaultError> {
        let started = std::time::Instant::now();
        let result = self.call_once(method, path, token, body).await;
        crate::metrics::metrics().vault(operation_of(path), key_of(path), result.is_ok(), started.elapsed());
        result
    }

    /// The response body is held in a zeroizing buffer: it may carry a data
    /// key or a token.
    async fn call_once<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Payload>,
    ) -> Result<T, VaultError> {
        let VaultAnswer { status, body: bytes } = self.transport.send(VaultCall { method, path, token, body }).await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .and_then(|b| (!b.errors.is_empty()).then(|| redact(&b.errors.join("; "))))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
            return Err(VaultError::Refused { status: status.as_u16(), message });
        }
        serde_json::from_slice(&bytes).map_err(|_| VaultError::BadResponse("unexpected JSON shape"))
    }
}

impl VaultTransport for Reqwest {
    fn send<'a>(&'a self, call: VaultCall<'a>) -> BoxFuture<'a, Result<VaultAnswer, VaultError>> {
        Box::pin(self.exchange(call))
    }
}

impl Reqwest {
    async fn exchange(&self, call: VaultCall<'_>) -> Result<VaultAnswer, VaultError> {
        let VaultCall { method, path, token, body } = call;
        let mut req = self.http.request(method, format!("{}/v1/{}", self.base, path)).header("X-Vault-Request", "true");
        if let Some(token) = token {
            req = req.header("X-Vault-Token", token);
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        // For Vault's audit log: which proxy request and why (keys::audit).
        if let Some(audit) = super::audit::current() {
            req = req
                .header(super::audit::ID_HEADER, audit.id)
                .header(super::audit::REASON_HEADER, audit.reason.as_str());
        }
        match body {
            Some(Payload::Json(body)) => req = req.json(&body),
            Some(Payload::Secret(bytes)) => {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes::Bytes::from_owner(WipedOnDrop(bytes)));
            }
            None => {}
        }
        let resp = req.send().await.map_err(|e| VaultError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = Zeroizing::new(resp.bytes().await.map_err(|e| VaultError::Unreachable(error_chain(&e)))?.to_vec());
        Ok(VaultAnswer { status, body })
    }
}

/// The metrics label of a Vault API path.
fn operation_of(path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        [.., "datakey", "plaintext", _] => "datakey",
        [.., "decrypt", _] => "decrypt",
        [.., "encrypt", _] => "encrypt",
        [.., "rewrap", _] => "rewrap",
        [.., "keys", _] => "keys",
        ["auth", "token", "lookup-self"] => "lookup",
        ["auth", "token", "renew-self"] => "renew",
        ["auth", .., "login"] => "login",
        _ => "other",
    }
}

/// The Transit key a Vault API path is for (its last segment), or `""` for
/// the auth paths. Only paths the Transit client built from a configured
/// key name reach here, so the label stays bounded.
fn key_of(path: &str) -> &str {
    match operation_of(path) {
        "datakey" | "decrypt" | "encrypt" | "rewrap" | "keys" => path.rsplit('/').next().unwrap_or(""),
        _ => "",
    }
}

/// Vault's error text with anything that looks like a wrapped key or a
/// token cut out: the text goes to the log, and those must not.
pub fn redact(message: &str) -> String {
    message
        .split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '"' || c == '\'')
        .map(|word| {
            let core =
                word.trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '"' || c == '\'');
            let secret = core.starts_with("vault:v")
                || core.starts_with("hvs.")
                || core.starts_with("s.") && core.len() > 20
                || core.starts_with("hvb.")
                || core.starts_with("b.") && core.len() > 20;
            if secret { word.replacen(core, "<redacted>", 1) } else { word.to_owned() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn names_operations_for_metrics() {
        assert_eq!(super::operation_of("transit/datakey/plaintext/k"), "datakey");
        assert_eq!(super::operation_of("eu/transit/decrypt/k"), "decrypt");
        assert_eq!(super::operation_of("auth/token/lookup-self"), "lookup");
        assert_eq!(super::operation_of("auth/kubernetes/login"), "login");
        assert_eq!(super::operation_of("auth/token/renew-self"), "renew");
        assert_eq!(super::operation_of("sys/health"), "other");
        assert_eq!(super::key_of("transit-eu/datakey/plaintext/tenant-b"), "tenant-b");
        assert_eq!(super::key_of("transit/decrypt/k"), "k");
        assert_eq!(super::key_of("auth/kubernetes/login"), "");
    }

    #[test]
    fn redacts_wrapped_keys_and_tokens() {
        assert_eq!(redact("invalid ciphertext vault:v1:abc+/= here"), "invalid ciphertext <redacted> here");
        assert_eq!(redact("token hvs.CAESIabcdef, bad"), "token <redacted>, bad");
        assert_eq!(redact("permission denied"), "permission denied");
    }
}

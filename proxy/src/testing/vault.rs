//! An in-memory Vault: token, Kubernetes and AppRole login, token lookup and
//! renewal, and the Transit calls the proxy makes (`datakey`, `encrypt` with
//! `batch_input`, `decrypt`, `rewrap`, `keys`). Wrapped keys are opaque
//! handles (`vault:vN:<base64 id>`) into a table, so a tampered or foreign
//! one is refused with 400 as Transit refuses it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::keys::{VaultAnswer, VaultCall, VaultError, VaultTransport};

/// Which token the next login hands out, and for how long.
#[derive(Default)]
struct Tokens {
    /// Tokens Vault accepts now.
    valid: Vec<String>,
    issued: u64,
}

#[derive(Default)]
pub struct FakeVault {
    tokens: Mutex<Tokens>,
    /// Wrapped key id → (Transit key name, key bytes).
    wrapped: Mutex<HashMap<String, (String, [u8; 32])>>,
    /// Every call, as `METHOD path`, in order.
    calls: Mutex<Vec<String>>,
    next_id: AtomicU64,
    /// Lease of tokens from login and renewal, in seconds (0: never expires).
    pub lease_secs: AtomicU64,
    /// How much a renewal extends a token, in seconds.
    pub renew_secs: AtomicU64,
    /// The status every Transit call answers with while non-zero (503: sealed, 429: rate-limited).
    pub transit_status: AtomicU32,
    /// The lowest key version `decrypt` accepts (Transit's min_decryption_version).
    pub min_decryption_version: AtomicU32,
    /// The version new keys are wrapped under.
    pub latest_version: AtomicU32,
    /// A round trip every answer waits for, in milliseconds (0: none), so
    /// concurrent callers overlap as they do against a real Vault.
    pub delay_ms: AtomicU64,
}

impl FakeVault {
    pub fn new() -> std::sync::Arc<Self> {
        let v = Self::default();
        v.latest_version.store(1, Ordering::Relaxed);
        v.min_decryption_version.store(1, Ordering::Relaxed);
        v.lease_secs.store(3600, Ordering::Relaxed);
        v.renew_secs.store(3600, Ordering::Relaxed);
        std::sync::Arc::new(v)
    }

    /// A token accepted as given (for `AuthMethod::Token`).
    pub fn accept_token(&self, token: &str) {
        self.tokens.lock().unwrap().valid.push(token.to_owned());
    }

    /// Revokes every token, as a Vault restart with a new storage backend or
    /// an operator's `vault token revoke` would.
    pub fn revoke_all_tokens(&self) {
        self.tokens.lock().unwrap().valid.clear();
    }

    pub fn logins(&self) -> u64 {
        self.tokens.lock().unwrap().issued
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls so far went to paths containing `fragment`.
    pub fn count(&self, fragment: &str) -> usize {
        self.calls.lock().unwrap().iter().filter(|c| c.contains(fragment)).count()
    }

    fn wrap(&self, key_name: &str, key: [u8; 32]) -> String {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        let handle = STANDARD.encode(id);
        self.wrapped.lock().unwrap().insert(handle.clone(), (key_name.to_owned(), key));
        format!("vault:v{}:{handle}", self.latest_version.load(Ordering::Relaxed))
    }

    fn unwrap(&self, key_name: &str, wrapped: &str) -> Result<[u8; 32], (u16, &'static str)> {
        let rest = wrapped.strip_prefix("vault:v").ok_or((400, "invalid ciphertext: no prefix"))?;
        let (version, handle) = rest.split_once(':').ok_or((400, "invalid ciphertext"))?;
        let version: u32 = version.parse().map_err(|_| (400, "invalid ciphertext version"))?;
        if version < self.min_decryption_version.load(Ordering::Relaxed) {
            return Err((400, "ciphertext or signature version is disallowed by policy (too old)"));
        }
        match self.wrapped.lock().unwrap().get(handle) {
            Some((name, key)) if name == key_name => Ok(*key),
            _ => Err((400, "cipher: message authentication failed")),
        }
    }

    fn login(&self) -> Value {
        let mut tokens = self.tokens.lock().unwrap();
        tokens.issued += 1;
        let token = format!("s.fake{}", tokens.issued);
        tokens.valid.push(token.clone());
        json!({"auth": {"client_token": token, "lease_duration": self.lease_secs.load(Ordering::Relaxed), "renewable": true}})
    }

    fn answer(&self, call: &VaultCall<'_>) -> (u16, Value) {
        let body: Value = match &call.body {
            Some(crate::keys::VaultPayload::Json(v)) => v.clone(),
            Some(crate::keys::VaultPayload::Secret(b)) => serde_json::from_slice(b).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let segments: Vec<&str> = call.path.split('/').collect();
        if let ["auth", _, "login"] = segments.as_slice() {
            let ok = body.get("jwt").is_some_and(|j| j == "good-jwt")
                || body.get("secret_id").is_some_and(|s| s == "good-secret");
            return if ok { (200, self.login()) } else { (400, json!({"errors": ["permission denied"]})) };
        }
        let authorised = call.token.is_some_and(|t| self.tokens.lock().unwrap().valid.iter().any(|v| v == t));
        if !authorised {
            return (403, json!({"errors": ["permission denied"]}));
        }
        match segments.as_slice() {
            ["auth", "token", "lookup-self"] => {
                (200, json!({"data": {"ttl": self.lease_secs.load(Ordering::Relaxed), "renewable": false}}))
            }
            ["auth", "token", "renew-self"] => (
                200,
                json!({"auth": {"client_token": call.token.unwrap_or(""), "lease_duration": self.renew_secs.load(Ordering::Relaxed), "renewable": true}}),
            ),
            [_, endpoint @ .., key_name] => {
                let status = self.transit_status.load(Ordering::Relaxed);
                if status != 0 {
                    return (status as u16, json!({"errors": ["Vault is sealed"]}));
                }
                match endpoint {
                    ["datakey", "plaintext"] => {
                        let key: [u8; 32] = std::array::from_fn(|_| rand_byte());
                        let wrapped = self.wrap(key_name, key);
                        (200, json!({"data": {"plaintext": STANDARD.encode(key), "ciphertext": wrapped}}))
                    }
                    ["encrypt"] => {
                        let results: Vec<Value> = body["batch_input"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|item| {
                                let bytes =
                                    STANDARD.decode(item["plaintext"].as_str().unwrap_or("")).unwrap_or_default();
                                match <[u8; 32]>::try_from(bytes.as_slice()) {
                                    Ok(key) => json!({"ciphertext": self.wrap(key_name, key)}),
                                    Err(_) => json!({"error": "invalid plaintext"}),
                                }
                            })
                            .collect();
                        (200, json!({"data": {"batch_results": results}}))
                    }
                    ["decrypt"] => match self.unwrap(key_name, body["ciphertext"].as_str().unwrap_or("")) {
                        Ok(key) => (200, json!({"data": {"plaintext": STANDARD.encode(key)}})),
                        Err((status, message)) => (status, json!({"errors": [message]})),
                    },
                    ["rewrap"] => match self.unwrap(key_name, body["ciphertext"].as_str().unwrap_or("")) {
                        Ok(key) => (200, json!({"data": {"ciphertext": self.wrap(key_name, key)}})),
                        Err((status, message)) => (status, json!({"errors": [message]})),
                    },
                    ["keys"] => (200, json!({"data": {"latest_version": self.latest_version.load(Ordering::Relaxed)}})),
                    _ => (404, json!({"errors": ["no handler for route"]})),
                }
            }
            _ => (404, json!({"errors": ["no handler for route"]})),
        }
    }
}

fn rand_byte() -> u8 {
    let mut b = [0u8; 1];
    aws_lc_rs::rand::fill(&mut b).expect("CSPRNG");
    b[0]
}

impl VaultTransport for FakeVault {
    fn send<'a>(&'a self, call: VaultCall<'a>) -> BoxFuture<'a, Result<VaultAnswer, VaultError>> {
        self.calls.lock().unwrap().push(format!("{} {}", call.method, call.path));
        let (status, body) = self.answer(&call);
        let body = Zeroizing::new(serde_json::to_vec(&body).expect("JSON"));
        let status = http::StatusCode::from_u16(status).expect("a valid status");
        let delay = std::time::Duration::from_millis(self.delay_ms.load(Ordering::Relaxed));
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(VaultAnswer { status, body })
        })
    }
}

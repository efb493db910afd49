//! Vault authentication: a token (given, or read from a file), Kubernetes
//! service-account login, or AppRole. The session renews its token before
//! it expires and logs in again when renewal is no longer possible.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, so that tests can run a token's life in paused time.
use tokio::time::Instant;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, RwLock};
use zeroize::Zeroizing;

use super::vault::{VaultError, VaultHttp};

#[derive(Clone)]
pub enum Secret {
    Value(Zeroizing<String>),
    /// Re-read at every login, so a rotated mounted Secret is picked up.
    File(PathBuf),
}

impl Secret {
    fn read(&self) -> Result<Zeroizing<String>, VaultError> {
        match self {
            Secret::Value(v) => Ok(v.clone()),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| Zeroizing::new(s.trim().to_owned()))
                .map_err(|e| VaultError::Login(format!("reading {}: {e}", path.display()))),
        }
    }
}

#[derive(Clone)]
pub enum AuthMethod {
    Token(Secret),
    Kubernetes { mount: String, role: String, jwt: Secret },
    AppRole { mount: String, role_id: String, secret_id: Secret },
}

impl AuthMethod {
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::Token(_) => "token",
            AuthMethod::Kubernetes { .. } => "kubernetes",
            AuthMethod::AppRole { .. } => "approle",
        }
    }
}

struct TokenState {
    token: Zeroizing<String>,
    /// `None`: the token does not expire.
    expires_at: Option<Instant>,
    renewable: bool,
}

#[derive(Deserialize)]
struct AuthResponse {
    auth: AuthInfo,
}

#[derive(Deserialize)]
struct AuthInfo {
    client_token: Zeroizing<String>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

#[derive(Deserialize)]
struct LookupResponse {
    data: LookupData,
}

#[derive(Deserialize)]
struct LookupData {
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    renewable: bool,
}

pub struct Session {
    http: VaultHttp,
    method: AuthMethod,
    state: RwLock<Option<TokenState>>,
    /// One login at a time; requests that arrive meanwhile wait for it.
    login: Mutex<()>,
}

fn expiry(ttl_secs: u64) -> Option<Instant> {
    (ttl_secs > 0).then(|| Instant::now() + Duration::from_secs(ttl_secs))
}

impl Session {
    pub fn new(http: VaultHttp, method: AuthMethod) -> Arc<Self> {
        Arc::new(Self { http, method, state: RwLock::new(None), login: Mutex::new(()) })
    }

    pub fn http(&self) -> &VaultHttp {
        &self.http
    }

    /// The current token, logging in first when there is none.
    pub async fn token(&self) -> Result<Zeroizing<String>, VaultError> {
        if let Some(s) = self.state.read().await.as_ref()
            && s.expires_at.is_none_or(|e| e > Instant::now())
        {
            return Ok(s.token.clone());
        }
        self.relogin(None).await
    }

    /// Logs in again unless another caller already replaced `stale`.
    pub async fn relogin(&self, stale: Option<&str>) -> Result<Zeroizing<String>, VaultError> {
        let _guard = self.login.lock().await;
        if let Some(s) = self.state.read().await.as_ref() {
            let fresh = s.expires_at.is_none_or(|e| e > Instant::now());
            if fresh && stale.is_none_or(|t| t != s.token.as_str()) {
                return Ok(s.token.clone());
            }
        }
        let state = self.login().await?;
        let token = state.token.clone();
        tracing::info!(method = self.method.name(), ttl_secs = ?state.expires_at.map(|e| e.saturating_duration_since(Instant::now()).as_secs()), "logged in to Vault");
        *self.state.write().await = Some(state);
        Ok(token)
    }

    async fn login(&self) -> Result<TokenState, VaultError> {
        let (path, body) = match &self.method {
            AuthMethod::Token(secret) => {
                let token = secret.read()?;
                let info: LookupResponse =
                    self.http.call(reqwest::Method::GET, "auth/token/lookup-self", Some(&token), None).await?;
                return Ok(TokenState { token, expires_at: expiry(info.data.ttl), renewable: info.data.renewable });
            }
            AuthMethod::Kubernetes { mount, role, jwt } => {
                (format!("auth/{mount}/login"), json!({"role": role, "jwt": jwt.read()?.as_str()}))
            }
            AuthMethod::AppRole { mount, role_id, secret_id } => {
                (format!("auth/{mount}/login"), json!({"role_id": role_id, "secret_id": secret_id.read()?.as_str()}))
            }
        };
        let resp: AuthResponse =
            self.http.call(reqwest::Method::POST, &path, None, Some(body)).await.map_err(|e| match e {
                VaultError::Refused { status, message } => VaultError::Login(format!("{status}: {message}")),
                other => other,
            })?;
        Ok(TokenState {
            token: resp.auth.client_token,
            expires_at: expiry(resp.auth.lease_duration),
            renewable: resp.auth.renewable,
        })
    }

    /// Keeps the token alive: renews at two thirds of its remaining life,
    /// and logs in again when renewal fails or no longer extends it.
    pub async fn maintain(self: Arc<Self>) {
        loop {
            let (wait, renewable, token) = match self.state.read().await.as_ref() {
                Some(s) => match s.expires_at {
                    Some(e) => {
                        (e.saturating_duration_since(Instant::now()) * 2 / 3, s.renewable, Some(s.token.clone()))
                    }
                    None => (Duration::from_secs(300), false, None),
                },
                None => (Duration::from_secs(5), false, None),
            };
            tokio::time::sleep(wait.max(Duration::from_millis(500))).await;
            let Some(token) = token else {
                // No token yet, or one that never expires: make sure one exists.
                if let Err(e) = self.token().await {
                    tracing::warn!(error = %e, "Vault login failed; retrying");
                }
                continue;
            };
            if renewable && self.renew(&token).await.is_ok() {
                continue;
            }
            if let Err(e) = self.relogin(Some(&token)).await {
                tracing::warn!(error = %e, "Vault login failed; retrying");
            }
        }
    }

    async fn renew(&self, token: &str) -> Result<(), VaultError> {
        let before = self.state.read().await.as_ref().and_then(|s| s.expires_at);
        let resp: AuthResponse =
            self.http.call(reqwest::Method::POST, "auth/token/renew-self", Some(token), Some(json!({}))).await?;
        let expires_at = expiry(resp.auth.lease_duration);
        // At the max TTL a renewal returns no more time: log in instead.
        if expires_at.zip(before).is_some_and(|(after, before)| after <= before + Duration::from_secs(1)) {
            return Err(VaultError::BadResponse("renewal did not extend the token"));
        }
        let mut state = self.state.write().await;
        if let Some(s) = state.as_mut().filter(|s| s.token.as_str() == token) {
            s.expires_at = expires_at;
            s.renewable = resp.auth.renewable;
            tracing::debug!(ttl_secs = resp.auth.lease_duration, "renewed the Vault token");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::testing::vault::FakeVault;

    fn session(vault: &Arc<FakeVault>, method: AuthMethod) -> Arc<Session> {
        Session::new(VaultHttp::with_transport(vault.clone()), method)
    }

    fn kubernetes(jwt: &str) -> AuthMethod {
        AuthMethod::Kubernetes {
            mount: "kubernetes".into(),
            role: "proxy".into(),
            jwt: Secret::Value(Zeroizing::new(jwt.into())),
        }
    }

    #[tokio::test]
    async fn logs_in_once_for_concurrent_callers() {
        let vault = FakeVault::new();
        let s = session(&vault, kubernetes("good-jwt"));
        let tokens = futures_util::future::join_all((0..8).map(|_| s.token())).await;
        assert!(tokens.iter().all(|t| t.as_ref().unwrap().as_str() == "s.fake1"));
        assert_eq!(vault.logins(), 1);
    }

    #[tokio::test]
    async fn a_refused_login_is_a_login_error_without_the_secret() {
        let vault = FakeVault::new();
        let s = session(&vault, kubernetes("stolen-jwt"));
        let e = s.token().await.unwrap_err();
        assert!(matches!(e, VaultError::Login(_)), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("stolen-jwt"));
    }

    #[tokio::test]
    async fn relogin_replaces_only_the_stale_token() {
        let vault = FakeVault::new();
        let s = session(&vault, kubernetes("good-jwt"));
        let first = s.token().await.unwrap();
        vault.revoke_all_tokens();
        let second = s.relogin(Some(&first)).await.unwrap();
        assert_ne!(first.as_str(), second.as_str());
        // A caller that still holds the first token does not log in again.
        let third = s.relogin(Some(&first)).await.unwrap();
        assert_eq!(second.as_str(), third.as_str());
        assert_eq!(vault.logins(), 2);
    }

    #[tokio::test]
    async fn a_given_token_is_looked_up_and_not_renewed() {
        let vault = FakeVault::new();
        vault.accept_token("s.given");
        let s = session(&vault, AuthMethod::Token(Secret::Value(Zeroizing::new("s.given".into()))));
        assert_eq!(s.token().await.unwrap().as_str(), "s.given");
        assert_eq!(vault.count("lookup-self"), 1);
        let bad = session(&vault, AuthMethod::Token(Secret::Value(Zeroizing::new("s.revoked".into()))));
        assert!(matches!(bad.token().await, Err(VaultError::Refused { status: 403, .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn maintain_renews_then_logs_in_again_when_renewal_stops_extending() {
        let vault = FakeVault::new();
        vault.lease_secs.store(30, Ordering::Relaxed);
        vault.renew_secs.store(30, Ordering::Relaxed);
        let s = session(&vault, kubernetes("good-jwt"));
        s.token().await.unwrap();
        tokio::spawn(s.clone().maintain());
        // Renewal at 2/3 of the lease extends it: no second login.
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(vault.count("renew-self"), 1, "{:?}", vault.calls());
        assert_eq!(vault.logins(), 1);
        // At the max TTL a renewal gives no more time (Vault answers with
        // what is left): the session logs in again.
        vault.renew_secs.store(5, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(vault.count("renew-self") >= 2);
        assert_eq!(vault.logins(), 2, "{:?}", vault.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn maintain_logs_in_again_when_the_token_is_revoked() {
        let vault = FakeVault::new();
        vault.lease_secs.store(30, Ordering::Relaxed);
        let s = session(
            &vault,
            AuthMethod::AppRole {
                mount: "approle".into(),
                role_id: "r".into(),
                secret_id: Secret::Value(Zeroizing::new("good-secret".into())),
            },
        );
        let first = s.token().await.unwrap();
        tokio::spawn(s.clone().maintain());
        vault.revoke_all_tokens();
        tokio::time::sleep(Duration::from_secs(25)).await;
        let now = s.token().await.unwrap();
        assert_ne!(first.as_str(), now.as_str());
        assert_eq!(vault.logins(), 2);
    }
}

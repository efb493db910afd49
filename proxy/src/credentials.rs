//! The proxy's own upstream credentials, from the AWS default chain
//! (environment, profile, web identity/IRSA, container/Pod Identity, IMDS),
//! cached until shortly before they expire.

use crate::error_chain::error_chain;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use tokio::sync::RwLock;

/// Refresh this long before expiry by default, so no request signs with
/// dying credentials (the SDKs use 5 minutes too).
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("no upstream credentials: {0}")]
pub struct CredentialsError(String);

pub struct CredentialSource {
    provider: SharedCredentialsProvider,
    cached: RwLock<Option<(Credentials, Instant)>>,
    /// Credentials without an expiry are looked up again this often (mounted files).
    recheck: Option<Duration>,
    refresh_margin: Duration,
}

impl CredentialSource {
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    pub async fn from_default_chain(region: &str) -> Self {
        let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build()
            .await;
        Self::new(SharedCredentialsProvider::new(chain))
    }

    /// Static keys from a mounted Secret directory, re-read when they change.
    pub fn from_directory(dir: PathBuf) -> Self {
        let provider = SharedCredentialsProvider::new(DirectoryCredentials { dir });
        Self {
            provider,
            cached: RwLock::new(None),
            recheck: Some(FILE_RECHECK),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
        }
    }

    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self { provider, cached: RwLock::new(None), recheck: None, refresh_margin: DEFAULT_REFRESH_MARGIN }
    }

    pub async fn current(&self) -> Result<Credentials, CredentialsError> {
        if let Some((c, _)) = self.cached.read().await.as_ref().filter(|c| self.is_fresh(c)) {
            return Ok(c.clone());
        }
        let mut slot = self.cached.write().await;
        if let Some((c, _)) = slot.as_ref().filter(|c| self.is_fresh(c)) {
            return Ok(c.clone());
        }
        // The provider's own error text names the source but never the secret.
        let fresh = self.provider.provide_credentials().await.map_err(|e| CredentialsError(error_chain(&e)))?;
        tracing::info!(expires = ?fresh.expiry(), "loaded upstream credentials");
        crate::metrics::metrics().credentials_expire_at(fresh.expiry());
        *slot = Some((fresh.clone(), Instant::now()));
        Ok(fresh)
    }

    fn is_fresh(&self, (c, fetched): &(Credentials, Instant)) -> bool {
        match c.expiry() {
            Some(exp) => exp > SystemTime::now() + self.refresh_margin,
            None => self.recheck.is_none_or(|every| fetched.elapsed() < every),
        }
    }
}

/// How often mounted credential files are re-read; the kubelet updates a
/// Secret volume within about a minute, so this adds nothing noticeable.
const FILE_RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct DirectoryCredentials {
    dir: PathBuf,
}

impl DirectoryCredentials {
    fn read(&self, name: &str) -> Result<Option<String>, CredentialsError> {
        match std::fs::read_to_string(self.dir.join(name)) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CredentialsError(format!("{}: {e}", self.dir.join(name).display()))),
        }
    }

    fn load(&self) -> Result<Credentials, CredentialsError> {
        let missing = |name: &str| CredentialsError(format!("{} is missing", self.dir.join(name).display()));
        let key = self.read("access-key-id")?.ok_or_else(|| missing("access-key-id"))?;
        let secret =
            zeroize::Zeroizing::new(self.read("secret-access-key")?.ok_or_else(|| missing("secret-access-key"))?);
        let token = self.read("session-token")?;
        Ok(Credentials::new(key, secret.as_str(), token, None, "cloudtaser-mounted-secret"))
    }
}

impl ProvideCredentials for DirectoryCredentials {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(
            self.load().map_err(|e| aws_credential_types::provider::error::CredentialsError::not_loaded(e.0)),
        )
    }
}

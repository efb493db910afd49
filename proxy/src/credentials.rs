//! The proxy's own upstream credentials, from the AWS default chain
//! (environment, profile, web identity/IRSA, container/Pod Identity, IMDS),
//! cached until shortly before they expire.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use tokio::sync::RwLock;

/// Refresh this long before expiry so no request signs with dying credentials.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
#[error("no upstream credentials: {0}")]
pub struct CredentialsError(String);

pub struct CredentialSource {
    provider: SharedCredentialsProvider,
    cached: RwLock<Option<Credentials>>,
}

impl CredentialSource {
    pub async fn from_default_chain(region: &str) -> Self {
        let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build()
            .await;
        Self::new(SharedCredentialsProvider::new(chain))
    }

    pub fn new(provider: SharedCredentialsProvider) -> Self {
        Self { provider, cached: RwLock::new(None) }
    }

    pub async fn current(&self) -> Result<Credentials, CredentialsError> {
        if let Some(c) = self.cached.read().await.as_ref().filter(|c| is_fresh(c)) {
            return Ok(c.clone());
        }
        let mut slot = self.cached.write().await;
        if let Some(c) = slot.as_ref().filter(|c| is_fresh(c)) {
            return Ok(c.clone());
        }
        // The provider's own error text names the source but never the secret.
        let fresh = self.provider.provide_credentials().await.map_err(|e| CredentialsError(error_chain(&e)))?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }
}

fn is_fresh(c: &Credentials) -> bool {
    c.expiry().is_none_or(|exp| exp > SystemTime::now() + REFRESH_MARGIN)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

//! Assembles the units from the configuration: the Vault session, the key
//! service and the signed upstream client. Used by `serve` and the admin commands.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::ProxyConfig;
use crate::config_error::ConfigError;
use crate::credentials::CredentialSource;
use crate::error::ProxyError;
use crate::keys::{KeyService, Session, TransitClient, VaultEndpoint, VaultError, VaultHttp};
use crate::request::RequestPath;
use crate::upstream::UpstreamClient;
use crate::upstream::forward::Forwarder;
use crate::upstream::sign::Signer;

/// What assembling the units from the configuration fails with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// Building the upstream client.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// `VAULT_CACERT` could not be read.
    #[error("VAULT_CACERT {}: {source}", path.display())]
    CaCert { path: PathBuf, source: std::io::Error },
}

/// A Vault session whose token is kept alive in the background.
pub fn vault_session(config: &ProxyConfig) -> Result<Arc<Session>, AppError> {
    let ca_cert_pem = match &config.vault_cacert {
        Some(path) => Some(std::fs::read(path).map_err(|source| AppError::CaCert { path: path.clone(), source })?),
        None => None,
    };
    let endpoint = VaultEndpoint {
        address: config.vault_addr.clone(),
        namespace: config.vault_namespace.clone(),
        ca_cert_pem,
        timeout: config.vault_timeout(),
    };
    let http = VaultHttp::new(&endpoint)?;
    let auth = config.vault_auth()?;
    let session = Session::new(http, auth);
    tokio::spawn(session.clone().maintain());
    Ok(session)
}

pub fn key_service(config: &ProxyConfig, session: Arc<Session>, key_name: &str) -> Arc<KeyService> {
    Arc::new(build_key_service(config, session, key_name))
}

/// The key service `serve` uses: [`key_service`] with the pool of
/// pre-wrapped data keys, which starts filling now. The admin commands
/// write too few objects to need one.
pub fn serving_key_service(config: &ProxyConfig, session: Arc<Session>) -> Result<Arc<KeyService>, AppError> {
    let pool = config.key_pool()?;
    let keys = build_key_service(config, session, &config.transit_key).with_pool(pool);
    keys.start_pool();
    Ok(Arc::new(keys))
}

fn build_key_service(config: &ProxyConfig, session: Arc<Session>, key_name: &str) -> KeyService {
    let transit = TransitClient::new(session, &config.transit_mount, key_name);
    KeyService::new(transit, config.key_cache_size, config.key_cache_ttl()).with_read_keys(&config.readable_keys())
}

pub async fn upstream_client(config: &ProxyConfig) -> Result<UpstreamClient, AppError> {
    let upstream = config.upstream()?;
    let credentials = match &config.credentials_dir {
        Some(dir) => CredentialSource::from_directory(dir.clone()),
        None => CredentialSource::from_default_chain(&upstream.region).await,
    };
    let refresh = std::time::Duration::from_secs(config.credentials_refresh_secs);
    let credentials = Arc::new(credentials.with_refresh_margin(refresh));
    let signer = Signer::new(credentials, upstream.region.clone(), upstream.is_gcs);
    let forwarder = Forwarder::new(crate::server::CONNECTION_BUFFER)?;
    Ok(UpstreamClient::new(signer, upstream, Arc::new(forwarder)))
}

/// The request path the admin commands (`migrate`, `scan`, `rewrap`,
/// `seal`) drive: the proxy's own keys and upstream, plaintext reads off
/// (a tool must see plaintext as plaintext), and the configured sealing.
pub async fn tool_request_path(config: &ProxyConfig) -> Result<(Arc<KeyService>, RequestPath), AppError> {
    let is_gcs = config.upstream()?.is_gcs;
    let keys = key_service(config, vault_session(config)?, &config.transit_key);
    let path = RequestPath::new(keys.clone(), upstream_client(config).await?, Default::default(), String::new())
        .with_seal_method(config.multipart_seal, is_gcs);
    Ok((keys, path))
}

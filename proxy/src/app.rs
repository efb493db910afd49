//! Assembles the units from the resolved [`Settings`]: the Vault session,
//! the key service, the signed upstream client and the request path, each
//! from its own group of settings. Used by `serve` and the admin commands.

use std::path::PathBuf;
use std::sync::Arc;

use crate::credentials::CredentialSource;
use crate::error::ProxyError;
use crate::keys::{KeyService, Session, TransitClient, VaultEndpoint, VaultError, VaultHttp};
use crate::request::RequestPath;
use crate::settings::{CredentialOrigin, KeySettings, Settings, UpstreamSettings, VaultSettings};
use crate::upstream::UpstreamClient;
use crate::upstream::forward::Forwarder;
use crate::upstream::sign::Signer;

/// What assembling the units from the settings fails with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
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
pub fn vault_session(vault: &VaultSettings) -> Result<Arc<Session>, AppError> {
    let ca_cert_pem = match &vault.ca_cert {
        Some(path) => Some(std::fs::read(path).map_err(|source| AppError::CaCert { path: path.clone(), source })?),
        None => None,
    };
    let endpoint = VaultEndpoint {
        address: vault.address.clone(),
        namespace: vault.namespace.clone(),
        ca_cert_pem,
        timeout: vault.timeout,
    };
    let http = VaultHttp::new(&endpoint)?;
    let session = Session::new(http, vault.auth.clone());
    tokio::spawn(session.clone().maintain());
    Ok(session)
}

/// A key service without a pool, writing under `key_name`.
pub fn key_service(keys: &KeySettings, session: Arc<Session>, key_name: &str) -> Arc<KeyService> {
    Arc::new(build_key_service(keys, session, key_name))
}

/// The key service `serve` uses: [`key_service`] with the pool of
/// pre-wrapped data keys, which starts filling now. The admin commands
/// write too few objects to need one.
pub fn serving_key_service(keys: &KeySettings, session: Arc<Session>) -> Arc<KeyService> {
    let service =
        build_key_service(keys, session, &keys.write_key).with_pool(keys.pool).with_version_check(keys.version_check);
    let service = service.with_bucket_keys(keys.bucket_keys);
    service.start_pool();
    let service = Arc::new(service);
    service.start_read_key_checks(keys.version_check);
    service
}

/// Routed when the settings route (`serve`, the tools); `decrypt` may name
/// a key outside the routes, on the default mount.
fn build_key_service(keys: &KeySettings, session: Arc<Session>, key_name: &str) -> KeyService {
    match &keys.routes {
        Some(routes) if routes.get(key_name).is_some() => {
            KeyService::routed(session, routes.clone(), keys.cache_size, keys.cache_ttl)
        }
        _ => {
            let transit = TransitClient::new(session, &keys.transit_mount, key_name);
            KeyService::new(transit, keys.cache_size, keys.cache_ttl).with_read_keys(&keys.readable)
        }
    }
}

pub async fn upstream_client(settings: &UpstreamSettings) -> Result<UpstreamClient, AppError> {
    upstream_client_with(settings, credential_source(settings).await)
}

/// Where the upstream credentials come from, as the settings say.
pub async fn credential_source(settings: &UpstreamSettings) -> CredentialSource {
    match &settings.credentials.origin {
        CredentialOrigin::Directory(dir) => CredentialSource::from_directory(dir.clone()),
        CredentialOrigin::DefaultChain => CredentialSource::from_default_chain(&settings.upstream.region).await,
    }
}

/// The upstream client over a credential source already built (`doctor`
/// looks at the credentials first, and the client then uses what it found).
pub fn upstream_client_with(
    settings: &UpstreamSettings,
    credentials: CredentialSource,
) -> Result<UpstreamClient, AppError> {
    let upstream = settings.upstream.clone();
    let credentials = Arc::new(credentials.with_refresh_margin(settings.credentials.refresh_margin));
    let signer = Signer::new(credentials, upstream.region.clone(), upstream.is_gcs);
    let forwarder = Forwarder::new(crate::server::CONNECTION_BUFFER, settings.timeouts)?;
    Ok(UpstreamClient::new(signer, upstream, Arc::new(forwarder)))
}

/// The request path `serve` answers clients with.
pub fn serving_request_path(settings: &Settings, keys: Arc<KeyService>, client: UpstreamClient) -> RequestPath {
    let request = &settings.request;
    RequestPath::new(keys, client, request.plaintext_reads.clone(), request.virtual_host_suffix.clone())
        .with_policy(request.access.clone())
        .with_key_logging(request.log_keys)
        .with_body_deadline(request.body_deadline)
        .with_body_idle_timeout(request.body_idle_timeout)
        .with_seal_method(request.seal_method, settings.upstream.upstream.is_gcs)
        .with_format_1_multipart_reads(request.format_1_multipart_reads)
        .with_name_binding(request.name_binding)
        .with_legacy_formats(request.legacy_reads, request.legacy_upload_ids)
        .with_complete_keepalive(request.complete_keepalive)
        .with_plaintext_digests(request.keep_digests)
}

/// The request path the admin commands (`migrate`, `scan`, `rewrap`,
/// `seal`) drive: the proxy's own keys and upstream, plaintext reads off
/// (a tool must see plaintext as plaintext), and the configured sealing.
/// The rest of the request settings concern clients' requests, which a
/// tool never receives (it addresses buckets itself, never by `Host`).
pub async fn tool_request_path(settings: &Settings) -> Result<(Arc<KeyService>, RequestPath), AppError> {
    let keys = key_service(&settings.keys, vault_session(&settings.vault)?, &settings.keys.write_key);
    let client = upstream_client(&settings.upstream).await?;
    let path = RequestPath::new(keys.clone(), client, Default::default(), settings.request.virtual_host_suffix.clone())
        .with_seal_method(settings.request.seal_method, settings.upstream.upstream.is_gcs)
        .with_name_binding(settings.request.name_binding)
        .with_format_1_multipart_reads(settings.request.format_1_multipart_reads)
        // The tools read legacy objects whatever the proxy serves: `migrate
        // --upgrade` rewrites them, `scan` reports them.
        .with_legacy_formats(true, settings.request.legacy_upload_ids)
        .with_plaintext_digests(settings.request.keep_digests);
    Ok((keys, path))
}

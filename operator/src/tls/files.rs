//! Serving certificate from files (an existing Secret or a
//! cert-manager Certificate mounted as a volume). Rotated files are picked up
//! without a restart (linkerd2 #5888 is the failure this avoids).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Load { path: String, reason: String },
}

fn load_error(path: &std::path::Path, reason: impl ToString) -> TlsError {
    TlsError::Load { path: path.display().to_string(), reason: reason.to_string() }
}

#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// (the key, Unix time the leaf certificate expires)
fn load(cert_path: &std::path::Path, key_path: &std::path::Path) -> Result<(CertifiedKey, Option<i64>), TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|e| load_error(cert_path, e))?;
    let key_pem = std::fs::read(key_path).map_err(|e| load_error(key_path, e))?;
    parse(&cert_pem, &key_pem, cert_path, key_path)
}

/// A certified key from PEM, and when its leaf expires (Unix seconds).
pub fn parse(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<(CertifiedKey, Option<i64>), TlsError> {
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut &cert_pem[..]).collect::<Result<_, _>>().map_err(|e| load_error(cert_path, e))?;
    if certs.is_empty() {
        return Err(load_error(cert_path, "no certificate found"));
    }
    let not_after =
        x509_parser::parse_x509_certificate(&certs[0]).ok().map(|(_, c)| c.validity().not_after.timestamp());
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| load_error(key_path, e))?
        .ok_or_else(|| load_error(key_path, "no private key found"))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|e| load_error(key_path, e))?;
    Ok((CertifiedKey::new(certs, signer), not_after))
}

impl ReloadingCert {
    pub fn new(cert_path: PathBuf, key_path: PathBuf, metrics: &Metrics) -> Result<Arc<Self>, TlsError> {
        let (key, not_after) = load(&cert_path, &key_path)?;
        if let Some(t) = not_after {
            metrics.cert_expiry_seconds.set(t as f64);
        }
        let stamp = modified(&cert_path);
        Ok(Arc::new(Self { cert_path, key_path, current: RwLock::new((Arc::new(key), stamp)) }))
    }

    /// Checks the files every `every`; a new pair is used from the next handshake.
    pub async fn watch(self: Arc<Self>, every: Duration, metrics: Arc<Metrics>) {
        loop {
            tokio::time::sleep(every).await;
            let stamp = modified(&self.cert_path);
            if stamp == self.current.read().expect("cert lock").1 {
                continue;
            }
            match load(&self.cert_path, &self.key_path) {
                Ok((key, not_after)) => {
                    *self.current.write().expect("cert lock") = (Arc::new(key), stamp);
                    if let Some(t) = not_after {
                        metrics.cert_expiry_seconds.set(t as f64);
                    }
                    tracing::info!("reloaded the webhook serving certificate");
                }
                // Mid-rotation the files can disagree for a moment: keep the old pair.
                Err(e) => tracing::warn!(error = %e, "new webhook certificate not loaded yet"),
            }
        }
    }

    /// Starts from PEM held in memory (self-managed mode); `replace` updates it.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], metrics: &Metrics) -> Result<Arc<Self>, TlsError> {
        let here = std::path::Path::new("<memory>");
        let (key, not_after) = parse(cert_pem, key_pem, here, here)?;
        if let Some(t) = not_after {
            metrics.cert_expiry_seconds.set(t as f64);
        }
        Ok(Arc::new(Self {
            cert_path: here.into(),
            key_path: here.into(),
            current: RwLock::new((Arc::new(key), None)),
        }))
    }

    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8], metrics: &Metrics) -> Result<(), TlsError> {
        let here = std::path::Path::new("<memory>");
        let (key, not_after) = parse(cert_pem, key_pem, here, here)?;
        *self.current.write().expect("cert lock") = (Arc::new(key), None);
        if let Some(t) = not_after {
            metrics.cert_expiry_seconds.set(t as f64);
        }
        Ok(())
    }

    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("cert lock").0.clone())
    }
}

//! Self-managed webhook TLS: the leader keeps a CA and a serving certificate
//! in a Secret, renews the certificate when less than a sixth of its life is
//! left (the CA likewise), and writes the CA into the caBundle of the
//! MutatingWebhookConfiguration. Every replica loads the pair from the Secret,
//! so a rotation reaches all of them without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::files::ReloadingCert;
use super::leader::LeaderLease;
use crate::metrics::Metrics;

const CA_DAYS: i64 = 3650;
const CERT_DAYS: i64 = 90;

#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The PEM material kept in the Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Material {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// (not_before, not_after) of the first certificate in `pem`, Unix seconds.
pub fn validity(pem: &str) -> Option<(i64, i64)> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp()))
}

/// Renew once less than a sixth of the lifetime is left (as Stackable does).
pub fn due(pem: &str, now: i64) -> bool {
    match validity(pem) {
        Some((from, until)) => until - now < (until - from) / 6,
        None => true,
    }
}

fn params(names: Vec<String>, days: i64) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(names)?;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(days);
    Ok(p)
}

/// New material; the CA is kept when `previous` has one that is not due.
pub fn generate(dns_names: &[String], previous: Option<&Material>, now: i64) -> Result<Material, rcgen::Error> {
    let (ca_cert, ca_key) = match previous.filter(|m| !due(&m.ca_cert, now)) {
        Some(m) => (m.ca_cert.clone(), m.ca_key.clone()),
        None => {
            let mut ca = params(vec![], CA_DAYS)?;
            ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "cloudtaser-operator webhook CA");
            ca.distinguished_name = dn;
            let key = KeyPair::generate()?;
            (ca.self_signed(&key)?.pem(), key.serialize_pem())
        }
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, KeyPair::from_pem(&ca_key)?)?;
    let mut leaf = params(dns_names.to_vec(), CERT_DAYS)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
    leaf.distinguished_name = dn;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?.pem();
    Ok(Material { ca_cert, ca_key, cert, key: key.serialize_pem() })
}

fn from_secret(secret: &Secret) -> Option<Material> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| data.get(k).and_then(|v| String::from_utf8(v.0.clone()).ok());
    Some(Material { ca_cert: get("ca.crt")?, ca_key: get("ca.key")?, cert: get("tls.crt")?, key: get("tls.key")? })
}

fn to_data(m: &Material) -> BTreeMap<String, ByteString> {
    [("ca.crt", &m.ca_cert), ("ca.key", &m.ca_key), ("tls.crt", &m.cert), ("tls.key", &m.key)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

pub struct SelfManaged {
    pub secrets: Api<Secret>,
    pub webhooks: Api<MutatingWebhookConfiguration>,
    pub secret_name: String,
    pub webhook_name: String,
    pub dns_names: Vec<String>,
}

impl SelfManaged {
    pub async fn load(&self) -> Result<Option<Material>, kube::Error> {
        Ok(self.secrets.get_opt(&self.secret_name).await?.as_ref().and_then(from_secret))
    }

    /// The leader's work: valid material in the Secret, its CA in the caBundle.
    pub async fn reconcile(&self, now: i64) -> Result<Material, SelfManagedError> {
        let existing = self.secrets.get_opt(&self.secret_name).await?;
        let current = existing.as_ref().and_then(from_secret);
        let material = match &current {
            Some(m) if !due(&m.cert, now) && !due(&m.ca_cert, now) => m.clone(),
            previous => {
                let fresh = generate(&self.dns_names, previous.as_ref(), now)?;
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.secret_name.clone()),
                        resource_version: existing.as_ref().and_then(|s| s.metadata.resource_version.clone()),
                        ..Default::default()
                    },
                    type_: Some("kubernetes.io/tls".to_owned()),
                    data: Some(to_data(&fresh)),
                    ..Default::default()
                };
                match existing {
                    Some(_) => self.secrets.replace(&self.secret_name, &PostParams::default(), &secret).await?,
                    None => self.secrets.create(&PostParams::default(), &secret).await?,
                };
                tracing::info!(secret = %self.secret_name, "issued a new webhook serving certificate");
                fresh
            }
        };
        let bundle = base64::engine::general_purpose::STANDARD.encode(&material.ca_cert);
        let config = self.webhooks.get(&self.webhook_name).await?;
        let mut ops = Vec::new();
        for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
            let have = webhook.client_config.ca_bundle.as_ref().map(|b| String::from_utf8_lossy(&b.0).into_owned());
            // caBundle is []byte: base64 on the wire, PEM once decoded.
            if have.as_deref() != Some(material.ca_cert.as_str()) {
                ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}));
            }
        }
        if !ops.is_empty() {
            let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops)).expect("valid patch");
            self.webhooks.patch(&self.webhook_name, &PatchParams::default(), &Patch::<()>::Json(patch)).await?;
            tracing::info!(webhook = %self.webhook_name, "published the webhook CA");
        }
        Ok(material)
    }

    /// Leader or not, keeps `cert` equal to what the Secret holds.
    pub async fn run(self, lease: LeaderLease, cert: Arc<ReloadingCert>, metrics: Arc<Metrics>, every: Duration) {
        let mut loaded: Option<String> = None;
        loop {
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            match lease.try_acquire().await {
                Ok(true) => {
                    if let Err(e) = self.reconcile(now).await {
                        tracing::warn!(error = %e, "self-managed TLS");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            match self.load().await {
                Ok(Some(m)) if loaded.as_deref() != Some(m.cert.as_str()) => {
                    match cert.replace(m.cert.as_bytes(), m.key.as_bytes(), &metrics) {
                        Ok(()) => {
                            tracing::info!("serving the current self-managed certificate");
                            loaded = Some(m.cert);
                        }
                        Err(e) => tracing::warn!(error = %e, "self-managed certificate not usable"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the webhook TLS Secret"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn generates_a_ca_signed_serving_certificate_and_rotates_on_time() {
        let names = vec!["op.cloudtaser.svc".to_owned()];
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let m = generate(&names, None, now).unwrap();
        let (from, until) = validity(&m.cert).unwrap();
        assert!((until - from) > 89 * 86_400);
        assert!(!due(&m.cert, now));
        assert!(due(&m.cert, until - (until - from) / 6 + 60), "renewed with a sixth of its life left");
        // A new leaf keeps the CA, so the published caBundle stays valid.
        let again = generate(&names, Some(&m), now).unwrap();
        assert_eq!(again.ca_cert, m.ca_cert);
        assert_ne!(again.cert, m.cert);
        // The leaf verifies against the CA with rustls' verifier.
        let ca = rustls_pemfile::certs(&mut m.ca_cert.as_bytes()).next().unwrap().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let leaf = rustls_pemfile::certs(&mut again.cert.as_bytes()).next().unwrap().unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("op.cloudtaser.svc").unwrap();
        verifier.verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now()).unwrap();
    }
}

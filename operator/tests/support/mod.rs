//! Shared by the webhook tests: AdmissionReview bodies shaped exactly as the
//! API server sends them, and an in-memory configuration source.

use std::collections::HashMap;
use std::sync::Arc;

use cloudtaser_operator::crd::S3ProxyConfigSpec;
use cloudtaser_operator::metrics::Metrics;
use cloudtaser_operator::webhook::admission::{Admission, ConfigLookup};
use cloudtaser_operator::webhook::inject::InjectOptions;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Configs(pub HashMap<(String, String), S3ProxyConfigSpec>);

impl ConfigLookup for Configs {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec> {
        self.0.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    fn cluster_default(&self) -> Option<S3ProxyConfigSpec> {
        None
    }
}

/// Configs, and the namespaces the cache knows with their
/// `cloudtaser.io/s3-proxy` annotation (`None`: the namespace has none).
#[allow(dead_code)] // used by golden.rs and webhook_events.rs
#[derive(Default)]
pub struct WithNamespaces {
    pub configs: Configs,
    pub namespaces: HashMap<String, Option<String>>,
}

impl ConfigLookup for WithNamespaces {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec> {
        self.configs.get(namespace, name)
    }

    fn cluster_default(&self) -> Option<S3ProxyConfigSpec> {
        None
    }

    fn namespace_annotation(&self, namespace: &str) -> Option<Option<String>> {
        self.namespaces.get(namespace).cloned()
    }
}

#[allow(dead_code)] // used by webhook.rs, not golden.rs
pub fn admission(configs: Configs, options: InjectOptions) -> Admission {
    Admission { configs: Arc::new(configs), options, metrics: Arc::new(Metrics::default()) }
}

#[allow(dead_code)] // used by golden.rs and webhook_events.rs
pub fn admission_with(lookup: WithNamespaces, options: InjectOptions) -> Admission {
    Admission { configs: Arc::new(lookup), options, metrics: Arc::new(Metrics::default()) }
}

/// A v1 AdmissionReview for creating `pod` in `namespace`, as kube-apiserver sends it.
pub fn review(pod: &Value, namespace: &str, dry_run: bool) -> Value {
    cloudtaser_operator::webhook::admission::pod_create_review(pod, namespace, dry_run)
}

/// The JSON patch in a response, however the `patch` field is encoded.
pub fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let raw = match &response["response"]["patch"] {
        Value::Null => return None,
        Value::String(b64) => base64_decode(b64),
        Value::Array(bytes) => bytes.iter().map(|b| b.as_u64().expect("byte") as u8).collect(),
        other => panic!("unexpected patch encoding {other}"),
    };
    Some(serde_json::from_slice(&raw).expect("patch is JSON"))
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        buf = (buf << 6) | ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

/// A config whose proxy takes the role the EKS webhook gives the pod (IRSA).
#[allow(dead_code)] // each test crate includes this module; not all of them use every item
pub fn irsa_spec() -> S3ProxyConfigSpec {
    serde_json::from_value(json!({
        "upstream": {"region": "eu-west-1"},
        "vault": {"address": "https://vault.eu.example:8200", "transit": {"key": "orders"},
                  "auth": {"method": "kubernetes", "role": "orders"}},
        "credentials": {"source": "serviceAccount"}
    }))
    .unwrap()
}

//! `cloudtaser-operator inject`: the webhook's decision applied to manifests
//! offline, like `linkerd inject` or `istioctl kube-inject`, for GitOps and
//! debugging. Each pod template is mutated by the same function the webhook
//! uses ([`crate::webhook::admission::decide`]); fields the typed pod does
//! not know are kept, because the change is applied as a JSON patch.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;

use crate::crd::S3ProxyConfigSpec;
use crate::webhook::admission::{ConfigLookup, Decision, decide};
use crate::webhook::inject::InjectOptions;

/// The S3ProxyConfigs given with `--config`, by namespace and name.
#[derive(Default)]
pub struct OfflineConfigs {
    configs: HashMap<(String, String), S3ProxyConfigSpec>,
    cluster_default: Option<S3ProxyConfigSpec>,
}

impl ConfigLookup for OfflineConfigs {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec> {
        self.configs.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    fn cluster_default(&self) -> Option<S3ProxyConfigSpec> {
        self.cluster_default.clone()
    }
}

#[derive(Deserialize)]
struct ConfigDoc {
    kind: String,
    metadata: ConfigMeta,
    spec: S3ProxyConfigSpec,
}

#[derive(Deserialize)]
struct ConfigMeta {
    name: String,
    namespace: Option<String>,
}

/// Why offline injection could not read or write the manifests.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("not an S3ProxyConfig: {0}")]
    NotAConfig(serde_json::Error),
    #[error("--config takes S3ProxyConfig manifests, not {0}")]
    WrongKind(String),
    #[error("S3ProxyConfig {namespace}/{name}: {source}")]
    InvalidConfig { namespace: String, name: String, source: crate::crd::InvalidSpec },
    #[error("{what}: {source}")]
    NotAPod { what: String, source: serde_json::Error },
    #[error("{what}: {source}")]
    Patch { what: String, source: json_patch::PatchError },
}

fn documents(text: &str) -> Result<Vec<Value>, OfflineError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

impl OfflineConfigs {
    /// Reads S3ProxyConfig manifests (multi-document YAML). A config without
    /// a namespace is in `default_namespace`.
    pub fn add_yaml(&mut self, text: &str, default_namespace: &str) -> Result<(), OfflineError> {
        for doc in documents(text)? {
            let doc: ConfigDoc = serde_json::from_value(doc).map_err(OfflineError::NotAConfig)?;
            if doc.kind != "S3ProxyConfig" {
                return Err(OfflineError::WrongKind(doc.kind));
            }
            let ns = doc.metadata.namespace.unwrap_or_else(|| default_namespace.to_owned());
            doc.spec.validate().map_err(|source| OfflineError::InvalidConfig {
                namespace: ns.clone(),
                name: doc.metadata.name.clone(),
                source,
            })?;
            self.configs.insert((ns, doc.metadata.name), doc.spec);
        }
        Ok(())
    }

    pub fn set_cluster_default(&mut self, spec: S3ProxyConfigSpec) {
        self.cluster_default = Some(spec);
    }
}

/// The result of injecting a stream of manifests.
#[derive(Debug, Default, PartialEq)]
pub struct Output {
    /// The manifests, injected where asked, as multi-document YAML.
    pub yaml: String,
    pub warnings: Vec<String>,
    /// `Kind/name: message` for each pod template the webhook would deny.
    pub denials: Vec<String>,
}

/// Where a kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            Some("/spec/template")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects every pod template in `manifests` (multi-document YAML).
pub fn inject_manifests(
    configs: &dyn ConfigLookup,
    options: &InjectOptions,
    manifests: &str,
    default_namespace: &str,
) -> Result<Output, OfflineError> {
    let mut out = Output::default();
    let mut docs = Vec::new();
    for mut doc in documents(manifests)? {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("(unnamed)").to_owned();
        let namespace =
            doc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(default_namespace).to_owned();
        if let Some(path) = template_path(&kind)
            && let Some(template) = doc.pointer_mut(path)
        {
            let pod_value = serde_json::json!({
                "metadata": template.get("metadata").cloned().unwrap_or(Value::Null),
                "spec": template.get("spec").cloned().unwrap_or(Value::Null),
            });
            let pod: Pod = serde_json::from_value(pod_value)
                .map_err(|source| OfflineError::NotAPod { what: format!("{kind}/{name}"), source })?;
            match decide(configs, options, &namespace, &pod) {
                Decision::Skip => {}
                Decision::Deny(message) => out.denials.push(format!("{kind}/{name}: {message}")),
                Decision::Inject(injected) => {
                    let before = serde_json::to_value(&pod).expect("pods serialise");
                    let after = serde_json::to_value(&injected.pod).expect("pods serialise");
                    let patch = json_patch::diff(&before, &after);
                    // The template holds only metadata and spec, as the typed pod does.
                    if template.get("metadata").is_none() {
                        template["metadata"] = serde_json::json!({});
                    }
                    json_patch::patch(template, &patch)
                        .map_err(|source| OfflineError::Patch { what: format!("{kind}/{name}"), source })?;
                    out.warnings.extend(injected.warnings.iter().map(|w| format!("{kind}/{name}: {w}")));
                }
            }
        }
        docs.push(doc);
    }
    for doc in docs {
        out.yaml.push_str("---\n");
        out.yaml.push_str(&serde_yaml::to_string(&doc)?);
    }
    Ok(out)
}

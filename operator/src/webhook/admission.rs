//! AdmissionReview handling: which pods to touch, which configuration they
//! get, and the response (patches, warnings or a denial that says what to fix).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::inject::{ANNOTATION, InjectOptions, inject};
use crate::crd::S3ProxyConfigSpec;
use crate::metrics::Metrics;

/// Where configurations come from: a watch-backed cache in the operator,
/// a map in tests. Never the API server per request.
pub trait ConfigLookup: Send + Sync {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec>;
    /// The chart's cluster default, used for `"true"` when the namespace has no `default`.
    fn cluster_default(&self) -> Option<S3ProxyConfigSpec>;
}

pub struct Admission {
    pub configs: Arc<dyn ConfigLookup>,
    pub options: InjectOptions,
    pub metrics: Arc<Metrics>,
}

/// Which configuration an annotation value names: `true`, `name` or `ns/name`.
fn resolve(configs: &dyn ConfigLookup, namespace: &str, value: &str) -> Result<(String, S3ProxyConfigSpec), String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") {
        return configs
            .get(namespace, "default")
            .map(|c| ("default".to_owned(), c))
            .or_else(|| configs.cluster_default().map(|c| ("cluster-default".to_owned(), c)))
            .ok_or_else(|| format!("{ANNOTATION}=true needs an S3ProxyConfig named `default` in namespace {namespace} (or a cluster default in the chart values)"));
    }
    let (ns, name) = value.split_once('/').unwrap_or((namespace, value));
    configs.get(ns, name).map(|c| (format!("{ns}/{name}"), c)).ok_or_else(|| {
        format!("{ANNOTATION}={value}: no S3ProxyConfig {name} in namespace {ns}; create it or fix the annotation")
    })
}

/// The review as the API server reads it. kube serialises `response.patch`
/// as an array of numbers; Go's `[]byte` is a base64 string.
pub fn to_wire(review: &AdmissionReview<DynamicObject>) -> serde_json::Value {
    use base64::Engine;
    let mut value = serde_json::to_value(review).expect("reviews serialise");
    if let Some(patch) = value.pointer_mut("/response/patch")
        && let Some(bytes) = patch.as_array()
    {
        let raw: Vec<u8> = bytes.iter().filter_map(|b| b.as_u64().map(|b| b as u8)).collect();
        *patch = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
    }
    value
}

impl Admission {
    pub fn review(&self, review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(r) => r,
            Err(e) => {
                self.metrics.admission("invalid");
                return AdmissionResponse::invalid(e.to_string()).into_review();
            }
        };
        let response = self.respond(&request);
        response.into_review()
    }

    fn respond(&self, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        let allowed = AdmissionResponse::from(request);
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            self.metrics.admission("skipped");
            return allowed;
        }
        let Some(object) = &request.object else {
            self.metrics.admission("skipped");
            return allowed;
        };
        let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.admission("invalid");
                return allowed.deny(format!("the object is not a Pod: {e}"));
            }
        };
        let Some(value) = pod.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION)) else {
            // Unannotated pods are never touched.
            self.metrics.admission("skipped");
            return allowed;
        };
        if value.eq_ignore_ascii_case("false") {
            self.metrics.admission("skipped");
            return allowed;
        }
        // Controller-created pods carry no namespace in metadata yet.
        let namespace =
            request.namespace.clone().or(pod.metadata.namespace.clone()).unwrap_or_else(|| "default".to_owned());
        let (config_name, config) = match resolve(self.configs.as_ref(), &namespace, value) {
            Ok(c) => c,
            Err(message) => {
                self.metrics.admission("denied");
                return allowed.deny(message);
            }
        };
        let injected = match inject(&pod, &config_name, &config, &self.options) {
            Ok(i) => i,
            Err(denial) => {
                self.metrics.admission("denied");
                return allowed.deny(denial.to_string());
            }
        };
        let before = serde_json::to_value(&pod).expect("pods serialise");
        let after = serde_json::to_value(&injected.pod).expect("pods serialise");
        let patch = json_patch::diff(&before, &after);
        let mut response = allowed;
        if !patch.0.is_empty() {
            response = match response.with_patch(patch) {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.admission("error");
                    return AdmissionResponse::from(request).deny(format!("patch could not be encoded: {e}"));
                }
            };
            if !request.dry_run {
                self.metrics.injection();
            }
        }
        self.metrics.admission("injected");
        if !injected.warnings.is_empty() {
            response.warnings = Some(injected.warnings);
        }
        response
    }
}

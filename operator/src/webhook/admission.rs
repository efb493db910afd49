//! AdmissionReview handling: which pods to touch, which configuration they
//! get, and the response (patches, warnings or a denial that says what to fix).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use super::inject::{ANNOTATION, InjectOptions, Injected, SIDECAR, inject};
use crate::config_ref::ConfigRef;
use crate::crd::S3ProxyConfigSpec;
use crate::metrics::Metrics;

/// Where configurations come from: a watch-backed cache in the operator,
/// a map in tests. Never the API server per request.
pub trait ConfigLookup: Send + Sync {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec>;
    /// The chart's cluster default, used for `"true"` when the namespace has no `default`.
    fn cluster_default(&self) -> Option<S3ProxyConfigSpec>;
    /// The namespace's own `cloudtaser.io/s3-proxy` annotation: `None` when
    /// the namespace is not known (yet), `Some(None)` when it has none.
    fn namespace_annotation(&self, _namespace: &str) -> Option<Option<String>> {
        None
    }
}

/// Which of the chart's two webhooks a review came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/mutate`: pods annotated `cloudtaser.io/s3-proxy` (anything but
    /// `false`/`disabled`), in any namespace the chart does not exclude.
    Pod,
    /// `/mutate-namespace`: unannotated pods in namespaces labelled
    /// `cloudtaser.io/s3-proxy-injection=enabled`; the namespace's
    /// `cloudtaser.io/s3-proxy` annotation says which config (`true` when
    /// it has none). The API server routed the pod here because it saw the
    /// label, so the label is trusted even when the cache has not caught up.
    Namespace,
}

/// Namespace enablement, as Istio's namespace label (which routes a
/// namespace's pods to the webhook, so only those depend on it) and
/// Linkerd's namespace annotation (pods opt out with `disabled`).
pub const NAMESPACE_LABEL: &str = "cloudtaser.io/s3-proxy-injection";

pub struct Admission {
    pub configs: Arc<dyn ConfigLookup>,
    pub options: InjectOptions,
    pub metrics: Arc<Metrics>,
}

/// What the webhook (and `cloudtaser-operator inject`) does with a pod.
#[derive(Debug)]
pub enum Decision {
    /// Unannotated, or annotated `false`: left as it is.
    Skip,
    /// The message says what to fix.
    Deny(String),
    Inject(Box<Injected>),
}

/// The one decision both the webhook and the offline `inject` command make.
pub fn decide(configs: &dyn ConfigLookup, options: &InjectOptions, namespace: &str, pod: &Pod) -> Decision {
    let Some(value) = pod.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION)) else {
        return Decision::Skip;
    };
    let (config_name, config) = match ConfigRef::from_annotation(value, namespace).resolve(configs, namespace, value) {
        None => return Decision::Skip,
        Some(Ok(c)) => c,
        Some(Err(e)) => return Decision::Deny(e.to_string()),
    };
    match inject(pod, &config_name, &config, options) {
        Ok(i) => Decision::Inject(Box::new(i)),
        Err(denial) => Decision::Deny(denial.to_string()),
    }
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

/// The JSON patch from the pod as the API server sent it to the injected pod.
///
/// The difference of the typed pods leaves alone every field the typed `Pod`
/// does not know (fields of newer Kubernetes versions), so it is the patch
/// whenever it applies to the object received. It does not when that object
/// lacks a field the typed form fills in (a container without a `name`, a
/// spec without `containers`: invalid pods, which still reach mutating
/// webhooks before validation); the API server would then fail the request
/// on a patch that does not apply. Such pods are patched from what was
/// received to the injected pod instead.
///
/// The proxy container is inserted (or moved) with an explicit operation
/// first, and the difference is taken from the pod with it in place: an
/// index-based difference alone would rewrite the user's container at the
/// proxy's index into the proxy and re-add it one place on, leaving the
/// fields the typed pod does not know (a newer Kubernetes field on the
/// user's first init container) on the proxy.
fn patch_for(received: &DynamicObject, before: &serde_json::Value, after: &serde_json::Value) -> json_patch::Patch {
    let patch = diff_with_insertions(before, after);
    let Ok(received) = serde_json::to_value(received) else { return patch };
    if patch.0.is_empty() || json_patch::patch(&mut received.clone(), &patch).is_ok() {
        return patch;
    }
    diff_with_insertions(&received, after)
}

/// Explicit `add` (or `move`) operations that put the proxy container where
/// `after` has it, followed by the difference from there to `after`.
fn diff_with_insertions(base: &serde_json::Value, after: &serde_json::Value) -> json_patch::Patch {
    let mut base = base.clone();
    let mut ops: Vec<json_patch::PatchOperation> = Vec::new();
    // A proxy that leaves a list (classic to native) is removed explicitly:
    // an index-by-index diff would shift every later container's fields
    // onto its neighbour (found by the independent attack on the operator).
    for list in ["initContainers", "containers"] {
        let has_proxy = |v: &serde_json::Value| {
            v.pointer(&format!("/spec/{list}"))
                .and_then(serde_json::Value::as_array)
                .and_then(|items| items.iter().position(|c| c["name"] == SIDECAR))
        };
        if has_proxy(after).is_some() {
            continue;
        }
        let Some(at) = has_proxy(&base) else { continue };
        let op = serde_json::json!({"op": "remove", "path": format!("/spec/{list}/{at}")});
        let Ok(op) = serde_json::from_value::<json_patch::PatchOperation>(op) else { continue };
        if json_patch::patch(&mut base, std::slice::from_ref(&op)).is_ok() {
            ops.push(op);
        }
    }
    for list in ["initContainers", "containers"] {
        let Some(index) = after
            .pointer(&format!("/spec/{list}"))
            .and_then(serde_json::Value::as_array)
            .and_then(|items| items.iter().position(|c| c["name"] == SIDECAR))
        else {
            continue;
        };
        let container = after[&"spec"][list][index].clone();
        let op = match base.pointer(&format!("/spec/{list}")) {
            _ if !base.get("spec").is_some_and(serde_json::Value::is_object) => continue,
            Some(serde_json::Value::Array(items)) => match items.iter().position(|c| c["name"] == SIDECAR) {
                Some(at) if at == index => continue,
                Some(at) => {
                    serde_json::json!({"op": "move", "from": format!("/spec/{list}/{at}"), "path": format!("/spec/{list}/{index}")})
                }
                None if index <= items.len() => {
                    serde_json::json!({"op": "add", "path": format!("/spec/{list}/{index}"), "value": container})
                }
                None => continue,
            },
            Some(_) => continue,
            None => serde_json::json!({"op": "add", "path": format!("/spec/{list}"), "value": [container]}),
        };
        let Ok(op) = serde_json::from_value::<json_patch::PatchOperation>(op) else { continue };
        if json_patch::patch(&mut base, std::slice::from_ref(&op)).is_err() {
            continue;
        }
        ops.push(op);
    }
    ops.extend(json_patch::diff(&base, after).0);
    json_patch::Patch(ops)
}

impl Admission {
    pub fn review(&self, review: AdmissionReview<DynamicObject>) -> AdmissionReview<DynamicObject> {
        self.review_routed(review, Route::Pod)
    }

    pub fn review_routed(
        &self,
        review: AdmissionReview<DynamicObject>,
        route: Route,
    ) -> AdmissionReview<DynamicObject> {
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(r) => r,
            Err(e) => {
                self.metrics.admission("invalid");
                return AdmissionResponse::invalid(e.to_string()).into_review();
            }
        };
        let response = self.respond(&request, route);
        response.into_review()
    }

    fn respond(&self, request: &AdmissionRequest<DynamicObject>, route: Route) -> AdmissionResponse {
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
        // Controller-created pods carry no namespace in metadata yet.
        let namespace =
            request.namespace.clone().or(pod.metadata.namespace.clone()).unwrap_or_else(|| "default".to_owned());
        // A pod's own annotation wins (`false`/`disabled` opts out); else,
        // through the namespace route, the namespace's annotation applies,
        // and the pod is annotated with it so the controller, `check` and a
        // reinvocation see what it got.
        let mut decided = pod.clone();
        let annotated = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(ANNOTATION));
        let from_namespace = route == Route::Namespace && !annotated;
        if from_namespace {
            let Some(value) = self.configs.namespace_annotation(&namespace) else {
                self.metrics.admission("denied");
                return allowed.deny(format!(
                    "namespace {namespace} is labelled {NAMESPACE_LABEL}=enabled, but the operator has not seen it yet (created moments ago?): the pod is refused rather than created without the CloudTaser S3 proxy; create it again in a few seconds (controllers retry on their own)"
                ));
            };
            let value = value.unwrap_or_else(|| "true".to_owned());
            decided.metadata.annotations.get_or_insert_with(Default::default).insert(ANNOTATION.to_owned(), value);
        }
        let injected = match decide(self.configs.as_ref(), &self.options, &namespace, &decided) {
            Decision::Skip => {
                self.metrics.admission("skipped");
                return allowed;
            }
            Decision::Deny(message) if from_namespace => {
                self.metrics.admission("denied");
                return allowed.deny(format!(
                    "{message} (the annotation is namespace {namespace}'s; a pod opts out with {ANNOTATION}: disabled)"
                ));
            }
            Decision::Deny(message) => {
                self.metrics.admission("denied");
                return allowed.deny(message);
            }
            Decision::Inject(injected) => injected,
        };
        let before = serde_json::to_value(&pod).expect("pods serialise");
        let after = serde_json::to_value(&injected.pod).expect("pods serialise");
        let patch = patch_for(object, &before, &after);
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

/// The v1 AdmissionReview kube-apiserver sends for creating `pod` in
/// `namespace` (a pod a controller made has no namespace of its own). The
/// one fixture the golden tests, the HTTPS webhook tests and the fuzzer
/// share, so all three review what the API server really sends.
pub fn pod_create_review(pod: &serde_json::Value, namespace: &str, dry_run: bool) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "uid": "a1b2", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    struct One(S3ProxyConfigSpec);

    impl ConfigLookup for One {
        fn get(&self, _namespace: &str, name: &str) -> Option<S3ProxyConfigSpec> {
            (name == "default").then(|| self.0.clone())
        }

        fn cluster_default(&self) -> Option<S3ProxyConfigSpec> {
            None
        }
    }

    fn admission() -> Admission {
        let spec = serde_json::from_value(json!({
            "upstream": {"endpoint": "https://s3.eu-central-1.amazonaws.com", "region": "eu-central-1"},
            "vault": {
                "address": "https://vault.eu.example:8200",
                "transit": {"key": "orders"},
                "auth": {"method": "token", "token": {"name": "vault-token", "key": "token"}}
            },
            "credentials": {"source": "secret", "secretRef": {"name": "s3-proxy-credentials"}}
        }))
        .unwrap();
        Admission {
            configs: Arc::new(One(spec)),
            options: InjectOptions::default(),
            metrics: Arc::new(Metrics::default()),
        }
    }

    fn review_of(pod: &Value) -> AdmissionReview<DynamicObject> {
        serde_json::from_value(pod_create_review(pod, "shop", false)).unwrap()
    }

    /// Reviews `pod`, applies the patch to it and reviews the result again.
    fn patched(admission: &Admission, pod: &Value) -> Value {
        let response = admission.review(review_of(pod)).response.unwrap();
        assert!(response.allowed, "{:?}", response.result);
        let patch: json_patch::Patch = serde_json::from_slice(&response.patch.unwrap()).unwrap();
        let mut out = pod.clone();
        json_patch::patch(&mut out, &patch).expect("the patch applies to the pod that was sent");
        let again = admission.review(review_of(&out)).response.unwrap();
        let again: Option<json_patch::Patch> = again.patch.map(|p| serde_json::from_slice(&p).unwrap());
        assert!(again.as_ref().is_none_or(|p| p.0.is_empty()), "second pass patched again: {again:?}");
        out
    }

    /// Found by fuzz/fuzz_targets/admission.rs (fuzz/regressions/admission/):
    /// an init container without a name. The typed pod gives it `name: ""`,
    /// so the typed difference replaced a field the pod sent does not have
    /// and the API server could not apply the patch.
    #[test]
    fn patch_applies_to_a_pod_missing_required_fields() {
        let admission = admission();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "orders-", "annotations": {"cloudtaser.io/s3-proxy": "true"}},
            "spec": {
                "containers": [{"name": "app", "image": "app:1"}],
                "initContainers": [{"mean": "x", "image": "old"}, {"name": "setup", "image": "busybox"}]
            }
        });
        let out = patched(&admission, &pod);
        assert_eq!(out["spec"]["initContainers"][0]["name"], "cloudtaser-s3proxy");
        // A spec without containers (classic sidecars go there) patches too.
        let pod = json!({
            "metadata": {"annotations": {"cloudtaser.io/s3-proxy": "true"}},
            "spec": {}
        });
        let classic =
            Admission { options: InjectOptions { native_sidecar: false, ..InjectOptions::default() }, ..admission };
        let out = patched(&classic, &pod);
        assert_eq!(out["spec"]["containers"][0]["name"], "cloudtaser-s3proxy");
    }

    /// A field k8s-openapi does not know (here a made-up 1.34+ field) on
    /// the user's first init container stays on that container: the proxy
    /// is inserted before it with an explicit `add`, not by rewriting index 0.
    #[test]
    fn unknown_fields_stay_on_the_first_init_container() {
        let pod = json!({
            "metadata": {"annotations": {"cloudtaser.io/s3-proxy": "true"}},
            "spec": {
                "containers": [{"name": "app", "image": "app:1"}],
                "initContainers": [
                    {"name": "migrate", "image": "migrate:1", "restartPolicyRules": [{"action": "Restart"}]},
                    {"name": "setup", "image": "busybox"}
                ]
            }
        });
        let response = admission().review(review_of(&pod)).response.unwrap();
        let patch: Value = serde_json::from_slice(&response.patch.clone().unwrap()).unwrap();
        assert_eq!(patch[0]["op"], "add", "{patch}");
        assert_eq!(patch[0]["path"], "/spec/initContainers/0", "{patch}");
        let out = patched(&admission(), &pod);
        let inits = out["spec"]["initContainers"].as_array().unwrap();
        assert_eq!(inits[0]["name"], "cloudtaser-s3proxy");
        assert!(inits[0].get("restartPolicyRules").is_none(), "moved onto the proxy: {}", inits[0]);
        assert_eq!(inits[1]["name"], "migrate");
        assert_eq!(inits[1]["restartPolicyRules"], json!([{"action": "Restart"}]));
        assert_eq!(inits[2]["name"], "setup");
    }

    /// A pod injected in classic mode (GitOps output of `inject`) met by a
    /// native-mode webhook: the proxy moves lists, and the user's
    /// containers keep their own fields (before, `app`'s
    /// `restartPolicyRules` landed on `app2`).
    #[test]
    fn a_proxy_that_changes_lists_moves_no_field_between_containers() {
        let pod = json!({
            "metadata": {"annotations": {"cloudtaser.io/s3-proxy": "true"}},
            "spec": {"containers": [
                {"name": "cloudtaser-s3proxy", "image": "ghcr.io/cloudtaser/s3proxy:0.1.0"},
                {"name": "app", "image": "app:1", "restartPolicy": "Never", "restartPolicyRules": [{"action": "Restart"}]},
                {"name": "app2", "image": "app:2"}
            ]}
        });
        let out = patched(&admission(), &pod);
        let containers = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2, "{out}");
        assert_eq!(containers[0]["name"], "app");
        assert_eq!(containers[0]["restartPolicyRules"], json!([{"action": "Restart"}]));
        assert_eq!(containers[1]["name"], "app2");
        assert!(containers[1].get("restartPolicyRules").is_none(), "moved onto app2: {}", containers[1]);
        assert_eq!(out["spec"]["initContainers"][0]["name"], "cloudtaser-s3proxy");
    }

    /// Well-formed pods keep the typed difference: fields the typed pod
    /// does not know (newer Kubernetes) are left as they are.
    #[test]
    fn unknown_fields_survive_the_patch() {
        let pod = json!({
            "metadata": {"annotations": {"cloudtaser.io/s3-proxy": "true"}},
            "spec": {"containers": [{"name": "app", "image": "app:1", "futureField": {"a": 1}}], "futurePodField": true}
        });
        let out = patched(&admission(), &pod);
        assert_eq!(out["spec"]["futurePodField"], true);
        assert_eq!(out["spec"]["containers"][0]["futureField"], json!({"a": 1}));
    }
}

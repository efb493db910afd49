//! The operator's mutating webhook: `webhook::admission::Admission::review`,
//! from AdmissionReview JSON to the JSON patch it answers with.
//!
//! Byte 0 picks the configuration (one of the golden cases'), the sidecar
//! mode (native or classic) and how the rest is read:
//! - mode 0: the rest is a whole AdmissionReview, as any client could POST it;
//! - mode 1: the rest is a pod, wrapped in a review as kube-apiserver sends it;
//! - mode 2 (structure-aware): byte 1 picks a golden input pod and the rest
//!   is a JSON merge patch (RFC 7386) applied to it, so the fuzzer mutates a
//!   real annotated pod field by field.
//!
//! Properties (those of operator/tests/golden.rs, for any input):
//! - `review` never panics, and its answer serialises for the wire;
//! - a patch it returns applies (json-patch) to the pod it was sent;
//! - reviewing the patched pod again allows it with no further patch
//!   (reinvocationPolicy: IfNeeded must change nothing).
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cloudtaser_operator::crd::S3ProxyConfigSpec;
use cloudtaser_operator::metrics::Metrics;
use cloudtaser_operator::webhook::admission::{Admission, ConfigLookup, to_wire};
use cloudtaser_operator::webhook::inject::InjectOptions;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

macro_rules! golden {
    ($case:literal) => {
        (
            include_str!(concat!("../../operator/tests/golden/", $case, "/config.yaml")),
            include_str!(concat!("../../operator/tests/golden/", $case, "/input.yaml")),
        )
    };
}

const CASES: [(&str, &str); 9] = [
    golden!("bad-override-denied"),
    golden!("gcs-hmac-multi-container"),
    golden!("hostnetwork-denied"),
    golden!("irsa-eks-ran-first"),
    golden!("missing-config-denied"),
    golden!("pod-identity"),
    golden!("static-classic"),
    golden!("static-native"),
    golden!("unannotated-untouched"),
];

#[derive(serde::Deserialize)]
struct CaseConfig {
    namespace: String,
    name: String,
    spec: S3ProxyConfigSpec,
}

struct Configs(HashMap<(String, String), S3ProxyConfigSpec>, Option<S3ProxyConfigSpec>);

impl ConfigLookup for Configs {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec> {
        self.0.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    fn cluster_default(&self) -> Option<S3ProxyConfigSpec> {
        self.1.clone()
    }
}

struct Golden {
    configs: Vec<CaseConfig>,
    pods: Vec<Value>,
}

static GOLDEN: LazyLock<Golden> = LazyLock::new(|| Golden {
    configs: CASES.iter().map(|(c, _)| serde_yaml::from_str(c).expect("golden config")).collect(),
    pods: CASES.iter().map(|(_, p)| serde_yaml::from_str(p).expect("golden pod")).collect(),
});

/// The configuration the selector byte names; bit 4 adds a cluster default.
fn admission(selector: u8) -> (Admission, String) {
    let golden = &*GOLDEN;
    let case = &golden.configs[usize::from(selector & 0x0f) % golden.configs.len()];
    let mut map = HashMap::new();
    map.insert((case.namespace.clone(), case.name.clone()), case.spec.clone());
    let default = (selector & 0x10 != 0).then(|| case.spec.clone());
    let options = InjectOptions { native_sidecar: selector & 0x20 == 0, ..InjectOptions::default() };
    let admission =
        Admission { configs: Arc::new(Configs(map, default)), options, metrics: Arc::new(Metrics::default()) };
    (admission, case.namespace.clone())
}

/// A v1 AdmissionReview for creating `pod`, as kube-apiserver sends it.
fn review_of(pod: &Value, namespace: &str) -> Value {
    cloudtaser_operator::webhook::admission::pod_create_review(pod, namespace, false)
}

/// Reviews `review` (JSON); `None` when it is not an AdmissionReview at all
/// (the server's JSON extractor answers 400 before the handler runs).
fn run(admission: &Admission, review: &Value) -> Option<(bool, Option<json_patch::Patch>, String)> {
    let parsed: AdmissionReview<DynamicObject> = serde_json::from_value(review.clone()).ok()?;
    let answer = admission.review(parsed);
    let wire = to_wire(&answer);
    assert!(serde_json::to_vec(&wire).is_ok());
    let response = answer.response.expect("every review is answered");
    let patch = response.patch.as_ref().map(|raw| {
        assert_eq!(wire["response"]["patchType"], "JSONPatch");
        serde_json::from_slice::<json_patch::Patch>(raw).expect("the patch is a JSON patch")
    });
    Some((response.allowed, patch, response.result.message))
}

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else { return };
    let (admission, namespace) = admission(*selector);
    let review = match selector >> 6 {
        0 => match serde_json::from_slice::<Value>(rest) {
            Ok(v) => v,
            Err(_) => return,
        },
        1 => match serde_json::from_slice::<Value>(rest) {
            Ok(pod) => review_of(&pod, &namespace),
            Err(_) => return,
        },
        _ => {
            let [pick, merge @ ..] = rest else { return };
            let golden = &*GOLDEN;
            let mut pod = golden.pods[usize::from(*pick) % golden.pods.len()].clone();
            match serde_json::from_slice::<Value>(merge) {
                Ok(m) => json_patch::merge(&mut pod, &m),
                Err(_) => return,
            }
            review_of(&pod, &namespace)
        }
    };
    let Some((allowed, patch, _message)) = run(&admission, &review) else { return };
    let Some(patch) = patch.filter(|p| !p.0.is_empty()) else { return };
    assert!(allowed, "a denial carries a patch");

    // The patch applies to the pod the API server sent.
    let mut pod = review["request"]["object"].clone();
    if let Err(e) = json_patch::patch(&mut pod, &patch) {
        panic!("the patch does not apply to the pod it was computed for: {e}\npatch: {patch:?}");
    }

    // Reinvocation changes nothing.
    let mut again = review.clone();
    again["request"]["object"] = pod;
    let (allowed, patch, message) = run(&admission, &again).expect("the patched review still parses");
    assert!(allowed, "the patched pod is denied on reinvocation: {message}");
    if let Some(p) = patch {
        assert!(p.0.is_empty(), "second pass patched again: {p:?}");
    }
});

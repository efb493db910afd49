//! Golden tests: each `tests/golden/<case>/` holds an input pod and a
//! configuration; the webhook's patch is applied to the pod and compared
//! with `expected.yaml` (or `denied.txt`), then applied again to prove that
//! a second pass changes nothing. `UPDATE_GOLDEN=1` rewrites the expectations.

mod support;

use std::path::Path;

use cloudtaser_operator::crd::S3ProxyConfigSpec;
use cloudtaser_operator::webhook::inject::InjectOptions;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use serde::Deserialize;
use serde_json::Value;
use support::{Configs, admission, patch_of, review};

#[derive(Deserialize)]
struct CaseConfig {
    namespace: String,
    name: String,
    spec: S3ProxyConfigSpec,
}

#[derive(Deserialize, Default)]
struct CaseOptions {
    native_sidecar: Option<bool>,
}

fn run_review(configs: Configs, options: InjectOptions, pod: &Value, namespace: &str) -> Value {
    let admission = admission(configs, options);
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review(pod, namespace, false)).unwrap();
    cloudtaser_operator::webhook::admission::to_wire(&admission.review(review))
}

fn check_case(dir: &Path) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let config: CaseConfig = serde_yaml::from_str(&read("config.yaml").unwrap()).unwrap();
    let case_options: CaseOptions = read("options.yaml").map(|s| serde_yaml::from_str(&s).unwrap()).unwrap_or_default();
    let mut options = InjectOptions::default();
    if let Some(native) = case_options.native_sidecar {
        options.native_sidecar = native;
    }
    let configs = || {
        let mut c = Configs::default();
        c.0.insert((config.namespace.clone(), config.name.clone()), config.spec.clone());
        c
    };
    let input: Value = serde_yaml::from_str(&read("input.yaml").unwrap()).unwrap();
    let out = run_review(configs(), options.clone(), &input, &config.namespace);
    let response = &out["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002", "{}", dir.display());

    if response["allowed"] == false {
        let message = response["status"]["message"].as_str().unwrap_or_default().to_owned();
        if update {
            std::fs::write(dir.join("denied.txt"), format!("{message}\n")).unwrap();
        }
        assert_eq!(message, read("denied.txt").unwrap_or_default().trim_end(), "{}", dir.display());
        return;
    }
    let mut pod = input.clone();
    if let Some(patch) = patch_of(&out) {
        assert_eq!(response["patchType"], "JSONPatch");
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    let warnings: Vec<String> =
        response["warnings"].as_array().into_iter().flatten().map(|w| w.as_str().unwrap().to_owned()).collect();
    if update {
        std::fs::write(dir.join("expected.yaml"), serde_yaml::to_string(&pod).unwrap()).unwrap();
        std::fs::write(dir.join("warnings.txt"), warnings.iter().map(|w| format!("{w}\n")).collect::<String>())
            .unwrap();
    }
    let expected: Value =
        serde_yaml::from_str(&read("expected.yaml").expect("expected.yaml (run with UPDATE_GOLDEN=1)")).unwrap();
    assert_eq!(pod, expected, "{}: injected pod differs from expected.yaml", dir.display());
    let expected_warnings: Vec<String> = read("warnings.txt").unwrap_or_default().lines().map(str::to_owned).collect();
    assert_eq!(warnings, expected_warnings, "{}", dir.display());

    // Reinvocation (reinvocationPolicy: IfNeeded) must change nothing.
    let again = run_review(configs(), options, &pod, &config.namespace);
    assert!(
        patch_of(&again).is_none_or(|p| p.0.is_empty()),
        "{}: second pass patched {:?}",
        dir.display(),
        patch_of(&again)
    );
    // For kubernetes-validate (tests/e2e/test_operator_manifests.py).
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("injected-pods");
    std::fs::create_dir_all(&out_dir).unwrap();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(out_dir.join(format!("{name}.json")), serde_json::to_vec_pretty(&pod).unwrap()).unwrap();
}

#[test]
fn golden_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert!(cases.len() >= 9);
    for case in cases {
        check_case(&case);
    }
}

//! Golden tests: each `tests/golden/<case>/` holds an input pod and a
//! configuration; the webhook's patch is applied to the pod and compared
//! with `expected.yaml` (or `denied.txt`), then applied again to prove that
//! a second pass changes nothing. `UPDATE_GOLDEN=1` rewrites the expectations.

mod contract;
mod kubelet;
mod support;

use std::path::Path;

use cloudtaser_operator::crd::S3ProxyConfigSpec;
use cloudtaser_operator::webhook::admission::Route;
use cloudtaser_operator::webhook::inject::{InjectOptions, SIDECAR};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use serde::Deserialize;
use serde_json::Value;
use support::{Configs, WithNamespaces, admission_with, patch_of, review};

#[derive(Deserialize)]
struct CaseConfig {
    namespace: String,
    name: String,
    spec: S3ProxyConfigSpec,
}

#[derive(Deserialize, Default)]
struct CaseOptions {
    native_sidecar: Option<bool>,
    /// The namespace the pod is created in, when not the config's.
    pod_namespace: Option<String>,
    /// The chart's `platformAssignsUser` (OpenShift).
    platform_assigns_user: Option<bool>,
    /// Reviewed through `/mutate-namespace` (a namespace labelled
    /// `cloudtaser.io/s3-proxy-injection=enabled`), not `/mutate`.
    namespace_route: Option<bool>,
    /// The pod's namespace's `cloudtaser.io/s3-proxy` annotation.
    namespace_annotation: Option<String>,
    /// The namespace is not in the operator's cache (yet).
    namespace_unknown: Option<bool>,
}

/// What a case that injected checked beyond the expected YAML.
#[derive(Default)]
struct Checked {
    token_files: usize,
    proxies: usize,
    /// Workload containers' token files checked to stay readable.
    workload_token_files: usize,
}

fn run_review(lookup: WithNamespaces, options: InjectOptions, pod: &Value, namespace: &str, route: Route) -> Value {
    let admission = admission_with(lookup, options);
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review(pod, namespace, false)).unwrap();
    cloudtaser_operator::webhook::admission::to_wire(&admission.review_routed(review, route))
}

/// The route the API server takes for `pod`: `/mutate` once it carries the
/// annotation (the chart's first webhook), else the case's.
fn route_for(pod: &Value, namespace_route: bool) -> Route {
    let annotated = pod["metadata"]["annotations"].get("cloudtaser.io/s3-proxy").is_some();
    if namespace_route && !annotated { Route::Namespace } else { Route::Pod }
}

/// Every token file the proxy reads is readable by its UID (per the kubelet's
/// rules in `kubelet`), and the proxy's own parser accepts its env and args.
fn check_injected(dir: &Path, input: &Value, pod: &Value, checked: &mut Checked) {
    let before: k8s_openapi::api::core::v1::Pod = serde_json::from_value(input.clone()).unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone()).unwrap();
    // Every workload container keeps every token file it could read.
    for (container, volume) in kubelet::workload_token_mounts(&before) {
        let c = |p: &k8s_openapi::api::core::v1::Pod| {
            let spec = p.spec.as_ref().unwrap();
            spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == container).cloned()
        };
        let (old, new) = (c(&before).unwrap(), c(&pod).expect("the workload container is still there"));
        if kubelet::can_read(&before, &old, &kubelet::token_file(&before, &volume)) {
            let file = kubelet::token_file(&pod, &volume);
            assert!(
                kubelet::can_read(&pod, &new, &file),
                "{}: container {container} could read its token in volume {volume} before injection, not after: {file:?}",
                dir.display()
            );
            checked.workload_token_files += 1;
        }
    }
    let spec = pod.spec.as_ref().unwrap();
    let Some(proxy) = spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == SIDECAR) else {
        return;
    };
    checked.proxies += 1;
    if let Err(e) = contract::proxy_accepts(proxy) {
        panic!("{}: the proxy refuses the configuration the operator injected: {e}", dir.display());
    }
    for (var, volume) in kubelet::proxy_token_files(proxy) {
        let file = kubelet::token_file(&pod, &volume);
        assert!(
            kubelet::can_read(&pod, proxy, &file),
            "{}: the proxy cannot read {var} in volume {volume}: {file:?}",
            dir.display()
        );
        checked.token_files += 1;
    }
}

fn check_case(dir: &Path, checked: &mut Checked) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let config: CaseConfig = serde_yaml::from_str(&read("config.yaml").unwrap()).unwrap();
    let case_options: CaseOptions = read("options.yaml").map(|s| serde_yaml::from_str(&s).unwrap()).unwrap_or_default();
    let mut options = InjectOptions::default();
    if let Some(native) = case_options.native_sidecar {
        options.native_sidecar = native;
    }
    options.platform_assigns_user = case_options.platform_assigns_user.unwrap_or(false);
    let input: Value = serde_yaml::from_str(&read("input.yaml").unwrap()).unwrap();
    let namespace = case_options.pod_namespace.clone().unwrap_or(config.namespace.clone());
    let configs = || {
        let mut c = Configs::default();
        c.0.insert((config.namespace.clone(), config.name.clone()), config.spec.clone());
        let mut lookup = WithNamespaces { configs: c, ..Default::default() };
        if !case_options.namespace_unknown.unwrap_or(false) {
            lookup.namespaces.insert(namespace.clone(), case_options.namespace_annotation.clone());
        }
        lookup
    };
    let namespace_route = case_options.namespace_route.unwrap_or(false);
    let out = run_review(configs(), options.clone(), &input, &namespace, route_for(&input, namespace_route));
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
    check_injected(dir, &input, &pod, checked);

    // Reinvocation (reinvocationPolicy: IfNeeded) must change nothing.
    let again = run_review(configs(), options, &pod, &namespace, route_for(&pod, namespace_route));
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
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut checked = Checked::default();
    for case in cases {
        check_case(&case, &mut checked);
    }
    // Every injected pod went through the proxy's parser; the token cases
    // (two tokens each in the token-* cases) went through the kubelet's rules.
    assert!(checked.proxies >= 20, "{} proxies checked", checked.proxies);
    assert!(checked.token_files >= 28, "{} token files checked", checked.token_files);
    assert!(checked.workload_token_files >= 8, "{} workload token files checked", checked.workload_token_files);
}

/// The readability check can fail: the mode the operator used to give the
/// Vault token (0440), in a pod whose app runs as another UID without
/// fsGroup, leaves a root-owned file the proxy cannot read.
#[test]
fn the_old_vault_token_mode_is_unreadable_with_different_uids() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/token-irsa-different-uids");
    let text = std::fs::read_to_string(root.join("expected.yaml")).unwrap();
    let mut pod: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(&text).unwrap();
    let proxy = pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0].clone();
    let volume = |pod: &mut k8s_openapi::api::core::v1::Pod| {
        pod.spec
            .as_mut()
            .unwrap()
            .volumes
            .as_mut()
            .unwrap()
            .iter_mut()
            .find(|v| v.name == "cloudtaser-vault-token")
            .unwrap()
            .projected
            .as_mut()
            .unwrap()
            .default_mode = Some(0o440);
    };
    assert!(kubelet::can_read(&pod, &proxy, &kubelet::token_file(&pod, "cloudtaser-vault-token")));
    volume(&mut pod);
    let file = kubelet::token_file(&pod, "cloudtaser-vault-token");
    assert_eq!(file, kubelet::TokenFile { mode: 0o440, uid: 0, gid: 0 });
    assert!(!kubelet::can_read(&pod, &proxy, &file));
    // With a shared UID the kubelet chowns it to that UID instead (0600).
    let shared = std::fs::read_to_string(root.with_file_name("token-irsa-shared-uid").join("expected.yaml")).unwrap();
    let mut shared: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(&shared).unwrap();
    volume(&mut shared);
    assert_eq!(
        kubelet::token_file(&shared, "cloudtaser-vault-token"),
        kubelet::TokenFile { mode: 0o600, uid: 65532, gid: 0 }
    );
}

#[test]
#[ignore = "prints the token-file table of docs/OPERATOR.md"]
fn print_token_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    for case in cases.iter().filter(|c| c.file_name().unwrap().to_string_lossy().starts_with("token-")) {
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_yaml::from_str(&std::fs::read_to_string(case.join("expected.yaml")).unwrap()).unwrap();
        let proxy = pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0].clone();
        for (var, volume) in kubelet::proxy_token_files(&proxy) {
            let f = kubelet::token_file(&pod, &volume);
            println!("{} {var} {volume} {:o} {}:{}", case.file_name().unwrap().to_string_lossy(), f.mode, f.uid, f.gid);
        }
    }
}

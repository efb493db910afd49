//! The webhook over real HTTPS with AdmissionReview bodies as the API server
//! sends them; reinvocation after another webhook; dry runs.

mod support;

use std::sync::Arc;

use cloudtaser_operator::metrics::Metrics;
use cloudtaser_operator::tls::ReloadingCert;
use cloudtaser_operator::webhook::inject::{InjectOptions, SIDECAR};
use cloudtaser_operator::webhook::server::{serve_https, webhook_router};
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};
use support::{Configs, admission, patch_of, review};

fn configs() -> Configs {
    let mut c = Configs::default();
    c.0.insert(("shop".into(), "default".into()), support::irsa_spec());
    c
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "orders-", "annotations": {"cloudtaser.io/s3-proxy": "true"}},
           "spec": {"containers": [{"name": "app", "image": "registry.example/orders:1"}]}})
}

fn run(pod: &Value, dry_run: bool) -> Value {
    let admission = admission(configs(), InjectOptions::default());
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review(pod, "shop", dry_run)).unwrap();
    cloudtaser_operator::webhook::admission::to_wire(&admission.review(review))
}

fn apply(pod: &Value, response: &Value) -> Value {
    let mut out = pod.clone();
    if let Some(p) = patch_of(response) {
        json_patch::patch(&mut out, &p).unwrap();
    }
    out
}

#[test]
fn reinvocation_after_the_eks_webhook_adds_the_role_to_the_sidecar() {
    let first = apply(&pod(), &run(&pod(), false));
    // The EKS pod identity webhook runs after ours and gives the workload a role.
    let mut eks = first.clone();
    let app = &mut eks["spec"]["containers"][0];
    app["env"].as_array_mut().unwrap().extend([
        json!({"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/orders"}),
        json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}),
    ]);
    app["volumeMounts"] = json!([{"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true}]);
    eks["spec"]["volumes"].as_array_mut().unwrap().push(json!({"name": "aws-iam-token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}}));
    let second = apply(&eks, &run(&eks, false));
    let sidecar = second["spec"]["initContainers"].as_array().unwrap().iter().find(|c| c["name"] == SIDECAR).unwrap();
    let env: Vec<&str> = sidecar["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"AWS_ROLE_ARN") && env.contains(&"AWS_WEB_IDENTITY_TOKEN_FILE"), "{env:?}");
    assert!(sidecar["volumeMounts"].as_array().unwrap().iter().any(|m| m["name"] == "cloudtaser-aws-iam-token"));
    assert!(
        second["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "cloudtaser-aws-iam-token" && v["projected"]["defaultMode"] == 0o644)
    );
    assert_eq!(second["spec"]["initContainers"].as_array().unwrap().len(), 1, "one sidecar, not two");
    // And a third pass is a no-op.
    assert!(patch_of(&run(&second, false)).is_none_or(|p| p.0.is_empty()));
}

#[test]
fn dry_run_gets_the_same_patch_and_counts_no_injection() {
    let live = run(&pod(), false);
    let dry = run(&pod(), true);
    assert_eq!(patch_of(&live), patch_of(&dry));
}

#[tokio::test]
async fn serves_admission_reviews_over_https() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("ct-webhook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["cloudtaser-operator.cloudtaser.svc".to_owned()]).unwrap();
    std::fs::write(dir.join("tls.crt"), ca.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), ca.signing_key.serialize_pem()).unwrap();
    let metrics = Metrics::default();
    let cert = ReloadingCert::new(dir.join("tls.crt"), dir.join("tls.key"), &metrics).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admission = Arc::new(admission(configs(), InjectOptions::default()));
    tokio::spawn(serve_https(listener, cert.server_config(), webhook_router(admission)));

    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.cert.pem().as_bytes()).unwrap())
        .resolve("cloudtaser-operator.cloudtaser.svc", addr)
        .build()
        .unwrap();
    let url = format!("https://cloudtaser-operator.cloudtaser.svc:{}/mutate", addr.port());
    let resp = client.post(&url).json(&review(&pod(), "shop", false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    // The API server decodes `patch` as Go []byte: a base64 string.
    assert!(body["response"]["patch"].is_string(), "patch must be base64: {}", body["response"]["patch"]);
    let patched = apply(&pod(), &body);
    assert_eq!(patched["spec"]["initContainers"][0]["name"], SIDECAR);

    // Unannotated pods pass untouched.
    let mut plain = pod();
    plain["metadata"]["annotations"] = json!({});
    let body: Value =
        client.post(&url).json(&review(&plain, "shop", false)).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none_or(Value::is_null));
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Reconcile against kube's tower-test mock API server: the calls the
//! controller makes, in order, and the status it writes.

use std::sync::Arc;

use cloudtaser_operator::controller::{Context, reconcile};
use cloudtaser_operator::crd::S3ProxyConfig;
use cloudtaser_operator::metrics::Metrics;
use http::Method;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

mod mock;
use mock::{Handle, expect, not_found};

fn config() -> S3ProxyConfig {
    serde_json::from_value(json!({
        "apiVersion": "cloudtaser.io/v1alpha1", "kind": "S3ProxyConfig",
        "metadata": {"name": "default", "namespace": "shop", "generation": 3},
        "spec": {
            "upstream": {"region": "eu-central-1"},
            "vault": {"address": "https://vault.eu.example:8200", "transit": {"key": "orders"},
                      "auth": {"method": "token", "token": {"name": "vault-token", "key": "token"}}},
            "credentials": {"source": "secret", "secretRef": {"name": "s3-proxy-credentials"}}
        }
    }))
    .unwrap()
}

fn secret(name: &str, keys: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = keys.iter().map(|k| (k.to_string(), json!("c2VjcmV0"))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "shop"}, "data": data})
}

fn pod(name: &str, injected: bool) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
    if injected {
        spec["initContainers"] = json!([{"name": "cloudtaser-s3proxy", "image": "proxy:1", "restartPolicy": "Always"}]);
    }
    json!({"metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                        "annotations": {"cloudtaser.io/s3-proxy": "true"}}, "spec": spec})
}

async fn run(scenario: impl FnOnce(Handle) -> tokio::task::JoinHandle<Value>) -> (Value, Arc<Metrics>) {
    run_with(config(), scenario).await
}

async fn run_with(
    config: S3ProxyConfig,
    scenario: impl FnOnce(Handle) -> tokio::task::JoinHandle<Value>,
) -> (Value, Arc<Metrics>) {
    let (client, handle) = mock::client("default");
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        client,
        metrics: metrics.clone(),
        reporter: Reporter { controller: "test".into(), instance: None },
    });
    let server = scenario(handle);
    reconcile(Arc::new(config), ctx).await.expect("reconcile succeeds");
    (server.await.unwrap(), metrics)
}

#[tokio::test]
async fn ready_config_counts_pods_and_warns_about_unprotected_ones() {
    let (patch, metrics) = run(|mut h| {
        tokio::spawn(async move {
            expect(
                &mut h,
                Method::GET,
                "/api/v1/namespaces/shop/secrets/s3-proxy-credentials",
                200,
                secret("s3-proxy-credentials", &["access-key-id", "secret-access-key"]),
            )
            .await;
            expect(
                &mut h,
                Method::GET,
                "/api/v1/namespaces/shop/secrets/vault-token",
                200,
                secret("vault-token", &["token"]),
            )
            .await;
            let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                              "items": [pod("web-1", true), pod("web-2", false), pod("other", true)]});
            expect(&mut h, Method::GET, "/api/v1/namespaces/shop/pods", 200, list).await;
            let event =
                expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], "ProxyMissing");
            assert_eq!(event["regarding"]["name"], "web-2");
            expect(
                &mut h,
                Method::PATCH,
                "/apis/cloudtaser.io/v1alpha1/namespaces/shop/s3proxyconfigs/default/status",
                200,
                serde_json::to_value(config()).unwrap(),
            )
            .await
        })
    })
    .await;
    let status = &patch["status"];
    assert_eq!(status["injectedPods"], 2);
    assert_eq!(status["unprotectedPods"], 1);
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert!(metrics.encode().contains("cloudtaser_operator_unprotected_pods 1"));
}

/// The rest of a reconcile after the Secret checks: no pods, then the status write.
async fn no_pods_then_status(h: &mut Handle) -> Value {
    expect(
        h,
        Method::GET,
        "/api/v1/namespaces/shop/pods",
        200,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
    )
    .await;
    expect(
        h,
        Method::PATCH,
        "/apis/cloudtaser.io/v1alpha1/namespaces/shop/s3proxyconfigs/default/status",
        200,
        serde_json::to_value(config()).unwrap(),
    )
    .await
}

#[tokio::test]
async fn missing_secret_key_makes_the_config_not_ready() {
    let (patch, _) = run(|mut h| {
        tokio::spawn(async move {
            expect(
                &mut h,
                Method::GET,
                "/api/v1/namespaces/shop/secrets/s3-proxy-credentials",
                200,
                secret("s3-proxy-credentials", &["access-key-id"]),
            )
            .await;
            no_pods_then_status(&mut h).await
        })
    })
    .await;
    let ready = &patch["status"]["conditions"][0];
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "SecretKeyMissing");
    assert_eq!(ready["message"], "Secret s3-proxy-credentials has no key secret-access-key");
}

#[tokio::test]
async fn missing_secret_is_reported_by_name() {
    let (patch, _) = run(|mut h| {
        tokio::spawn(async move {
            expect(&mut h, Method::GET, "/api/v1/namespaces/shop/secrets/s3-proxy-credentials", 404, not_found()).await;
            no_pods_then_status(&mut h).await
        })
    })
    .await;
    assert_eq!(patch["status"]["conditions"][0]["reason"], "SecretMissing");
}

#[tokio::test]
async fn invalid_operation_and_bucket_lists_make_the_config_not_ready() {
    for (field, value, message) in [
        (
            "allowedOperations",
            json!(["default", "Get Object"]),
            "spec.allowedOperations[1] has an invalid entry \"Get Object\": expected an S3 operation name as the AWS API reference spells it (letters only, e.g. GetObject), or `default` or `all`",
        ),
        (
            "buckets",
            json!(["orders", "orders/../payroll"]),
            "spec.buckets[1] has an invalid entry \"orders/../payroll\": it has a `..` path segment",
        ),
    ] {
        let mut invalid = config();
        let mut spec = serde_json::to_value(&invalid.spec).unwrap();
        spec[field] = value;
        invalid.spec = serde_json::from_value(spec).unwrap();
        // No Secret lookups: the spec itself is the problem.
        let (patch, _) =
            run_with(invalid, |mut h| tokio::spawn(async move { no_pods_then_status(&mut h).await })).await;
        let ready = &patch["status"]["conditions"][0];
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "InvalidSpec");
        assert_eq!(ready["message"], message);
    }
}

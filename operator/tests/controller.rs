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
use mock::{Handle, expect};

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

fn pod(name: &str, injected: bool) -> Value {
    pod_with(name, injected.then_some("proxy:2"))
}

/// Injected before an upgrade: the proxy image is not the configured one.
fn stale_pod(name: &str) -> Value {
    pod_with(name, Some("proxy:1"))
}

fn pod_with(name: &str, proxy_image: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
    if let Some(image) = proxy_image {
        spec["initContainers"] = json!([{"name": "cloudtaser-s3proxy", "image": image, "restartPolicy": "Always"}]);
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
        proxy_image: "proxy:2".into(),
    });
    let server = scenario(handle);
    reconcile(Arc::new(config), ctx).await.expect("reconcile succeeds");
    (server.await.unwrap(), metrics)
}

#[tokio::test]
async fn ready_config_counts_pods_and_warns_about_unprotected_ones() {
    let (patch, metrics) = run(|mut h| {
        tokio::spawn(async move {
            let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
                              "items": [pod("web-1", true), pod("web-2", false), pod("other", true), stale_pod("web-3")]});
            expect(&mut h, Method::GET, "/api/v1/namespaces/shop/pods", 200, list).await;
            let event =
                expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], "ProxyMissing");
            assert_eq!(event["regarding"]["name"], "web-2");
            let event =
                expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
            assert_eq!(event["reason"], "ProxyImageStale");
            assert_eq!(event["regarding"]["name"], "web-3");
            assert!(event["note"].as_str().unwrap().contains("image proxy:1, but proxy:2 is configured"), "{event}");
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
    assert_eq!(status["injectedPods"], 3);
    assert_eq!(status["unprotectedPods"], 1);
    assert_eq!(status["staleProxyPods"], 1);
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    let text = metrics.encode();
    assert!(text.contains(r#"cloudtaser_operator_unprotected_pods{namespace="shop",config="default"} 1"#), "{text}");
    assert!(text.contains(r#"cloudtaser_operator_stale_proxy_pods{namespace="shop",config="default"} 1"#), "{text}");
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

/// Least privilege: the controller has no access to Secrets and asks for
/// none; the first request of a reconcile is the pod list, even for a config
/// that references Secrets (the mock fails the test on any other request).
#[tokio::test]
async fn reconcile_reads_no_secrets() {
    let (patch, _) = run(|mut h| tokio::spawn(async move { no_pods_then_status(&mut h).await })).await;
    assert_eq!(patch["status"]["conditions"][0]["reason"], "Valid");
    assert!(config().spec.credentials.secret_ref.is_some() && config().spec.vault.auth.token.is_some());
}

/// Two configs each keep their own unprotected-pods series.
#[tokio::test]
async fn unprotected_pods_are_counted_per_config() {
    let (client, mut handle) = mock::client("default");
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(Context {
        client,
        metrics: metrics.clone(),
        reporter: Reporter { controller: "test".into(), instance: None },
        proxy_image: "proxy:2".into(),
    });
    let mut other = config();
    other.metadata.name = Some("archive".into());
    let server = tokio::spawn(async move {
        for name in ["default", "archive"] {
            let mut unprotected = pod("web-2", false);
            unprotected["metadata"]["annotations"]["cloudtaser.io/s3-proxy"] = json!(name);
            let items = if name == "default" {
                vec![unprotected.clone(), pod_as("web-4", "default")]
            } else {
                vec![unprotected]
            };
            expect(
                &mut handle,
                Method::GET,
                "/api/v1/namespaces/shop/pods",
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
            )
            .await;
            let posts = if name == "default" { 2 } else { 1 };
            for _ in 0..posts {
                expect(&mut handle, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({}))
                    .await;
            }
            expect(
                &mut handle,
                Method::PATCH,
                &format!("/apis/cloudtaser.io/v1alpha1/namespaces/shop/s3proxyconfigs/{name}/status"),
                200,
                serde_json::to_value(config()).unwrap(),
            )
            .await;
        }
    });
    reconcile(Arc::new(config()), ctx.clone()).await.unwrap();
    reconcile(Arc::new(other), ctx).await.unwrap();
    server.await.unwrap();
    let text = metrics.encode();
    assert!(text.contains(r#"cloudtaser_operator_unprotected_pods{namespace="shop",config="default"} 2"#), "{text}");
    assert!(text.contains(r#"cloudtaser_operator_unprotected_pods{namespace="shop",config="archive"} 1"#), "{text}");
}

fn pod_as(name: &str, annotation: &str) -> Value {
    let mut p = pod(name, false);
    p["metadata"]["annotations"]["cloudtaser.io/s3-proxy"] = json!(annotation);
    p
}

#[tokio::test]
async fn invalid_operation_and_bucket_lists_make_the_config_not_ready() {
    for (field, value, message) in [
        (
            "allowedOperations",
            json!(["default", "Get Object"]),
            "spec.allowedOperations[1] has an invalid entry \"Get Object\": expected an S3 operation name as the AWS API reference spells it (letters only, e.g. GetObject), `-Name` to take one away, or `default` or `all`",
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

/// With `serviceAccount`, every container of an injected pod holds the
/// proxy's cloud role: the config says so in a condition and a Warning
/// event on itself, every reconcile, so it cannot go unnoticed.
#[tokio::test]
async fn a_shared_cloud_identity_is_a_condition_and_a_warning() {
    let mut shared = config();
    shared.spec.credentials = serde_json::from_value(json!({"source": "serviceAccount"})).unwrap();
    let (patch, _) = run_with(shared, |mut h| {
        tokio::spawn(async move {
            expect(
                &mut h,
                Method::GET,
                "/api/v1/namespaces/shop/pods",
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}),
            )
            .await;
            let event =
                expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
            assert_eq!(event["reason"], "SharedIdentity", "{event}");
            assert_eq!(event["regarding"]["kind"], "S3ProxyConfig", "{event}");
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
    let conditions = &patch["status"]["conditions"];
    assert_eq!(conditions[0]["type"], "Ready");
    assert_eq!(conditions[0]["status"], "True", "still valid: compatibility");
    assert_eq!(conditions[1]["type"], "IdentityIsolated");
    assert_eq!(conditions[1]["status"], "False");
    assert_eq!(conditions[1]["reason"], "SharedWithWorkload");
}

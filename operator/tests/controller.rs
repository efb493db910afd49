//! Reconcile against kube's tower-test mock API server: the calls the
//! controller makes, in order, and the status it writes. Pods come from the
//! metadata store (filled here as the watch would), never from a LIST.

use std::sync::Arc;

use cloudtaser_operator::controller::{Context, PodMeta, pod_store, reconcile};
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

/// A pod's metadata as the watch delivers it: the webhook's annotation and
/// label on injected pods (the proxy image it injected).
fn pod_with(name: &str, proxy_image: Option<&str>) -> Value {
    let mut meta = json!({"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                          "annotations": {"cloudtaser.io/s3-proxy": "true"}});
    if let Some(image) = proxy_image {
        meta["annotations"]["cloudtaser.io/s3-proxy-injected-image"] = json!(image);
        meta["labels"] = json!({"cloudtaser.io/s3-proxy-injected": "true"});
    }
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta})
}

fn metas(pods: &[Value]) -> Vec<PodMeta> {
    pods.iter().map(|p| serde_json::from_value(p.clone()).unwrap()).collect()
}

fn context(client: kube::Client, metrics: Arc<Metrics>, pods: &[Value]) -> Arc<Context> {
    let reporter = Reporter { controller: "test".into(), instance: None };
    Arc::new(Context::new(client, metrics, reporter, "proxy:2".into(), pod_store(metas(pods))))
}

async fn run(pods: &[Value], scenario: impl FnOnce(Handle) -> tokio::task::JoinHandle<Value>) -> (Value, Arc<Metrics>) {
    run_with(config(), pods, scenario).await
}

async fn run_with(
    config: S3ProxyConfig,
    pods: &[Value],
    scenario: impl FnOnce(Handle) -> tokio::task::JoinHandle<Value>,
) -> (Value, Arc<Metrics>) {
    let (client, handle) = mock::client("default");
    let metrics = Arc::new(Metrics::default());
    let ctx = context(client, metrics.clone(), pods);
    let server = scenario(handle);
    reconcile(Arc::new(config), ctx).await.expect("reconcile succeeds");
    (server.await.unwrap(), metrics)
}

#[tokio::test]
async fn ready_config_counts_pods_and_warns_about_unprotected_ones() {
    let mut elsewhere = pod("web-9", false);
    elsewhere["metadata"]["namespace"] = json!("bank");
    let pods = [pod("web-1", true), pod("web-2", false), pod("other", true), stale_pod("web-3"), elsewhere];
    let (patch, metrics) = run(&pods, |mut h| {
        tokio::spawn(async move {
            let event =
                expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["reason"], "ProxyMissing");
            assert_eq!(event["regarding"]["name"], "web-2");
            let event =
                expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
            assert_eq!(event["reason"], "ProxyImageStale");
            assert_eq!(event["regarding"]["name"], "web-3");
            assert!(
                event["note"].as_str().unwrap().contains("image proxy:1, but proxy:2 is configured (web-3)"),
                "{event}"
            );
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

/// A reconcile without problem pods: the status write is its only request.
async fn no_pods_then_status(h: &mut Handle) -> Value {
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
/// none; the only request of a reconcile is the status write, even for a
/// config that references Secrets (the mock fails the test on any other).
#[tokio::test]
async fn reconcile_reads_no_secrets() {
    let (patch, _) = run(&[], |mut h| tokio::spawn(async move { no_pods_then_status(&mut h).await })).await;
    assert_eq!(patch["status"]["conditions"][0]["reason"], "Valid");
    assert!(config().spec.credentials.secret_ref.is_some() && config().spec.vault.auth.token.is_some());
}

/// Two configs each keep their own unprotected-pods series.
#[tokio::test]
async fn unprotected_pods_are_counted_per_config() {
    let (client, mut handle) = mock::client("default");
    let metrics = Arc::new(Metrics::default());
    let pods = [pod_as("web-2", "default"), pod_as("web-4", "default"), pod_as("web-5", "archive")];
    let ctx = context(client, metrics.clone(), &pods);
    let mut other = config();
    other.metadata.name = Some("archive".into());
    let server = tokio::spawn(async move {
        for name in ["default", "archive"] {
            // Ownerless pods: one event each (on the pod).
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
            run_with(invalid, &[], |mut h| tokio::spawn(async move { no_pods_then_status(&mut h).await })).await;
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
    let (patch, _) = run_with(shared, &[], |mut h| {
        tokio::spawn(async move {
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

fn owned(mut pod: Value, kind: &str, api_version: &str, name: &str) -> Value {
    pod["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind, "name": name,
                                                 "uid": format!("uid-{name}"), "controller": true}]);
    pod
}

fn meta_of(kind: &str, api_version: &str, name: &str, owner: Option<(&str, &str, &str)>) -> Value {
    let mut meta = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                          "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")}});
    if let Some((kind, api_version, name)) = owner {
        meta["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind, "name": name,
                                                      "uid": format!("uid-{name}"), "controller": true}]);
    }
    let _ = (kind, api_version);
    meta
}

/// Users look at their Deployment, StatefulSet or CronJob: the warnings go
/// there, one per workload (with the count and some pod names), resolved
/// through the ReplicaSet or Job the pods belong to; a ReplicaSet nobody
/// owns keeps the event itself.
#[tokio::test]
async fn warnings_go_on_the_owning_workload_once_per_workload() {
    let rs = |p| owned(p, "ReplicaSet", "apps/v1", "web-7d9f");
    let pods = [
        rs(pod("web-7d9f-a", false)),
        rs(pod("web-7d9f-b", false)),
        rs(pod("web-7d9f-c", false)),
        owned(pod("db-0", false), "StatefulSet", "apps/v1", "db"),
        owned(pod("nightly-29-x", false), "Job", "batch/v1", "nightly-29"),
        owned(pod("orphan-rs-x", false), "ReplicaSet", "apps/v1", "orphan-rs"),
        rs(stale_pod("web-7d9f-d")),
    ];
    let (patch, _) = run(&pods, |mut h| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            // Groups are in owner-uid order: db, nightly-29, orphan-rs, web-7d9f (missing), web-7d9f (stale).
            let (rs_path, job_path) =
                ("/apis/apps/v1/namespaces/shop/replicasets/", "/apis/batch/v1/namespaces/shop/jobs/nightly-29");
            let events = "/apis/events.k8s.io/v1/namespaces/shop/events";
            seen.push(expect(&mut h, Method::POST, events, 201, json!({})).await);
            expect(
                &mut h,
                Method::GET,
                job_path,
                200,
                meta_of("Job", "batch/v1", "nightly-29", Some(("CronJob", "batch/v1", "nightly"))),
            )
            .await;
            seen.push(expect(&mut h, Method::POST, events, 201, json!({})).await);
            expect(
                &mut h,
                Method::GET,
                &format!("{rs_path}orphan-rs"),
                200,
                meta_of("ReplicaSet", "apps/v1", "orphan-rs", None),
            )
            .await;
            seen.push(expect(&mut h, Method::POST, events, 201, json!({})).await);
            let deployment = Some(("Deployment", "apps/v1", "web"));
            expect(
                &mut h,
                Method::GET,
                &format!("{rs_path}web-7d9f"),
                200,
                meta_of("ReplicaSet", "apps/v1", "web-7d9f", deployment),
            )
            .await;
            seen.push(expect(&mut h, Method::POST, events, 201, json!({})).await);
            expect(
                &mut h,
                Method::GET,
                &format!("{rs_path}web-7d9f"),
                200,
                meta_of("ReplicaSet", "apps/v1", "web-7d9f", deployment),
            )
            .await;
            seen.push(expect(&mut h, Method::POST, events, 201, json!({})).await);
            let status = no_pods_then_status(&mut h).await;
            json!({"events": seen, "status": status})
        })
    })
    .await;
    let events = patch["events"].as_array().unwrap();
    let on = |e: &Value| {
        (
            e["regarding"]["kind"].as_str().unwrap().to_owned(),
            e["regarding"]["name"].as_str().unwrap().to_owned(),
            e["reason"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(on(&events[0]), ("StatefulSet".into(), "db".into(), "ProxyMissing".into()));
    assert_eq!(on(&events[1]), ("CronJob".into(), "nightly".into(), "ProxyMissing".into()));
    assert_eq!(on(&events[2]), ("ReplicaSet".into(), "orphan-rs".into(), "ProxyMissing".into()));
    assert_eq!(on(&events[3]), ("Deployment".into(), "web".into(), "ProxyMissing".into()));
    assert_eq!(on(&events[4]), ("Deployment".into(), "web".into(), "ProxyImageStale".into()));
    let note = events[3]["note"].as_str().unwrap();
    assert!(note.starts_with("3 pod(s) ask for the CloudTaser S3 proxy (cloudtaser.io/s3-proxy=true)"), "{note}");
    assert!(note.contains("(web-7d9f-a, web-7d9f-b, web-7d9f-c)"), "{note}");
    assert_eq!(events[3]["regarding"]["namespace"], "shop");
    assert_eq!(patch["status"]["status"]["unprotectedPods"], 6);
}

/// A workload of many unprotected pods: one event naming five and counting the rest.
#[tokio::test]
async fn a_large_workload_gets_one_event_with_a_count() {
    let pods: Vec<Value> =
        (0..40).map(|i| owned(pod(&format!("big-{i:02}"), false), "StatefulSet", "apps/v1", "big")).collect();
    let (patch, _) = run(&pods, |mut h| {
        tokio::spawn(async move {
            let event =
                expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
            no_pods_then_status(&mut h).await;
            event
        })
    })
    .await;
    let note = patch["note"].as_str().unwrap();
    assert!(note.starts_with("40 pod(s)"), "{note}");
    assert!(note.contains("(big-00, big-01, big-02, big-03, big-04 and 35 more)"), "{note}");
}

/// Ten thousand pods in the store, none in the config's namespace
/// annotated wrongly: the reconcile still makes exactly one request.
#[tokio::test]
async fn ten_thousand_pods_cost_no_list() {
    let pods: Vec<Value> = (0..10_000)
        .map(|i| {
            let mut p = pod(&format!("p-{i}"), true);
            p["metadata"]["namespace"] = json!(if i % 2 == 0 { "shop" } else { "bank" });
            p
        })
        .collect();
    let (patch, _) = run(&pods, |mut h| tokio::spawn(async move { no_pods_then_status(&mut h).await })).await;
    assert_eq!(patch["status"]["injectedPods"], 5_000);
}

/// A reconcile before the pod watch listed the cluster writes no status
/// (it would say zero pods) and fails, so it is retried.
#[tokio::test(start_paused = true)]
async fn no_status_before_the_pod_store_synced() {
    let (client, mut handle) = mock::client("default");
    let (store, _writer) = kube::runtime::reflector::store::<PodMeta>();
    let reporter = Reporter { controller: "test".into(), instance: None };
    let ctx = Arc::new(Context::new(client, Arc::new(Metrics::default()), reporter, "proxy:2".into(), store));
    let result = reconcile(Arc::new(config()), ctx).await;
    assert!(matches!(result, Err(cloudtaser_operator::controller::Error::PodsNotSynced)), "{result:?}");
    let request = tokio::time::timeout(std::time::Duration::from_millis(1), handle.next_request()).await;
    assert!(!matches!(request, Ok(Some(_))), "a request before the store synced");
}

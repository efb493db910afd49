//! Leader election and the controller's terms, against kube's tower-test
//! mock API server: who runs the controller, what a follower asks the API
//! (nothing), and what a replica that loses the Lease stops exporting.

use std::sync::Arc;
use std::time::Duration;

use cloudtaser_operator::controller::{self, Settings};
use cloudtaser_operator::leader::{LeaderLease, campaign};
use cloudtaser_operator::metrics::{ConfigLabel, Metrics};
use http::Method;
use kube::Api;
use kube::runtime::events::Reporter;
use serde_json::json;

mod mock;
use mock::{expect, not_found};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/cloudtaser/leases";

/// Takes a free Lease (leading), then finds it held by a live replica
/// (steps down), then fails to read it (steps down, no panic).
#[tokio::test]
async fn campaign_publishes_leadership_as_the_lease_changes_hands() {
    let (client, mut h) = mock::client("cloudtaser");
    let lease = LeaderLease::new(
        Api::namespaced(client, "cloudtaser"),
        "ct-cloudtaser-operator",
        "replica-a",
        Duration::from_secs(15),
    );
    let (tx, mut leading) = tokio::sync::watch::channel(false);
    tokio::spawn(campaign(lease, Duration::from_millis(10), tx));

    expect(&mut h, Method::GET, &format!("{LEASES}/ct-cloudtaser-operator"), 404, not_found()).await;
    let created = expect(&mut h, Method::POST, LEASES, 201, json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "ct-cloudtaser-operator"}})).await;
    assert_eq!(created["metadata"]["name"], "ct-cloudtaser-operator");
    assert_eq!(created["spec"]["holderIdentity"], "replica-a");
    leading.wait_for(|l| *l).await.unwrap();

    let now = k8s_openapi::jiff::Timestamp::now();
    let other = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ct-cloudtaser-operator", "resourceVersion": "7"},
        "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 15, "renewTime": now.to_string()}});
    expect(&mut h, Method::GET, &format!("{LEASES}/ct-cloudtaser-operator"), 200, other).await;
    leading.wait_for(|l| !*l).await.unwrap();

    // Ours again, then the API fails: stepping down is the safe side.
    let mine = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "ct-cloudtaser-operator", "resourceVersion": "8"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15, "renewTime": now.to_string()}});
    expect(&mut h, Method::GET, &format!("{LEASES}/ct-cloudtaser-operator"), 200, mine.clone()).await;
    let renewed = expect(&mut h, Method::PUT, &format!("{LEASES}/ct-cloudtaser-operator"), 200, mine).await;
    assert_eq!(renewed["spec"]["holderIdentity"], "replica-a");
    leading.wait_for(|l| *l).await.unwrap();
    let error = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd"});
    expect(&mut h, Method::GET, &format!("{LEASES}/ct-cloudtaser-operator"), 500, error).await;
    leading.wait_for(|l| !*l).await.unwrap();
}

/// A follower asks the API server nothing for the controller: no pod watch,
/// no config watch. The leader's first requests are the two watches' lists,
/// pods paginated and metadata-only; losing the Lease stops the controller
/// and drops the per-config gauges (only the leader exports them).
#[tokio::test]
async fn only_the_leader_watches_and_exports_the_gauges() {
    let (client, mut h) = mock::client("cloudtaser");
    let metrics = Arc::new(Metrics::default());
    let settings = Settings {
        client,
        metrics: metrics.clone(),
        reporter: Reporter { controller: "test".into(), instance: None },
        proxy_image: "proxy:2".into(),
    };
    let (tx, leading) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(controller::run(settings, leading));

    let idle = tokio::time::timeout(Duration::from_millis(300), h.next_request()).await;
    assert!(idle.is_err(), "a follower made a request");
    assert!(metrics.encode().contains("cloudtaser_operator_controller_leader 0"));

    tx.send(true).unwrap();
    let mut lists = Vec::new();
    for _ in 0..2 {
        let (request, _send) = tokio::time::timeout(Duration::from_secs(5), h.next_request()).await.unwrap().unwrap();
        let accept = request.headers().get("accept").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        lists.push((request.uri().to_string(), accept));
    }
    let find = |prefix: &str| lists.iter().find(|(uri, _)| uri.starts_with(prefix)).cloned();
    let (configs, pods) = (find("/apis/cloudtaser.io/").unwrap_or_default(), find("/api/v1/pods?").unwrap_or_default());
    assert!(configs.0.starts_with("/apis/cloudtaser.io/v1alpha1/s3proxyconfigs?"), "{lists:?}");
    assert!(pods.0.starts_with("/api/v1/pods?"), "{lists:?}");
    assert!(pods.0.contains("limit=500"), "paginated: {lists:?}");
    assert!(pods.1.contains("as=PartialObjectMetadata"), "metadata only: {lists:?}");
    assert!(metrics.encode().contains("cloudtaser_operator_controller_leader 1"));

    let label = ConfigLabel { namespace: "shop".into(), config: "default".into() };
    metrics.unprotected_pods.get_or_create(&label).set(3);
    tx.send(false).unwrap();
    for _ in 0..100 {
        if metrics.encode().contains("cloudtaser_operator_controller_leader 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = metrics.encode();
    assert!(text.contains("cloudtaser_operator_controller_leader 0"), "{text}");
    assert!(!text.contains("cloudtaser_operator_unprotected_pods{"), "a follower keeps exporting: {text}");
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), run).await.expect("run ends when the election ends").unwrap();
}

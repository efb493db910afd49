//! Self-managed webhook TLS and leader election against kube's tower-test
//! mock API server.

use std::time::Duration;

use base64::Engine;
use cloudtaser_operator::tls::leader::LeaderLease;
use cloudtaser_operator::tls::self_managed::{SelfManaged, due};
use http::Method;
use kube::Api;
use serde_json::json;

mod mock;
use mock::{expect, not_found};

#[tokio::test]
async fn the_leader_issues_a_certificate_and_publishes_its_ca() {
    let (client, mut handle) = mock::client("cloudtaser");
    let manager = SelfManaged {
        secrets: Api::namespaced(client.clone(), "cloudtaser"),
        webhooks: Api::all(client),
        secret_name: "op-tls".into(),
        webhook_name: "op".into(),
        dns_names: vec!["op.cloudtaser.svc".into()],
    };
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, "/api/v1/namespaces/cloudtaser/secrets/op-tls", 404, not_found()).await;
        let secret = expect(&mut handle, Method::POST, "/api/v1/namespaces/cloudtaser/secrets", 201, json!({})).await;
        let ca_b64 = secret["data"]["ca.crt"].as_str().unwrap().to_owned();
        assert!(secret["data"]["tls.key"].is_string() && secret["type"] == "kubernetes.io/tls");
        let webhook = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "op"}, "webhooks": [{"name": "s3-proxy.cloudtaser.io", "admissionReviewVersions": ["v1"],
            "sideEffects": "None", "clientConfig": {"service": {"name": "op", "namespace": "cloudtaser"}}}]});
        expect(
            &mut handle,
            Method::GET,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/op",
            200,
            webhook.clone(),
        )
        .await;
        let patch = expect(
            &mut handle,
            Method::PATCH,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/op",
            200,
            webhook,
        )
        .await;
        (ca_b64, patch)
    });
    let material = manager.reconcile(k8s_openapi::jiff::Timestamp::now().as_second()).await.unwrap();
    let (ca_b64, patch) = server.await.unwrap();
    let ca_pem = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca_b64).unwrap()).unwrap();
    assert_eq!(ca_pem, material.ca_cert);
    assert_eq!(patch[0]["path"], "/webhooks/0/clientConfig/caBundle");
    assert_eq!(patch[0]["value"], base64::engine::general_purpose::STANDARD.encode(&material.ca_cert));
    assert!(!due(&material.cert, k8s_openapi::jiff::Timestamp::now().as_second()));
}

#[tokio::test]
async fn only_one_replica_leads() {
    let (client, mut handle) = mock::client("cloudtaser");
    let lease = LeaderLease::new(Api::namespaced(client, "cloudtaser"), "op-tls", "replica-a", Duration::from_secs(15));
    let server = tokio::spawn(async move {
        let path = "/apis/coordination.k8s.io/v1/namespaces/cloudtaser/leases";
        // Free: replica-a takes it.
        expect(&mut handle, Method::GET, path, 404, not_found()).await;
        let created = expect(&mut handle, Method::POST, path, 201, json!({})).await;
        assert_eq!(created["spec"]["holderIdentity"], "replica-a");
        // Held and fresh by replica-b: replica-a stands back without writing.
        let now = k8s_openapi::jiff::Timestamp::now();
        let held = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "op-tls", "namespace": "cloudtaser", "resourceVersion": "7"},
            "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 15, "renewTime": now.to_string()}});
        expect(&mut handle, Method::GET, path, 200, held).await;
        // Expired: replica-a takes over, with the resourceVersion it read.
        let stale = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "op-tls", "namespace": "cloudtaser", "resourceVersion": "8"},
            "spec": {"holderIdentity": "replica-b", "leaseDurationSeconds": 15, "renewTime": "2020-01-01T00:00:00.000000Z", "leaseTransitions": 2}});
        expect(&mut handle, Method::GET, path, 200, stale).await;
        let taken = expect(&mut handle, Method::PUT, path, 200, json!({})).await;
        assert_eq!(taken["spec"]["holderIdentity"], "replica-a");
        assert_eq!(taken["spec"]["leaseTransitions"], 3);
        assert_eq!(taken["metadata"]["resourceVersion"], "8");
    });
    assert!(lease.try_acquire().await.unwrap());
    assert!(!lease.try_acquire().await.unwrap());
    assert!(lease.try_acquire().await.unwrap());
    server.await.unwrap();
}

//! The native-sidecar probe against kube's tower-test mock API server: a
//! server-side dry run (never stored) whose answer says whether the API
//! server kept `restartPolicy: Always` on the init container.

mod mock;

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::{Value, json};

use cloudtaser_operator::capabilities::{PROBE_POD, api_keeps_native_sidecars};

async fn probe_answered_with(restart_policy: Option<&str>) -> (bool, Value) {
    let (client, mut handle) = mock::client("cloudtaser");
    let answer = restart_policy.map(|p| json!(p));
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), "/api/v1/namespaces/cloudtaser/pods");
        assert!(request.uri().query().unwrap_or_default().contains("dryRun=All"), "{}", request.uri());
        let sent: Value = serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
        let mut pod = sent.clone();
        match &answer {
            Some(p) => pod["spec"]["initContainers"][0]["restartPolicy"] = p.clone(),
            None => {
                pod["spec"]["initContainers"][0].as_object_mut().unwrap().remove("restartPolicy");
            }
        }
        send.send_response(
            http::Response::builder()
                .status(201)
                .body(kube::client::Body::from(serde_json::to_vec(&pod).unwrap()))
                .unwrap(),
        );
        sent
    });
    let pods: Api<Pod> = Api::namespaced(client, "cloudtaser");
    let kept = api_keeps_native_sidecars(&pods, "ghcr.io/cloudtaser/s3proxy:0.1.0").await.unwrap();
    (kept, server.await.unwrap())
}

#[tokio::test]
async fn an_api_server_that_keeps_the_restart_policy_supports_native_sidecars() {
    let (kept, sent) = probe_answered_with(Some("Always")).await;
    assert!(kept);
    assert_eq!(sent["metadata"]["name"], PROBE_POD);
    assert_eq!(sent["spec"]["initContainers"][0]["restartPolicy"], "Always");
}

#[tokio::test]
async fn an_api_server_that_drops_it_does_not() {
    let (kept, _) = probe_answered_with(None).await;
    assert!(!kept, "the field was dropped: a < 1.29 API server or the gate is off");
}

//! `cloudtaser-operator check` against kube's tower-test mock API server: a
//! healthy cluster passes every check; each broken piece fails its own line
//! (and only that one) and makes the exit status non-zero.

mod mock;

use cloudtaser_operator::check::{Report, Status, Target, run};
use cloudtaser_operator::crd::S3ProxyConfig;
use cloudtaser_operator::tls::self_managed::{Material, generate, validity};
use http::{Method, Request, Response};
use kube::CustomResourceExt;
use kube::client::Body;
use serde_json::{Value, json};

const NS: &str = "cloudtaser";
const NAME: &str = "cloudtaser-cloudtaser-operator";

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn material() -> Material {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    generate(&[format!("{NAME}.{NS}.svc"), format!("{NAME}.{NS}.svc.cluster.local")], None, now).unwrap()
}

fn pod(ns: &str, name: &str, annotation: Option<&str>, proxy_image: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": "app:1"}]});
    if let Some(image) = proxy_image {
        spec["initContainers"] = json!([{"name": "cloudtaser-s3proxy", "image": image, "restartPolicy": "Always"}]);
    }
    let mut metadata = json!({"name": name, "namespace": ns, "uid": format!("uid-{name}")});
    if let Some(value) = annotation {
        metadata["annotations"] = json!({"cloudtaser.io/s3-proxy": value});
    }
    json!({"metadata": metadata, "spec": spec, "status": {"phase": "Running"}})
}

/// The objects the mock API server holds; `None` answers 404.
struct Cluster {
    crd: Option<Value>,
    webhook: Option<Value>,
    secret: Option<Value>,
    deployment: Option<Value>,
    configs: Vec<Value>,
    pods: Vec<Value>,
    kubelets: Vec<&'static str>,
    material: Material,
    /// Seconds since the controller's Lease was renewed (at the check's
    /// `now`); `None`: no Lease.
    lease_age: Option<i64>,
    /// The Lease's holder (empty: released).
    lease_holder: &'static str,
    namespaces: Vec<Value>,
}

fn namespace(name: &str, labelled: bool, annotation: Option<&str>) -> Value {
    let mut metadata = json!({"name": name});
    if labelled {
        metadata["labels"] = json!({"cloudtaser.io/s3-proxy-injection": "enabled"});
    }
    if let Some(value) = annotation {
        metadata["annotations"] = json!({"cloudtaser.io/s3-proxy": value});
    }
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
}

impl Cluster {
    /// A healthy installation of release `cloudtaser` in namespace `cloudtaser`.
    fn healthy() -> Self {
        let material = material();
        let mut crd = serde_json::to_value(S3ProxyConfig::crd()).unwrap();
        crd["status"] = json!({"storedVersions": ["v1alpha1"]});
        let webhook = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": NAME},
            "webhooks": [{
                "name": "s3-proxy.cloudtaser.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail",
                "clientConfig": {"service": {"name": NAME, "namespace": NS, "path": "/mutate", "port": 443},
                                 "caBundle": b64(material.ca_cert.as_bytes())}
            }]
        });
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{NAME}-tls"), "namespace": NS},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": b64(material.cert.as_bytes()), "tls.key": b64(material.key.as_bytes()),
                     "ca.crt": b64(material.ca_cert.as_bytes())}
        });
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME, "namespace": NS},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "op"}},
                     "template": {"metadata": {"labels": {"app": "op"}}, "spec": {"containers": [{
                         "name": "operator", "image": "ghcr.io/cloudtaser/operator:0.1.0",
                         "env": [{"name": "CLOUDTASER_PROXY_IMAGE", "value": "proxy:2"},
                                 {"name": "CLOUDTASER_NATIVE_SIDECAR", "value": "true"},
                                 {"name": "CLOUDTASER_LEASE_NAME", "value": NAME}]}]}}},
            "status": {"replicas": 2, "readyReplicas": 2}
        });
        Self {
            crd: Some(crd),
            webhook: Some(webhook),
            secret: Some(secret),
            deployment: Some(deployment),
            configs: vec![config("shop", "default", "True", None)],
            pods: vec![
                pod("shop", "web-1", Some("true"), Some("proxy:2")),
                pod("shop", "plain", None, None),
                pod("shop", "opted-out", Some("False"), None),
            ],
            kubelets: vec!["v1.33.1"],
            material,
            lease_age: Some(3),
            lease_holder: "cloudtaser-cloudtaser-operator-7d9f-x2x4k",
            namespaces: vec![namespace("shop", true, None), namespace("billing", false, None)],
        }
    }
}

fn config(ns: &str, name: &str, ready: &str, image: Option<&str>) -> Value {
    let mut spec = json!({
        "upstream": {"region": "eu-central-1"},
        "vault": {"address": "https://vault:8200", "transit": {"key": "orders"},
                  "auth": {"method": "kubernetes", "role": "shop"}},
        "credentials": {"source": "secret", "secretRef": {"name": "s3"}}
    });
    if let Some(image) = image {
        spec["proxy"] = json!({"image": image});
    }
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1})
    };
    json!({
        "apiVersion": "cloudtaser.io/v1alpha1", "kind": "S3ProxyConfig",
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": spec,
        "status": {"observedGeneration": 1, "injectedPods": 1, "unprotectedPods": 0, "staleProxyPods": 0,
                   "conditions": [
                       if ready == "True" { condition("Ready", "True", "Valid", "the configuration is valid") }
                       else { condition("Ready", "False", "InvalidSpec", "spec.buckets[0] has an invalid entry") },
                       condition("IdentityIsolated", "True", "ProxySecret", "only the proxy")
                   ]}
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn node(name: &str, kubelet: &str) -> Value {
    json!({"metadata": {"name": name}, "status": {"nodeInfo": {
        "kubeletVersion": kubelet, "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
        "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
        "osImage": "", "systemUUID": ""}}})
}

/// Answers every request from `cluster`; returns the requests seen, in order.
async fn serve(mut handle: mock::Handle, cluster: Cluster, now: i64) -> Vec<String> {
    let lease = cluster.lease_age.map(|age| {
        let renewed = k8s_openapi::jiff::Timestamp::from_second(now - age).unwrap();
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": NAME, "namespace": NS},
               "spec": {"holderIdentity": cluster.lease_holder, "leaseDurationSeconds": 15,
                        "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}})
    });
    let mut seen = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let request: Request<Body> = request;
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let query = request.uri().query().unwrap_or_default().to_owned();
        seen.push(format!("{method} {path}"));
        let sent = request.into_body().collect_bytes().await.unwrap();
        let found = |v: &Option<Value>| v.clone().map(|v| (200, v));
        let answer = match (method.clone(), path.as_str()) {
            (Method::GET, "/version") => Some((
                200,
                json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "", "gitTreeState": "",
                       "buildDate": "", "goVersion": "", "compiler": "", "platform": "linux/amd64"}),
            )),
            (Method::GET, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/s3proxyconfigs.cloudtaser.io") => {
                found(&cluster.crd)
            }
            (Method::GET, p)
                if p == format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{NAME}") =>
            {
                found(&cluster.webhook)
            }
            (Method::GET, p) if p == format!("/api/v1/namespaces/{NS}/secrets/{NAME}-tls") => found(&cluster.secret),
            (Method::GET, p) if p == format!("/apis/apps/v1/namespaces/{NS}/deployments/{NAME}") => {
                found(&cluster.deployment)
            }
            (Method::GET, "/apis/cloudtaser.io/v1alpha1/s3proxyconfigs") => {
                Some((200, list("S3ProxyConfigList", cluster.configs.clone())))
            }
            (Method::GET, "/api/v1/pods") => Some((200, list("PodList", cluster.pods.clone()))),
            (Method::GET, p) if p == format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}") => {
                found(&lease)
            }
            (Method::GET, "/api/v1/namespaces") => Some((200, list("NamespaceList", cluster.namespaces.clone()))),
            (Method::POST, p) if p == format!("/api/v1/namespaces/{NS}/pods") => {
                assert!(query.contains("dryRun=All"), "check creates nothing: {query}");
                // An API server of 1.29+: the dry-run pod comes back as sent.
                Some((201, serde_json::from_slice(&sent).unwrap()))
            }
            (Method::GET, "/api/v1/nodes") => Some((
                200,
                list(
                    "NodeList",
                    cluster.kubelets.iter().enumerate().map(|(i, v)| node(&format!("node-{i}"), v)).collect(),
                ),
            )),
            _ => panic!("unexpected request {method} {path}"),
        };
        let (status, body) = answer.unwrap_or_else(|| (404, mock::not_found()));
        send.send_response(
            Response::builder().status(status).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap(),
        );
    }
    seen
}

async fn check_with(cluster: Cluster, tweak: impl FnOnce(&mut Target)) -> (Report, Vec<String>) {
    let (client, handle) = mock::client("default");
    let mut target = Target::for_release("cloudtaser", NS);
    tweak(&mut target);
    let server = tokio::spawn(serve(handle, cluster, target.now));
    let report = run(client, &target).await;
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), server).await.expect("client dropped").unwrap();
    (report, seen)
}

async fn check(cluster: Cluster) -> Report {
    check_with(cluster, |_| {}).await.0
}

/// The statuses by check name, for readable assertions.
fn statuses(report: &Report) -> Vec<(String, Status)> {
    report.checks.iter().map(|c| (c.check.clone(), c.status)).collect()
}

/// Every line but `failing` is ok, `failing` is Fail, and the exit status is 1.
fn only_fails(report: &Report, failing: &str) {
    let line = report.get(failing).unwrap_or_else(|| panic!("no line {failing}: {}", report.to_human()));
    assert_eq!(line.status, Status::Fail, "{}", report.to_human());
    assert!(line.fix.as_deref().is_some_and(|f| !f.is_empty()), "a failure says how to fix it");
    for c in &report.checks {
        if c.check != failing {
            assert_eq!(c.status, Status::Ok, "only {failing} fails: {}", report.to_human());
        }
    }
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn a_healthy_cluster_passes_every_check() {
    let (report, seen) = check_with(Cluster::healthy(), |_| {}).await;
    let names: Vec<_> = statuses(&report).into_iter().map(|(n, s)| (n, s == Status::Ok)).collect();
    assert_eq!(
        names,
        [
            "kubernetes-api",
            "crd",
            "webhook",
            "certificate-expiry",
            "operator-deployment",
            "controller-leader",
            "s3proxyconfig shop/default",
            "namespace-injection",
            "pods-without-proxy",
            "pods-stale-proxy-image",
            "native-sidecars",
        ]
        .map(|n| (n.to_owned(), true)),
        "{}",
        report.to_human()
    );
    assert_eq!(report.exit_code(), 0);
    assert!(report.to_human().ends_with("Status check results are ok\n"));
    // Reads only, in the order of the lines, plus the dry-run probe.
    assert_eq!(
        seen,
        [
            "GET /version".to_owned(),
            "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/s3proxyconfigs.cloudtaser.io".to_owned(),
            format!("GET /api/v1/namespaces/{NS}/secrets/{NAME}-tls"),
            format!("GET /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{NAME}"),
            format!("GET /apis/apps/v1/namespaces/{NS}/deployments/{NAME}"),
            format!("GET /apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}"),
            "GET /apis/cloudtaser.io/v1alpha1/s3proxyconfigs".to_owned(),
            "GET /api/v1/namespaces".to_owned(),
            "GET /api/v1/pods".to_owned(),
            format!("POST /api/v1/namespaces/{NS}/pods"),
            "GET /api/v1/nodes".to_owned(),
        ]
    );
}

/// A caBundle from another CA (a rotation that did not reach the webhook):
/// the API server would refuse every annotated pod.
#[tokio::test]
async fn a_ca_bundle_that_does_not_sign_the_serving_certificate_fails_the_webhook_line() {
    let mut cluster = Cluster::healthy();
    let other = material();
    cluster.webhook.as_mut().unwrap()["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(other.ca_cert.as_bytes()));
    let report = check(cluster).await;
    only_fails(&report, "webhook");
    assert!(report.get("webhook").unwrap().message.contains("does not verify the serving certificate"), "{report:?}");
}

/// A webhook that fails open, or calls another Service, fails the same line.
#[tokio::test]
async fn a_webhook_that_fails_open_or_calls_another_service_fails() {
    for (field, value, expected) in [
        ("failurePolicy", json!("Ignore"), "failurePolicy Ignore"),
        ("clientConfig", json!("other"), "calls Service cloudtaser/other"),
    ] {
        let mut cluster = Cluster::healthy();
        let hook = &mut cluster.webhook.as_mut().unwrap()["webhooks"][0];
        if field == "clientConfig" {
            hook["clientConfig"]["service"]["name"] = value;
        } else {
            hook[field] = value;
        }
        let report = check(cluster).await;
        only_fails(&report, "webhook");
        assert!(report.get("webhook").unwrap().message.contains(expected), "{}", report.to_human());
    }
}

/// Checked after the certificate's end: expiry fails, while the caBundle
/// line still says the chain is right (one cause, one failing line).
#[tokio::test]
async fn an_expired_certificate_fails_the_expiry_line() {
    let cluster = Cluster::healthy();
    let (_, until) = validity(&cluster.material.cert).unwrap();
    let (report, _) = check_with(cluster, |t| t.now = until + 86_400).await;
    only_fails(&report, "certificate-expiry");
    assert!(report.get("certificate-expiry").unwrap().message.contains("expired on"), "{}", report.to_human());
}

/// Ten days left on a 90-day self-managed certificate: its renewal is
/// overdue (due at 15 days), a warning; not a failure.
#[tokio::test]
async fn a_certificate_close_to_expiry_warns() {
    let cluster = Cluster::healthy();
    let (_, until) = validity(&cluster.material.cert).unwrap();
    let (report, _) = check_with(cluster, |t| t.now = until - 10 * 86_400).await;
    assert_eq!(report.get("certificate-expiry").unwrap().status, Status::Warn, "{}", report.to_human());
    assert_eq!(report.exit_code(), 0, "a warning is not a failure");
    // 20 days left: before the self-managed renewal is due, so not a warning.
    let cluster = Cluster::healthy();
    let (_, until) = validity(&cluster.material.cert).unwrap();
    let (report, _) = check_with(cluster, |t| t.now = until - 20 * 86_400).await;
    assert_eq!(report.get("certificate-expiry").unwrap().status, Status::Ok, "{}", report.to_human());
}

#[tokio::test]
async fn a_missing_crd_fails_the_crd_line() {
    let mut cluster = Cluster::healthy();
    cluster.crd = None;
    let report = check(cluster).await;
    only_fails(&report, "crd");
    assert!(report.get("crd").unwrap().fix.as_deref().unwrap().contains("cloudtaser-operator crd"));
}

/// Objects stored at a version this binary does not read.
#[tokio::test]
async fn a_crd_storing_another_version_fails() {
    let mut cluster = Cluster::healthy();
    cluster.crd.as_mut().unwrap()["status"]["storedVersions"] = json!(["v1alpha1", "v1beta1"]);
    let report = check(cluster).await;
    only_fails(&report, "crd");
}

#[tokio::test]
async fn a_pod_without_the_proxy_is_named() {
    let mut cluster = Cluster::healthy();
    cluster.pods.push(pod("shop", "web-2", Some("default"), None));
    // Finished and deleting pods will not run again as they are: not listed.
    let mut done = pod("shop", "job-1", Some("true"), None);
    done["status"]["phase"] = json!("Succeeded");
    cluster.pods.push(done);
    let mut leaving = pod("shop", "web-0", Some("true"), None);
    leaving["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    cluster.pods.push(leaving);
    let report = check(cluster).await;
    only_fails(&report, "pods-without-proxy");
    assert_eq!(
        report.get("pods-without-proxy").unwrap().message,
        "1 annotated pod(s) run without the proxy: shop/web-2"
    );
}

/// Stale: not the image the pod would get now. The pod's own image
/// annotation and the config's `proxy.image` win over the operator's, as in
/// the webhook.
#[tokio::test]
async fn a_pod_on_a_stale_proxy_image_is_named() {
    let mut cluster = Cluster::healthy();
    cluster.configs.push(config("billing", "default", "True", Some("proxy:3")));
    let mut pinned = pod("shop", "pinned", Some("true"), Some("registry.example/proxy:9"));
    pinned["metadata"]["annotations"]["cloudtaser.io/s3-proxy-image"] = json!("registry.example/proxy:9");
    cluster.pods.extend([
        pod("shop", "web-3", Some("true"), Some("proxy:1")),
        pod("billing", "pay-1", Some("true"), Some("proxy:3")),
        pod("billing", "pay-2", Some("default"), Some("proxy:2")),
        pinned,
    ]);
    let report = check(cluster).await;
    // The billing config's own line is ok too.
    only_fails(&report, "pods-stale-proxy-image");
    assert_eq!(
        report.get("pods-stale-proxy-image").unwrap().message,
        "2 pod(s) run a proxy image other than the configured one: shop/web-3 (proxy:1, configured proxy:2), billing/pay-2 (proxy:2, configured proxy:3)"
    );
}

#[tokio::test]
async fn a_config_that_is_not_ready_fails_its_line() {
    let mut cluster = Cluster::healthy();
    cluster.configs.push(config("billing", "archive", "False", None));
    let report = check(cluster).await;
    only_fails(&report, "s3proxyconfig billing/archive");
    assert!(report.get("s3proxyconfig billing/archive").unwrap().message.contains("InvalidSpec"));
}

#[tokio::test]
async fn an_unavailable_operator_fails_the_deployment_line() {
    let mut cluster = Cluster::healthy();
    cluster.deployment.as_mut().unwrap()["status"]["readyReplicas"] = json!(0);
    let report = check(cluster).await;
    only_fails(&report, "operator-deployment");
}

/// Injected pods scheduled on a kubelet older than 1.29 stay in Init.
#[tokio::test]
async fn a_kubelet_without_native_sidecars_fails_that_line() {
    let mut cluster = Cluster::healthy();
    cluster.kubelets = vec!["v1.33.1", "v1.28.3-eks-1234"];
    let report = check(cluster).await;
    only_fails(&report, "native-sidecars");
    assert!(report.get("native-sidecars").unwrap().message.contains("node-1 (v1.28.3-eks-1234)"));
}

/// `--output json`: an array of `{check, status, message, fix}`, `fix` null
/// exactly when the status is ok.
#[tokio::test]
async fn the_json_report_is_an_array_of_check_status_message_fix() {
    let mut cluster = Cluster::healthy();
    cluster.crd = None;
    let report = check(cluster).await;
    let parsed: Value = serde_json::from_str(&report.to_json()).unwrap();
    let items = parsed.as_array().expect("an array");
    assert_eq!(items.len(), report.checks.len());
    for item in items {
        let keys: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{item}");
        for key in ["check", "status", "message", "fix"] {
            assert!(keys.contains(&key), "{item}");
        }
        let status = item["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail"].contains(&status), "{item}");
        assert_eq!(item["fix"].is_null(), status == "ok", "{item}");
    }
    assert_eq!(items[1]["check"], "crd");
    assert_eq!(items[1]["status"], "fail");
    assert_eq!(items[0]["status"], "ok");
    // The same report for humans: a line a check, the fix below a failure.
    let human = report.to_human();
    println!("{human}");
    assert!(
        human.contains("\nFAIL  crd: the CRD s3proxyconfigs.cloudtaser.io is not installed\n      fix: "),
        "{human}"
    );
    assert!(human.contains("\nok    webhook: "), "{human}");
    assert!(human.ends_with("\n1 check(s) failed\n"), "{human}");
}

/// cert-manager mode (the chart's self-signed Issuer): the serving
/// certificate is its own CA, and cainjector puts it in the caBundle.
#[tokio::test]
async fn a_self_signed_serving_certificate_in_its_own_ca_bundle_verifies() {
    let mut cluster = Cluster::healthy();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec![format!("{NAME}.{NS}.svc")]).unwrap().self_signed(&key).unwrap().pem();
    cluster.webhook.as_mut().unwrap()["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(leaf.as_bytes()));
    cluster.secret.as_mut().unwrap()["data"] =
        json!({"tls.crt": b64(leaf.as_bytes()), "tls.key": b64(key.serialize_pem().as_bytes())});
    let report = check(cluster).await;
    assert_eq!(report.get("webhook").unwrap().status, Status::Ok, "{}", report.to_human());
    assert_eq!(report.exit_code(), 0, "{}", report.to_human());
}

/// The controller's Lease unrenewed past its duration, released, or never
/// taken: statuses and alerts are stale though the webhook still injects.
#[tokio::test]
async fn a_controller_lease_nobody_renews_fails_the_leader_line() {
    let report = check(Cluster::healthy()).await;
    let line = report.get("controller-leader").unwrap();
    assert!(line.message.contains("cloudtaser-cloudtaser-operator-7d9f-x2x4k runs the controller"), "{}", line.message);
    for (age, holder, expected) in [
        (Some(60), "cloudtaser-cloudtaser-operator-7d9f-x2x4k", "last renewed 60 s ago (duration 15 s)"),
        (Some(1), "", "has no holder"),
        (None, "", "no replica has ever run the controller"),
    ] {
        let mut cluster = Cluster::healthy();
        cluster.lease_age = age;
        cluster.lease_holder = holder;
        let report = check(cluster).await;
        only_fails(&report, "controller-leader");
        assert!(report.get("controller-leader").unwrap().message.contains(expected), "{}", report.to_human());
    }
}

/// A labelled namespace naming a config it does not have refuses every new
/// pod; an annotated namespace without the label never reaches the webhook.
#[tokio::test]
async fn namespace_enablement_that_cannot_work_fails_its_line() {
    for (ns, expected) in [
        (namespace("billing", true, None), "billing (cloudtaser.io/s3-proxy=true)"),
        (namespace("billing", true, Some("archive")), "billing (cloudtaser.io/s3-proxy=archive)"),
        (namespace("billing", true, Some("shop/default")), "every new pod in them is refused"),
        (namespace("billing", false, Some("true")), "never sends their pods to the webhook"),
    ] {
        let mut cluster = Cluster::healthy();
        cluster.namespaces[1] = ns;
        let report = check(cluster).await;
        only_fails(&report, "namespace-injection");
        assert!(report.get("namespace-injection").unwrap().message.contains(expected), "{}", report.to_human());
    }
    // With the config it names, the same namespace passes; `disabled` warns.
    let mut cluster = Cluster::healthy();
    cluster.configs.push(config("billing", "archive", "True", None));
    cluster.namespaces[1] = namespace("billing", true, Some("archive"));
    let report = check(cluster).await;
    assert_eq!(report.exit_code(), 0, "{}", report.to_human());
    assert!(report.get("namespace-injection").unwrap().message.contains("2 labelled namespace(s)"));
    let mut cluster = Cluster::healthy();
    cluster.namespaces[1] = namespace("billing", true, Some("disabled"));
    let report = check(cluster).await;
    assert_eq!(report.get("namespace-injection").unwrap().status, Status::Warn, "{}", report.to_human());
    // Annotated `disabled` without the label is what it says: nothing to report.
    let mut cluster = Cluster::healthy();
    cluster.namespaces[1] = namespace("billing", false, Some("disabled"));
    assert_eq!(check(cluster).await.exit_code(), 0);
}

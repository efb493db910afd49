//! The webhook over real HTTPS, as the API server calls it, with the two
//! things it needs a cluster for: the namespace route (the namespace's
//! annotation from the cache) and denials and warnings published as events
//! on the pod's workload (against kube's tower-test mock API server).

mod mock;
mod support;

use std::sync::Arc;
use std::time::Duration;

use cloudtaser_operator::crd::S3ProxyConfigSpec;
use cloudtaser_operator::metrics::Metrics;
use cloudtaser_operator::tls::ReloadingCert;
use cloudtaser_operator::webhook::inject::{InjectOptions, SIDECAR};
use cloudtaser_operator::webhook::notify::Notifier;
use cloudtaser_operator::webhook::server::{serve_https, webhook_router_with_events};
use http::Method;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use support::{Configs, WithNamespaces, admission_with, patch_of, review};

fn spec() -> S3ProxyConfigSpec {
    serde_json::from_value(json!({
        "upstream": {"region": "eu-west-1"},
        "vault": {"address": "https://vault.eu.example:8200", "transit": {"key": "orders"},
                  "auth": {"method": "kubernetes", "role": "orders"}},
        "credentials": {"source": "secret", "secretRef": {"name": "s3"}}
    }))
    .unwrap()
}

/// Config `orders` in `shop` (annotated `orders`) and `default` in `plain`
/// (labelled, no annotation); `fresh` is not in the cache yet.
fn lookup() -> WithNamespaces {
    let mut configs = Configs::default();
    configs.0.insert(("shop".into(), "orders".into()), spec());
    configs.0.insert(("plain".into(), "default".into()), support::irsa_spec());
    let mut lookup = WithNamespaces { configs, ..Default::default() };
    lookup.namespaces.insert("shop".into(), Some("orders".into()));
    lookup.namespaces.insert("plain".into(), None);
    lookup.namespaces.insert("off".into(), Some("disabled".into()));
    lookup
}

fn pod(annotations: Value, owner: Option<(&str, &str)>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-7d9f-", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/web:1"}]}});
    if let Some((kind, name)) = owner {
        let api_version = if kind == "Job" { "batch/v1" } else { "apps/v1" };
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": true}]);
    }
    p
}

struct Server {
    client: reqwest::Client,
    base: String,
    _dir: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn serve(notifier: Option<Arc<Notifier>>, tag: &str) -> Server {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("ct-webhook-events-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let host = "cloudtaser-operator.cloudtaser.svc";
    let cert = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let tls = ReloadingCert::new(dir.join("tls.crt"), dir.join("tls.key"), &Metrics::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admission = Arc::new(admission_with(lookup(), InjectOptions::default()));
    tokio::spawn(serve_https(listener, tls.server_config(), webhook_router_with_events(admission, notifier)));
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(cert.cert.pem().as_bytes()).unwrap())
        .resolve(host, addr)
        .build()
        .unwrap();
    Server { client, base: format!("https://{host}:{}", addr.port()), _dir: tempdir::Dir(dir) }
}

impl Server {
    async fn post(&self, path: &str, pod: &Value, namespace: &str, dry_run: bool) -> Value {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&review(pod, namespace, dry_run))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

fn applied(pod: &Value, response: &Value) -> Value {
    let mut out = pod.clone();
    if let Some(p) = patch_of(response) {
        json_patch::patch(&mut out, &p).unwrap();
    }
    out
}

/// The namespace route: the namespace's annotation picks the config, the
/// pod is annotated with it (so the controller and a reinvocation through
/// `/mutate` see it), a pod's own annotation wins, `disabled` opts out,
/// and a namespace the cache does not know yet is refused, not let through.
#[tokio::test]
async fn the_namespace_route_applies_the_namespace_annotation() {
    let server = serve(None, "ns").await;
    let unannotated = pod(json!({}), None);

    let body = server.post("/mutate-namespace", &unannotated, "shop", false).await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    let injected = applied(&unannotated, &body);
    assert_eq!(injected["spec"]["initContainers"][0]["name"], SIDECAR);
    assert_eq!(injected["metadata"]["annotations"]["cloudtaser.io/s3-proxy"], "orders");
    assert_eq!(injected["metadata"]["annotations"]["cloudtaser.io/s3-proxy-status"], "injected;config=orders");
    // Reinvoked, it now goes through /mutate: nothing left to change.
    let again = server.post("/mutate", &injected, "shop", false).await;
    assert!(patch_of(&again).is_none_or(|p| p.0.is_empty()), "{again}");

    // Labelled without an annotation: `true`, the namespace's `default`.
    let body = server.post("/mutate-namespace", &unannotated, "plain", false).await;
    let injected = applied(&unannotated, &body);
    assert_eq!(injected["metadata"]["annotations"]["cloudtaser.io/s3-proxy-status"], "injected;config=default");
    assert_eq!(injected["metadata"]["annotations"]["cloudtaser.io/s3-proxy"], "true");

    // Reinvoked through the namespace webhook after EKS's gave the app a
    // role (the chart's condition lets injected pods back in): the proxy
    // takes the role too.
    let mut eks = injected.clone();
    eks["spec"]["containers"][0]["env"] = json!([
        {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::111122223333:role/orders"},
        {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}]);
    let body = server.post("/mutate-namespace", &eks, "plain", false).await;
    let reinvoked = applied(&eks, &body);
    let proxy = &reinvoked["spec"]["initContainers"][0];
    assert_eq!(proxy["name"], SIDECAR);
    assert!(proxy["env"].as_array().unwrap().iter().any(|e| e["name"] == "AWS_ROLE_ARN"), "{proxy}");

    // The namespace says `disabled`; a pod says `disabled` in an enabled one.
    let body = server.post("/mutate-namespace", &unannotated, "off", false).await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(patch_of(&body).is_none(), "{body}");
    let opted_out = pod(json!({"cloudtaser.io/s3-proxy": "disabled"}), None);
    let body = server.post("/mutate-namespace", &opted_out, "shop", false).await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(patch_of(&body).is_none(), "{body}");

    // Unknown namespace: fail closed with what to do.
    let body = server.post("/mutate-namespace", &unannotated, "fresh", false).await;
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "namespace fresh is labelled cloudtaser.io/s3-proxy-injection=enabled, but the operator has not seen it yet"
        ),
        "{message}"
    );

    // /mutate never reads the namespace: an unannotated pod passes untouched.
    let body = server.post("/mutate", &unannotated, "shop", false).await;
    assert!(patch_of(&body).is_none(), "{body}");
}

/// A Deployment's pod refused: the event goes on the Deployment (found
/// through the ReplicaSet), where `kubectl describe deployment` shows it.
/// Dry runs and ownerless pods publish nothing.
#[tokio::test]
async fn a_denial_is_an_event_on_the_deployment() {
    let (client, mut h) = mock::client("default");
    let notifier = Arc::new(Notifier::new(client, Reporter { controller: "test".into(), instance: None }));
    let server = serve(Some(notifier), "deny").await;
    let denied = pod(json!({"cloudtaser.io/s3-proxy": "missing"}), Some(("ReplicaSet", "web-7d9f")));

    let body = server.post("/mutate", &denied, "shop", true).await;
    assert_eq!(body["response"]["allowed"], false);
    let ownerless = pod(json!({"cloudtaser.io/s3-proxy": "missing"}), None);
    let body = server.post("/mutate", &ownerless, "shop", false).await;
    assert_eq!(body["response"]["allowed"], false);
    let quiet = tokio::time::timeout(Duration::from_millis(200), h.next_request()).await;
    assert!(quiet.is_err(), "a dry run or an ownerless pod made a request");

    let body = server.post("/mutate", &denied, "shop", false).await;
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap().to_owned();
    let rs = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": "web-7d9f", "namespace": "shop", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-web", "controller": true}]}});
    mock::expect(&mut h, Method::GET, "/apis/apps/v1/namespaces/shop/replicasets/web-7d9f", 200, rs).await;
    let event =
        mock::expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
    assert_eq!(event["regarding"]["kind"], "Deployment", "{event}");
    assert_eq!(event["regarding"]["name"], "web");
    assert_eq!(event["reason"], "InjectionDenied");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["note"], format!("the CloudTaser webhook refuses this workload's pods: {message}"));
}

/// Injected with warnings: a Job made by a CronJob gets the event on the CronJob.
#[tokio::test]
async fn warnings_are_an_event_on_the_cronjob() {
    let (client, mut h) = mock::client("default");
    let notifier = Arc::new(Notifier::new(client, Reporter { controller: "test".into(), instance: None }));
    let server = serve(Some(notifier), "warn").await;
    // The app mounts a token with the audience the proxy logs in to Vault
    // with (golden case vault-token-in-workload-warned): injected, warned.
    let mut warned = pod(json!({"cloudtaser.io/s3-proxy": "orders"}), Some(("Job", "nightly-29")));
    warned["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "vault-login", "mountPath": "/var/run/vault", "readOnly": true}]);
    warned["spec"]["volumes"] = json!([{"name": "vault-login", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "vault", "expirationSeconds": 3600, "path": "token"}}]}}]);
    let body = server.post("/mutate", &warned, "shop", false).await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    let warnings = body["response"]["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{body}");
    let job = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": "nightly-29", "namespace": "shop", "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "uid-nightly", "controller": true}]}});
    mock::expect(&mut h, Method::GET, "/apis/batch/v1/namespaces/shop/jobs/nightly-29", 200, job).await;
    let event =
        mock::expect(&mut h, Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", 201, json!({})).await;
    assert_eq!(event["regarding"]["kind"], "CronJob", "{event}");
    assert_eq!(event["regarding"]["name"], "nightly");
    assert_eq!(event["reason"], "InjectionWarning");
    assert!(event["note"].as_str().unwrap().contains(warnings[0].as_str().unwrap()), "{event}");
}

//! The controller at fleet scale: N pods (default 10,000) in kube's
//! tower-test mock API server, reconciled the way the controller does now
//! (`store`: a paginated, metadata-only watch into a reflector store, then
//! counting from the store) and the way it did before (`list`: one LIST of
//! every full pod of the namespace per reconcile), in one process per mode
//! so each has its own peak RSS. Driven by bench/operator_controller.py,
//! which runs both modes several times and reports medians; prints one JSON
//! line. The pods are the webhook's own output (a golden injected pod)
//! with a kubelet-shaped status, so their size is a real pod's.
//!
//! `cargo bench -p cloudtaser-operator --bench controller -- --mode store --pods 10000 --reconciles 20`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudtaser_operator::controller::{self, Context, PodMeta};
use cloudtaser_operator::crd::S3ProxyConfig;
use cloudtaser_operator::metrics::Metrics;
use futures_util::StreamExt;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

const PAGE: usize = 500;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_owned())
}

/// An injected pod as the API server stores it: the golden webhook output,
/// named, owned by a ReplicaSet, with a running status.
fn pod(template: &Value, i: usize) -> Value {
    let mut p = template.clone();
    p["metadata"]["name"] = json!(format!("orders-7d9f-{i:05}"));
    p["metadata"]["namespace"] = json!("shop");
    p["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{i:012}"));
    p["metadata"]["resourceVersion"] = json!((1000 + i).to_string());
    p["metadata"]["creationTimestamp"] = json!("2026-12-01T00:00:00Z");
    p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7d9f",
        "uid": "11111111-0000-0000-0000-000000000000", "controller": true, "blockOwnerDeletion": true}]);
    p["spec"]["nodeName"] = json!(format!("node-{}", i % 100));
    let conditions: Vec<Value> =
        ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
            .iter()
            .map(|t| json!({"type": t, "status": "True", "lastTransitionTime": "2026-12-01T00:00:02Z"}))
            .collect();
    p["status"] = json!({"phase": "Running", "podIP": "10.0.0.1", "hostIP": "192.168.0.1", "qosClass": "Burstable",
        "startTime": "2026-12-01T00:00:01Z",
        "conditions": conditions,
        "initContainerStatuses": [{"name": "cloudtaser-s3proxy", "ready": true, "started": true, "restartCount": 0,
            "image": "ghcr.io/cloudtaser/s3proxy:0.1.0", "imageID": "ghcr.io/cloudtaser/s3proxy@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "containerID": "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "state": {"running": {"startedAt": "2026-12-01T00:00:01Z"}}}],
        "containerStatuses": [{"name": "app", "ready": true, "started": true, "restartCount": 0,
            "image": "registry.example/orders:1.4", "imageID": "registry.example/orders@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "containerID": "containerd://fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
            "state": {"running": {"startedAt": "2026-12-01T00:00:02Z"}}}]});
    p
}

fn config() -> S3ProxyConfig {
    serde_json::from_value(json!({
        "apiVersion": "cloudtaser.io/v1alpha1", "kind": "S3ProxyConfig",
        "metadata": {"name": "default", "namespace": "shop", "generation": 1},
        "spec": {"upstream": {"region": "eu-central-1"},
                 "vault": {"address": "https://vault.eu.example:8200", "transit": {"key": "orders"},
                           "auth": {"method": "kubernetes", "role": "orders"}},
                 "credentials": {"source": "secret", "secretRef": {"name": "s3"}}}
    }))
    .expect("config")
}

/// The pod list bodies, built once pod by pod (no pod is held as a JSON
/// tree, so the fixture costs its bytes only): pages of `PAGE` metadata-only
/// items, or one body of every full pod (the old unpaginated LIST).
fn bodies(template: &Value, n: usize, metadata: bool) -> Vec<Vec<u8>> {
    let per = if metadata { PAGE } else { n };
    let mut out = Vec::new();
    for start in (0..n).step_by(per) {
        let end = (start + per).min(n);
        let cont = if end < n { end.to_string() } else { String::new() };
        let (api, kind) = if metadata { ("meta.k8s.io/v1", "PartialObjectMetadataList") } else { ("v1", "PodList") };
        let head = json!({"apiVersion": api, "kind": kind, "metadata": {"resourceVersion": "99999", "continue": cont}});
        let mut body = serde_json::to_vec(&head).expect("json");
        body.truncate(body.len() - 1);
        body.extend_from_slice(b",\"items\":[");
        for i in start..end {
            let p = pod(template, i);
            let item = if metadata {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": p["metadata"]})
            } else {
                p
            };
            if i > start {
                body.push(b',');
            }
            body.extend(serde_json::to_vec(&item).expect("json"));
        }
        body.extend_from_slice(b"]}");
        out.push(body);
    }
    out
}

/// Answers the mock's requests: pod lists (the page a `continue` token
/// names), watches (held open), status patches.
async fn serve(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, pages: Arc<Vec<Vec<u8>>>) {
    let mut held = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let uri = request.uri().clone();
        let query = uri.query().unwrap_or("");
        if query.contains("watch=true") {
            held.push(send);
            continue;
        }
        let body = if uri.path().ends_with("/status") {
            serde_json::to_vec(&config()).expect("json")
        } else if uri.path().ends_with("/pods") {
            let start: usize =
                query.split('&').find_map(|kv| kv.strip_prefix("continue=")).and_then(|v| v.parse().ok()).unwrap_or(0);
            // One page in list mode (no continue token): index 0.
            pages[start / PAGE].clone()
        } else {
            panic!("unexpected request {uri}");
        };
        send.send_response(Response::builder().status(200).body(Body::from(body)).expect("response"));
    }
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The reconcile before issue 27: a LIST of the namespace's full pods, counted.
async fn list_reconcile(client: &kube::Client) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let list = pods.list(&ListParams::default()).await.expect("list");
    list.items.iter().filter(|p| controller::has_proxy(p)).count()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mode = arg("--mode", "store");
    let n: usize = arg("--pods", "10000").parse().expect("--pods");
    let rounds: usize = arg("--reconciles", "20").parse().expect("--reconciles");
    let golden = include_str!("../tests/golden/static-native/expected.yaml");
    let template: Value = serde_yaml::from_str(golden).expect("golden pod");
    let pod_bytes = serde_json::to_vec(&pod(&template, 0)).expect("json").len();
    let pages = Arc::new(bodies(&template, n, mode == "store"));
    let fixture_bytes: usize = pages.iter().map(Vec::len).sum();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "shop".to_owned());
    tokio::spawn(serve(handle, pages));
    let baseline_kib = vm_hwm_kib();
    let cpu0 = cpu_seconds();

    let (sync_ms, times, counted) = match mode.as_str() {
        "store" => {
            let t = Instant::now();
            let (store, writer) = reflector::store::<PodMeta>();
            let api: Api<PodMeta> = Api::all(client.clone());
            let stream = watcher(api, watcher::Config::default()).reflect(writer).touched_objects();
            tokio::spawn(stream.for_each(|_| async {}));
            store.wait_until_ready().await.expect("synced");
            let sync_ms = t.elapsed().as_secs_f64() * 1e3;
            let reporter = Reporter { controller: "bench".into(), instance: None };
            let ctx = Arc::new(Context::new(
                client.clone(),
                Arc::new(Metrics::default()),
                reporter,
                "ghcr.io/cloudtaser/s3proxy:0.1.0".into(),
                store.clone(),
            ));
            let mut times = Vec::new();
            for _ in 0..rounds {
                let t = Instant::now();
                controller::reconcile(Arc::new(config()), ctx.clone()).await.expect("reconcile");
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            (sync_ms, times, store.len())
        }
        "list" => {
            let mut times = Vec::new();
            let mut counted = 0;
            for _ in 0..rounds {
                let t = Instant::now();
                counted = list_reconcile(&client).await;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            (0.0, times, counted)
        }
        other => panic!("--mode store|list, not {other}"),
    };
    assert_eq!(counted, n, "every pod counted");
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!(
        "{}",
        json!({"mode": mode, "pods": n, "pod_json_bytes": pod_bytes, "fixture_mib": fixture_bytes as f64 / 1048576.0, "reconciles": rounds,
               "sync_ms": sync_ms, "reconcile_ms_median": median(times.clone()),
               "reconcile_ms_max": times.iter().cloned().fold(0.0, f64::max),
               "cpu_s": cpu_seconds() - cpu0,
               "peak_rss_mib": vm_hwm_kib() as f64 / 1024.0, "fixture_rss_mib": baseline_kib as f64 / 1024.0})
    );
}

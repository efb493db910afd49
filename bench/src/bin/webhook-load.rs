//! The admission webhook under a fixed arrival rate: the operator's real HTTPS
//! server and handler on their own runtime, and an open-loop client that
//! sends a Deployment's pod as kube-apiserver does. Latency counts from the
//! scheduled send time, so a stall cannot hide queued requests. Prints one
//! JSON line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use cloudtaser_operator::crd::S3ProxyConfigSpec;
use cloudtaser_operator::metrics::Metrics;
use cloudtaser_operator::tls::ReloadingCert;
use cloudtaser_operator::tls::self_managed;
use cloudtaser_operator::webhook::admission::{Admission, ConfigLookup};
use cloudtaser_operator::webhook::inject::InjectOptions;
use cloudtaser_operator::webhook::server::{serve_https, webhook_router};

#[derive(Parser)]
struct Args {
    /// Admissions per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    #[arg(long, default_value_t = 15)]
    seconds: u32,
    /// A new TLS connection per admission (the pool is otherwise kept alive,
    /// as kube-apiserver keeps its webhook connections).
    #[arg(long)]
    fresh_connections: bool,
    /// Server worker threads (the operator's runtime uses every core).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
}

struct Configs(HashMap<(String, String), S3ProxyConfigSpec>);

impl ConfigLookup for Configs {
    fn get(&self, namespace: &str, name: &str) -> Option<S3ProxyConfigSpec> {
        self.0.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }

    fn cluster_default(&self) -> Option<S3ProxyConfigSpec> {
        None
    }
}

fn config() -> S3ProxyConfigSpec {
    serde_json::from_value(json!({
        "upstream": {"region": "eu-west-1"},
        "vault": {"address": "https://vault.eu.example:8200", "transit": {"key": "orders"},
                  "auth": {"method": "kubernetes", "role": "orders"}},
        "credentials": {"source": "serviceAccount"}
    }))
    .expect("config")
}

/// A pod as a ReplicaSet creates it: owner, labels, two containers with
/// probes and resources, the service-account token volume.
fn review(uid: usize) -> Value {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "orders-7d9f8c6b5-",
            "labels": {"app.kubernetes.io/name": "orders", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {"cloudtaser.io/s3-proxy": "true", "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7d9f8c6b5",
                                 "uid": "3f5e1c9a-0b1d-4c8e-9f2a-6d7e8f901234", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "serviceAccountName": "orders",
            "containers": [
                {"name": "app", "image": "registry.example/orders:1.4.2",
                 "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                 "env": [{"name": "BUCKET", "value": "orders-eu"}, {"name": "LOG_LEVEL", "value": "info"}],
                 "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                 "volumeMounts": [{"name": "kube-api-access-x2v9k", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]},
                {"name": "log-shipper", "image": "registry.example/fluent-bit:3.1",
                 "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}}}
            ],
            "volumes": [{"name": "kube-api-access-x2v9k", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}]
        }
    });
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-4000-8000-{uid:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// Starts the webhook on its own runtime; returns its port and CA.
fn start_server(threads: usize) -> (u16, String) {
    let dns = vec!["localhost".to_owned()];
    let material = self_managed::generate(&dns, None, 0).expect("certificate");
    let metrics = Metrics::default();
    let cert = ReloadingCert::from_pem(material.cert.as_bytes(), material.key.as_bytes(), &metrics).expect("cert");
    let mut configs = HashMap::new();
    configs.insert(("shop".to_owned(), "default".to_owned()), config());
    let admission = Arc::new(Admission {
        configs: Arc::new(Configs(configs)),
        options: InjectOptions::default(),
        metrics: Arc::new(metrics),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            serve_https(listener, cert.server_config(), webhook_router(admission)).await.expect("serve");
        });
    });
    (port, material.ca_cert)
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client(ca_pem: &str, fresh: bool) -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.expect("CA")).expect("CA");
    }
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    let mut builder = Client::builder(TokioExecutor::new());
    if fresh {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(https)
}

/// Sends one review; panics unless the pod got a patch, so the benchmark
/// cannot time a fast failure.
async fn admit(client: &HttpsClient, url: &str, body: Bytes) {
    let req = Request::post(url).header("content-type", "application/json").body(Full::new(body)).expect("request");
    let resp = client.request(req).await.expect("webhook reachable");
    assert_eq!(resp.status(), 200);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let review: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert!(review["response"]["patch"].is_string(), "no patch: {review}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (port, ca) = start_server(args.server_threads);
    let url = format!("https://localhost:{port}/mutate");
    let client = Arc::new(client(&ca, args.fresh_connections));
    // Warm up: the first handshake and allocations are not what a steady state sees.
    for i in 0..20 {
        admit(&client, &url, Bytes::from(review(i).to_string())).await;
    }
    let total = (args.rate * args.seconds) as usize;
    let bodies: Vec<Bytes> = (0..total).map(|i| Bytes::from(review(i).to_string())).collect();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for (i, body) in bodies.into_iter().enumerate() {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            admit(&client, &url, body).await;
            scheduled.elapsed().as_secs_f64() * 1e3
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.push(t.await.expect("admission"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "admissions": total,
            "offered_per_s": args.rate,
            "achieved_per_s": total as f64 / elapsed,
            "fresh_connections": args.fresh_connections,
            "p50_ms": percentile(&latencies, 0.50),
            "p90_ms": percentile(&latencies, 0.90),
            "p99_ms": percentile(&latencies, 0.99),
            "max_ms": latencies.last().copied().unwrap_or(0.0),
        })
    );
}

//! Prometheus metrics, served on `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Per-config gauges: one series per S3ProxyConfig.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabel {
    pub namespace: String,
    pub config: String,
}

pub struct Metrics {
    registry: Registry,
    admissions: Family<ResultLabel, Counter>,
    injections: Counter,
    pub unprotected_pods: Family<ConfigLabel, Gauge>,
    pub stale_proxy_pods: Family<ConfigLabel, Gauge>,
    pub cert_expiry_seconds: Gauge<f64, AtomicU64>,
    pub reconcile_errors: Counter,
    pub nodes_without_native_sidecars: Gauge,
    /// 1 on the replica that runs the controller (holds its Lease).
    pub controller_leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cloudtaser_operator");
        let admissions = Family::<ResultLabel, Counter>::default();
        let injections = Counter::default();
        let unprotected_pods = Family::<ConfigLabel, Gauge>::default();
        let stale_proxy_pods = Family::<ConfigLabel, Gauge>::default();
        let cert_expiry_seconds = Gauge::<f64, AtomicU64>::default();
        let reconcile_errors = Counter::default();
        let nodes_without_native_sidecars = Gauge::default();
        let controller_leader = Gauge::default();
        registry.register(
            "controller_leader",
            "1 on the replica that leads (runs the controller and exports the per-config gauges), else 0",
            controller_leader.clone(),
        );
        registry.register(
            "nodes_without_native_sidecars",
            "Nodes whose kubelet is older than 1.29, where natively injected pods would stay in Init",
            nodes_without_native_sidecars.clone(),
        );
        registry.register("admissions", "Admission reviews by result", admissions.clone());
        registry.register("injections", "Pods the proxy was injected into", injections.clone());
        registry.register(
            "unprotected_pods",
            "Annotated pods running without the proxy, by S3ProxyConfig",
            unprotected_pods.clone(),
        );
        registry.register(
            "stale_proxy_pods",
            "Injected pods running a proxy image other than the configured one, by S3ProxyConfig",
            stale_proxy_pods.clone(),
        );
        registry.register(
            "webhook_cert_expiry_timestamp_seconds",
            "When the webhook serving certificate expires (Unix time)",
            cert_expiry_seconds.clone(),
        );
        registry.register("reconcile_errors", "Failed S3ProxyConfig reconciliations", reconcile_errors.clone());
        Self {
            registry,
            admissions,
            injections,
            unprotected_pods,
            stale_proxy_pods,
            cert_expiry_seconds,
            reconcile_errors,
            nodes_without_native_sidecars,
            controller_leader,
        }
    }
}

impl Metrics {
    pub fn admission(&self, result: &str) {
        self.admissions.get_or_create(&ResultLabel { result: result.to_owned() }).inc();
    }

    pub fn injection(&self) {
        self.injections.inc();
    }

    /// On losing leadership: the per-config gauges are the leader's to
    /// export, so a follower's stale copies do not linger (and sums over
    /// replicas would count each pod twice).
    pub fn clear_controller_gauges(&self) {
        self.unprotected_pods.clear();
        self.stale_proxy_pods.clear();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

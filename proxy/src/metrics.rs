//! Prometheus metrics, served on `/metrics` of the health listener. Labels
//! stay low-cardinality: operation names, status codes and fixed reasons,
//! never buckets or keys.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::keys::health::VaultHealth;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a request was refused before anything was forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Not in the operation allow-list's shapes (`501`), or a recognised
    /// operation the proxy cannot encrypt.
    Unsupported,
    /// `CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS` or `CLOUDTASER_S3PROXY_BUCKETS`.
    Policy,
    /// A reserved `x-amz-meta-cloudtaser-*` name in a header or the query.
    ReservedMetadata,
    /// A malformed URI, bucket, key or query.
    Malformed,
}

impl RefusalReason {
    fn label(self) -> &'static str {
        match self {
            RefusalReason::Unsupported => "unsupported_operation",
            RefusalReason::Policy => "refused_operation",
            RefusalReason::ReservedMetadata => "reserved_metadata",
            RefusalReason::Malformed => "malformed_request",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<OperationLabel, Histogram>,
    refused: Family<ReasonLabel, Counter>,
    vault_reachable: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cloudtaser_s3proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<OperationLabel, Histogram>::new_with_constructor(|| {
            // 1 ms to about 65 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        let refused = Family::<ReasonLabel, Counter>::default();
        let vault_reachable = Gauge::default();
        registry.register("requests", "S3 requests by operation and HTTP status", requests.clone());
        registry.register("request_duration_seconds", "Time to the response head, by operation", durations.clone());
        registry.register("refused_requests", "Requests refused before anything was forwarded", refused.clone());
        registry.register(
            "vault_reachable",
            "1 while Vault answers the proxy's calls and probes, 0 while it does not (the proxy stays ready)",
            vault_reachable.clone(),
        );
        Self { registry, requests, durations, refused, vault_reachable }
    }
}

impl Metrics {
    pub fn request(&self, operation: &'static str, code: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { operation, code }).inc();
        self.durations.get_or_create(&OperationLabel { operation }).observe(elapsed.as_secs_f64());
    }

    pub fn refused(&self, reason: RefusalReason) {
        self.refused.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
    }

    /// The exposition, with the gauges that mirror other state brought up to date.
    pub fn encode(&self, vault: &VaultHealth) -> String {
        self.vault_reachable.set(i64::from(vault.is_reachable()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::default();
        m.request("PutObject", 200, Duration::from_millis(3));
        m.refused(RefusalReason::Policy);
        let text = m.encode(&VaultHealth::default());
        assert!(text.contains("cloudtaser_s3proxy_requests_total{operation=\"PutObject\",code=\"200\"} 1"), "{text}");
        assert!(text.contains("cloudtaser_s3proxy_refused_requests_total{reason=\"refused_operation\"} 1"));
        assert!(text.contains("cloudtaser_s3proxy_vault_reachable 0"));
        assert!(text.contains("cloudtaser_s3proxy_request_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
    }
}

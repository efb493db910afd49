//! Prometheus metrics, served on `/metrics` of the health listener, in the
//! OpenMetrics text format `prometheus-client` writes. Labels stay
//! low-cardinality: operation names, status codes and fixed reasons, never
//! buckets or keys. One registry per process (`metrics()`), as a sidecar
//! has one of everything; units record into it where the event happens.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    direction: &'static str,
    kind: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the workload (plaintext) or from the upstream (ciphertext).
    In,
    /// To the workload (plaintext) or to the upstream (ciphertext).
    Out,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BytesKind {
    Plaintext,
    Ciphertext,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    method: &'static str,
    class: &'static str,
}

/// Present only once credentials with an expiry are loaded, so static keys
/// never look like keys about to expire.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialsLabel {
    credentials: &'static str,
}

/// `key`: a Transit key name. Bounded: the proxy calls Transit only for
/// keys its configuration names (an envelope naming another is refused
/// before any call), and auth calls have none (`""`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultLabels {
    operation: &'static str,
    result: &'static str,
    key: String,
}

/// A configured Transit key's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyResultLabels {
    key: String,
    result: &'static str,
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
    /// A malformed URI, bucket, key, query or body framing.
    Malformed,
    /// A body whose Content-MD5 or checksum did not match.
    BadChecksum,
}

impl RefusalReason {
    fn label(self) -> &'static str {
        match self {
            RefusalReason::Unsupported => "unsupported_operation",
            RefusalReason::Policy => "refused_operation",
            RefusalReason::ReservedMetadata => "reserved_metadata",
            RefusalReason::Malformed => "malformed_request",
            RefusalReason::BadChecksum => "bad_checksum",
        }
    }
}

/// Histogram buckets from 1 ms to about 65 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<OperationLabel, Histogram>,
    refused: Family<ReasonLabel, Counter>,
    bytes: Family<BytesLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_durations: Family<OperationLabel, Histogram>,
    vault_calls: Family<VaultLabels, Counter>,
    vault_durations: Family<OperationLabel, Histogram>,
    vault_reachable: Gauge,
    key_cache_hits: Counter,
    key_cache_misses: Counter,
    key_cache_size: Gauge,
    key_pool_keys: Family<KeyLabel, Gauge>,
    key_pool_refills: Family<KeyResultLabels, Counter>,
    key_pool_misses: Family<KeyLabel, Counter>,
    key_pool_expired: Family<KeyLabel, Counter>,
    key_pool_retired: Family<KeyLabel, Counter>,
    key_rotations: Family<KeyLabel, Counter>,
    key_version: Family<KeyLabel, Gauge>,
    key_version_checks: Family<ResultLabel, Counter>,
    keys_erased: Family<KeyLabel, Counter>,
    bucket_keys_started: Family<KeyLabel, Counter>,
    decrypt_batches: Family<KeyLabel, Histogram>,
    integrity_failures: Counter,
    open_connections: Gauge,
    in_flight: Gauge,
    credentials_expiry: Family<CredentialsLabel, Gauge<f64, AtomicU64>>,
    credentials_expire_at: std::sync::Mutex<Option<SystemTime>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("cloudtaser_s3proxy");
        let m = Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(latency),
            refused: Family::default(),
            bytes: Family::default(),
            upstream_requests: Family::default(),
            upstream_durations: Family::new_with_constructor(latency),
            vault_calls: Family::default(),
            vault_durations: Family::new_with_constructor(latency),
            vault_reachable: Gauge::default(),
            key_cache_hits: Counter::default(),
            key_cache_misses: Counter::default(),
            key_cache_size: Gauge::default(),
            key_pool_keys: Family::default(),
            key_pool_refills: Family::default(),
            key_pool_misses: Family::default(),
            key_pool_expired: Family::default(),
            key_pool_retired: Family::default(),
            key_rotations: Family::default(),
            key_version: Family::default(),
            keys_erased: Family::default(),
            bucket_keys_started: Family::default(),
            decrypt_batches: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 8))),
            key_version_checks: Family::default(),
            integrity_failures: Counter::default(),
            open_connections: Gauge::default(),
            in_flight: Gauge::default(),
            credentials_expiry: Family::default(),
            credentials_expire_at: std::sync::Mutex::new(None),
            registry: Registry::default(),
        };
        r.register("requests", "S3 requests by operation and HTTP status", m.requests.clone());
        r.register("request_duration_seconds", "Time to the response head, by operation", m.durations.clone());
        r.register("refused_requests", "Requests refused before anything was forwarded, by reason", m.refused.clone());
        r.register("bytes", "Object bytes by direction and kind (declared lengths)", m.bytes.clone());
        r.register(
            "upstream_requests",
            "Requests to the upstream by method and status class (2xx, 3xx, 4xx, 5xx, error)",
            m.upstream_requests.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Time to the upstream's response head, by method",
            m.upstream_durations.clone(),
        );
        r.register("vault_calls", "Vault calls by operation and result", m.vault_calls.clone());
        r.register("vault_call_duration_seconds", "Vault call time by operation", m.vault_durations.clone());
        r.register(
            "vault_reachable",
            "1 while Vault answers the proxy's calls and probes, 0 while it does not (the proxy stays ready)",
            m.vault_reachable.clone(),
        );
        r.register("key_cache_hits", "Reads whose data key was cached", m.key_cache_hits.clone());
        r.register("key_cache_misses", "Reads that needed a Transit decrypt", m.key_cache_misses.clone());
        r.register("key_cache_size", "Unwrapped data keys held for reads", m.key_cache_size.clone());
        r.register("key_pool_keys", "Pre-wrapped data keys waiting in the pool", m.key_pool_keys.clone());
        r.register(
            "key_pool_refills",
            "Transit batch calls that wrapped keys for the pool, by result",
            m.key_pool_refills.clone(),
        );
        r.register(
            "key_pool_misses",
            "New data keys requested while the pool was empty (each a direct Transit call)",
            m.key_pool_misses.clone(),
        );
        r.register("key_pool_expired", "Pooled keys wiped unused at their maximum age", m.key_pool_expired.clone());
        r.register(
            "key_pool_retired",
            "Pooled keys wiped unused because the Transit key was rotated past their version",
            m.key_pool_retired.clone(),
        );
        r.register("key_rotations", "Transit key rotations the key pool has seen", m.key_rotations.clone());
        r.register(
            "key_version",
            "The Transit key version new data keys are wrapped under (0 until the pool has seen one)",
            m.key_version.clone(),
        );
        r.register(
            "key_version_checks",
            "Checks of the Transit key's current version (one key wrapped), by result",
            m.key_version_checks.clone(),
        );
        r.register(
            "vault_decrypt_batch_size",
            "Wrapped keys per coalesced Transit decrypt (cold reads that waited for a call in flight)",
            m.decrypt_batches.clone(),
        );
        r.register(
            "bucket_keys",
            "Bucket keys begun (each wraps the data keys of one window's single objects), by Transit key",
            m.bucket_keys_started.clone(),
        );
        r.register(
            "transit_keys_erased",
            "Times a configured Transit key was found deleted in Vault (its cached and pooled keys were wiped)",
            m.keys_erased.clone(),
        );
        r.register(
            "integrity_failures",
            "Stored objects that failed verification on read (tampered, truncated, swapped)",
            m.integrity_failures.clone(),
        );
        r.register("open_connections", "Connections open on the S3 listener", m.open_connections.clone());
        r.register("in_flight_requests", "S3 requests being handled", m.in_flight.clone());
        r.register(
            "upstream_credentials_expiry_seconds",
            "Seconds until the upstream credentials expire (absent for credentials that do not)",
            m.credentials_expiry.clone(),
        );
        Self { registry: r, ..m }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "error",
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

    pub fn bytes(&self, direction: Direction, kind: BytesKind, n: u64) {
        let direction = if direction == Direction::In { "in" } else { "out" };
        let kind = if kind == BytesKind::Plaintext { "plaintext" } else { "ciphertext" };
        self.bytes.get_or_create(&BytesLabels { direction, kind }).inc_by(n);
    }

    /// `status` is `None` when no response came (connect or I/O error).
    pub fn upstream(&self, method: &'static str, status: Option<u16>, elapsed: Duration) {
        self.upstream_requests.get_or_create(&UpstreamLabels { method, class: status_class(status) }).inc();
        self.upstream_durations.get_or_create(&OperationLabel { operation: method }).observe(elapsed.as_secs_f64());
    }

    /// `operation`: `datakey`, `decrypt`, `rewrap`, `keys`, `lookup`, `login`, `renew`.
    /// `key`: the Transit key the call is for (`""` for auth calls).
    pub fn vault(&self, operation: &'static str, key: &str, ok: bool, elapsed: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.vault_calls.get_or_create(&VaultLabels { operation, result, key: key.to_owned() }).inc();
        self.vault_durations.get_or_create(&OperationLabel { operation }).observe(elapsed.as_secs_f64());
    }

    pub fn vault_reachable(&self, reachable: bool) {
        self.vault_reachable.set(i64::from(reachable));
    }

    pub fn key_cache(&self, hit: bool, size: usize) {
        if hit {
            self.key_cache_hits.inc()
        } else {
            self.key_cache_misses.inc()
        };
        self.key_cache_size.set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    /// The pool's size after a change, keys it dropped at their age, and
    /// whether a request found it empty.
    pub fn key_pool(&self, key: &str, size: usize, expired: usize, missed: bool) {
        let label = KeyLabel { key: key.to_owned() };
        self.key_pool_keys.get_or_create(&label).set(i64::try_from(size).unwrap_or(i64::MAX));
        if expired > 0 {
            self.key_pool_expired.get_or_create(&label).inc_by(expired as u64);
        }
        if missed {
            self.key_pool_misses.get_or_create(&label).inc();
        }
    }

    /// A pool for Transit key `key` exists: its series start at 0, so a
    /// dashboard (and an alert on misses) sees the key before anything happens.
    pub fn key_pool_created(&self, key: &str) {
        let label = KeyLabel { key: key.to_owned() };
        drop(self.key_pool_keys.get_or_create(&label));
        drop(self.key_pool_misses.get_or_create(&label));
        drop(self.key_pool_expired.get_or_create(&label));
        drop(self.key_pool_retired.get_or_create(&label));
        drop(self.key_rotations.get_or_create(&label));
        drop(self.key_version.get_or_create(&label));
    }

    /// A newer version of Transit key `key` was seen; `retired` older pooled keys were wiped.
    pub fn key_rotation_seen(&self, key: &str, retired: usize) {
        let label = KeyLabel { key: key.to_owned() };
        self.key_rotations.get_or_create(&label).inc();
        self.key_pool_retired.get_or_create(&label).inc_by(retired as u64);
    }

    pub fn key_version(&self, key: &str, version: u32) {
        self.key_version.get_or_create(&KeyLabel { key: key.to_owned() }).set(i64::from(version));
    }

    /// A coalesced `decrypt` of `n` wrapped keys under Transit key `key`.
    pub fn decrypt_batch(&self, key: &str, n: usize) {
        self.decrypt_batches.get_or_create(&KeyLabel { key: key.to_owned() }).observe(n as f64);
    }

    /// A bucket key was begun for Transit key `key`.
    pub fn bucket_key_started(&self, key: &str) {
        self.bucket_keys_started.get_or_create(&KeyLabel { key: key.to_owned() }).inc();
    }

    /// Transit key `key` was found deleted in Vault.
    pub fn key_erased(&self, key: &str) {
        self.keys_erased.get_or_create(&KeyLabel { key: key.to_owned() }).inc();
    }

    pub fn key_version_check(&self, ok: bool) {
        self.key_version_checks.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }

    pub fn key_pool_refill(&self, key: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.key_pool_refills.get_or_create(&KeyResultLabels { key: key.to_owned(), result }).inc();
    }

    pub fn integrity_failure(&self) {
        self.integrity_failures.inc();
    }

    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// Counts a request as in flight until the guard drops.
    pub fn in_flight(&'static self) -> InFlight {
        self.in_flight.inc();
        InFlight(self)
    }

    /// When the credentials in use expire (`None`: they do not).
    pub fn credentials_expire_at(&self, at: Option<SystemTime>) {
        *self.credentials_expire_at.lock().expect("metrics lock") = at;
    }

    /// The exposition, with time-derived gauges brought up to date.
    pub fn encode(&self) -> String {
        if let Some(at) = *self.credentials_expire_at.lock().expect("metrics lock") {
            let secs = match at.duration_since(SystemTime::now()) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            self.credentials_expiry.get_or_create(&CredentialsLabel { credentials: "upstream" }).set(secs);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

pub struct InFlight(&'static Metrics);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
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
        m.bytes(Direction::In, BytesKind::Plaintext, 10);
        m.upstream("PUT", Some(503), Duration::from_millis(1));
        m.upstream("GET", None, Duration::from_millis(1));
        m.vault("datakey", "tenant-a", true, Duration::from_millis(2));
        m.key_cache(false, 1);
        m.key_pool("tenant-a", 7, 2, true);
        m.key_pool("tenant-b", 3, 0, false);
        m.key_pool_refill("tenant-a", true);
        m.key_erased("tenant-b");
        let text = m.encode();
        for line in [
            "cloudtaser_s3proxy_requests_total{operation=\"PutObject\",code=\"200\"} 1",
            "cloudtaser_s3proxy_refused_requests_total{reason=\"refused_operation\"} 1",
            "cloudtaser_s3proxy_bytes_total{direction=\"in\",kind=\"plaintext\"} 10",
            "cloudtaser_s3proxy_upstream_requests_total{method=\"PUT\",class=\"5xx\"} 1",
            "cloudtaser_s3proxy_upstream_requests_total{method=\"GET\",class=\"error\"} 1",
            "cloudtaser_s3proxy_vault_calls_total{operation=\"datakey\",result=\"ok\",key=\"tenant-a\"} 1",
            "cloudtaser_s3proxy_key_cache_misses_total 1",
            "cloudtaser_s3proxy_key_cache_size 1",
            "cloudtaser_s3proxy_vault_reachable 0",
            "cloudtaser_s3proxy_integrity_failures_total 0",
            "cloudtaser_s3proxy_key_pool_keys{key=\"tenant-a\"} 7",
            "cloudtaser_s3proxy_key_pool_keys{key=\"tenant-b\"} 3",
            "cloudtaser_s3proxy_key_pool_misses_total{key=\"tenant-a\"} 1",
            "cloudtaser_s3proxy_key_pool_expired_total{key=\"tenant-a\"} 2",
            "cloudtaser_s3proxy_key_pool_refills_total{key=\"tenant-a\",result=\"ok\"} 1",
            "cloudtaser_s3proxy_transit_keys_erased_total{key=\"tenant-b\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}

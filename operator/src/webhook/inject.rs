//! The injection itself, as a pure function: a pod and its configuration in,
//! the mutated pod (and warnings) out. The webhook turns the difference into
//! JSON patches; running it on its own output changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, HostAlias, Lifecycle,
    LifecycleHandler, Pod, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use cloudtaser_s3proxy::env_names as proxy_env;

use super::mesh::{self, Mesh};
use super::reinvoke::merge_own;
use crate::crd::{CredentialsSource, DEFAULT_WEB_IDENTITY_AUDIENCE, InvalidSpec, S3ProxyConfigSpec, VaultAuthMethod};
use crate::quantity::Quantity as ParsedQuantity;

pub const ANNOTATION: &str = "cloudtaser.io/s3-proxy";
pub const STATUS_ANNOTATION: &str = "cloudtaser.io/s3-proxy-status";
pub const IMAGE_ANNOTATION: &str = "cloudtaser.io/s3-proxy-image";
pub const LOG_LEVEL_ANNOTATION: &str = "cloudtaser.io/s3-proxy-log-level";
pub const CPU_REQUEST_ANNOTATION: &str = "cloudtaser.io/s3-proxy-cpu-request";
pub const MEMORY_REQUEST_ANNOTATION: &str = "cloudtaser.io/s3-proxy-memory-request";
pub const CPU_LIMIT_ANNOTATION: &str = "cloudtaser.io/s3-proxy-cpu-limit";
pub const MEMORY_LIMIT_ANNOTATION: &str = "cloudtaser.io/s3-proxy-memory-limit";
/// On injected pods: the proxy image they got (the controller compares it
/// with the configured one to find pods left on an old image).
pub const INJECTED_IMAGE_ANNOTATION: &str = "cloudtaser.io/s3-proxy-injected-image";
/// On injected pods, so `kubectl get pods -l cloudtaser.io/s3-proxy-injected=true` finds them.
pub const INJECTED_LABEL: &str = "cloudtaser.io/s3-proxy-injected";
/// The log levels an override or the chart may set (`CLOUDTASER_S3PROXY_LOG`).
pub const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

pub const SIDECAR: &str = "cloudtaser-s3proxy";
pub const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL_S3";
pub const ENDPOINT: &str = "http://localhost:8190";
const HEALTH_PORT: i32 = 8191;
const VAULT_TOKEN_VOLUME: &str = "cloudtaser-vault-token";
const VAULT_TOKEN_DIR: &str = "/var/run/secrets/cloudtaser/vault";
const VAULT_CA_VOLUME: &str = "cloudtaser-vault-ca";
/// `credentials.source: webIdentity`: the proxy's own AWS token.
const AWS_TOKEN_VOLUME: &str = "cloudtaser-aws-token";
const AWS_TOKEN_DIR: &str = "/var/run/secrets/cloudtaser/aws";
/// The lifetime the kubelet is asked for; it refreshes the file at 80% of
/// it, and STS accepts tokens up to 24 h old (the EKS webhook asks 86400).
const AWS_TOKEN_SECONDS: i64 = 86400;
const VAULT_CA_DIR: &str = "/etc/cloudtaser/vault-ca";
/// Mode of the proxy's own projected token volumes. The kubelet uses it only
/// when the pod has no `fsGroup` and its containers do not all share one
/// `runAsUser`; the file is then root-owned, so it must be world-readable
/// for the proxy's UID (docs/OPERATOR.md, "Token files").
const TOKEN_MODE: i32 = 0o644;
/// The UID and GID the proxy runs as unless the config says otherwise
/// (distroless `nonroot`).
pub const PROXY_UID: i64 = 65532;

/// The env variables and volumes the EKS webhooks give workload containers
/// (IRSA and Pod Identity); the sidecar needs the same to assume the role.
pub const ROLE_ENV: &[&str] = &[
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];
const ROLE_VOLUMES: &[&str] = &["aws-iam-token", "eks-pod-identity-token"];

/// How sidecars are added, from the operator's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectOptions {
    pub image: String,
    /// Init container with `restartPolicy: Always` (Kubernetes ≥ 1.29);
    /// otherwise a first regular container whose postStart waits for readiness.
    pub native_sidecar: bool,
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub cpu_limit: Option<String>,
    pub log_level: String,
    /// The chart's `platformAssignsUser` (OpenShift): the proxy gets no
    /// `runAsUser`/`runAsGroup` unless a config names them, so the SCC
    /// assigns one from the namespace's range.
    pub platform_assigns_user: bool,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            image: "ghcr.io/cloudtaser/s3proxy:0.1.0".to_owned(),
            native_sidecar: true,
            cpu_request: "50m".to_owned(),
            memory_request: "32Mi".to_owned(),
            memory_limit: "128Mi".to_owned(),
            cpu_limit: None,
            log_level: "info".to_owned(),
            platform_assigns_user: false,
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Injected {
    pub pod: Pod,
    pub warnings: Vec<String>,
}

/// Why a pod that asked for the proxy cannot get it; the message says what to fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Denial {
    #[error(
        "pod uses hostNetwork: the proxy's port 8190 would be shared with the node; remove hostNetwork or the {ANNOTATION} annotation"
    )]
    HostNetwork,
    #[error("annotation {annotation} has an invalid quantity {value:?}: {reason}")]
    BadQuantity { annotation: &'static str, value: String, reason: String },
    #[error("S3ProxyConfig {config} is invalid: {error}")]
    InvalidConfig { config: String, error: InvalidSpec },
    #[error("{0}")]
    BadOverride(#[from] BadSetting),
    #[error(
        "container {container} carries the proxy's role ({role}) in AWS_ROLE_ARN: with it the workload could write to the bucket without the proxy. Remove the eks.amazonaws.com/role-arn annotation from the pod's service account (the proxy gets its role from credentials.roleArn)"
    )]
    WorkloadHoldsProxyRole { container: String, role: String },
    #[error(
        "container {container} mounts volume {volume}, a service-account token with the proxy's audience {audience}: with it the workload could assume the proxy's role and write plaintext. Only the {SIDECAR} container may hold that token"
    )]
    WorkloadMountsProxyToken { container: String, volume: String, audience: String },
    #[error(
        "pod sets shareProcessNamespace: its other containers could read the proxy's token through /proc and assume the proxy's role; remove shareProcessNamespace or use another credentials.source"
    )]
    SharedProcessNamespace,
    #[error(
        "container {container} reads Secret {secret}, which holds the proxy's storage credentials: with them the workload could write to the bucket without the proxy. Only the {SIDECAR} container may read it"
    )]
    WorkloadReadsProxySecret { container: String, secret: String },
    #[error(
        "container {container} reads the token in volume {volume} only because every container of the pod runs as UID {uid} (the kubelet then gives it that UID at mode 0600); the proxy, configured to run as UID {proxy_uid}, would make it a root-owned 0{mode:o} file the container cannot read. Set the pod's fsGroup, or defaultMode 0644 on that volume, or the S3ProxyConfig's proxy.runAsUser to {uid}"
    )]
    WorkloadTokenWouldBeLost { container: String, volume: String, uid: i64, proxy_uid: i64, mode: i32 },
    #[error(
        "pod has restartPolicy {0}: with classic (non-native) sidecars the proxy keeps running after the workload exits, so the pod would never complete; the operator must run with proxy.nativeSidecar=true (Kubernetes >= 1.29) to proxy Jobs and other run-to-completion pods"
    )]
    ClassicRunToCompletion(String),
    #[error(
        "pod shows signs of both Istio and Linkerd (annotations, labels or containers): the proxy can bypass only one mesh's capture; mesh the pod with one of them"
    )]
    TwoMeshes,
}

/// A proxy setting (chart default, config or annotation) the API server or
/// the proxy would refuse; `source` names where it came from.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{origin}: invalid {what} {value:?}: {reason}")]
pub struct BadSetting {
    pub origin: String,
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.into()), value_from: None }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// A setting: the annotation if present, else the config's, else the chart's.
fn pick<'a>(
    annotations: &'a BTreeMap<String, String>,
    annotation: &'static str,
    from_config: Option<&'a String>,
    default: &'a str,
) -> (String, &'a str) {
    match (annotations.get(annotation), from_config) {
        (Some(v), _) => (format!("annotation {annotation}"), v.as_str()),
        (None, Some(v)) => ("the S3ProxyConfig's proxy settings".to_owned(), v.as_str()),
        (None, None) => ("the operator's default (chart values)".to_owned(), default),
    }
}

/// Parses a quantity as the API server would, and refuses negative ones
/// (`ValidateNonnegativeQuantity` for container resources).
fn quantity(source: String, what: &'static str, value: &str) -> Result<(Quantity, ParsedQuantity), BadSetting> {
    let bad = |reason: String| BadSetting { origin: source.clone(), what, value: value.to_owned(), reason };
    let parsed = ParsedQuantity::parse(value)
        .map_err(|e| bad(format!("{e}; expected a Kubernetes quantity such as 100m, 1E9 or 64Mi")))?;
    if parsed.is_negative() {
        return Err(bad("must be greater than or equal to 0".to_owned()));
    }
    Ok((Quantity(value.to_owned()), parsed))
}

/// The proxy's resources, checked as the API server checks a container's
/// (`ValidateResourceRequirements`: each request at most its limit).
fn resources(
    annotations: &BTreeMap<String, String>,
    options: &InjectOptions,
) -> Result<ResourceRequirements, BadSetting> {
    let q = |annotation, what, default: &str| {
        let (source, value) = pick(annotations, annotation, None, default);
        quantity(source, what, value)
    };
    let cpu_request = q(CPU_REQUEST_ANNOTATION, "CPU request", &options.cpu_request)?;
    let memory_request = q(MEMORY_REQUEST_ANNOTATION, "memory request", &options.memory_request)?;
    let memory_limit = q(MEMORY_LIMIT_ANNOTATION, "memory limit", &options.memory_limit)?;
    let cpu_limit = match annotations.get(CPU_LIMIT_ANNOTATION).or(options.cpu_limit.as_ref()) {
        Some(default) => Some(q(CPU_LIMIT_ANNOTATION, "CPU limit", default)?),
        None => None,
    };
    let check = |what: &'static str, request: &(Quantity, ParsedQuantity), limit: &(Quantity, ParsedQuantity)| {
        if request.1.cmp_value(&limit.1) == std::cmp::Ordering::Greater {
            return Err(BadSetting {
                origin: "the proxy's resources (override annotations and chart defaults)".to_owned(),
                what,
                value: request.0.0.clone(),
                reason: format!(
                    "must be less than or equal to the {} limit {}",
                    what.trim_end_matches(" request"),
                    limit.0.0
                ),
            });
        }
        Ok(())
    };
    check("memory request", &memory_request, &memory_limit)?;
    if let Some(limit) = &cpu_limit {
        check("CPU request", &cpu_request, limit)?;
    }
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_owned(), cpu_request.0);
    requests.insert("memory".to_owned(), memory_request.0);
    let mut limits = BTreeMap::new();
    limits.insert("memory".to_owned(), memory_limit.0);
    if let Some(cpu) = cpu_limit {
        limits.insert("cpu".to_owned(), cpu.0);
    }
    Ok(ResourceRequirements { requests: Some(requests), limits: Some(limits), ..Default::default() })
}

fn log_level(source: String, value: &str) -> Result<String, BadSetting> {
    if LOG_LEVELS.contains(&value) {
        return Ok(value.to_owned());
    }
    Err(BadSetting {
        origin: source,
        what: "log level",
        value: value.to_owned(),
        reason: format!("expected one of {}", LOG_LEVELS.join(", ")),
    })
}

/// Checks an image reference against the grammar of
/// `github.com/distribution/reference` (`reference.go`):
/// `[domain[:port]/]path[:tag][@algorithm:hex]`, path components lowercase.
pub fn image_problem(image: &str) -> Option<&'static str> {
    if image.is_empty() {
        return Some("it is empty");
    }
    if image.trim() != image || image.chars().any(char::is_whitespace) {
        return Some("it has whitespace");
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else { return Some("the digest must be algorithm:hex") };
        let alg_ok = alg.split(['+', '.', '-', '_']).all(|c| {
            c.chars().next().is_some_and(|f| f.is_ascii_alphabetic()) && c.chars().all(|x| x.is_ascii_alphanumeric())
        });
        if !alg_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some("the digest must be algorithm:hex with at least 32 hex digits");
        }
    }
    // A tag follows the last `:` after the last `/` (a `:` before it is a registry port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let ok = tag.len() <= 128
            && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Some("the tag must be 1-128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`");
        }
    }
    if name.is_empty() || name.len() > 255 {
        return Some("the name must be 1-255 characters");
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    if components.len() > 1
        && (first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()))
    {
        let (host, port) = first.split_once(':').unwrap_or((first, ""));
        let host_ok = !host.is_empty()
            && host.split('.').all(|c| {
                !c.is_empty()
                    && c.chars().all(|x| x.is_ascii_alphanumeric() || x == '-')
                    && !c.starts_with('-')
                    && !c.ends_with('-')
            });
        if !host_ok || (first.contains(':') && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))) {
            return Some("the registry must be host[:port]");
        }
        components.remove(0);
    }
    let component_ok = |c: &str| {
        // alpha-numeric (separator alpha-numeric)*, separator = [_.] | __ | -+
        let bytes = c.as_bytes();
        if bytes.is_empty() || !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
            return false;
        }
        if !c.chars().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, '.' | '_' | '-')) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "." || sep == "_" || sep == "__" || sep.chars().all(|x| x == '-')) {
                return false;
            }
        }
        true
    };
    if !components.iter().all(|c| component_ok(c)) {
        return Some("each path component must be lowercase letters and digits, separated by `.`, `_`, `__` or dashes");
    }
    None
}

fn image(source: String, value: &str) -> Result<String, BadSetting> {
    match image_problem(value) {
        None => Ok(value.to_owned()),
        Some(reason) => Err(BadSetting {
            origin: source,
            what: "image",
            value: value.to_owned(),
            reason: format!("{reason}; expected a reference such as ghcr.io/cloudtaser/s3proxy:0.1.0"),
        }),
    }
}

impl InjectOptions {
    /// The operator's own defaults (chart values), checked at start-up so a
    /// bad one stops the operator instead of being blamed on a pod.
    pub fn validate(&self) -> Result<(), BadSetting> {
        let none = BTreeMap::new();
        resources(&none, self)?;
        log_level("the operator's default (chart values)".to_owned(), &self.log_level)?;
        image("the operator's default (chart values)".to_owned(), &self.image)?;
        Ok(())
    }
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(HEALTH_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn hardened() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
        ..Default::default()
    }
}

fn set_env(list: &mut Vec<EnvVar>, var: EnvVar) {
    match list.iter_mut().find(|e| e.name == var.name) {
        Some(existing) => *existing = var,
        None => list.push(var),
    }
}

/// A copy of the pod's projected service-account-token volume `name` (made
/// by the EKS webhooks), as `own`, with the proxy's explicit mode.
fn own_token_volume(spec: &k8s_openapi::api::core::v1::PodSpec, name: &str, own: &str) -> Option<Volume> {
    let source = spec.volumes.iter().flatten().find(|v| v.name == name)?.projected.as_ref()?;
    let tokens: Vec<VolumeProjection> = source
        .sources
        .iter()
        .flatten()
        .filter(|p| p.service_account_token.is_some())
        .map(|p| VolumeProjection { service_account_token: p.service_account_token.clone(), ..Default::default() })
        .collect();
    if tokens.is_empty() {
        return None;
    }
    Some(Volume {
        name: own.to_owned(),
        projected: Some(ProjectedVolumeSource { sources: Some(tokens), default_mode: Some(TOKEN_MODE) }),
        ..Default::default()
    })
}

/// The container and volumes of the proxy for this pod.
fn sidecar(
    pod: &Pod,
    config: &S3ProxyConfigSpec,
    options: &InjectOptions,
    annotations: &BTreeMap<String, String>,
) -> Result<(Container, Vec<Volume>), Denial> {
    let mut vars = vec![
        env(proxy_env::LISTEN, "127.0.0.1:8190"),
        env(proxy_env::HEALTH_LISTEN, format!("0.0.0.0:{HEALTH_PORT}")),
        env(proxy_env::S3_REGION, &config.upstream.region),
        env(proxy_env::TRANSIT_MOUNT, &config.vault.transit.mount),
        env(proxy_env::TRANSIT_KEY, &config.vault.transit.key),
        env(proxy_env::VAULT_ADDR, &config.vault.address),
        env(proxy_env::LOG_FORMAT, "json"),
    ];
    if let Some(endpoint) = &config.upstream.endpoint {
        vars.push(env(proxy_env::S3_ENDPOINT, endpoint.trim_end_matches('/')));
    }
    if let Some(ns) = &config.vault.namespace {
        vars.push(env(proxy_env::VAULT_NAMESPACE, ns));
    }
    let transit = &config.vault.transit;
    for (name, value) in [
        (proxy_env::KEY_RULES, transit.rules_setting()),
        (proxy_env::KMS_KEY_IDS, transit.key_ids_setting()),
        (proxy_env::TRANSIT_READ_KEYS, transit.read_keys_setting()),
    ] {
        if let Some(value) = value {
            vars.push(env(name, value));
        }
    }
    if !config.plaintext_reads.is_empty() {
        vars.push(env(proxy_env::PLAINTEXT_READS, config.plaintext_reads.join(",")));
    }
    if !config.allowed_operations.is_empty() {
        vars.push(env(proxy_env::ALLOWED_OPERATIONS, config.allowed_operations.join(",")));
    }
    if !config.buckets.is_empty() {
        vars.push(env(proxy_env::BUCKETS, config.buckets.join(",")));
    }
    let proxy_spec = config.proxy.clone().unwrap_or_default();
    let (source, value) = pick(annotations, LOG_LEVEL_ANNOTATION, proxy_spec.log_level.as_ref(), &options.log_level);
    vars.push(env(proxy_env::LOG, log_level(source, value)?));

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let auth = &config.vault.auth;
    match auth.method {
        VaultAuthMethod::Token => {
            vars.push(env(proxy_env::VAULT_AUTH_METHOD, "token"));
            if let Some(t) = &auth.token {
                vars.push(secret_env(proxy_env::VAULT_TOKEN, &t.name, &t.key));
            }
        }
        VaultAuthMethod::Kubernetes => {
            vars.push(env(proxy_env::VAULT_AUTH_METHOD, "kubernetes"));
            vars.push(env(proxy_env::VAULT_ROLE, auth.role.clone().unwrap_or_default()));
            vars.push(env(proxy_env::VAULT_K8S_TOKEN_PATH, format!("{VAULT_TOKEN_DIR}/token")));
            if let Some(mount) = &auth.mount {
                vars.push(env(proxy_env::VAULT_AUTH_MOUNT, mount));
            }
            // A token of its own, for Vault only, rotated by the kubelet.
            volumes.push(Volume {
                name: VAULT_TOKEN_VOLUME.to_owned(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(auth.audience.clone().unwrap_or_else(|| "vault".to_owned())),
                            expiration_seconds: Some(3600),
                            path: "token".to_owned(),
                        }),
                        ..Default::default()
                    }]),
                    default_mode: Some(TOKEN_MODE),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: VAULT_TOKEN_VOLUME.to_owned(),
                mount_path: VAULT_TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        VaultAuthMethod::Approle => {
            vars.push(env(proxy_env::VAULT_AUTH_METHOD, "approle"));
            vars.push(env(proxy_env::VAULT_ROLE_ID, auth.role_id.clone().unwrap_or_default()));
            if let Some(s) = &auth.secret_id {
                vars.push(secret_env(proxy_env::VAULT_SECRET_ID, &s.name, &s.key));
            }
            if let Some(mount) = &auth.mount {
                vars.push(env(proxy_env::VAULT_AUTH_MOUNT, mount));
            }
        }
    }
    if let Some(ca) = &config.vault.ca_cert {
        vars.push(env(proxy_env::VAULT_CACERT, format!("{VAULT_CA_DIR}/{}", ca.key)));
        volumes.push(Volume {
            name: VAULT_CA_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource { secret_name: Some(ca.name.clone()), ..Default::default() }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: VAULT_CA_VOLUME.to_owned(),
            mount_path: VAULT_CA_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    // Never the node's role: with IMDS the SDK would fall back to it when
    // the configured identity is missing, and work, for the wrong principal.
    vars.push(env("AWS_EC2_METADATA_DISABLED", "true"));
    match config.credentials.source {
        CredentialsSource::WebIdentity => {
            let audience =
                config.credentials.audience.clone().unwrap_or_else(|| DEFAULT_WEB_IDENTITY_AUDIENCE.to_owned());
            vars.push(env("AWS_ROLE_ARN", config.credentials.role_arn.clone().unwrap_or_default()));
            vars.push(env("AWS_WEB_IDENTITY_TOKEN_FILE", format!("{AWS_TOKEN_DIR}/token")));
            vars.push(env("AWS_ROLE_SESSION_NAME", SIDECAR));
            vars.push(env("AWS_STS_REGIONAL_ENDPOINTS", "regional"));
            vars.push(env("AWS_REGION", &config.upstream.region));
            volumes.push(Volume {
                name: AWS_TOKEN_VOLUME.to_owned(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(audience),
                            expiration_seconds: Some(AWS_TOKEN_SECONDS),
                            path: "token".to_owned(),
                        }),
                        ..Default::default()
                    }]),
                    default_mode: Some(TOKEN_MODE),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: AWS_TOKEN_VOLUME.to_owned(),
                mount_path: AWS_TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        CredentialsSource::Secret => {
            if let Some(s) = &config.credentials.secret_ref {
                vars.push(secret_env("AWS_ACCESS_KEY_ID", &s.name, &s.access_key_id_key));
                vars.push(secret_env("AWS_SECRET_ACCESS_KEY", &s.name, &s.secret_access_key_key));
            }
        }
        CredentialsSource::ServiceAccount => {
            // Whatever the EKS webhook gave the workload, before or after us.
            let spec = pod.spec.as_ref();
            let workloads = spec.map(|s| s.containers.iter().filter(|c| c.name != SIDECAR)).into_iter().flatten();
            for c in workloads {
                for var in c.env.iter().flatten().filter(|e| ROLE_ENV.contains(&e.name.as_str())) {
                    if !vars.iter().any(|v| v.name == var.name) {
                        vars.push(var.clone());
                    }
                }
                for m in c.volume_mounts.iter().flatten().filter(|m| ROLE_VOLUMES.contains(&m.name.as_str())) {
                    let own = format!("cloudtaser-{}", m.name);
                    if mounts.iter().any(|x| x.name == m.name || x.name == own) {
                        continue;
                    }
                    // The same token, in a volume of the proxy's own with an
                    // explicit mode: the workload's volume may have a mode
                    // the proxy's UID cannot read.
                    match spec.and_then(|s| own_token_volume(s, &m.name, &own)) {
                        Some(volume) => {
                            volumes.push(volume);
                            mounts.push(VolumeMount {
                                name: own,
                                mount_path: m.mount_path.clone(),
                                read_only: Some(true),
                                ..Default::default()
                            });
                        }
                        None => mounts.push(m.clone()),
                    }
                }
            }
        }
    }

    let (source, value) = pick(annotations, IMAGE_ANNOTATION, proxy_spec.image.as_ref(), &options.image);
    let image = image(source, value)?;
    let resources = resources(annotations, options)?;
    if let Some(limit) = resources.limits.as_ref().and_then(|l| l.get("memory"))
        && let Ok(parsed) = ParsedQuantity::parse(&limit.0)
    {
        let bytes = u64::try_from(parsed.milli_value() / 1000).unwrap_or(u64::MAX);
        vars.push(env(proxy_env::MAX_CONNECTIONS, max_connections_for(bytes).to_string()));
    }
    let mut security = hardened();
    let platform_assigns =
        proxy_spec.platform_assigns_user || (options.platform_assigns_user && proxy_spec.run_as_user.is_none());
    if platform_assigns {
        // OpenShift's restricted SCC assigns a UID from the namespace's range.
        security.run_as_user = None;
        security.run_as_group = None;
    } else {
        security.run_as_user = Some(proxy_spec.run_as_user.unwrap_or(PROXY_UID));
        security.run_as_group = Some(proxy_spec.run_as_group.unwrap_or(PROXY_UID));
    }

    let mut container = Container {
        name: SIDECAR.to_owned(),
        image: Some(image),
        args: Some(vec!["serve".to_owned()]),
        env: Some(vars),
        ports: Some(vec![ContainerPort {
            name: Some("ct-health".to_owned()),
            container_port: HEALTH_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        resources: Some(resources),
        security_context: Some(security),
        startup_probe: Some(probe("/readyz", 1, 120)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Default::default()
    };
    if options.native_sidecar {
        container.restart_policy = Some("Always".to_owned());
    } else {
        // The kubelet starts the next container only once postStart returns.
        // On shutdown every container gets SIGTERM at once, each after its
        // own preStop: the proxy's waits until no request has been in
        // flight for a while, so the application's last uploads finish
        // (`wait-idle`; Linkerd's `proxy-wait-before-exit-seconds` is a
        // fixed sleep). Native sidecars are stopped after the application.
        container.lifecycle = Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["/cloudtaser-s3proxy".to_owned(), "wait-ready".to_owned()]),
                }),
                ..Default::default()
            }),
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["/cloudtaser-s3proxy".to_owned(), "wait-idle".to_owned()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Ok((container, volumes))
}

/// The proxy's base footprint and the most one connection adds, measured
/// (docs/OPERATIONS.md, "Memory"): a single 1 GiB stream peaks at 30-35 MiB
/// RSS, and 64 concurrent 1 GiB GETs at 85 MiB, about 0.8 MiB each (256 KiB
/// buffered each way, plus the cipher's segment buffers).
const PROXY_BASE_BYTES: u64 = 48 << 20;
const BYTES_PER_CONNECTION: u64 = 1 << 20;

/// How many connections the proxy may hold at once within `memory_limit`,
/// so that a client opening hundreds of parallel transfers queues in the
/// kernel instead of getting the sidecar OOM-killed (which fails every
/// transfer of the pod): 80 for the default 128 Mi, never below 16 or
/// above the proxy's own default of 1024.
pub fn max_connections_for(memory_limit: u64) -> u64 {
    (memory_limit.saturating_sub(PROXY_BASE_BYTES) / BYTES_PER_CONNECTION).clamp(16, 1024)
}

/// The image of the proxy container in an injected pod spec.
fn container_image(spec: &k8s_openapi::api::core::v1::PodSpec) -> String {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == SIDECAR)
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// With `webIdentity`, the proxy's role and token are the proxy's alone: a
/// workload container that carries the role ARN (the EKS webhook put it
/// there from an annotated service account) or mounts a token with the
/// proxy's audience could reach the bucket without the proxy.
fn only_the_proxy_holds_its_identity(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    config: &S3ProxyConfigSpec,
) -> Result<(), Denial> {
    if spec.share_process_namespace == Some(true) {
        return Err(Denial::SharedProcessNamespace);
    }
    let role = config.credentials.role_arn.clone().unwrap_or_default();
    let audience = config.credentials.audience.clone().unwrap_or_else(|| DEFAULT_WEB_IDENTITY_AUDIENCE.to_owned());
    let proxy_token_volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.name == AWS_TOKEN_VOLUME
                || v.projected.iter().flat_map(|p| p.sources.iter().flatten()).any(|source| {
                    source.service_account_token.as_ref().is_some_and(|t| t.audience.as_deref() == Some(&audience))
                })
        })
        .map(|v| v.name.as_str())
        .collect();
    let workloads = spec.init_containers.iter().flatten().chain(&spec.containers).filter(|c| c.name != SIDECAR);
    for c in workloads {
        if c.env.iter().flatten().any(|e| e.name == "AWS_ROLE_ARN" && e.value.as_deref() == Some(&role)) {
            return Err(Denial::WorkloadHoldsProxyRole { container: c.name.clone(), role });
        }
        if let Some(m) = c.volume_mounts.iter().flatten().find(|m| proxy_token_volumes.contains(&m.name.as_str())) {
            return Err(Denial::WorkloadMountsProxyToken {
                container: c.name.clone(),
                volume: m.name.clone(),
                audience,
            });
        }
    }
    Ok(())
}

/// With `secret`, the keys are the proxy's alone: a workload container that
/// reads the same Secret (env, envFrom, or a mounted volume) could reach
/// the bucket without the proxy. Pod RBAC cannot stop it: whoever may create
/// pods in the namespace may mount its Secrets.
fn only_the_proxy_reads_its_secret(spec: &k8s_openapi::api::core::v1::PodSpec, secret: &str) -> Result<(), Denial> {
    let named = |n: Option<&String>| n.is_some_and(|n| n == secret);
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            named(v.secret.as_ref().and_then(|s| s.secret_name.as_ref()))
                || v.projected
                    .iter()
                    .flat_map(|p| p.sources.iter().flatten())
                    .any(|s| s.secret.as_ref().is_some_and(|s| s.name == secret))
        })
        .map(|v| v.name.as_str())
        .collect();
    let workloads = spec.init_containers.iter().flatten().chain(&spec.containers).filter(|c| c.name != SIDECAR);
    for c in workloads {
        let by_env =
            c.env.iter().flatten().any(|e| {
                e.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()).is_some_and(|r| r.name == secret)
            });
        let by_env_from = c.env_from.iter().flatten().any(|f| f.secret_ref.as_ref().is_some_and(|r| r.name == secret));
        let by_mount = c.volume_mounts.iter().flatten().any(|m| volumes.contains(&m.name.as_str()));
        if by_env || by_env_from || by_mount {
            return Err(Denial::WorkloadReadsProxySecret { container: c.name.clone(), secret: secret.to_owned() });
        }
    }
    Ok(())
}

/// A workload container holding a token with the audience the proxy's
/// Vault login uses (Kubernetes auth), if any.
fn workload_with_vault_token(spec: &k8s_openapi::api::core::v1::PodSpec, config: &S3ProxyConfigSpec) -> Option<String> {
    let auth = &config.vault.auth;
    if auth.method != VaultAuthMethod::Kubernetes {
        return None;
    }
    let audience = auth.audience.clone().unwrap_or_else(|| "vault".to_owned());
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name != VAULT_TOKEN_VOLUME)
        .filter(|v| {
            v.projected.iter().flat_map(|p| p.sources.iter().flatten()).any(|s| {
                s.service_account_token.as_ref().is_some_and(|t| t.audience.as_deref() == Some(audience.as_str()))
            })
        })
        .map(|v| v.name.as_str())
        .collect();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| c.name != SIDECAR)
        .find(|c| c.volume_mounts.iter().flatten().any(|m| volumes.contains(&m.name.as_str())))
        .map(|c| c.name.clone())
}

/// The effective `runAsUser` of a container (its own, else the pod's).
fn run_as_user(spec: &k8s_openapi::api::core::v1::PodSpec, c: &Container) -> Option<i64> {
    c.security_context.as_ref().and_then(|s| s.run_as_user).or_else(|| spec.security_context.as_ref()?.run_as_user)
}

/// The kubelet's rule for projected service-account tokens
/// (`FsUserFrom`, `pkg/volume/util/util.go`; `collectData`,
/// `pkg/volume/projected/projected.go`; docs/OPERATOR.md, "Token files"):
/// when every container runs as one UID and the pod has no `fsGroup`, each
/// token file is that UID's at 0600, whatever the volume's `defaultMode`;
/// otherwise it is root's at `defaultMode`. Adding the proxy with another
/// UID would turn the first case into the second, and a workload whose
/// token volume has a `defaultMode` without read for others would lose its
/// own token. Returns the UID the proxy must run as to keep it, if any.
fn uid_that_keeps_workload_tokens(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    config: &S3ProxyConfigSpec,
    options: &InjectOptions,
) -> Result<Option<i64>, Denial> {
    if spec.security_context.as_ref().and_then(|s| s.fs_group).is_some() {
        return Ok(None);
    }
    let workloads: Vec<&Container> =
        spec.init_containers.iter().flatten().chain(&spec.containers).filter(|c| c.name != SIDECAR).collect();
    let mut uids = workloads.iter().map(|c| run_as_user(spec, c));
    let Some(Some(uid)) = uids.next() else { return Ok(None) };
    // Root reads any file; and FsUser is nil unless all agree.
    if uid == 0 || !uids.all(|u| u == Some(uid)) {
        return Ok(None);
    }
    let proxy = config.proxy.clone().unwrap_or_default();
    let proxy_uid = proxy.run_as_user.unwrap_or(PROXY_UID);
    let platform_assigns =
        proxy.platform_assigns_user || (options.platform_assigns_user && proxy.run_as_user.is_none());
    if platform_assigns || proxy_uid == uid {
        return Ok(None);
    }
    for c in workloads {
        for m in c.volume_mounts.iter().flatten() {
            let Some(projected) =
                spec.volumes.iter().flatten().find(|v| v.name == m.name).and_then(|v| v.projected.as_ref())
            else {
                continue;
            };
            let has_token = projected.sources.iter().flatten().any(|s| s.service_account_token.is_some());
            let mode = projected.default_mode.unwrap_or(0o644);
            if !has_token || mode & 0o004 != 0 {
                continue;
            }
            if proxy.run_as_user.is_some() {
                return Err(Denial::WorkloadTokenWouldBeLost {
                    container: c.name.clone(),
                    volume: m.name.clone(),
                    uid,
                    proxy_uid,
                    mode,
                });
            }
            return Ok(Some(uid));
        }
    }
    Ok(None)
}

/// For a pod in an Istio or Linkerd sidecar mesh: the proxy runs as the
/// mesh's bypass UID (its egress to Vault and the provider skips capture,
/// so it works before the mesh proxy runs) and its health port is excluded
/// from inbound capture. Returns whether the pod is meshed.
fn mesh_adjust(pod: &mut Pod, container: &mut Container, warnings: &mut Vec<String>) -> Result<bool, Denial> {
    let (kind, uid) = match mesh::detect(pod) {
        Mesh::None => return Ok(false),
        Mesh::Both => return Err(Denial::TwoMeshes),
        Mesh::Sidecar { kind, uid } => (kind, uid),
    };
    mesh::exclude_inbound(pod, kind, HEALTH_PORT);
    let security = container.security_context.get_or_insert_with(Default::default);
    if security.run_as_user.is_none() {
        // The platform assigns the UID (OpenShift): it cannot be the mesh's.
        warnings.push(format!(
            "pod is in the {} mesh but the proxy's UID is assigned by the platform, so its connections to Vault and the storage provider are captured by the mesh and fail until the mesh proxy is ready; set proxy.runAsUser in the S3ProxyConfig to the mesh proxy's UID",
            kind.name()
        ));
    } else {
        security.run_as_user = Some(uid);
        security.run_as_group = Some(uid);
    }
    Ok(true)
}

/// Puts the proxy container in the pod: on reinvocation only the
/// operator's own fields are set on the one already there (see `reinvoke`);
/// either way it goes where `mesh` says, so the result does not depend on
/// the order the webhooks ran in.
fn place(spec: &mut k8s_openapi::api::core::v1::PodSpec, container: Container, native: bool) {
    let existing = spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == SIDECAR).cloned();
    let container = match existing {
        Some(existing) => merge_own(&existing, container),
        None => container,
    };
    spec.containers.retain(|c| c.name != SIDECAR);
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    inits.retain(|c| c.name != SIDECAR);
    if native {
        let at = mesh::native_index(inits);
        inits.insert(at, container);
    } else {
        let at = mesh::classic_index(&spec.containers);
        spec.containers.insert(at, container);
    }
    if spec.init_containers.as_ref().is_some_and(Vec::is_empty) {
        spec.init_containers = None;
    }
}

/// Injects (or re-applies, idempotently) the proxy into `pod`.
pub fn inject(
    pod: &Pod,
    config_name: &str,
    config: &S3ProxyConfigSpec,
    options: &InjectOptions,
) -> Result<Injected, Denial> {
    let mut pod = pod.clone();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let spec = pod.spec.get_or_insert_with(Default::default);
    if spec.host_network == Some(true) {
        return Err(Denial::HostNetwork);
    }
    config.validate().map_err(|error| Denial::InvalidConfig { config: config_name.to_owned(), error })?;
    let restart_policy = spec.restart_policy.clone().unwrap_or_else(|| "Always".to_owned());
    if !options.native_sidecar && restart_policy != "Always" {
        return Err(Denial::ClassicRunToCompletion(restart_policy));
    }
    if config.credentials.source == CredentialsSource::WebIdentity {
        only_the_proxy_holds_its_identity(spec, config)?;
    }
    if let Some(secret) = config.credentials.secret_ref.as_ref().map(|s| s.name.as_str()) {
        only_the_proxy_reads_its_secret(spec, secret)?;
    }
    let keep_uid = uid_that_keeps_workload_tokens(spec, config, options)?;
    let (mut container, volumes) =
        sidecar(&Pod { spec: Some(spec.clone()), ..Default::default() }, config, options, &annotations)?;
    let mut warnings = Vec::new();
    if let Some(uid) = keep_uid
        && let Some(sc) = container.security_context.as_mut()
    {
        sc.run_as_user = Some(uid);
    }
    if let Some(container) = workload_with_vault_token(spec, config) {
        warnings.push(format!(
            "container {container} mounts a service-account token with the audience the proxy logs in to Vault with: Vault's Kubernetes auth binds the proxy's role to the service account, so this container can log in as the proxy and use its Transit keys (never to write plaintext, but to decrypt what the proxy can); give the proxy's pods a service account of their own, or the role an audience no other container uses"
        ));
    }
    if config.credentials.source == CredentialsSource::ServiceAccount {
        warnings.push(format!(
            "S3ProxyConfig {config_name} uses credentials.source serviceAccount: every container of this pod holds the proxy's cloud role, so a client that ignores {ENDPOINT_ENV} can write plaintext to the bucket; use credentials.source webIdentity (docs/OPERATOR.md)"
        ));
    }

    let meshed = mesh_adjust(&mut pod, &mut container, &mut warnings)?;
    // The mesh's bypass UID wins (the proxy cannot reach Vault otherwise),
    // so say which of the two the proxy ended up with.
    if let Some(uid) = keep_uid {
        let now = container.security_context.as_ref().and_then(|s| s.run_as_user);
        if now == Some(uid) {
            warnings.push(format!(
                "the proxy runs as UID {uid}, the UID every container of this pod runs as: with another UID the kubelet would make the pod's service-account token files root-owned at their defaultMode, which the containers cannot read (set fsGroup, or defaultMode 0644, to let the proxy keep its own UID)"
            ));
        } else {
            warnings.push(format!(
                "the proxy runs as the mesh's UID {}, not UID {uid} which every other container of this pod runs as: once the pod runs, the kubelet makes its service-account token files root-owned at their defaultMode, which the containers cannot read unless the mesh's own proxy already made the UIDs differ; set the pod's fsGroup, or defaultMode 0644 on those volumes",
                now.unwrap_or_default()
            ));
        }
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    place(spec, container, options.native_sidecar);
    let pod_volumes = spec.volumes.get_or_insert_with(Vec::new);
    for v in volumes {
        match pod_volumes.iter_mut().find(|x| x.name == v.name) {
            Some(existing) => *existing = v,
            None => pod_volumes.push(v),
        }
    }
    if pod_volumes.is_empty() {
        spec.volumes = None;
    }

    // Every workload container talks to the proxy. In classic mode the
    // proxy starts after every init container has finished, so theirs are
    // left alone.
    let image = container_image(spec);
    let inits: Vec<&mut Container> = if options.native_sidecar {
        // Those after the proxy (mesh containers may come before it).
        spec.init_containers.iter_mut().flatten().skip_while(|c| c.name != SIDECAR).skip(1).collect()
    } else {
        for c in spec.init_containers.iter().flatten().filter(|c| !(meshed && mesh::is_mesh_container(&c.name))) {
            warnings.push(format!(
                "init container {}: runs before the CloudTaser proxy starts (classic sidecar mode), so its {ENDPOINT_ENV} is left as it is and any S3 traffic it sends is not encrypted by the proxy",
                c.name
            ));
        }
        Vec::new()
    };
    // The meshes' own containers are not workloads.
    let workload = |c: &&mut Container| c.name != SIDECAR && !(meshed && mesh::is_mesh_container(&c.name));
    for c in spec.containers.iter_mut().chain(inits).filter(workload) {
        let list = c.env.get_or_insert_with(Vec::new);
        if let Some(existing) = list.iter().find(|e| e.name == ENDPOINT_ENV)
            && existing.value.as_deref() != Some(ENDPOINT)
        {
            let was = existing.value.clone().unwrap_or_else(|| "a valueFrom reference".to_owned());
            warnings.push(format!(
                    "container {}: {ENDPOINT_ENV} was {was}; replaced with {ENDPOINT} so S3 traffic goes through the CloudTaser proxy",
                    c.name
                ));
        }
        set_env(list, env(ENDPOINT_ENV, ENDPOINT));
    }

    // Virtual-hosted SDKs resolve <bucket>.localhost to the proxy.
    if !config.virtual_hosted_buckets.is_empty() {
        let aliases = spec.host_aliases.get_or_insert_with(Vec::new);
        let wanted: Vec<String> = config.virtual_hosted_buckets.iter().map(|b| format!("{b}.localhost")).collect();
        match aliases.iter_mut().find(|a| a.ip == "127.0.0.1") {
            Some(alias) => {
                let names = alias.hostnames.get_or_insert_with(Vec::new);
                for w in wanted {
                    if !names.contains(&w) {
                        names.push(w);
                    }
                }
            }
            None => aliases.push(HostAlias { ip: "127.0.0.1".to_owned(), hostnames: Some(wanted) }),
        }
    }

    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(STATUS_ANNOTATION.to_owned(), format!("injected;config={config_name}"));
    annotations.insert(INJECTED_IMAGE_ANNOTATION.to_owned(), image);
    pod.metadata.labels.get_or_insert_with(Default::default).insert(INJECTED_LABEL.to_owned(), "true".to_owned());
    Ok(Injected { pod, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_chart_defaults_are_reported_at_start() {
        assert_eq!(InjectOptions::default().validate(), Ok(()));
        let bad = |o: InjectOptions| o.validate().unwrap_err().to_string();
        let e = bad(InjectOptions { memory_request: "256Mi".into(), ..Default::default() });
        assert!(e.starts_with("the proxy's resources") && e.contains("memory limit 128Mi"), "{e}");
        let e = bad(InjectOptions { cpu_limit: Some("10m".into()), ..Default::default() });
        assert!(e.contains("CPU request \"50m\": must be less than or equal to the CPU limit 10m"), "{e}");
        let e = bad(InjectOptions { log_level: "verbose".into(), ..Default::default() });
        assert!(e.starts_with("the operator's default (chart values): invalid log level"), "{e}");
        assert!(bad(InjectOptions { image: "".into(), ..Default::default() }).contains("invalid image"));
        assert!(
            bad(InjectOptions { memory_limit: "1KB".into(), ..Default::default() }).contains("invalid memory limit")
        );
    }

    #[test]
    fn connections_follow_the_memory_limit() {
        assert_eq!(max_connections_for(128 << 20), 80);
        assert_eq!(max_connections_for(256 << 20), 208);
        assert_eq!(max_connections_for(32 << 20), 16, "a floor, so a small limit still serves");
        assert_eq!(max_connections_for(8 << 30), 1024, "the proxy's own default is the ceiling");
    }

    #[test]
    fn image_references() {
        for good in [
            "ghcr.io/cloudtaser/s3proxy:0.1.0",
            "s3proxy",
            "library/s3proxy:latest",
            "localhost:5000/s3proxy",
            "registry.example:5000/a/b-c/d__e.f:v1.2_3",
            "Registry.Example/team/proxy",
            "ghcr.io/cloudtaser/s3proxy@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(image_problem(good), None, "{good}");
        }
        for bad in [
            "",
            " s3proxy",
            "s3proxy ",
            "S3Proxy",
            "ghcr.io/Cloudtaser/s3proxy",
            "s3proxy:",
            "s3proxy:.x",
            "s3proxy:a!",
            "a//b",
            "-a/b",
            "a-/b",
            "a..b",
            "s3proxy@sha256:abc",
            "s3proxy@sha256",
            "host:port/a",
        ] {
            assert!(image_problem(bad).is_some(), "{bad:?} accepted");
        }
    }
}

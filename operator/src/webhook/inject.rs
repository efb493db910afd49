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

use crate::crd::{CredentialsSource, InvalidSpec, S3ProxyConfigSpec, VaultAuthMethod};

pub const ANNOTATION: &str = "cloudtaser.io/s3-proxy";
pub const STATUS_ANNOTATION: &str = "cloudtaser.io/s3-proxy-status";
pub const IMAGE_ANNOTATION: &str = "cloudtaser.io/s3-proxy-image";
pub const LOG_LEVEL_ANNOTATION: &str = "cloudtaser.io/s3-proxy-log-level";
pub const CPU_REQUEST_ANNOTATION: &str = "cloudtaser.io/s3-proxy-cpu-request";
pub const MEMORY_REQUEST_ANNOTATION: &str = "cloudtaser.io/s3-proxy-memory-request";
pub const CPU_LIMIT_ANNOTATION: &str = "cloudtaser.io/s3-proxy-cpu-limit";
pub const MEMORY_LIMIT_ANNOTATION: &str = "cloudtaser.io/s3-proxy-memory-limit";

pub const SIDECAR: &str = "cloudtaser-s3proxy";
pub const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL_S3";
pub const ENDPOINT: &str = "http://localhost:8190";
const HEALTH_PORT: i32 = 8191;
const VAULT_TOKEN_VOLUME: &str = "cloudtaser-vault-token";
const VAULT_TOKEN_DIR: &str = "/var/run/secrets/cloudtaser/vault";
const VAULT_CA_VOLUME: &str = "cloudtaser-vault-ca";
const VAULT_CA_DIR: &str = "/etc/cloudtaser/vault-ca";

/// The env variables and volumes the EKS webhooks give workload containers
/// (IRSA and Pod Identity); the sidecar needs the same to assume the role.
const ROLE_ENV: &[&str] = &[
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

fn quantity(annotations: &BTreeMap<String, String>, name: &'static str, default: &str) -> Result<Quantity, Denial> {
    let value = annotations.get(name).map_or(default, String::as_str);
    let ok = !value.is_empty()
        && value.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse::<f64>().is_ok_and(|v| v >= 0.0)
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"]
            .contains(&value.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.'));
    if !ok {
        return Err(Denial::BadQuantity {
            annotation: name,
            value: value.to_owned(),
            reason: "expected a Kubernetes quantity such as 100m or 64Mi".to_owned(),
        });
    }
    Ok(Quantity(value.to_owned()))
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
        run_as_user: Some(65532),
        run_as_group: Some(65532),
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

/// The container and volumes of the proxy for this pod.
fn sidecar(
    pod: &Pod,
    config_name: &str,
    config: &S3ProxyConfigSpec,
    options: &InjectOptions,
    annotations: &BTreeMap<String, String>,
) -> Result<(Container, Vec<Volume>), Denial> {
    let mut vars = vec![
        env("CLOUDTASER_S3PROXY_LISTEN", "127.0.0.1:8190"),
        env("CLOUDTASER_S3PROXY_HEALTH_LISTEN", format!("0.0.0.0:{HEALTH_PORT}")),
        env("CLOUDTASER_S3PROXY_S3_REGION", &config.upstream.region),
        env("CLOUDTASER_S3PROXY_TRANSIT_MOUNT", &config.vault.transit.mount),
        env("CLOUDTASER_S3PROXY_TRANSIT_KEY", &config.vault.transit.key),
        env("VAULT_ADDR", &config.vault.address),
        env("CLOUDTASER_S3PROXY_LOG_FORMAT", "json"),
    ];
    if let Some(endpoint) = &config.upstream.endpoint {
        vars.push(env("CLOUDTASER_S3PROXY_S3_ENDPOINT", endpoint.trim_end_matches('/')));
    }
    if let Some(ns) = &config.vault.namespace {
        vars.push(env("VAULT_NAMESPACE", ns));
    }
    if !config.plaintext_reads.is_empty() {
        vars.push(env("CLOUDTASER_S3PROXY_PLAINTEXT_READS", config.plaintext_reads.join(",")));
    }
    if !config.allowed_operations.is_empty() {
        vars.push(env("CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS", config.allowed_operations.join(",")));
    }
    if !config.buckets.is_empty() {
        vars.push(env("CLOUDTASER_S3PROXY_BUCKETS", config.buckets.join(",")));
    }
    let log_level = annotations
        .get(LOG_LEVEL_ANNOTATION)
        .or(config.proxy.as_ref().and_then(|p| p.log_level.as_ref()))
        .unwrap_or(&options.log_level);
    vars.push(env("CLOUDTASER_S3PROXY_LOG", log_level));

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let auth = &config.vault.auth;
    match auth.method {
        VaultAuthMethod::Token => {
            vars.push(env("VAULT_AUTH_METHOD", "token"));
            if let Some(t) = &auth.token {
                vars.push(secret_env("VAULT_TOKEN", &t.name, &t.key));
            }
        }
        VaultAuthMethod::Kubernetes => {
            vars.push(env("VAULT_AUTH_METHOD", "kubernetes"));
            vars.push(env("VAULT_ROLE", auth.role.clone().unwrap_or_default()));
            vars.push(env("VAULT_K8S_TOKEN_PATH", format!("{VAULT_TOKEN_DIR}/token")));
            if let Some(mount) = &auth.mount {
                vars.push(env("VAULT_AUTH_MOUNT", mount));
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
                    default_mode: Some(0o440),
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
            vars.push(env("VAULT_AUTH_METHOD", "approle"));
            vars.push(env("VAULT_ROLE_ID", auth.role_id.clone().unwrap_or_default()));
            if let Some(s) = &auth.secret_id {
                vars.push(secret_env("VAULT_SECRET_ID", &s.name, &s.key));
            }
            if let Some(mount) = &auth.mount {
                vars.push(env("VAULT_AUTH_MOUNT", mount));
            }
        }
    }
    if let Some(ca) = &config.vault.ca_cert {
        vars.push(env("VAULT_CACERT", format!("{VAULT_CA_DIR}/{}", ca.key)));
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
    match config.credentials.source {
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
                    if !mounts.iter().any(|x| x.name == m.name) {
                        mounts.push(m.clone());
                    }
                }
            }
        }
    }

    let image = annotations
        .get(IMAGE_ANNOTATION)
        .or(config.proxy.as_ref().and_then(|p| p.image.as_ref()))
        .unwrap_or(&options.image)
        .clone();
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_owned(), quantity(annotations, CPU_REQUEST_ANNOTATION, &options.cpu_request)?);
    requests.insert("memory".to_owned(), quantity(annotations, MEMORY_REQUEST_ANNOTATION, &options.memory_request)?);
    let mut limits = BTreeMap::new();
    limits.insert("memory".to_owned(), quantity(annotations, MEMORY_LIMIT_ANNOTATION, &options.memory_limit)?);
    if let Some(cpu) = annotations.get(CPU_LIMIT_ANNOTATION).or(options.cpu_limit.as_ref()) {
        limits.insert("cpu".to_owned(), quantity(annotations, CPU_LIMIT_ANNOTATION, cpu)?);
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
        resources: Some(ResourceRequirements { requests: Some(requests), limits: Some(limits), ..Default::default() }),
        security_context: Some(hardened()),
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
        container.lifecycle = Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["/cloudtaser-s3proxy".to_owned(), "wait-ready".to_owned()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let _ = config_name;
    Ok((container, volumes))
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
    let (container, volumes) =
        sidecar(&Pod { spec: Some(spec.clone()), ..Default::default() }, config_name, config, options, &annotations)?;
    let mut warnings = Vec::new();

    // The sidecar: replaced in place on reinvocation, otherwise added first.
    spec.containers.retain(|c| c.name != SIDECAR || !options.native_sidecar);
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    if options.native_sidecar {
        match inits.iter_mut().find(|c| c.name == SIDECAR) {
            Some(existing) => *existing = container,
            None => inits.insert(0, container),
        }
    } else {
        inits.retain(|c| c.name != SIDECAR);
        match spec.containers.iter_mut().find(|c| c.name == SIDECAR) {
            Some(existing) => *existing = container,
            None => spec.containers.insert(0, container),
        }
    }
    if spec.init_containers.as_ref().is_some_and(Vec::is_empty) {
        spec.init_containers = None;
    }
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

    // Every workload container talks to the proxy.
    let sidecar_first_init = options.native_sidecar;
    let all = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten().skip(usize::from(sidecar_first_init)));
    for c in all.filter(|c| c.name != SIDECAR) {
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

    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(STATUS_ANNOTATION.to_owned(), format!("injected;config={config_name}"));
    Ok(Injected { pod, warnings })
}

//! `cloudtaser-operator check`: the cluster-side counterpart of
//! `cloudtaser-s3proxy doctor`, modelled on `linkerd check`. It reads the
//! cluster with the caller's kubeconfig (or in-cluster credentials) and
//! prints one line per check, with the fix for what is not right, in order:
//! the API answers; the CRD serves this binary's version; the webhook
//! configuration calls the operator's Service, fails closed and trusts the
//! serving certificate; that certificate's expiry; the operator's
//! Deployment is available; each `S3ProxyConfig`'s conditions; annotated pods
//! without the proxy or on a stale proxy image; native sidecar support.
//!
//! It writes nothing: every request is a read, except the native-sidecar
//! probe, a server-side dry run that is never stored (`capabilities.rs`).
//! It prints no Secret content: only the serving certificate's validity and
//! names are read from the TLS Secret, never its key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::capabilities::{api_keeps_native_sidecars, kubelets_without_native_sidecars};
use crate::config_ref::ConfigRef;
use crate::controller::proxy_image;
use crate::crd::S3ProxyConfig;
use crate::tls::self_managed::validity;
use crate::webhook::admission::NAMESPACE_LABEL;
use crate::webhook::inject::{ANNOTATION, IMAGE_ANNOTATION};

/// The operator's own `--proxy-image` default: what it injects when the
/// Deployment sets no `CLOUDTASER_PROXY_IMAGE`.
pub const OPERATOR_DEFAULT_PROXY_IMAGE: &str = "ghcr.io/cloudtaser/s3proxy:0.1.0";

/// The operator container in the chart's Deployment.
const OPERATOR_CONTAINER: &str = "operator";

/// Warn when the serving certificate has less than this left...
const EXPIRY_WARNING: i64 = 30 * 86_400;

/// Pods named in a line before the rest is only counted.
const MAX_LISTED: usize = 20;

/// Page size of the pod, config and node lists: a large cluster is read in
/// pages, not in one response the API server must build in memory.
const PAGE: u32 = 500;

/// The chart's `cloudtaser.fullname` for a release: the name of the
/// Deployment, Service, ServiceAccount and MutatingWebhookConfiguration
/// (`_helpers.tpl`: `.Release.Name | trunc 40 | trimSuffix "-"`).
pub fn chart_fullname(release: &str) -> String {
    let truncated: String = release.chars().take(40).collect();
    format!("{}-cloudtaser-operator", truncated.strip_suffix('-').unwrap_or(&truncated))
}

/// Where the operator is, and what it should look like.
#[derive(Debug, Clone)]
pub struct Target {
    /// The operator's (the release's) namespace.
    pub namespace: String,
    pub deployment: String,
    pub service: String,
    pub webhook_config: String,
    pub tls_secret: String,
    /// The configured proxy image; `None`: read it from the Deployment.
    pub proxy_image: Option<String>,
    /// Limit the config and pod checks to one namespace; `None`: all.
    pub workload_namespace: Option<String>,
    /// Unix seconds the certificate checks are made at.
    pub now: i64,
}

impl Target {
    /// The names the chart gives a release's objects.
    pub fn for_release(release: &str, namespace: &str) -> Self {
        let fullname = chart_fullname(release);
        Self {
            namespace: namespace.to_owned(),
            deployment: fullname.clone(),
            service: fullname.clone(),
            webhook_config: fullname.clone(),
            tls_secret: format!("{fullname}-tls"),
            proxy_image: None,
            workload_namespace: None,
            now: k8s_openapi::jiff::Timestamp::now().as_second(),
        }
    }
}

/// What a check concluded. Only `Fail` makes the command exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but deserves a look (a certificate close to expiry).
    Warn,
    Fail,
}

/// One line of the report; `--output json` prints these as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub message: String,
    /// What to do about it; set for `Warn` and `Fail`.
    pub fix: Option<String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn ok(&mut self, check: impl Into<String>, message: impl Into<String>) {
        self.checks.push(Check { check: check.into(), status: Status::Ok, message: message.into(), fix: None });
    }

    pub fn warn(&mut self, check: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check {
            check: check.into(),
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        });
    }

    pub fn fail(&mut self, check: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check {
            check: check.into(),
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        });
    }

    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The process exit status: 1 when any check failed.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed())
    }

    /// The line of a check, by its name.
    pub fn get(&self, check: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.check == check)
    }

    /// An array of `{check, status, message, fix}`.
    pub fn to_json(&self) -> String {
        let mut out = serde_json::to_string_pretty(&self.checks).expect("checks serialise");
        out.push('\n');
        out
    }

    /// One line a check, the fix indented below it, then a summary.
    pub fn to_human(&self) -> String {
        let mut out = String::from("cloudtaser-operator check\n-------------------------\n");
        for c in &self.checks {
            let label = match c.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!("{label:<4}  {}: {}\n", c.check, c.message));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("      fix: {fix}\n"));
            }
        }
        let failed = self.checks.iter().filter(|c| c.status == Status::Fail).count();
        out.push_str(&match failed {
            0 => "\nStatus check results are ok\n".to_owned(),
            n => format!("\n{n} check(s) failed\n"),
        });
        out
    }
}

/// Why the caBundle does not verify the serving certificate.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the caBundle holds no PEM certificate")]
    EmptyBundle,
    #[error("the Secret's tls.crt holds no PEM certificate")]
    EmptyChain,
    #[error("unreadable PEM: {0}")]
    Pem(std::io::Error),
    #[error("{0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("{0} is not a DNS name")]
    Name(String),
}

/// Verifies `chain_pem` (the serving certificate, then intermediates) for
/// `host` against the CAs in `bundle_pem`, as kube-apiserver does when it
/// calls the webhook, at `at` (Unix seconds).
pub fn verify_bundle(bundle_pem: &[u8], chain_pem: &[u8], host: &str, at: i64) -> Result<(), BundleError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &bundle_pem[..]) {
        roots.add(cert.map_err(BundleError::Pem)?)?;
    }
    if roots.is_empty() {
        return Err(BundleError::EmptyBundle);
    }
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &chain_pem[..]).collect::<Result<_, _>>().map_err(BundleError::Pem)?;
    let (leaf, intermediates) = chain.split_first().ok_or(BundleError::EmptyChain)?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()?;
    let name = ServerName::try_from(host.to_owned()).map_err(|_| BundleError::Name(host.to_owned()))?;
    let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(at).unwrap_or(0)));
    verifier.verify_server_cert(leaf, intermediates, &name, &[], at)?;
    Ok(())
}

fn date(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix).map(|t| t.to_string()).unwrap_or_else(|_| unix.to_string())
}

/// The API's reason for a failed request, as a short phrase.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// What to do when the API refused a read: usually missing permissions.
fn read_fix(what: &str) -> String {
    format!(
        "run check with credentials that may read {what} (kubectl auth can-i get {what}); the operator's own ServiceAccount may not"
    )
}

/// Every object of a list, page by page.
async fn list_all<K>(api: &Api<K>) -> Result<Vec<K>, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
}

fn names(list: &[String]) -> String {
    let mut out = list.iter().take(MAX_LISTED).cloned().collect::<Vec<_>>().join(", ");
    if list.len() > MAX_LISTED {
        out.push_str(&format!(" and {} more", list.len() - MAX_LISTED));
    }
    out
}

/// What the operator Deployment says about itself.
#[derive(Default)]
struct OperatorSettings {
    proxy_image: Option<String>,
    native_sidecar: Option<bool>,
    /// The controller's Lease (`CLOUDTASER_LEASE_NAME`; the chart derives it from the release).
    lease_name: Option<String>,
    /// Whether a cluster-wide default config is mounted (`CLOUDTASER_CLUSTER_DEFAULT`).
    cluster_default: bool,
}

/// The binary's default Lease name (`cloudtaser-operator run --lease-name`).
const DEFAULT_LEASE_NAME: &str = "cloudtaser-operator";

/// Runs every check in order; never stops early except when the API does
/// not answer at all (every later line would repeat that).
pub async fn run(client: Client, target: &Target) -> Report {
    let mut report = Report::default();
    match client.apiserver_version().await {
        Ok(v) => report.ok("kubernetes-api", format!("reachable, Kubernetes {}", v.git_version)),
        Err(e) => {
            report.fail(
                "kubernetes-api",
                format!("the API server does not answer: {}", api_error(&e)),
                "check the kubeconfig context (kubectl config current-context) or run check in the cluster",
            );
            return report;
        }
    }
    check_crd(&mut report, &client).await;
    let certificate = check_webhook(&mut report, &client, target).await;
    check_expiry(&mut report, target, certificate.as_deref());
    let settings = check_deployment(&mut report, &client, target).await;
    check_leader(&mut report, &client, target, &settings).await;
    let configs = check_configs(&mut report, &client, target).await;
    check_namespaces(&mut report, &client, target, &settings, configs.as_deref()).await;
    let configured_image = target.proxy_image.clone().or(settings.proxy_image.clone());
    check_pods(&mut report, &client, target, configs.as_deref(), configured_image.as_deref()).await;
    check_native_sidecars(&mut report, &client, target, &settings, configured_image.as_deref()).await;
    report
}

/// 1. The CRD is installed and serves and stores this binary's version.
async fn check_crd(report: &mut Report, client: &Client) {
    const CHECK: &str = "crd";
    let crd_name = S3ProxyConfig::crd_name();
    let version = S3ProxyConfig::version(&());
    let install = "apply this release's CRD: cloudtaser-operator crd | kubectl apply --server-side -f - (or helm upgrade with crds.enabled=true)";
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = match crds.get_opt(crd_name).await {
        Ok(Some(crd)) => crd,
        Ok(None) => return report.fail(CHECK, format!("the CRD {crd_name} is not installed"), install),
        Err(e) => {
            return report.fail(
                CHECK,
                format!("could not read the CRD {crd_name}: {}", api_error(&e)),
                read_fix("customresourcedefinitions"),
            );
        }
    };
    let versions: Vec<String> = crd.spec.versions.iter().map(|v| v.name.clone()).collect();
    let Some(ours) = crd.spec.versions.iter().find(|v| v.name == version) else {
        return report.fail(
            CHECK,
            format!("the CRD {crd_name} has versions [{}], but this operator serves {version}", versions.join(", ")),
            install,
        );
    };
    if !ours.served || !ours.storage {
        return report.fail(
            CHECK,
            format!(
                "the CRD's {version} is {} and {} (this operator needs it served and stored)",
                if ours.served { "served" } else { "not served" },
                if ours.storage { "the storage version" } else { "not the storage version" }
            ),
            install,
        );
    }
    let stored = crd.status.as_ref().and_then(|s| s.stored_versions.clone()).unwrap_or_default();
    let foreign: Vec<&String> = stored.iter().filter(|v| **v != version).collect();
    if !foreign.is_empty() {
        return report.fail(
            CHECK,
            format!(
                "S3ProxyConfigs are stored at versions [{}]; this operator reads only {version}",
                stored.join(", ")
            ),
            "run the operator release that matches the stored version, or migrate the stored objects to it (kube-storage-version-migrator) and then drop the old version from the CRD's status.storedVersions",
        );
    }
    // The schema this binary validates against: another release's CRD
    // admits or refuses other specs than the webhook expects.
    let generated = S3ProxyConfig::crd();
    let schema_of = |crd: &CustomResourceDefinition| {
        crd.spec
            .versions
            .iter()
            .find(|v| v.name == version)
            .and_then(|v| v.schema.as_ref())
            .map(|s| serde_json::to_value(s).unwrap_or_default())
    };
    if schema_of(&crd) != schema_of(&generated) {
        return report.warn(
            CHECK,
            format!(
                "{crd_name} serves and stores {version}, but its schema is not this operator's (another release's CRD?)"
            ),
            install,
        );
    }
    report.ok(CHECK, format!("{crd_name} serves and stores {version}, as this operator does"));
}

/// 2. The webhook configuration calls the operator's Service, fails
///    closed, and its caBundle verifies the serving certificate. Returns
///    the serving certificate's PEM for the expiry check.
async fn check_webhook(report: &mut Report, client: &Client, target: &Target) -> Option<Vec<u8>> {
    const CHECK: &str = "webhook";
    let ns = &target.namespace;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let certificate = match secrets.get_opt(&target.tls_secret).await {
        Ok(secret) => secret.and_then(|s| s.data).and_then(|d| d.get("tls.crt").map(|b| b.0.clone())),
        Err(e) => {
            tracing::debug!(error = %e, "reading the serving Secret");
            None
        }
    };
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = match configs.get_opt(&target.webhook_config).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            report.fail(
                CHECK,
                format!("no MutatingWebhookConfiguration {}: no pod gets the proxy", target.webhook_config),
                "install or upgrade the chart; if it was installed under another release name, pass --release or --webhook-config",
            );
            return certificate;
        }
        Err(e) => {
            report.fail(
                CHECK,
                format!("could not read MutatingWebhookConfiguration {}: {}", target.webhook_config, api_error(&e)),
                read_fix("mutatingwebhookconfigurations"),
            );
            return certificate;
        }
    };
    let webhooks = config.webhooks.unwrap_or_default();
    if webhooks.is_empty() {
        report.fail(
            CHECK,
            format!("MutatingWebhookConfiguration {} has no webhooks", target.webhook_config),
            "helm upgrade the release to restore it",
        );
        return certificate;
    }
    let host = format!("{}.{ns}.svc", target.service);
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for hook in &webhooks {
        let name = &hook.name;
        match &hook.client_config.service {
            Some(s) if s.name == target.service && s.namespace == *ns => {}
            Some(s) => {
                problems.push(format!("{name} calls Service {}/{}, not {ns}/{}", s.namespace, s.name, target.service));
                fixes.push(
                    "helm upgrade the release so the webhook calls its own Service (or pass --namespace/--service if the operator's Service has another name)".to_owned(),
                );
            }
            None => {
                problems.push(format!("{name} calls a URL, not the operator's Service"));
                fixes.push("helm upgrade the release so the webhook calls its own Service".to_owned());
            }
        }
        // `Fail` is the v1 default when unset.
        let policy = hook.failure_policy.as_deref().unwrap_or("Fail");
        if policy != "Fail" {
            problems.push(format!(
                "{name} has failurePolicy {policy}: pods created while the operator is unavailable run without the proxy and can write plaintext"
            ));
            fixes.push("set webhook.failurePolicy=Fail in the chart values".to_owned());
        }
        match (&hook.client_config.ca_bundle, &certificate) {
            (None, _) => {
                problems.push(format!("{name} has no caBundle: the API server cannot trust the webhook"));
                fixes.push(
                    "selfManaged: the leading operator replica writes it (see its logs); certManager: check that cert-manager's cainjector runs; existingSecret: set tls.caBundle".to_owned(),
                );
            }
            (Some(_), None) => {
                problems.push(format!(
                    "the serving Secret {ns}/{} (tls.crt) is missing or unreadable, so the caBundle cannot be checked",
                    target.tls_secret
                ));
                fixes.push(format!(
                    "check the Secret exists (kubectl -n {ns} get secret {}) and that you may read it; pass --tls-secret if it has another name",
                    target.tls_secret
                ));
            }
            (Some(bundle), Some(cert)) => {
                // Checked within the certificate's validity: its expiry is the next line.
                let at = match validity(&String::from_utf8_lossy(cert)) {
                    Some((from, until)) => target.now.clamp(from, until),
                    None => target.now,
                };
                if let Err(e) = verify_bundle(&bundle.0, cert, &host, at) {
                    problems.push(format!(
                        "{name}'s caBundle does not verify the serving certificate for {host} ({e}): the API server refuses the webhook, so every annotated pod is refused"
                    ));
                    fixes.push(format!(
                        "selfManaged: restart the operator so the leader republishes its CA; certManager: check cert-manager's cainjector and the cert-manager.io/inject-ca-from annotation; existingSecret: set tls.caBundle to the CA that signed {}; helm: helm upgrade the release",
                        target.tls_secret
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        report.ok(
            CHECK,
            format!(
                "{} calls {ns}/{}, fails closed, and its caBundle verifies the serving certificate",
                target.webhook_config, target.service
            ),
        );
    } else {
        fixes.dedup();
        report.fail(CHECK, problems.join("; "), fixes.join("; "));
    }
    certificate
}

/// 3. The serving certificate's expiry.
fn check_expiry(report: &mut Report, target: &Target, certificate: Option<&[u8]>) {
    const CHECK: &str = "certificate-expiry";
    let renew = "selfManaged: the leading replica renews it (check the operator's logs and the Lease <release>-cloudtaser-operator-tls); certManager: kubectl describe certificate; helm: delete the Secret and helm upgrade; existingSecret: renew the Secret";
    let Some(cert) = certificate else {
        return report.fail(
            CHECK,
            format!("no serving certificate in Secret {}/{} (tls.crt)", target.namespace, target.tls_secret),
            renew,
        );
    };
    let Some((from, until)) = validity(&String::from_utf8_lossy(cert)) else {
        return report.fail(CHECK, "the serving certificate does not parse", renew);
    };
    let now = target.now;
    let left = until - now;
    if from > now {
        return report.fail(CHECK, format!("the serving certificate is valid only from {}", date(from)), renew);
    }
    if left <= 0 {
        return report.fail(
            CHECK,
            format!("the serving certificate expired on {} ({} days ago)", date(until), -left / 86_400),
            renew,
        );
    }
    // A self-managed certificate (90 days) is renewed with a sixth of its
    // life left: warning before that would warn on every healthy install.
    if left < EXPIRY_WARNING.min((until - from) / 6) {
        return report.warn(
            CHECK,
            format!("the serving certificate expires on {} (in {} days)", date(until), left / 86_400),
            renew,
        );
    }
    report.ok(CHECK, format!("the serving certificate is valid until {} ({} days)", date(until), left / 86_400));
}

/// 4. The operator Deployment has a ready replica; also what it injects.
async fn check_deployment(report: &mut Report, client: &Client, target: &Target) -> OperatorSettings {
    const CHECK: &str = "operator-deployment";
    let ns = &target.namespace;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = match deployments.get_opt(&target.deployment).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            report.fail(
                CHECK,
                format!("no Deployment {ns}/{}", target.deployment),
                "install the chart; if it was installed under another release name or namespace, pass --release, --namespace or --deployment",
            );
            return OperatorSettings::default();
        }
        Err(e) => {
            report.fail(
                CHECK,
                format!("could not read Deployment {ns}/{}: {}", target.deployment, api_error(&e)),
                read_fix("deployments"),
            );
            return OperatorSettings::default();
        }
    };
    let env: HashMap<String, String> = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == OPERATOR_CONTAINER))
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    let settings = OperatorSettings {
        proxy_image: Some(
            env.get("CLOUDTASER_PROXY_IMAGE").cloned().unwrap_or(OPERATOR_DEFAULT_PROXY_IMAGE.to_owned()),
        ),
        native_sidecar: env.get("CLOUDTASER_NATIVE_SIDECAR").map(|v| v.trim() != "false"),
        lease_name: Some(env.get("CLOUDTASER_LEASE_NAME").cloned().unwrap_or(DEFAULT_LEASE_NAME.to_owned())),
        cluster_default: env.contains_key("CLOUDTASER_CLUSTER_DEFAULT"),
    };
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = deployment.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let debug =
        format!("kubectl -n {ns} describe deployment {0}; kubectl -n {ns} logs deployment/{0}", target.deployment);
    if ready < 1 {
        report.fail(
            CHECK,
            format!(
                "{}: no ready replica (0/{wanted}): the webhook fails closed, so every annotated pod is refused",
                target.deployment
            ),
            debug,
        );
    } else if ready < wanted {
        report.warn(CHECK, format!("{}: {ready}/{wanted} replicas ready", target.deployment), debug);
    } else {
        report.ok(CHECK, format!("{}: {ready}/{wanted} replicas ready", target.deployment));
    }
    settings
}

/// 4b. The controller runs: a replica holds its Lease and renewed it within
///    the Lease's duration. The webhook works without it, but config
///    statuses, events and the unprotected-pod metrics and alerts stop.
async fn check_leader(report: &mut Report, client: &Client, target: &Target, settings: &OperatorSettings) {
    const CHECK: &str = "controller-leader";
    let Some(name) = &settings.lease_name else {
        return; // the Deployment could not be read: that line already failed
    };
    let ns = &target.namespace;
    let fix = format!(
        "kubectl -n {ns} logs deployment/{} | grep -i lease; check the operator's RBAC for leases (get, create, update)",
        target.deployment
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let lease = match leases.get_opt(name).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            report.fail(CHECK, format!("no Lease {ns}/{name}: no replica has ever run the controller"), fix);
            return;
        }
        Err(e) => {
            report.fail(CHECK, format!("could not read Lease {ns}/{name}: {}", api_error(&e)), read_fix("leases"));
            return;
        }
    };
    let spec = lease.spec.unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let age = spec.renew_time.map(|t| target.now - t.0.as_second());
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    match (holder, age) {
        (Some(holder), Some(age)) if age <= duration => {
            report.ok(CHECK, format!("{holder} runs the controller (Lease {name} renewed {age} s ago)"))
        }
        (holder, age) => report.fail(
            CHECK,
            format!(
                "Lease {ns}/{name} {}: no replica runs the controller, so S3ProxyConfig statuses, events and the unprotected-pod alerts are stale (the webhook still injects)",
                match (holder, age) {
                    (Some(h), Some(a)) => format!("held by {h} but last renewed {a} s ago (duration {duration} s)"),
                    _ => "has no holder".to_owned(),
                }
            ),
            fix,
        ),
    }
}

/// 5. Each S3ProxyConfig's `Ready` and `IdentityIsolated` conditions (written
///    by the controller), one line each. Returns the configs for check 6.
async fn check_configs(report: &mut Report, client: &Client, target: &Target) -> Option<Vec<S3ProxyConfig>> {
    let api: Api<S3ProxyConfig> = match &target.workload_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let configs = match list_all(&api).await {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                "s3proxyconfigs",
                format!("could not list S3ProxyConfigs: {}", api_error(&e)),
                read_fix("s3proxyconfigs"),
            );
            return None;
        }
    };
    if configs.is_empty() {
        report.ok("s3proxyconfigs", "no S3ProxyConfig (pods annotated `true` use the chart's clusterDefault, if set)");
    }
    for config in &configs {
        let key = format!("{}/{}", config.namespace().unwrap_or_default(), config.name_any());
        let check = format!("s3proxyconfig {key}");
        let status = config.status.as_ref();
        let condition = |type_: &str| status.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
        let Some(ready) = condition("Ready") else {
            report.warn(
                &check,
                "not reconciled yet (no Ready condition)",
                "check that the operator runs (operator-deployment) and its logs",
            );
            continue;
        };
        if ready.status != "True" {
            report.fail(
                &check,
                format!("not Ready ({}): {}", ready.reason, ready.message),
                format!(
                    "fix the spec (kubectl -n {} edit s3pc {})",
                    config.namespace().unwrap_or_default(),
                    config.name_any()
                ),
            );
            continue;
        }
        let observed = status.and_then(|s| s.observed_generation);
        if observed.is_some() && observed < config.metadata.generation {
            report.warn(
                &check,
                format!(
                    "Ready, but for generation {} of the spec, not the current {}",
                    observed.unwrap_or_default(),
                    config.metadata.generation.unwrap_or_default()
                ),
                "wait for the controller, or check that the operator runs and its logs",
            );
            continue;
        }
        match condition("IdentityIsolated") {
            Some(c) if c.status != "True" => report.warn(
                &check,
                format!("Ready, but not IdentityIsolated ({}): {}", c.reason, c.message),
                "use credentials.source webIdentity (docs/OPERATOR.md, \"The proxy's identity is its own\")",
            ),
            _ => {
                let injected = status.map(|s| s.injected_pods).unwrap_or_default();
                report.ok(&check, format!("Ready; {injected} injected pod(s)"));
            }
        }
    }
    Some(configs)
}

/// 5b. Namespace enablement does what it says: a namespace labelled for
///    injection names a config that exists (else the webhook refuses, fails
///    closed, every new pod in it), and a namespace annotated
///    `cloudtaser.io/s3-proxy` is also labelled (else the API server never
///    sends its pods to the webhook, and they run without the proxy).
async fn check_namespaces(
    report: &mut Report,
    client: &Client,
    target: &Target,
    settings: &OperatorSettings,
    configs: Option<&[S3ProxyConfig]>,
) {
    const CHECK: &str = "namespace-injection";
    let Some(configs) = configs else {
        return; // the configs could not be listed: that line already failed
    };
    let api: Api<Namespace> = Api::all(client.clone());
    let namespaces = match list_all(&api).await {
        Ok(list) => list,
        Err(e) => {
            report.fail(CHECK, format!("could not list namespaces: {}", api_error(&e)), read_fix("namespaces"));
            return;
        }
    };
    let label = format!("{NAMESPACE_LABEL}=enabled");
    let exists =
        |ns: &str, name: &str| configs.iter().any(|c| c.namespace().as_deref() == Some(ns) && c.name_any() == name);
    let (mut refused, mut unrouted, mut disabled, mut enabled) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for namespace in &namespaces {
        let ns = namespace.name_any();
        if target.workload_namespace.as_deref().is_some_and(|w| w != ns) {
            continue;
        }
        let labelled = namespace.labels().get(NAMESPACE_LABEL).is_some_and(|v| v == "enabled");
        let annotation = namespace.annotations().get(ANNOTATION).cloned();
        if !labelled {
            if let Some(value) = annotation
                && ConfigRef::from_annotation(&value, &ns) != ConfigRef::Off
            {
                unrouted.push(format!("{ns} ({ANNOTATION}={value})"));
            }
            continue;
        }
        let value = annotation.unwrap_or_else(|| "true".to_owned());
        match ConfigRef::from_annotation(&value, &ns) {
            ConfigRef::Off => disabled.push(ns),
            ConfigRef::Default if exists(&ns, "default") || settings.cluster_default => enabled.push(ns),
            ConfigRef::Named(name) if exists(&ns, &name) => enabled.push(ns),
            _ => refused.push(format!("{ns} ({ANNOTATION}={value})")),
        }
    }
    let mut problems = Vec::new();
    if !refused.is_empty() {
        problems.push(format!(
            "labelled {label} but naming no S3ProxyConfig of their own namespace, so every new pod in them is refused: {}",
            names(&refused)
        ));
    }
    if !unrouted.is_empty() {
        problems.push(format!(
            "annotated but not labelled {label}, so the API server never sends their pods to the webhook and they run without the proxy: {}",
            names(&unrouted)
        ));
    }
    if !problems.is_empty() {
        report.fail(
            CHECK,
            problems.join("; "),
            format!(
                "label the namespace (kubectl label namespace <ns> {label}) and create the config its {ANNOTATION} annotation names, or remove both"
            ),
        );
    } else if !disabled.is_empty() {
        report.warn(
            CHECK,
            format!(
                "labelled {label} but annotated {ANNOTATION}=disabled, so no pod in them is injected: {}",
                names(&disabled)
            ),
            format!("remove the label or the annotation (kubectl label namespace <ns> {NAMESPACE_LABEL}-)"),
        );
    } else if enabled.is_empty() {
        report.ok(CHECK, format!("no namespace labelled {label}"));
    } else {
        report.ok(CHECK, format!("{} labelled namespace(s) with their config: {}", enabled.len(), names(&enabled)));
    }
}

/// 6. Annotated pods without the proxy, and injected pods whose proxy image
///    is not the one they would get now.
async fn check_pods(
    report: &mut Report,
    client: &Client,
    target: &Target,
    configs: Option<&[S3ProxyConfig]>,
    operator_image: Option<&str>,
) {
    const MISSING: &str = "pods-without-proxy";
    const STALE: &str = "pods-stale-proxy-image";
    let api: Api<Pod> = match &target.workload_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let pods = match list_all(&api).await {
        Ok(p) => p,
        Err(e) => {
            let message = format!("could not list pods: {}", api_error(&e));
            report.fail(MISSING, message.clone(), read_fix("pods"));
            report.fail(STALE, message, read_fix("pods"));
            return;
        }
    };
    // The proxy image each config asks for, when it names one.
    let config_images: BTreeMap<(String, String), String> = configs
        .unwrap_or_default()
        .iter()
        .filter_map(|c| {
            let image = c.spec.proxy.as_ref()?.image.clone()?;
            Some(((c.namespace()?, c.name_any()), image))
        })
        .collect();
    let (mut annotated, mut injected) = (0usize, 0usize);
    let (mut missing, mut stale) = (Vec::new(), Vec::new());
    for pod in &pods {
        let Some(value) = pod.annotations().get(ANNOTATION) else { continue };
        let ns = pod.namespace().unwrap_or_default();
        let config = ConfigRef::from_annotation(value, &ns);
        let finished = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        // Pods on their way out, or done, will not run again as they are.
        if config == ConfigRef::Off || pod.meta().deletion_timestamp.is_some() || finished {
            continue;
        }
        annotated += 1;
        let name = format!("{ns}/{}", pod.name_any());
        let Some(image) = proxy_image(pod) else {
            missing.push(name);
            continue;
        };
        injected += 1;
        // As the webhook picks it: the pod's override, the config's, the operator's.
        let wanted = pod
            .annotations()
            .get(IMAGE_ANNOTATION)
            .map(|s| s.trim().to_owned())
            .or_else(|| config.watched(&ns).and_then(|key| config_images.get(&key).cloned()))
            .or(operator_image.map(str::to_owned));
        if let Some(wanted) = wanted
            && image != wanted
        {
            stale.push(format!("{name} ({image}, configured {wanted})"));
        }
    }
    if missing.is_empty() {
        report.ok(MISSING, format!("all {annotated} running annotated pod(s) have the proxy"));
    } else {
        report.fail(
            MISSING,
            format!("{} annotated pod(s) run without the proxy: {}", missing.len(), names(&missing)),
            "they were created while the webhook was bypassed (down with failurePolicy Ignore, or a namespace it excludes): delete them so their workloads recreate them with the proxy; in kube-system, the operator's namespace, webhook.excludeNamespaces or a namespace labelled cloudtaser.io/admission-webhooks=disabled, remove the annotation instead",
        );
    }
    if operator_image.is_none() && configs.is_none_or(|c| c.is_empty()) {
        report.warn(
            STALE,
            "the configured proxy image is unknown (the operator Deployment was not read)",
            "pass --proxy-image",
        );
    } else if stale.is_empty() {
        report.ok(STALE, format!("all {injected} injected pod(s) run the configured proxy image"));
    } else {
        report.fail(
            STALE,
            format!("{} pod(s) run a proxy image other than the configured one: {}", stale.len(), names(&stale)),
            "they were created before an upgrade: restart their workloads (kubectl rollout restart) to get the configured image",
        );
    }
}

/// 7. Native sidecars: the API server keeps `restartPolicy: Always` on init
///    containers (a dry run) and every kubelet is 1.29 or later.
async fn check_native_sidecars(
    report: &mut Report,
    client: &Client,
    target: &Target,
    settings: &OperatorSettings,
    image: Option<&str>,
) {
    const CHECK: &str = "native-sidecars";
    if settings.native_sidecar == Some(false) {
        return report.ok(CHECK, "the operator injects classic sidecars (proxy.nativeSidecar=false)");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let kept = match api_keeps_native_sidecars(&pods, image.unwrap_or(OPERATOR_DEFAULT_PROXY_IMAGE)).await {
        Ok(kept) => kept,
        Err(e) => {
            return report.warn(
                CHECK,
                format!("could not probe the API server (a dry-run pod create): {}", api_error(&e)),
                format!("run check with credentials that may create pods in {} (dry run only)", target.namespace),
            );
        }
    };
    if !kept {
        return report.warn(
            CHECK,
            "the API server drops restartPolicy on init containers (Kubernetes < 1.29): the operator injects classic sidecars",
            "upgrade to Kubernetes 1.29 or later for native sidecars, or set proxy.nativeSidecar=false to say so",
        );
    }
    let nodes: Api<Node> = Api::all(client.clone());
    match list_all(&nodes).await {
        Ok(nodes) => {
            let old = kubelets_without_native_sidecars(&nodes);
            if old.is_empty() {
                report.ok(
                    CHECK,
                    format!("available: the API server keeps them and all {} kubelet(s) are 1.29+", nodes.len()),
                );
            } else {
                let named: Vec<String> = old.iter().map(|(n, v)| format!("{n} ({v})")).collect();
                report.fail(
                    CHECK,
                    format!(
                        "{} node(s) run a kubelet older than 1.29, where injected pods stay in Init: {}",
                        old.len(),
                        names(&named)
                    ),
                    "upgrade those nodes, or set proxy.nativeSidecar=false",
                );
            }
        }
        Err(e) => report.warn(
            CHECK,
            format!(
                "the API server keeps native sidecars; could not list nodes for their kubelet versions: {}",
                api_error(&e)
            ),
            read_fix("nodes"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_fullname_follows_the_helper() {
        assert_eq!(chart_fullname("cloudtaser"), "cloudtaser-cloudtaser-operator");
        let long = "a".repeat(39) + "-b";
        assert_eq!(
            chart_fullname(&long),
            format!("{}-cloudtaser-operator", "a".repeat(39)),
            "trunc 40 then trimSuffix"
        );
    }
}

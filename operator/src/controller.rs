//! Reconciles `S3ProxyConfig`: checks that the Secrets it references exist
//! with the keys it names, counts the pods it protects, and warns about
//! annotated pods that run without the proxy (created while the webhook was
//! bypassed).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{S3ProxyConfig, S3ProxyConfigSpec, S3ProxyConfigStatus};
use crate::metrics::Metrics;
use crate::webhook::inject::{ANNOTATION, SIDECAR};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the S3ProxyConfig has no namespace")]
    NoNamespace,
}

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
}

/// The Secret keys a configuration needs, as (secret, key).
fn referenced_secrets(spec: &S3ProxyConfigSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(s) = &spec.credentials.secret_ref {
        out.push((s.name.clone(), s.access_key_id_key.clone()));
        out.push((s.name.clone(), s.secret_access_key_key.clone()));
    }
    for sel in [&spec.vault.auth.token, &spec.vault.auth.secret_id, &spec.vault.ca_cert].into_iter().flatten() {
        out.push((sel.name.clone(), sel.key.clone()));
    }
    out
}

/// Whether an annotation value in `namespace` selects the configuration `name`.
pub fn selects(value: &str, namespace: &str, config_ns: &str, name: &str) -> bool {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") {
        return namespace == config_ns && name == "default";
    }
    let (ns, n) = value.split_once('/').unwrap_or((namespace, value));
    ns == config_ns && n == name
}

pub fn has_proxy(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).any(|c| c.name == SIDECAR))
}

fn condition(ready: bool, reason: &str, message: String, generation: Option<i64>) -> Condition {
    Condition {
        type_: "Ready".to_owned(),
        status: if ready { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

pub async fn reconcile(config: Arc<S3ProxyConfig>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = config.namespace().ok_or(Error::NoNamespace)?;
    let name = config.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    // A value the proxy would refuse; the Secrets are checked once it is fixed.
    let mut problem = config.spec.validate().err().map(|e| ("InvalidSpec", e.to_string()));
    let mut fetched: std::collections::BTreeMap<String, Option<Secret>> = Default::default();
    let secrets_to_check = if problem.is_none() { referenced_secrets(&config.spec) } else { Vec::new() };
    for (secret, key) in secrets_to_check {
        if !fetched.contains_key(&secret) {
            let got = secrets.get_opt(&secret).await?;
            fetched.insert(secret.clone(), got);
        }
        match &fetched[&secret] {
            None => {
                problem = Some(("SecretMissing", format!("Secret {secret} does not exist in namespace {ns}")));
                break;
            }
            Some(s) if !s.data.as_ref().is_some_and(|d| d.contains_key(&key)) => {
                problem = Some(("SecretKeyMissing", format!("Secret {secret} has no key {key}")));
                break;
            }
            Some(_) => {}
        }
    }

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let (mut injected, mut unprotected) = (0i64, 0i64);
    for pod in pods.list(&ListParams::default()).await? {
        let Some(value) = pod.annotations().get(ANNOTATION) else { continue };
        if !selects(value, &ns, &ns, &name) {
            continue;
        }
        if has_proxy(&pod) {
            injected += 1;
        } else if pod.metadata.deletion_timestamp.is_none() {
            unprotected += 1;
            let event = Event {
                type_: EventType::Warning,
                reason: "ProxyMissing".into(),
                note: Some(format!(
                    "pod asks for the CloudTaser S3 proxy ({ANNOTATION}={value}) but runs without it: it was created while the webhook was bypassed; delete the pod so it is recreated with the proxy"
                )),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &pod.object_ref(&())).await {
                tracing::warn!(error = %e, pod = %pod.name_any(), "could not publish the ProxyMissing event");
            }
        }
    }
    ctx.metrics.unprotected_pods.set(unprotected);

    let generation = config.metadata.generation;
    let ready = match problem {
        Some((reason, message)) => condition(false, reason, message, generation),
        None => condition(true, "Valid", "configuration and its Secrets are in place".to_owned(), generation),
    };
    // Keep the transition time when the status does not change.
    let ready = match config.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready")) {
        Some(old) if old.status == ready.status && old.reason == ready.reason => {
            Condition { last_transition_time: old.last_transition_time.clone(), ..ready }
        }
        _ => ready,
    };
    let status = S3ProxyConfigStatus {
        conditions: vec![ready],
        observed_generation: generation,
        injected_pods: injected,
        unprotected_pods: unprotected,
    };
    let api: Api<S3ProxyConfig> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_config: Arc<S3ProxyConfig>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    ctx.metrics.reconcile_errors.inc();
    Action::requeue(Duration::from_secs(30))
}

/// Runs until the process stops. Pod changes re-reconcile their configuration.
pub async fn run(ctx: Arc<Context>) {
    let configs: Api<S3ProxyConfig> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    Controller::new(configs, watcher::Config::default())
        .watches(pods, watcher::Config::default(), |pod: Pod| {
            let value = pod.annotations().get(ANNOTATION)?.trim().to_owned();
            let namespace = pod.namespace()?;
            let (ns, name) = match value.split_once('/') {
                Some((ns, name)) => (ns.to_owned(), name.to_owned()),
                None if value.eq_ignore_ascii_case("true") => (namespace, "default".to_owned()),
                None => (namespace, value),
            };
            Some(ObjectRef::<S3ProxyConfig>::new(&name).within(&ns))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
}

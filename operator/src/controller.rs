//! Reconciles `S3ProxyConfig`: checks the spec, counts the pods it protects,
//! and warns about annotated pods that run without the proxy (created while
//! the webhook was bypassed) or with a proxy image other than the configured
//! one (created before an upgrade). It reads no Secrets: the operator has no
//! access to them (docs/OPERATOR.md, "Permissions").

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::config_ref::ConfigRef;
use crate::crd::{CredentialsSource, S3ProxyConfig, S3ProxyConfigStatus};
use crate::metrics::{ConfigLabel, Metrics};
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
    /// The operator's default proxy image (a config's `proxy.image` wins).
    pub proxy_image: String,
}

/// Whether an annotation value on a pod in `namespace` selects the
/// configuration `config_ns/name`.
pub fn selects(value: &str, namespace: &str, config_ns: &str, name: &str) -> bool {
    ConfigRef::from_annotation(value, namespace).watched(namespace).is_some_and(|(ns, n)| ns == config_ns && n == name)
}

pub fn has_proxy(pod: &Pod) -> bool {
    proxy_image(pod).is_some()
}

/// The image of the pod's proxy container, if it has one.
pub fn proxy_image(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let proxy = spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == SIDECAR)?;
    Some(proxy.image.clone().unwrap_or_default())
}

fn condition(ready: bool, reason: &str, message: String, generation: Option<i64>) -> Condition {
    typed_condition("Ready", ready, reason, message, generation)
}

fn typed_condition(type_: &str, ready: bool, reason: &str, message: String, generation: Option<i64>) -> Condition {
    Condition {
        type_: type_.to_owned(),
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
    // A value the proxy would refuse.
    let problem = config.spec.validate().err().map(|e| ("InvalidSpec", e.to_string()));
    let wanted_image = config.spec.proxy.as_ref().and_then(|p| p.image.clone()).unwrap_or(ctx.proxy_image.clone());

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let (mut injected, mut unprotected, mut stale) = (0i64, 0i64, 0i64);
    for pod in pods.list(&ListParams::default()).await? {
        let Some(value) = pod.annotations().get(ANNOTATION) else { continue };
        if !selects(value, &ns, &ns, &name) {
            continue;
        }
        if let Some(image) = proxy_image(&pod) {
            injected += 1;
            if image != wanted_image && pod.metadata.deletion_timestamp.is_none() {
                stale += 1;
                let event = Event {
                    type_: EventType::Warning,
                    reason: "ProxyImageStale".into(),
                    note: Some(format!(
                        "pod runs CloudTaser proxy image {image}, but {wanted_image} is configured (the pod was created before an upgrade); restart its workload (kubectl rollout restart) to get the configured image"
                    )),
                    action: "Reconcile".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&event, &pod.object_ref(&())).await {
                    tracing::warn!(error = %e, pod = %pod.name_any(), "could not publish the ProxyImageStale event");
                }
            }
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
    let label = ConfigLabel { namespace: ns.clone(), config: name.clone() };
    ctx.metrics.unprotected_pods.get_or_create(&label).set(unprotected);
    ctx.metrics.stale_proxy_pods.get_or_create(&label).set(stale);

    let generation = config.metadata.generation;
    let ready = match problem {
        Some((reason, message)) => condition(false, reason, message, generation),
        None => condition(true, "Valid", "the configuration is valid".to_owned(), generation),
    };
    // Whether the cloud identity is the proxy's alone: with serviceAccount
    // every container of the pod holds the role, so a workload that
    // ignores the endpoint writes plaintext with it (docs/OPERATOR.md).
    let isolated = match config.spec.credentials.source {
        CredentialsSource::WebIdentity => typed_condition(
            "IdentityIsolated",
            true,
            "ProxyToken",
            "only the proxy container holds the token and role it uses".to_owned(),
            generation,
        ),
        CredentialsSource::Secret => typed_condition(
            "IdentityIsolated",
            true,
            "ProxySecret",
            "in injected pods only the proxy container may read the credentials Secret (the webhook denies others); whoever may create pods in the namespace can still mount it, so keep pod creation there to the workloads that use the proxy".to_owned(),
            generation,
        ),
        CredentialsSource::ServiceAccount => {
            let message = "credentials.source serviceAccount: every container of an injected pod holds the proxy's cloud role, so a client that ignores AWS_ENDPOINT_URL_S3 can write plaintext to the bucket; use credentials.source webIdentity".to_owned();
            let event = Event {
                type_: EventType::Warning,
                reason: "SharedIdentity".into(),
                note: Some(message.clone()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &config.object_ref(&())).await {
                tracing::warn!(error = %e, config = %name, "could not publish the SharedIdentity event");
            }
            typed_condition("IdentityIsolated", false, "SharedWithWorkload", message, generation)
        }
    };
    // Keep each condition's transition time when it does not change.
    let kept = |new: Condition| match config
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == new.type_))
    {
        Some(old) if old.status == new.status && old.reason == new.reason => {
            Condition { last_transition_time: old.last_transition_time.clone(), ..new }
        }
        _ => new,
    };
    let status = S3ProxyConfigStatus {
        conditions: vec![kept(ready), kept(isolated)],
        observed_generation: generation,
        injected_pods: injected,
        unprotected_pods: unprotected,
        stale_proxy_pods: stale,
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
            let namespace = pod.namespace()?;
            let (ns, name) =
                ConfigRef::from_annotation(pod.annotations().get(ANNOTATION)?, &namespace).watched(&namespace)?;
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

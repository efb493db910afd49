//! Reconciles `S3ProxyConfig`: checks the spec, counts the pods it protects,
//! and warns about annotated pods that run without the proxy (created while
//! the webhook was bypassed) or with a proxy image other than the configured
//! one (created before an upgrade). It reads no Secrets: the operator has no
//! access to them (docs/OPERATOR.md, "Permissions").
//!
//! At fleet scale: pods are known from one metadata-only watch (names,
//! annotations, owners; no specs) kept in a reflector store, and a reconcile
//! counts from that store instead of listing the namespace's pods. Only the
//! replica holding the controller Lease runs it (and exports the per-config
//! gauges); every replica serves the webhook.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::config_ref::ConfigRef;
use crate::crd::{CredentialsSource, S3ProxyConfig, S3ProxyConfigStatus};
use crate::metrics::{ConfigLabel, Metrics};
use crate::webhook::inject::{ANNOTATION, INJECTED_IMAGE_ANNOTATION, INJECTED_LABEL, SIDECAR};
use crate::workload::owning_workload;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the S3ProxyConfig has no namespace")]
    NoNamespace,
    #[error("the pod watch has not listed the cluster's pods yet")]
    PodsNotSynced,
}

/// A pod as the controller sees it: metadata only.
pub type PodMeta = PartialObjectMeta<Pod>;

/// How long a reconcile waits for the pod store's first full list.
const SYNC_WAIT: Duration = Duration::from_secs(30);

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Shared, so repeated warnings become one event series (a count), not
    /// a new event each reconcile.
    pub recorder: Recorder,
    /// The operator's default proxy image (a config's `proxy.image` wins).
    pub proxy_image: String,
    /// Every pod's metadata, from the metadata-only watch.
    pub pods: Store<PodMeta>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        reporter: Reporter,
        proxy_image: String,
        pods: Store<PodMeta>,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, metrics, recorder, proxy_image, pods }
    }
}

/// A synced store holding `pods`, as the watch would fill it (tests, bench).
pub fn pod_store(pods: impl IntoIterator<Item = PodMeta>) -> Store<PodMeta> {
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for pod in pods {
        writer.apply_watcher_event(&watcher::Event::InitApply(pod));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
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

/// The proxy image the webhook recorded on an injected pod, from metadata
/// alone (the watch carries no specs). `Some("")` for a pod labelled
/// injected without the image annotation (its image is unknown, so it is
/// counted as injected and never as stale). The webhook writes both at
/// admission; a pod created around it has neither, which is what the
/// controller looks for. `cloudtaser-operator check` reads the containers.
pub fn injected_image(meta: &ObjectMeta) -> Option<&str> {
    if let Some(image) = meta.annotations.as_ref().and_then(|a| a.get(INJECTED_IMAGE_ANNOTATION)) {
        return Some(image);
    }
    meta.labels.as_ref().and_then(|l| l.get(INJECTED_LABEL)).filter(|v| *v == "true").map(|_| "")
}

/// Pods with one problem, grouped by their controller owner, so a workload
/// of a thousand pods gets one event, not a thousand.
#[derive(Default)]
struct Findings {
    groups: BTreeMap<(String, String), Finding>,
}

struct Finding {
    /// The pod's controller owner, or the pod itself when none.
    owners: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    pod: ObjectReference,
    names: Vec<String>,
    count: usize,
}

/// The pod names an event lists; the count says how many there are.
const NAMED_PODS: usize = 5;

impl Findings {
    /// `detail` splits groups further (the stale image).
    fn add(&mut self, pod: &PodMeta, detail: &str) {
        let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
        let key = match owner {
            Some(o) => (o.uid.clone(), detail.to_owned()),
            None => (pod.metadata.uid.clone().unwrap_or_else(|| pod.name_any()), detail.to_owned()),
        };
        let finding = self.groups.entry(key).or_insert_with(|| Finding {
            owners: pod.metadata.owner_references.clone().unwrap_or_default(),
            pod: pod.object_ref(&()),
            names: Vec::new(),
            count: 0,
        });
        finding.count += 1;
        // The first names in order, whatever order the store yields them in.
        finding.names.push(pod.name_any());
        if finding.names.len() > NAMED_PODS {
            finding.names.sort_unstable();
            finding.names.truncate(NAMED_PODS);
        }
    }
}

impl Finding {
    fn pods(&self) -> String {
        let more = self.count - self.names.len();
        let mut names = self.names.clone();
        names.sort_unstable();
        let names = names.join(", ");
        if more > 0 { format!("{names} and {more} more") } else { names }
    }
}

/// Publishes one Warning per group, on the owning workload (Deployment,
/// StatefulSet, DaemonSet, Job, CronJob), else on the pod.
async fn warn_workloads(
    ctx: &Context,
    ns: &str,
    findings: Findings,
    reason: &str,
    note: impl Fn(&Finding, &str) -> String,
) {
    for ((_, detail), finding) in findings.groups {
        let target = owning_workload(&ctx.client, ns, &finding.owners).await.unwrap_or_else(|| finding.pod.clone());
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note(&finding, &detail)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &target).await {
            tracing::warn!(error = %e, kind = ?target.kind, name = ?target.name, reason, "could not publish the event");
        }
    }
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

    if !matches!(tokio::time::timeout(SYNC_WAIT, ctx.pods.wait_until_ready()).await, Ok(Ok(()))) {
        return Err(Error::PodsNotSynced);
    }
    let (mut injected, mut unprotected, mut stale) = (0i64, 0i64, 0i64);
    let (mut missing, mut old) = (Findings::default(), Findings::default());
    for pod in ctx.pods.state() {
        if pod.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        let Some(value) = pod.annotations().get(ANNOTATION) else { continue };
        if !selects(value, &ns, &ns, &name) {
            continue;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if let Some(image) = injected_image(&pod.metadata) {
            injected += 1;
            if !image.is_empty() && image != wanted_image && !deleting {
                stale += 1;
                old.add(&pod, image);
            }
        } else if !deleting {
            unprotected += 1;
            missing.add(&pod, value);
        }
    }
    warn_workloads(&ctx, &ns, missing, "ProxyMissing", |f, value| {
        format!(
            "{} pod(s) ask for the CloudTaser S3 proxy ({ANNOTATION}={value}) but run without it ({}): they were created while the webhook was bypassed; delete them (or kubectl rollout restart the workload) so they are recreated with the proxy",
            f.count,
            f.pods()
        )
    })
    .await;
    warn_workloads(&ctx, &ns, old, "ProxyImageStale", |f, image| {
        format!(
            "{} pod(s) run CloudTaser proxy image {image}, but {wanted_image} is configured ({}): they were created before an upgrade; kubectl rollout restart the workload to get the configured image",
            f.count,
            f.pods()
        )
    })
    .await;
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
            if let Err(e) = ctx.recorder.publish(&event, &config.object_ref(&())).await {
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

/// Pods of the whole cluster, metadata only, listed in pages of 500 (the
/// watcher's default); the store is this leadership term's.
fn pod_events(
    client: Client,
    writer: reflector::store::Writer<PodMeta>,
) -> impl futures_util::Stream<Item = Result<PodMeta, watcher::Error>> + Send + 'static {
    let api: Api<PodMeta> = Api::all(client);
    watcher(api, watcher::Config::default()).default_backoff().reflect(writer).touched_objects()
}

/// The configuration a pod's annotation names (none for most pods).
fn config_of(pod: &PodMeta) -> Option<ObjectRef<S3ProxyConfig>> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let (ns, name) = ConfigRef::from_annotation(pod.annotations().get(ANNOTATION)?, namespace).watched(namespace)?;
    Some(ObjectRef::<S3ProxyConfig>::new(&name).within(&ns))
}

/// One leadership term: a fresh pod store and controller, until the
/// process is asked to stop (returns) or the future is dropped.
async fn lead(ctx: Arc<Context>, writer: reflector::store::Writer<PodMeta>) {
    let configs: Api<S3ProxyConfig> = Api::all(ctx.client.clone());
    // A burst of pod events (a rollout of 1,000 pods) is one reconcile.
    let config = controller::Config::default().debounce(Duration::from_secs(2));
    Controller::new(configs, watcher::Config::default())
        .with_config(config)
        .watches_stream(pod_events(ctx.client.clone(), writer), |pod| config_of(&pod))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
}

/// What every term needs besides its pod store.
pub struct Settings {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    pub proxy_image: String,
}

/// Runs the controller whenever `leading` is true, until the process is
/// asked to stop. A replica that loses the Lease drops its controller, its
/// pod store and its per-config gauges.
pub async fn run(settings: Settings, mut leading: watch::Receiver<bool>) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        let (store, writer) = reflector::store();
        let ctx = Arc::new(Context::new(
            settings.client.clone(),
            settings.metrics.clone(),
            settings.reporter.clone(),
            settings.proxy_image.clone(),
            store,
        ));
        settings.metrics.controller_leader.set(1);
        tracing::info!("leading: running the controller");
        let stopped = tokio::select! {
            () = lead(ctx, writer) => true,
            _ = leading.wait_for(|l| !*l) => false,
        };
        settings.metrics.controller_leader.set(0);
        settings.metrics.clear_controller_gauges();
        if stopped {
            return;
        }
        tracing::warn!("lost the controller Lease: stopped the controller; the webhook keeps serving");
    }
}

//! Denials and warnings as events on the pod's workload. The API server
//! shows a denial to whoever created the pod: for a Deployment that is the
//! ReplicaSet controller, so users saw only a `FailedCreate` on a
//! ReplicaSet they never look at, and warnings not at all. Published in the
//! background (an admission never waits on it) and never for dry runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::workload::owning_workload;

pub struct Notifier {
    client: Client,
    /// Shared: a ReplicaSet retrying a denied pod makes one event series.
    recorder: Recorder,
}

/// What an event needs from the request, taken before the review consumes it.
pub struct Origin {
    namespace: String,
    owners: Vec<OwnerReference>,
}

impl Origin {
    /// `None` for dry runs and for pods no controller owns (whoever
    /// created those sees the answer directly).
    pub fn of(review: &AdmissionReview<DynamicObject>) -> Option<Self> {
        let request = review.request.as_ref()?;
        if request.dry_run {
            return None;
        }
        let object = request.object.as_ref()?;
        let owners = object.metadata.owner_references.clone()?;
        if !owners.iter().any(|o| o.controller == Some(true)) {
            return None;
        }
        let namespace = request.namespace.clone().or(object.metadata.namespace.clone())?;
        Some(Self { namespace, owners })
    }
}

/// The event a response calls for: a denial, else the warnings.
pub fn event_for(response: &AdmissionResponse) -> Option<Event> {
    let (reason, note) = if !response.allowed {
        ("InjectionDenied", format!("the CloudTaser webhook refuses this workload's pods: {}", response.result.message))
    } else {
        let warnings = response.warnings.as_ref().filter(|w| !w.is_empty())?;
        ("InjectionWarning", format!("CloudTaser S3 proxy injected with warnings: {}", warnings.join("; ")))
    };
    // events.k8s.io notes are limited to 1 KiB.
    let note: String = note.chars().take(1000).collect();
    Some(Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Admit".into(),
        secondary: None,
    })
}

impl Notifier {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, recorder }
    }

    pub async fn publish(&self, origin: Origin, event: Event) {
        let Some(target) = owning_workload(&self.client, &origin.namespace, &origin.owners).await else { return };
        if let Err(e) = self.recorder.publish(&event, &target).await {
            tracing::warn!(error = %e, kind = ?target.kind, name = ?target.name, reason = %event.reason, "could not publish the event");
        }
    }
}

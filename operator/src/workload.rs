//! The workload a pod belongs to, for events: users look at `kubectl
//! describe deployment`, not at the ReplicaSet a rollout made or at pods
//! that come and go. A pod's controller owner is followed one step further
//! for ReplicaSets (to their Deployment) and Jobs (to their CronJob), the
//! two kinds Kubernetes itself creates on a workload's behalf.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::PartialObjectMeta;
use kube::{Api, Client};

/// The reference events are published on.
fn reference(owner: &OwnerReference, namespace: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: Some(namespace.to_owned()),
        uid: Some(owner.uid.clone()),
        ..Default::default()
    }
}

fn controller_of(owners: &[OwnerReference]) -> Option<&OwnerReference> {
    owners.iter().find(|o| o.controller == Some(true))
}

/// The owner one step up when `owner` is a ReplicaSet or a Job; `None` for
/// other kinds, for one made by hand, or when it cannot be read (the
/// caller then uses `owner` itself: an event on the ReplicaSet beats none).
async fn grand_owner(client: &Client, namespace: &str, owner: &OwnerReference) -> Option<OwnerReference> {
    let group = owner.api_version.split_once('/').map_or("", |(group, _)| group);
    let meta = match (group, owner.kind.as_str()) {
        ("apps", "ReplicaSet") => Api::<PartialObjectMeta<ReplicaSet>>::namespaced(client.clone(), namespace)
            .get_metadata(&owner.name)
            .await
            .map(|m| m.metadata),
        ("batch", "Job") => Api::<PartialObjectMeta<Job>>::namespaced(client.clone(), namespace)
            .get_metadata(&owner.name)
            .await
            .map(|m| m.metadata),
        _ => return None,
    };
    match meta {
        Ok(meta) => controller_of(meta.owner_references.as_deref().unwrap_or_default()).cloned(),
        Err(e) => {
            tracing::debug!(error = %e, kind = %owner.kind, name = %owner.name, "owner not readable; the event goes on it");
            None
        }
    }
}

/// The workload that owns a pod with these owner references, or `None` for
/// a pod no controller owns (the event then goes on the pod).
pub async fn owning_workload(client: &Client, namespace: &str, owners: &[OwnerReference]) -> Option<ObjectReference> {
    let owner = controller_of(owners)?;
    let top = grand_owner(client, namespace, owner).await;
    Some(reference(top.as_ref().unwrap_or(owner), namespace))
}

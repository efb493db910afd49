//! What the cluster can run, found out instead of assumed. Native sidecars
//! (init containers with `restartPolicy: Always`) need the API server to
//! keep that field (Kubernetes 1.28 with the `SidecarContainers` gate, on by
//! default from 1.29) and every kubelet to act on it (1.29). An API server
//! that drops it makes the proxy an ordinary init container that never
//! exits, so every injected pod would stay in `Init` for good; a kubelet
//! older than 1.29 does the same on its node.

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use kube::api::{Api, ObjectMeta, PostParams};

/// Name of the pod sent as a server-side dry run (never stored).
pub const PROBE_POD: &str = "cloudtaser-native-sidecar-probe";

/// Whether the API server keeps `restartPolicy: Always` on an init
/// container: a dry-run create of a pod in `pods`' namespace, read back.
pub async fn api_keeps_native_sidecars(pods: &Api<Pod>, image: &str) -> Result<bool, kube::Error> {
    let container = |name: &str, restart: Option<&str>| Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        restart_policy: restart.map(str::to_owned),
        ..Default::default()
    };
    let probe = Pod {
        metadata: ObjectMeta { name: Some(PROBE_POD.to_owned()), ..Default::default() },
        spec: Some(PodSpec {
            init_containers: Some(vec![container("sidecar", Some("Always"))]),
            containers: vec![container("main", None)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let params = PostParams { dry_run: true, ..Default::default() };
    let created = pods.create(&params, &probe).await?;
    let kept = created
        .spec
        .and_then(|s| s.init_containers)
        .and_then(|c| c.into_iter().next())
        .is_some_and(|c| c.restart_policy.as_deref() == Some("Always"));
    Ok(kept)
}

/// Nodes whose kubelet is older than 1.29, with its version.
pub fn kubelets_without_native_sidecars(nodes: &[Node]) -> Vec<(String, String)> {
    nodes
        .iter()
        .filter_map(|n| {
            let version = n.status.as_ref()?.node_info.as_ref()?.kubelet_version.clone();
            let old = minor_version(&version).is_none_or(|(major, minor)| (major, minor) < (1, 29));
            old.then(|| (n.metadata.name.clone().unwrap_or_default(), version))
        })
        .collect()
}

/// `v1.28.3-eks-1234` → (1, 28).
fn minor_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeStatus, NodeSystemInfo};

    fn node(name: &str, kubelet: &str) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
            status: Some(NodeStatus {
                node_info: Some(NodeSystemInfo { kubelet_version: kubelet.to_owned(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn kubelets_before_1_29_are_named() {
        let nodes = [
            node("a", "v1.28.3-eks-1234"),
            node("b", "v1.29.0"),
            node("c", "v1.33.1+k3s1"),
            node("d", "v2.0.0"),
            node("e", "garbled"),
        ];
        assert_eq!(
            kubelets_without_native_sidecars(&nodes),
            vec![("a".into(), "v1.28.3-eks-1234".into()), ("e".into(), "garbled".into())],
            "an unknown version counts as too old: the safe side"
        );
    }
}

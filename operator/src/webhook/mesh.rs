//! Pods in an Istio or Linkerd service mesh (docs/OPERATOR.md, "Service
//! meshes", cites the meshes' source for every rule here).
//!
//! The mesh may inject before or after this webhook, so a pod is taken as
//! meshed on any sign the pod itself shows: the mesh's status annotations
//! and labels, its containers, or an explicit opt-in annotation. A
//! namespace-level injection label is not visible on the pod; a pod meshed
//! only through it is recognised when the mesh has run before us or when our
//! reinvocation (`reinvocationPolicy: IfNeeded`) sees the mesh's containers.
//!
//! For a meshed pod the proxy runs as the mesh's bypass UID: both meshes'
//! iptables rules (and CNI plugins) RETURN every packet that UID sends, so
//! the proxy reaches Vault and the storage provider before the mesh proxy
//! runs, with or without CNI, whatever order the containers start in. Its
//! health port is excluded from inbound capture so the kubelet's probes
//! reach it directly (never through an Envoy or linkerd-proxy that is not
//! running yet, nor through STRICT mTLS).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

/// Istio: container and init-container names (pkg/kube/inject/inject.go,
/// webhook.go `reorderPod`).
pub const ISTIO_PROXY: &str = "istio-proxy";
const ISTIO_INIT: &str = "istio-init";
const ISTIO_VALIDATION: &str = "istio-validation";
const ISTIO_CORE_DUMP: &str = "enable-core-dump";
const ISTIO_STATUS: &str = "sidecar.istio.io/status";
const ISTIO_INJECT: &str = "sidecar.istio.io/inject";
const ISTIO_TLS_MODE: &str = "security.istio.io/tlsMode";
const ISTIO_EXCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
const ISTIO_DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// `constants.DefaultProxyUIDInt`; also the `-u` of istio-iptables.
const ISTIO_UID: i64 = 1337;

/// Linkerd (pkg/k8s/labels.go).
pub const LINKERD_PROXY: &str = "linkerd-proxy";
const LINKERD_INIT: &str = "linkerd-init";
const LINKERD_VALIDATOR: &str = "linkerd-network-validator";
const LINKERD_INJECT: &str = "linkerd.io/inject";
const LINKERD_VERSION: &str = "linkerd.io/proxy-version";
const LINKERD_SKIP_INBOUND: &str = "config.linkerd.io/skip-inbound-ports";
const LINKERD_UID_ANNOTATION: &str = "config.linkerd.io/proxy-uid";
/// `proxy.uid` in charts/linkerd-control-plane/values.yaml.
const LINKERD_UID: i64 = 2102;

/// The mesh containers that run before the proxy in native mode, in the
/// order the meshes put them first; the proxy goes right after them.
const LEADING_INITS: &[&str] =
    &[ISTIO_INIT, ISTIO_VALIDATION, ISTIO_CORE_DUMP, ISTIO_PROXY, LINKERD_INIT, LINKERD_VALIDATOR, LINKERD_PROXY];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeshKind {
    Istio,
    Linkerd,
}

impl MeshKind {
    pub fn name(self) -> &'static str {
        match self {
            MeshKind::Istio => "Istio",
            MeshKind::Linkerd => "Linkerd",
        }
    }
}

/// What the pod says about meshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mesh {
    /// No sidecar mesh (or Istio ambient, which needs nothing: see docs).
    None,
    Sidecar {
        kind: MeshKind,
        uid: i64,
    },
    /// Signs of both meshes: one bypass UID cannot serve both.
    Both,
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().flatten().chain(&spec.containers)
}

fn has(spec: &PodSpec, names: &[&str]) -> bool {
    containers(spec).any(|c| names.contains(&c.name.as_str()))
}

/// Whether `name` is a container a mesh added (it gets no S3 endpoint).
pub fn is_mesh_container(name: &str) -> bool {
    LEADING_INITS.contains(&name)
}

fn run_as_user(spec: &PodSpec, name: &str) -> Option<i64> {
    containers(spec).find(|c| c.name == name).and_then(|c| c.security_context.as_ref()?.run_as_user)
}

/// Reads the pod's mesh signals (annotations, labels, containers).
pub fn detect(pod: &Pod) -> Mesh {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let default_spec = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    // The label wins over the annotation (inject.go `injectRequired`).
    let istio_opt_in = labels.get(ISTIO_INJECT).or(annotations.get(ISTIO_INJECT)).is_some_and(|v| v == "true");
    let istio = has(spec, &[ISTIO_PROXY, ISTIO_INIT, ISTIO_VALIDATION])
        || annotations.contains_key(ISTIO_STATUS)
        || labels.contains_key(ISTIO_TLS_MODE)
        || istio_opt_in;
    let linkerd = has(spec, &[LINKERD_PROXY, LINKERD_INIT, LINKERD_VALIDATOR])
        || annotations.contains_key(LINKERD_VERSION)
        || annotations.get(LINKERD_INJECT).is_some_and(|v| v == "enabled" || v == "ingress");
    match (istio, linkerd) {
        (true, true) => Mesh::Both,
        (true, false) => {
            // On OpenShift Istio takes the UID from the namespace's range;
            // the injected istio-proxy then says which (inject.go `GetProxyIDs`).
            let uid = run_as_user(spec, ISTIO_PROXY).filter(|u| is_user(*u)).unwrap_or(ISTIO_UID);
            Mesh::Sidecar { kind: MeshKind::Istio, uid }
        }
        (false, true) => {
            let uid = annotations
                .get(LINKERD_UID_ANNOTATION)
                .and_then(|v| v.parse().ok())
                .or_else(|| run_as_user(spec, LINKERD_PROXY))
                .filter(|u| is_user(*u))
                .unwrap_or(LINKERD_UID);
            Mesh::Sidecar { kind: MeshKind::Linkerd, uid }
        }
        // `istio.io/dataplane-mode: ambient` lands here too: ztunnel runs
        // on the node before the pod and kubelet probes are exempted.
        (false, false) => Mesh::None,
    }
}

/// A UID the proxy may run as: not root (its `runAsNonRoot` would stop
/// it) and within what the API server accepts. A pod's own annotation
/// (`config.linkerd.io/proxy-uid: "0"`) must not be able to break the proxy.
fn is_user(uid: i64) -> bool {
    (1..=i64::from(i32::MAX)).contains(&uid)
}

/// Whether the pod is enrolled in Istio ambient mode (only reported).
pub fn is_ambient(pod: &Pod) -> bool {
    let ambient = |m: &Option<BTreeMap<String, String>>| {
        m.as_ref().and_then(|m| m.get(ISTIO_DATAPLANE_MODE)).is_some_and(|v| v == "ambient")
    };
    ambient(&pod.metadata.labels)
}

/// `list` (comma-separated ports) with `port` added unless already there
/// or covered by `*`; what was there is kept as it was.
fn merge_port(list: &str, port: i32) -> String {
    let items: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let wanted = port.to_string();
    if items.iter().any(|p| *p == wanted || *p == "*") {
        return list.to_owned();
    }
    if items.is_empty() { wanted } else { format!("{},{wanted}", list.trim_end_matches(',')) }
}

/// Excludes `port` from the mesh's inbound capture: the pod annotation
/// (read by the mesh's injector and CNI plugin) and, when the mesh already
/// injected its iptables init container, that container's argument (the
/// injector rendered it from the annotation before we added the port).
pub fn exclude_inbound(pod: &mut Pod, kind: MeshKind, port: i32) {
    let (annotation, init, flag) = match kind {
        MeshKind::Istio => (ISTIO_EXCLUDE_INBOUND, ISTIO_INIT, "-d"),
        MeshKind::Linkerd => (LINKERD_SKIP_INBOUND, LINKERD_INIT, "--inbound-ports-to-ignore"),
    };
    let annotations = pod.metadata.annotations.get_or_insert_with(Default::default);
    let current = annotations.get(annotation).cloned().unwrap_or_default();
    annotations.insert(annotation.to_owned(), merge_port(&current, port));
    let Some(spec) = pod.spec.as_mut() else { return };
    for c in spec.init_containers.iter_mut().flatten().filter(|c| c.name == init) {
        let Some(args) = c.args.as_mut() else { continue };
        if let Some(i) = args.iter().position(|a| a == flag)
            && let Some(value) = args.get_mut(i + 1)
        {
            *value = merge_port(value, port);
        }
    }
}

/// Where the proxy goes among the native init containers: after the mesh
/// containers at the front (the order both meshes give them whenever they
/// run), so the result is the same whichever webhook runs first.
pub fn native_index(inits: &[Container]) -> usize {
    inits.iter().take_while(|c| LEADING_INITS.contains(&c.name.as_str())).count()
}

/// Where the classic proxy goes among the containers: first, but after a
/// mesh proxy that the mesh put first (Istio `holdApplicationUntilProxyStarts`,
/// Linkerd `proxy.await`), which the mesh moves there whenever it runs.
pub fn classic_index(containers: &[Container]) -> usize {
    containers.iter().take_while(|c| c.name == ISTIO_PROXY || c.name == LINKERD_PROXY).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_merged_keeping_what_is_there() {
        assert_eq!(merge_port("", 8191), "8191");
        assert_eq!(merge_port("15020", 8191), "15020,8191");
        assert_eq!(merge_port("15020,8191", 8191), "15020,8191");
        assert_eq!(merge_port("15090,15021,", 8191), "15090,15021,8191");
        assert_eq!(merge_port("*", 8191), "*");
        assert_eq!(merge_port(" 8191 ,9000", 8191), " 8191 ,9000");
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn signals() {
        let p = pod("metadata: {annotations: {sidecar.istio.io/inject: 'true'}}\nspec: {containers: []}");
        assert_eq!(detect(&p), Mesh::Sidecar { kind: MeshKind::Istio, uid: 1337 });
        let p = pod(
            "metadata: {labels: {sidecar.istio.io/inject: 'false'}, annotations: {sidecar.istio.io/inject: 'true'}}\nspec: {containers: []}",
        );
        assert_eq!(detect(&p), Mesh::None, "the label wins");
        let p = pod(
            "metadata: {annotations: {linkerd.io/inject: enabled, config.linkerd.io/proxy-uid: '3000'}}\nspec: {containers: []}",
        );
        assert_eq!(detect(&p), Mesh::Sidecar { kind: MeshKind::Linkerd, uid: 3000 });
        let p =
            pod("metadata: {}\nspec: {containers: [{name: istio-proxy, securityContext: {runAsUser: 1000650000}}]}");
        assert_eq!(detect(&p), Mesh::Sidecar { kind: MeshKind::Istio, uid: 1000650000 });
        let p = pod("metadata: {labels: {istio.io/dataplane-mode: ambient}}\nspec: {containers: []}");
        assert_eq!(detect(&p), Mesh::None);
        assert!(is_ambient(&p));
        let p = pod("metadata: {annotations: {linkerd.io/inject: enabled}}\nspec: {containers: [{name: istio-proxy}]}");
        assert_eq!(detect(&p), Mesh::Both);
    }

    #[test]
    fn a_pods_own_uid_annotation_cannot_make_the_proxy_root() {
        for bad in ["0", "-1", "4294967296"] {
            let pod: Pod = serde_yaml::from_str(&format!(
                "metadata: {{annotations: {{linkerd.io/inject: enabled, config.linkerd.io/proxy-uid: '{bad}'}}}}\nspec: {{containers: []}}"
            ))
            .unwrap();
            assert_eq!(detect(&pod), Mesh::Sidecar { kind: MeshKind::Linkerd, uid: LINKERD_UID }, "{bad}");
        }
    }
}

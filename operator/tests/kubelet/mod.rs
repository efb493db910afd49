//! What the kubelet does with the modes and owners of projected
//! service-account-token files, to check that the proxy can read every token
//! it is told to read. Upstream sources (docs/OPERATOR.md, "Token files"):
//!
//! - `pkg/volume/util/util.go`, `FsUserFrom`: the pod's FsUser is the
//!   effective `runAsUser` (container, else pod) that every init and regular
//!   container shares; nil if one has none or two differ.
//! - `pkg/volume/projected/projected.go`, `collectData`, serviceAccountToken:
//!   mode `0600` when FsUser or FsGroup is set, else `defaultMode`; the file
//!   is owned by FsUser when it is set (`FileProjection.FsUser`), else root.
//! - `pkg/volume/volume_linux.go`, `SetVolumeOwnership`: with `fsGroup`, the
//!   group becomes fsGroup and read-only volumes gain group read (0600 → 0640);
//!   KEP 2451 "Proposed heuristics", case 1.
//! - `pkg/apis/core/v1/defaults.go`, `SetDefaults_ProjectedVolumeSource`:
//!   `defaultMode` defaults to 0644.
//! - `pkg/kubelet/kuberuntime/security_context.go`,
//!   `determineEffectiveSecurityContext`: every container gets `fsGroup` and
//!   `supplementalGroups` as supplementary groups.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The distroless `nonroot` user the proxy image runs as when nothing says otherwise.
const IMAGE_USER: i64 = 65532;

#[derive(Debug, PartialEq)]
pub struct TokenFile {
    pub mode: i32,
    pub uid: i64,
    pub gid: i64,
}

fn effective_run_as_user(pod: &Pod, c: &Container) -> Option<i64> {
    c.security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.spec.as_ref()?.security_context.as_ref()?.run_as_user)
}

/// `FsUserFrom`.
pub fn fs_user(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let mut user = None;
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        let uid = effective_run_as_user(pod, c)?;
        match user {
            Some(u) if u != uid => return None,
            _ => user = Some(uid),
        }
    }
    user
}

/// The token file of projected volume `volume`, as the kubelet writes it.
pub fn token_file(pod: &Pod, volume: &str) -> TokenFile {
    let spec = pod.spec.as_ref().unwrap();
    let projected = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == volume)
        .and_then(|v| v.projected.as_ref())
        .unwrap_or_else(|| panic!("no projected volume {volume}"));
    let fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group);
    let fs_user = fs_user(pod);
    let mut mode =
        if fs_user.is_some() || fs_group.is_some() { 0o600 } else { projected.default_mode.unwrap_or(0o644) };
    let mut gid = 0;
    if let Some(g) = fs_group {
        gid = g;
        mode |= 0o040;
    }
    TokenFile { mode, uid: fs_user.unwrap_or(0), gid }
}

/// Whether `container` can read `file` (no capabilities: the proxy drops ALL).
pub fn can_read(pod: &Pod, container: &Container, file: &TokenFile) -> bool {
    let spec = pod.spec.as_ref().unwrap();
    let pod_sc = spec.security_context.as_ref();
    let sc = container.security_context.as_ref();
    let uid = effective_run_as_user(pod, container).unwrap_or(IMAGE_USER);
    let gid = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group)).unwrap_or(IMAGE_USER);
    let mut groups = vec![gid];
    groups.extend(pod_sc.and_then(|s| s.fs_group));
    groups.extend(pod_sc.and_then(|s| s.supplemental_groups.clone()).into_iter().flatten());
    if uid == file.uid {
        file.mode & 0o400 != 0
    } else if groups.contains(&file.gid) {
        file.mode & 0o040 != 0
    } else {
        file.mode & 0o004 != 0
    }
}

/// (container, volume) for every projected service-account-token volume a
/// container other than the proxy mounts.
pub fn workload_token_mounts(pod: &Pod) -> Vec<(String, String)> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    let is_token = |name: &str| {
        spec.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.projected.as_ref())
            .is_some_and(|p| p.sources.iter().flatten().any(|s| s.service_account_token.is_some()))
    };
    let mut out = Vec::new();
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        if c.name == cloudtaser_operator::webhook::inject::SIDECAR {
            continue;
        }
        for m in c.volume_mounts.iter().flatten().filter(|m| is_token(&m.name)) {
            out.push((c.name.clone(), m.name.clone()));
        }
    }
    out
}

/// Every token file the proxy is told to read (by its env), with the volume it is in.
pub fn proxy_token_files(container: &Container) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for var in container.env.iter().flatten() {
        if !matches!(
            var.name.as_str(),
            "VAULT_K8S_TOKEN_PATH" | "AWS_WEB_IDENTITY_TOKEN_FILE" | "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
        ) {
            continue;
        }
        let path = var.value.clone().unwrap();
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| path.starts_with(&format!("{}/", m.mount_path.trim_end_matches('/'))))
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("{} = {path} is in no volume the proxy mounts", var.name));
        out.push((var.name.clone(), mount.name.clone()));
    }
    out
}

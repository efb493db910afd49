//! `cloudtaser-operator inject`, the binary itself: workloads of every kind
//! get the same pod template the webhook would give their pods; denials go
//! to stderr with a non-zero exit. `UPDATE_GOLDEN=1` rewrites expected.yaml.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject")
}

fn inject(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudtaser-operator"))
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that stops early (a denial) may close its stdin before all of
    // it is written; what it printed and its exit status are what is checked.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn injects_every_workload_kind_from_stdin() {
    let configs = dir().join("configs.yaml");
    let manifests = std::fs::read_to_string(dir().join("manifests.yaml")).unwrap();
    let out = inject(&["--config", configs.to_str().unwrap(), "-f", "-"], &manifests);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(dir().join("expected.yaml"), &yaml).unwrap();
    }
    assert_eq!(yaml, std::fs::read_to_string(dir().join("expected.yaml")).unwrap());
    let docs: Vec<serde_json::Value> =
        serde_yaml::Deserializer::from_str(&yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    assert_eq!(docs.len(), 4);
    let sidecar = |t: &serde_json::Value| t["spec"]["initContainers"][0]["name"].as_str().map(str::to_owned);
    assert_eq!(sidecar(&docs[0]["spec"]["template"]).as_deref(), Some("cloudtaser-s3proxy"));
    assert_eq!(sidecar(&docs[1]["spec"]["jobTemplate"]["spec"]["template"]).as_deref(), Some("cloudtaser-s3proxy"));
    assert_eq!(sidecar(&docs[2]["spec"]["template"]), None, "unannotated templates are left alone");
    assert_eq!(docs[3]["kind"], "Service");
    // For kubernetes-validate (tests/e2e/test_operator_manifests.py).
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("injected-manifests");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("inject.yaml"), &yaml).unwrap();
}

#[test]
fn denials_go_to_stderr_with_a_non_zero_exit() {
    let configs = dir().join("configs.yaml");
    let manifests = std::fs::read_to_string(dir().join("manifests.yaml")).unwrap();
    // Classic sidecars cannot serve the CronJob: it would never complete.
    let out = inject(&["--config", configs.to_str().unwrap(), "--native-sidecar", "false", "-f", "-"], &manifests);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("denied: CronJob/nightly: pod has restartPolicy OnFailure"), "{stderr}");
    // A pod in another namespace than its config.
    let other = manifests.replace("namespace: shop", "namespace: billing");
    let out = inject(&["--config", configs.to_str().unwrap(), "-f", "-"], &other);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs an S3ProxyConfig named `default` in namespace billing")
    );
    // A broken config file is an error of its own (exit 2).
    let out = inject(&["--config", "/nonexistent.yaml", "-f", "-"], &manifests);
    assert_eq!(out.status.code(), Some(2));
}

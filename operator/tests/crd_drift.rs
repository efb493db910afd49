//! `crds/` and the chart carry the CRD generated from the Rust types; this
//! fails when either drifts. Regenerate with `cloudtaser-operator crd`.

use cloudtaser_operator::crd::crd_yaml;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = crd_yaml();
    for path in [
        "crds/s3proxyconfigs.cloudtaser.io.yaml",
        "charts/cloudtaser-operator/files/crds/s3proxyconfigs.cloudtaser.io.yaml",
    ] {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is out of date: run `cargo run -p cloudtaser-operator -- crd > {path}`"
        );
    }
}

#[test]
fn schema_rejects_bad_configs_at_apply_time() {
    let crd = crd_yaml();
    for rule in [
        "self.method != 'kubernetes' || has(self.role)",
        "self.source != 'secret' || has(self.secretRef)",
        "self.method != 'approle' || (has(self.roleId) && has(self.secretId))",
    ] {
        assert!(crd.contains(rule), "missing CEL rule {rule}");
    }
    // Entries of the comma-joined env lists; `..` segments are refused by
    // `S3ProxyConfigSpec::validate` (controller and webhook).
    for pattern in ["^-?[A-Za-z]+$", r"^[A-Za-z0-9._-]{1,255}(/[^,\s]*)?$"] {
        assert!(crd.contains(&format!("pattern: {pattern}\n")), "missing item pattern {pattern}");
    }
    assert!(crd.contains("subresources:") && crd.contains("status: {}"), "status subresource");
    assert!(crd.contains("- s3pc"), "short name");
}

"""The operator without a cluster: the Helm chart renders, lints and
validates for Kubernetes 1.30 and 1.37 under several values; every pod the
webhook produced in the golden tests validates too; the example configs
validate against the CRD's schema, and broken ones do not."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "cloudtaser-operator"
TOOLS = Path(os.environ.get("CLOUDTASER_TOOLS", Path.home() / ".cache" / "cloudtaser"))
HELM = str(TOOLS / "bin" / "helm")
VERSIONS = ["1.30", "1.37"]
# Custom resources of other operators; kubernetes-validate knows only core kinds.
FOREIGN = {"Certificate", "Issuer", "ServiceMonitor", "PodMonitor", "PrometheusRule"}

VALUES = {
    "defaults": [],
    "cert-manager": ["--set", "tls.mode=certManager"],
    "cert-manager-own-issuer": ["--set", "tls.mode=certManager", "--set", "tls.certManager.issuerRef.name=corp-ca",
                                "--set", "tls.certManager.issuerRef.kind=ClusterIssuer",
                                "--set", "tls.certManager.issuerRef.group=cert-manager.io"],
    "day-two": ["--set", "image.digest=sha256:" + "ab" * 32, "--set", "serviceMonitor.enabled=true",
                "--set", "podMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
                "--set", "serviceMonitor.labels.release=kube-prometheus-stack",
                "--set", "podMonitor.labels.release=kube-prometheus-stack",
                "--set", "prometheusRule.labels.release=kube-prometheus-stack",
                "--set", "networkPolicy.injectedPods.enabled=true", "--set", "networkPolicy.injectedPods.namespaces={shop,bank}",
                "--set-json", 'networkPolicy.injectedPods.from=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]'],
    "existing-secret": ["--set", "tls.mode=existingSecret", "--set", "tls.existingSecret=my-tls", "--set", "tls.caBundle=Zm9v"],
    "helm-ca-classic-sidecar": ["--set", "tls.mode=helm", "--set", "proxy.nativeSidecar=false", "--set", "replicaCount=1"],
    "production": ["--set", "tls.mode=helm", "--set", "hostNetwork=true", "--set", "webhook.containerPort=10260",
                   "--set", "requiredAntiAffinity=true", "--set", "priorityClassName=system-cluster-critical",
                   "--set", "imagePullSecrets[0].name=regcred", "--set", "podAnnotations.team=platform",
                   "--set", "podLabels.tier=control", "--set", "serviceAccount.annotations.owner=platform",
                   "--set", "logLevel=debug", "--set", "proxy.logLevel=warn", "--set-string", "proxy.resources.cpuLimit=500m",
                   "--set", "terminationGracePeriodSeconds=45",
                   "--set", "podMonitor.enabled=true", "--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true"],
    "everything-on": ["--set", "networkPolicy.enabled=true", "--set", "serviceMonitor.enabled=true", "--set", "crds.keep=false",
                      "--set-json", 'clusterDefault={"upstream":{"region":"eu-central-1"},"vault":{"address":"https://v:8200",'
                                    '"transit":{"key":"k"},"auth":{"method":"kubernetes","role":"r"}},"credentials":{"source":"serviceAccount"}}'],
}


def validate(path: Path, version: str) -> None:
    r = subprocess.run(["kubernetes-validate", "--strict", "--quiet", "-k", version, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, f"{path} against {version}:\n{r.stdout}{r.stderr}"


def test_helm_lint_strict():
    r = subprocess.run([HELM, "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("case", sorted(VALUES))
def test_rendered_chart_validates(case, tmp_path):
    out = subprocess.run([HELM, "template", "ct", str(CHART), "-n", "cloudtaser", *VALUES[case]], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "MutatingWebhookConfiguration", "ClusterRole", "CustomResourceDefinition"} <= kinds
    core = tmp_path / "core.yaml"
    core.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] not in FOREIGN]))
    for version in VERSIONS:
        validate(core, version)
    webhook_config = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    webhook, by_namespace = webhook_config["webhooks"]
    assert webhook["failurePolicy"] == "Fail" and webhook["reinvocationPolicy"] == "IfNeeded"
    assert "cloudtaser.io/s3-proxy" in webhook["matchConditions"][0]["expression"]
    # Pods annotated "false" or "disabled" never reach the Fail-policy webhook.
    assert webhook["matchConditions"][1]["expression"] == \
        "!(object.metadata.annotations['cloudtaser.io/s3-proxy'].trim().lowerAscii() in ['false', 'disabled'])"
    # Namespace enablement: only labelled namespaces' unannotated pods reach
    # the second webhook (fail closed for those, nobody else depends on it).
    assert by_namespace["clientConfig"]["service"]["path"] == "/mutate-namespace"
    assert webhook["clientConfig"]["service"]["path"] == "/mutate"
    assert by_namespace["failurePolicy"] == webhook["failurePolicy"]
    assert by_namespace["clientConfig"] == {**webhook["clientConfig"], "service": {**webhook["clientConfig"]["service"], "path": "/mutate-namespace"}}
    assert {"key": "cloudtaser.io/s3-proxy-injection", "operator": "In", "values": ["enabled"]} in \
        by_namespace["namespaceSelector"]["matchExpressions"]
    assert webhook["namespaceSelector"]["matchExpressions"] == by_namespace["namespaceSelector"]["matchExpressions"][:-1]
    assert by_namespace["matchConditions"] == [{"name": "not-annotated-or-injected", "expression":
        "!has(object.metadata.annotations) || !('cloudtaser.io/s3-proxy' in object.metadata.annotations)"
        " || 'cloudtaser.io/s3-proxy-status' in object.metadata.annotations"}]
    assert {"cloudtaser", "kube-system"} <= set(webhook["namespaceSelector"]["matchExpressions"][0]["values"])
    # Namespace opt-out label.
    assert {"key": "cloudtaser.io/admission-webhooks", "operator": "NotIn", "values": ["disabled"]} in \
        webhook["namespaceSelector"]["matchExpressions"]
    # Least privilege: no access to Secrets anywhere in the cluster; only the
    # release namespace's TLS Secret (selfManaged) by name, and create.
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert not any("secrets" in r["resources"] for r in cluster_role["rules"]), cluster_role["rules"]
    for role in (d for d in docs if d["kind"] == "Role"):
        for rule in role["rules"]:
            if "secrets" in rule["resources"]:
                assert rule.get("resourceNames") or rule["verbs"] == ["create"], rule
                assert role["metadata"]["namespace"] == "cloudtaser"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    if deployment["spec"]["replicas"] > 1:
        assert "PodDisruptionBudget" in kinds
    if case == "defaults":
        assert {"Role", "RoleBinding"} <= kinds, "self-managed TLS needs its Secret and Lease"
        assert "caBundle" not in webhook["clientConfig"], "the operator publishes it"
    env = {e["name"]: e.get("value") for e in container["env"]}
    # The controller's Lease is the release's; the Role grants exactly it and the certificate's.
    assert env["CLOUDTASER_LEASE_NAME"] == "ct-cloudtaser-operator"
    leader_role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "ct-cloudtaser-operator-leader")
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "resourceNames": ["ct-cloudtaser-operator", "ct-cloudtaser-operator-tls"], "verbs": ["get", "update"]} in leader_role["rules"]
    # Workload events and namespace enablement read metadata, never more.
    assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]} in cluster_role["rules"]
    assert {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]} in cluster_role["rules"]
    # `helm test`: a hook pod asking the webhook's Service for an answer.
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "ct-cloudtaser-operator.cloudtaser.svc:443/mutate" in test_pod["spec"]["containers"][0]["args"][0]
    certificates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Certificate"}
    issuers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Issuer"}
    inject_from = (webhook_config["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
    if case == "cert-manager":
        # self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate;
        # the webhook trusts the CA, so a leaf renewal never changes the caBundle.
        ca, leaf = certificates["ct-cloudtaser-operator-ca"], certificates["ct-cloudtaser-operator"]
        assert ca["spec"]["isCA"] is True and ca["spec"]["privateKey"]["rotationPolicy"] == "Never"
        assert issuers[ca["spec"]["issuerRef"]["name"]]["spec"] == {"selfSigned": {}}
        ca_issuer = issuers[leaf["spec"]["issuerRef"]["name"]]
        assert ca_issuer["spec"] == {"ca": {"secretName": ca["spec"]["secretName"]}}
        assert not leaf["spec"].get("isCA")
        assert leaf["spec"]["secretName"] == deployment["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
        assert inject_from == "cloudtaser/ct-cloudtaser-operator-ca"
    if case == "cert-manager-own-issuer":
        assert list(certificates) == ["ct-cloudtaser-operator"] and not issuers
        assert certificates["ct-cloudtaser-operator"]["spec"]["issuerRef"] == \
            {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
        assert inject_from == "cloudtaser/ct-cloudtaser-operator"
    if not case.startswith("cert-manager"):
        assert inject_from is None and not certificates
    if case == "day-two":
        assert container["image"] == "ghcr.io/cloudtaser/operator@sha256:" + "ab" * 32
        for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
            monitor = next(d for d in docs if d["kind"] == kind)
            assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
        policies = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "NetworkPolicy"}
        assert set(policies) == {"shop", "bank"}
        assert policies["shop"]["spec"]["podSelector"] == {"matchLabels": {"cloudtaser.io/s3-proxy-injected": "true"}}
        assert policies["shop"]["spec"]["ingress"] == [{"ports": [{"port": 8191, "protocol": "TCP"}], "from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}]
    else:
        assert container["image"] == "ghcr.io/cloudtaser/operator:0.1.0"
    if case == "production":
        pod = deployment["spec"]["template"]
        spec = pod["spec"]
        assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
        assert container["ports"][0]["containerPort"] == 10260
        assert env["CLOUDTASER_WEBHOOK_LISTEN"] == "0.0.0.0:10260" and env["RUST_LOG"] == "debug"
        assert env["CLOUDTASER_PROXY_LOG_LEVEL"] == "warn" and env["CLOUDTASER_PROXY_CPU_LIMIT"] == "500m"
        assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
        assert spec["priorityClassName"] == "system-cluster-critical"
        assert spec["imagePullSecrets"] == [{"name": "regcred"}]
        assert spec["terminationGracePeriodSeconds"] == 45
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
        assert pod["metadata"]["annotations"]["team"] == "platform" and pod["metadata"]["labels"]["tier"] == "control"
        sa = next(d for d in docs if d["kind"] == "ServiceAccount")
        assert sa["metadata"]["annotations"] == {"owner": "platform"}
        assert {"PodMonitor", "PrometheusRule", "Secret"} <= kinds
    if case == "everything-on":
        assert {"NetworkPolicy", "ServiceMonitor", "ConfigMap"} <= kinds
        crd = next(d for d in docs if d["kind"] == "CustomResourceDefinition")
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_two_releases_in_one_namespace_elect_apart():
    def lease(release):
        out = subprocess.run([HELM, "template", release, str(CHART), "-n", "shared"], capture_output=True, text=True, check=True)
        deployment = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment")
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env["CLOUDTASER_LEASE_NAME"]
    assert lease("blue") == "blue-cloudtaser-operator" and lease("green") == "green-cloudtaser-operator"


@pytest.mark.parametrize(("values", "error"), [
    (["--set", "replicaCount=two"], "/replicaCount"),
    (["--set", "webhook.failurePolicy=Ignor"], "/webhook/failurePolicy"),
    (["--set", "proxy.nativeSidecar=no"], "/proxy/nativeSidecar"),
    (["--set", "tls.mode=vault"], "/tls/mode"),
    (["--set", "proxy.logLevel=verbose"], "/proxy/logLevel"),
    (["--set", "proxy.resources.memoryLimit=lots"], "/proxy/resources/memoryLimit"),
    (["--set", "replicaCont=2"], "replicaCont"),
    (["--set", "image.digest=latest"], "/image/digest"),
    (["--set", "serviceMonitor.labels.release=1", "--set-json", "serviceMonitor.labels.tier=2"], "/serviceMonitor/labels/tier"),
])
def test_values_schema_rejects_bad_values(values, error):
    r = subprocess.run([HELM, "template", "ct", str(CHART), *values], capture_output=True, text=True)
    assert r.returncode != 0, r.stdout[:300]
    assert "don't meet the specifications of the schema" in r.stderr and error in r.stderr, r.stderr


def test_offline_injected_manifests_validate():
    path = ROOT / "target" / "tmp" / "injected-manifests" / "inject.yaml"
    assert path.exists(), "run the operator's tests first (cargo test)"
    for version in VERSIONS:
        validate(path, version)


def test_injected_pods_validate(tmp_path):
    pods = sorted((ROOT / "target" / "tmp" / "injected-pods").glob("*.json"))
    assert len(pods) >= 29, "run the operator's golden tests first (cargo test)"
    for pod in pods:
        as_yaml = tmp_path / f"{pod.stem}.yaml"
        as_yaml.write_text(yaml.safe_dump(json.loads(pod.read_text())))
        for version in VERSIONS:
            if version in NEWER_THAN.get(pod.stem, ()):
                continue
            validate(as_yaml, version)


# Golden cases whose input carries a field newer than some of VERSIONS, on
# purpose (the webhook must keep fields it does not know on their container).
NEWER_THAN = {"unknown-field-on-first-init-container": ("1.30",)}  # restartPolicyRules: 1.34


def crd_schema() -> dict:
    crd = yaml.safe_load((ROOT / "crds" / "s3proxyconfigs.cloudtaser.io.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("example", sorted((ROOT / "docs" / "examples").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_configs_validate_against_the_crd(example):
    jsonschema.validate(yaml.safe_load(example.read_text()), crd_schema())


@pytest.mark.parametrize(("path", "value"), [
    (("spec", "upstream", "region"), "Not A Region"),
    (("spec", "vault", "address"), "vault.example:8200"),
    (("spec", "credentials", "source"), "instanceProfile"),
    (("spec", "vault", "auth", "method"), "userpass"),
    (("spec", "credentials", "roleArn"), "arn:aws:iam::123:role/x"),
])
def test_bad_configs_are_rejected_by_the_schema(path, value):
    doc = yaml.safe_load((ROOT / "docs" / "examples" / "static.yaml").read_text())
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, crd_schema())

"""The chart's ValidatingAdmissionPolicy that keeps the proxy's web-identity
token in the proxy container (templates/identity-guard.yaml), evaluated
without an API server: its CEL is run by cel-python on real pods (the
webhook's own golden output, and pods an attacker in the namespace could
create). The API server evaluates `variables` in order and exposes them as
`variables.<name>`; so does `admit` below."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import celpy
import pytest
import yaml

from test_operator_manifests import CHART, HELM

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "operator" / "tests" / "golden"


def policy(*values: str) -> dict:
    out = subprocess.run([HELM, "template", "ct", str(CHART), "-n", "cloudtaser", *values],
                         capture_output=True, text=True, check=True).stdout
    return next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "ValidatingAdmissionPolicy")


def admit(vap: dict, pod: dict) -> list[str]:
    """The messages of the validations that fail (empty: admitted)."""
    env = celpy.Environment()
    obj = celpy.json_to_cel(pod)
    variables = celpy.celtypes.MapType({})

    def run(expression: str):
        return env.program(env.compile(expression)).evaluate({"object": obj, "variables": variables})

    for var in vap["spec"]["variables"]:
        variables = celpy.celtypes.MapType({**variables, celpy.celtypes.StringType(var["name"]): run(var["expression"])})
    failed = []
    for rule in vap["spec"]["validations"]:
        result = run(rule["expression"])
        assert isinstance(result, celpy.celtypes.BoolType), f"{rule['expression']} gave {result!r}"
        if not result:
            failed.append(rule["message"])
    return failed


def golden(case: str, name: str) -> dict:
    return yaml.safe_load((GOLDEN / case / name).read_text())


@pytest.fixture(scope="module")
def vap() -> dict:
    return policy()


def test_the_webhooks_own_web_identity_pod_is_admitted(vap):
    pod = golden("webidentity-eks", "expected.yaml")
    assert any(v["name"] == "cloudtaser-aws-token" for v in pod["spec"]["volumes"]), "the case holds the token"
    assert admit(vap, pod) == []


def test_pods_without_the_proxys_token_are_left_alone(vap):
    for case in ("static-native", "irsa-eks-ran-first", "unannotated-untouched"):
        pod = golden(case, "expected.yaml" if (GOLDEN / case / "expected.yaml").exists() else "input.yaml")
        assert admit(vap, pod) == [], case


def test_a_workload_container_mounting_the_proxys_token_is_denied(vap):
    """The pod the webhook denies (golden case), created where the webhook
    never sees it: no annotation, so no webhook call at all."""
    pod = golden("webidentity-workload-mounts-token-denied", "input.yaml")
    del pod["metadata"]["annotations"]
    assert any("may mount a service-account token" in m for m in admit(vap, pod))


def test_a_container_named_like_the_proxy_from_another_image_is_denied(vap):
    pod = golden("webidentity-eks", "expected.yaml")
    impostor = copy.deepcopy(pod)
    impostor["spec"]["initContainers"][0]["image"] = "registry.example/thief:1"
    assert any("may mount a service-account token" in m for m in admit(vap, impostor))
    lookalike = copy.deepcopy(pod)
    lookalike["spec"]["initContainers"][0]["image"] = "ghcr.io/cloudtaser/s3proxy-evil:1"
    assert admit(vap, lookalike), "a repository that only starts with the proxy's is not the proxy's"


def test_an_ephemeral_container_cannot_borrow_the_token(vap):
    pod = golden("webidentity-eks", "expected.yaml")
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox",
                                           "volumeMounts": [{"name": "cloudtaser-aws-token", "mountPath": "/t"}]}]
    assert admit(vap, pod)


def test_a_shared_process_namespace_is_denied_with_the_token(vap):
    pod = golden("webidentity-eks", "expected.yaml")
    pod["spec"]["shareProcessNamespace"] = True
    assert any("share its process namespace" in m for m in admit(vap, pod))
    plain = golden("static-native", "expected.yaml")
    plain["spec"]["shareProcessNamespace"] = True
    assert admit(vap, plain) == [], "pods without the token may share it"


def test_audiences_and_image_repositories_come_from_the_values():
    custom = policy("--set", "identityGuard.audiences={tenant-a-proxy}",
                    "--set", "identityGuard.proxyImageRepositories={mirror.example/cloudtaser/s3proxy}")
    pod = golden("webidentity-eks", "expected.yaml")
    assert admit(custom, pod) == [], "the default audience is not guarded when the values name another"
    for v in pod["spec"]["volumes"]:
        for s in v.get("projected", {}).get("sources", []):
            if "serviceAccountToken" in s and s["serviceAccountToken"]["audience"] == "cloudtaser-s3proxy":
                s["serviceAccountToken"]["audience"] = "tenant-a-proxy"
    assert admit(custom, pod), "the proxy's image is not from the mirror the values allow"
    pod["spec"]["initContainers"][0]["image"] = "mirror.example/cloudtaser/s3proxy@sha256:" + "a" * 64
    assert admit(custom, pod) == []
    out = subprocess.run([HELM, "template", "ct", str(CHART), "--set", "identityGuard.enabled=false"],
                         capture_output=True, text=True, check=True).stdout
    assert "ValidatingAdmissionPolicy" not in out


def proxy_container(pod: dict) -> dict:
    return next(c for c in pod["spec"]["initContainers"] if c["name"] == "cloudtaser-s3proxy")


@pytest.mark.parametrize("name, value", [
    ("AWS_ENDPOINT_URL_STS", "https://collector.attacker.example"),
    ("AWS_ENDPOINT_URL", "https://collector.attacker.example"),
    ("HTTPS_PROXY", "http://collector.attacker.example:3128"),
    ("https_proxy", "http://collector.attacker.example:3128"),
    ("SSL_CERT_FILE", "/scratch/attacker-ca.pem"),
    ("AWS_CONFIG_FILE", "/scratch/config"),
    ("AWS_REGION", "eu-west-1.attacker.example#"),
    ("CLOUDTASER_S3PROXY_S3_ENDPOINT", "https://collector.attacker.example"),
])
def test_a_token_holder_that_could_send_the_token_elsewhere_is_denied(vap, name, value):
    """Found by the independent attack on the operator: a container named and
    imaged like the proxy, in a pod the webhook never saw, that sets
    AWS_ENDPOINT_URL_STS: the proxy's SDK posted the token to that endpoint.
    The token's holder may carry only the proxy's own settings."""
    pod = golden("webidentity-eks", "expected.yaml")
    del pod["metadata"]["annotations"]
    proxy_container(pod)["env"].append({"name": name, "value": value})
    assert any("may carry only the proxy's own settings" in m for m in admit(vap, pod)), name


@pytest.mark.parametrize("field, value", [
    ("command", ["/cloudtaser-s3proxy", "scan", "--bucket", "b"]),
    ("args", ["scan", "--bucket", "b"]),
    ("envFrom", [{"configMapRef": {"name": "attacker-settings"}}]),
])
def test_a_token_holder_must_run_the_proxy_as_injected(vap, field, value):
    pod = golden("webidentity-eks", "expected.yaml")
    proxy_container(pod)[field] = value
    assert any("must run the proxy as injected" in m for m in admit(vap, pod)), field


def test_an_upstream_endpoint_must_be_listed_in_the_values():
    pod = golden("webidentity-eks", "expected.yaml")
    proxy_container(pod)["env"].append({"name": "CLOUDTASER_S3PROXY_S3_ENDPOINT", "value": "https://s3.eu.internal"})
    assert admit(policy(), pod), "not listed: denied"
    listed = policy("--set", "identityGuard.upstreamEndpoints={https://s3.eu.internal}")
    assert admit(listed, pod) == []


def test_an_ephemeral_container_may_not_target_the_proxy(vap):
    """Found by the independent attack: `kubectl debug --target=cloudtaser-s3proxy`
    joins the proxy's process namespace and reads the token via /proc."""
    pod = golden("webidentity-eks", "expected.yaml")
    pod["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox", "targetContainerName": "cloudtaser-s3proxy",
                                           "securityContext": {"runAsUser": 65532}}]
    assert any("may not target the CloudTaser proxy" in m for m in admit(vap, pod))
    pod["spec"]["ephemeralContainers"][0]["targetContainerName"] = "app"
    assert admit(vap, pod) == [], "debugging the application stays possible"

"""The chart's alerts and dashboard: the rules pass `promtool check rules`
and their unit tests (`promtool test rules`), the chart installs exactly the
checked files, and every metric they query is one the binaries export
(docs/METRICS.md, whose proxy half tests/e2e/test_metrics.py proves
against a live scrape)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from test_operator_manifests import CHART, HELM, ROOT

RULES = CHART / "files" / "prometheus" / "cloudtaser-rules.yaml"
DASHBOARD = CHART / "files" / "dashboards" / "cloudtaser.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str) -> str:
    r = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_rules_are_valid_and_their_unit_tests_pass():
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", str(RULES))
    assert "SUCCESS" in promtool("test", "rules", str(ROOT / "tests" / "prometheus" / "rules_test.yaml"))


def rendered() -> dict[str, dict]:
    out = subprocess.run(
        [HELM, "template", "t", str(CHART), "--set", "podMonitor.enabled=true", "--set", "prometheusRule.enabled=true",
         "--set", "grafanaDashboard.enabled=true"], capture_output=True, text=True, check=True).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(out) if d and d["kind"] in ("PodMonitor", "PrometheusRule", "ConfigMap")
            and (d["kind"] != "ConfigMap" or "grafana_dashboard" in d["metadata"].get("labels", {}))}


def test_the_chart_installs_the_checked_files():
    docs = rendered()
    assert docs["PrometheusRule"]["spec"] == yaml.safe_load(RULES.read_text())
    assert json.loads(docs["ConfigMap"]["data"]["cloudtaser.json"]) == json.loads(DASHBOARD.read_text())
    monitor = docs["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"] == {"cloudtaser.io/s3-proxy-injected": "true"}
    assert monitor["podMetricsEndpoints"][0]["port"] == "ct-health"
    # The port the PodMonitor scrapes is the one the webhook gives the proxy.
    golden = (ROOT / "operator" / "tests" / "golden").rglob("expected.yaml")
    assert any("name: ct-health" in p.read_text() for p in golden)


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(cloudtaser_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_every_queried_metric_is_exported():
    documented = set(re.findall(r"`(cloudtaser_[a-z0-9_]+)`", (ROOT / "docs" / "METRICS.md").read_text()))
    documented |= {f"cloudtaser_s3proxy_key_cache_{s}_total" for s in ("hits", "misses")}
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, "no metric found in the rules and dashboard"
    assert used <= documented, f"queried but not exported: {sorted(used - documented)}"


def test_a_leader_handover_does_not_double_count(tmp_path):
    """Two operator replicas export the same per-config series while the
    Lease changes hands (the old leader's last scrape, the new leader's
    first): the alerts count each pod once."""
    series = [
        {"series": f'cloudtaser_operator_unprotected_pods{{namespace="app",config="eu",pod="{pod}"}}', "values": "2x40"}
        for pod in ("operator-a", "operator-b")
    ] + [
        {"series": f'cloudtaser_operator_stale_proxy_pods{{namespace="app",config="eu",pod="{pod}"}}', "values": "3x90"}
        for pod in ("operator-a", "operator-b")
    ]
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "CloudTaserUnprotectedPods", "exp_alerts": [{
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": {
                        "summary": "2 annotated pods run without the CloudTaser proxy",
                        "description": "Pods annotated cloudtaser.io/s3-proxy were created while the webhook was not "
                                       "injecting (installed later, or failurePolicy Ignore). Restart them; see the "
                                       "ProxyMissing events."}}]},
                {"eval_time": "80m", "alertname": "CloudTaserStaleProxyPods", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "namespace": "app", "config": "eu"},
                    "exp_annotations": {
                        "summary": "3 pods of S3ProxyConfig app/eu run an old proxy image",
                        "description": "These pods were injected before an operator upgrade changed the proxy image; "
                                       "they keep the old proxy until they are restarted (kubectl rollout restart)."}}]},
            ],
        }],
    }
    path = tmp_path / "handover_test.yaml"
    path.write_text(yaml.safe_dump(tests))
    assert "SUCCESS" in promtool("test", "rules", str(path))

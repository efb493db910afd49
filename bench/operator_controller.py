"""The operator's controller at fleet scale: N pods (default 10,000) in
kube's tower-test mock API server, reconciled the current way (`store`: a
paginated metadata-only watch into a reflector store, counted from the
store) and the way before issue 27 (`list`: a LIST of every full pod of the
namespace per reconcile), each mode in its own process RUNS times.
Prints one JSON line with the medians: reconcile time, first sync, CPU-s
and peak RSS (VmHWM) per mode, and the ratios store/list.

    python3 bench/operator_controller.py            # builds the bench (release, no LTO)
    PODS=10000 RUNS=5 RECONCILES=20 python3 bench/operator_controller.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PODS = int(os.environ.get("PODS", 10_000))
RUNS = int(os.environ.get("RUNS", 5))
RECONCILES = int(os.environ.get("RECONCILES", 20))
# Release code without the workspace's thin LTO (minutes of linking on
# two cores, and no bearing on an allocation-bound benchmark).
ENV = {**os.environ, "CARGO_PROFILE_BENCH_LTO": "false", "CARGO_PROFILE_BENCH_CODEGEN_UNITS": "16"}


def build() -> str:
    out = subprocess.run(
        ["nice", "-n", "10", "cargo", "bench", "-j1", "-p", "cloudtaser-operator", "--bench", "controller",
         "--no-run", "--message-format=json"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "controller" and msg.get("executable"):
            return msg["executable"]
    raise SystemExit("no bench executable built:\n" + out.stderr[-2000:])


def run(exe: str, mode: str) -> dict:
    out = subprocess.run([exe, "--mode", mode, "--pods", str(PODS), "--reconciles", str(RECONCILES)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    exe = build()
    results: dict[str, list[dict]] = {"store": [], "list": []}
    for _ in range(RUNS):
        for mode in results:  # interleaved, so drift hits both modes alike
            results[mode].append(run(exe, mode))
    summary: dict = {"pods": PODS, "runs": RUNS, "reconciles_per_run": RECONCILES,
                     "pod_json_bytes": results["list"][0]["pod_json_bytes"]}
    for mode, rs in results.items():
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        summary[mode] = {k: round(med(k), 3) for k in
                         ("reconcile_ms_median", "reconcile_ms_max", "sync_ms", "cpu_s", "peak_rss_mib",
                          "fixture_rss_mib", "fixture_mib")}
        summary[mode]["rss_above_fixture_mib"] = round(
            statistics.median(r["peak_rss_mib"] - r["fixture_rss_mib"] for r in rs), 3)
    s, l = summary["store"], summary["list"]
    summary["ratio_store_over_list"] = {
        "reconcile_ms_median": round(s["reconcile_ms_median"] / l["reconcile_ms_median"], 5),
        "rss_above_fixture": round(s["rss_above_fixture_mib"] / l["rss_above_fixture_mib"], 3),
    }
    json.dump(summary, sys.stdout)
    print()


if __name__ == "__main__":
    main()

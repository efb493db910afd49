"""Small objects with Vault near and far (issue 15): the same 4 KiB
workloads sent directly to the upstream and through proxies whose OpenBao
is on loopback or behind bench's delay relay (10 ms each way, a 20 ms round
trip), with the data key pool on and off. Every target runs in every
repetition, in an order that rotates, so a noisy neighbour hits them alike.

    BENCH_UPSTREAM=memory|garage REPS=5 python3 bench/vault_distance.py

Writes bench/results/vault-distance[-garage].json. Needs the release build
of cloudtaser-s3proxy and cloudtaser-bench (scripts/bench.sh builds it)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import garage  # noqa: E402
import harness  # noqa: E402
import run  # noqa: E402
import stack as stack_mod  # noqa: E402

RELEASE = ROOT / "target" / "release"
KiB = 1 << 10
REPS = int(os.environ.get("REPS", "5"))
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "memory")
ONE_WAY_MS = float(os.environ.get("VAULT_ONE_WAY_MS", "10"))
# Extra proxies compared against the pool: off (a Transit call per PUT) and,
# where the code still has it, the old reuse window.
VARIANTS = os.environ.get("VARIANTS", "nopool").split(",")


def metrics(health: str) -> dict[str, float]:
    out = {}
    with urllib.request.urlopen(f"{health}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("cloudtaser_s3proxy_key_pool") or line.startswith("cloudtaser_s3proxy_vault_calls_total"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
    return out


def main() -> None:
    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-bench-distance"))
    s = harness.vault_stack(work, RELEASE)
    relay_port = stack_mod.free_port()
    bao = s.vault.addr.removeprefix("http://")
    s.start_process("delay-relay", [str(RELEASE / "delay-relay"), str(relay_port), bao, str(ONE_WAY_MS)])
    far = f"http://127.0.0.1:{relay_port}"
    stack_mod.wait_for(lambda: urllib.request.urlopen(f"{far}/v1/sys/health", timeout=2).status == 200, "relay")
    env = {"CLOUDTASER_S3PROXY_LOG": "warn"}
    if UPSTREAM == "garage":
        s.s3_endpoint = garage.start(work, s).endpoint
        env.update(AWS_ACCESS_KEY_ID=garage.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=garage.SECRET_KEY)
        run.DIRECT_KEYS.update(access_key=garage.ACCESS_KEY, secret_key=garage.SECRET_KEY)
        run.load(s.s3_endpoint, "create-bucket")
    else:
        harness.start_memory_upstream(s, RELEASE)

    proxies: dict[str, tuple[str, str]] = {}

    def proxy(name: str, **overrides: str) -> None:
        _, endpoint, health = s.start_proxy(f"proxy-{name}", **env, **overrides)
        proxies[name] = (endpoint, health)

    proxy("near", VAULT_ADDR=s.vault.addr)
    proxy("far", VAULT_ADDR=far)
    if "nopool" in VARIANTS:
        proxy("near-nopool", VAULT_ADDR=s.vault.addr, CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
        proxy("far-nopool", VAULT_ADDR=far, CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
    if "reuse" in VARIANTS:
        proxy("near-reuse64", VAULT_ADDR=s.vault.addr, CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0",
              CLOUDTASER_S3PROXY_DATA_KEY_REUSE_OBJECTS="64")
    # Every GET through these is cold: no key cache, so each pays a Transit
    # decrypt (or joins one already in flight for the same object).
    proxy("near-cold", VAULT_ADDR=s.vault.addr, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0")
    proxy("far-cold", VAULT_ADDR=far, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0")
    # Let the pools fill before measuring (a pod does this at start).
    time.sleep(2)

    put_targets = ["direct", "near", "far"] + [n for n in proxies if n.endswith(("nopool", "reuse64"))]
    cold_targets = ["near-cold", "far-cold"]
    cases = [
        ("4KiB PUT c1", "put", {"size": 4 * KiB, "count": 300, "key": "s4k"}, put_targets),
        ("4KiB PUT c32", "put", {"size": 4 * KiB, "count": 3000, "concurrency": 32, "key": "s4k"}, put_targets),
        ("4KiB GET c32, key cached", "get", {"size": 4 * KiB, "count": 3000, "concurrency": 32, "key": "s4k"},
         ["direct", "near", "far"]),
        ("4KiB cold GET c32, distinct objects", "get",
         {"size": 4 * KiB, "count": 1000, "concurrency": 32, "key": "s4k", "read_from": "near"}, cold_targets),
        ("4KiB cold GET c32, one object", "get",
         {"size": 4 * KiB, "count": 1000, "concurrency": 32, "key": "s4k-0", "same": "", "read_from": "near"},
         cold_targets),
    ]
    results: dict = {"machine": "2 cores shared with two other engineers' builds and tests",
                     "vault_one_way_ms": ONE_WAY_MS, "upstream": UPSTREAM, "reps": REPS, "cases": {}}
    try:
        for name, case, kw, targets in cases:
            runs: dict[str, list[dict]] = {t: [] for t in targets}
            for rep in range(REPS):
                order = targets[rep % len(targets):] + targets[:rep % len(targets)]
                for target in order:
                    endpoint = s.s3_endpoint if target == "direct" else proxies[target][0]
                    args = {k: v for k, v in kw.items() if k != "read_from"}
                    # Reads go to objects a PUT case wrote through the same kind of target.
                    owner = "direct" if target == "direct" else kw.get("read_from", target)
                    args["key"] = f"{owner}-{kw['key']}"
                    runs[target].append(run.load(endpoint, case, **args))
            entry = {}
            for target, rs in runs.items():
                entry[target] = {
                    "ops_s": statistics.median(r["ops"] / r["seconds"] for r in rs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "runs_ops_s": [round(r["ops"] / r["seconds"], 1) for r in rs],
                    "runs_p50_ms": [r["p50_ms"] for r in rs],
                }
            if "direct" in entry:
                for target in targets:
                    entry[target]["ratio_to_direct"] = entry[target]["ops_s"] / entry["direct"]["ops_s"]
            results["cases"][name] = entry
            line = "  ".join(f"{t} {e['ops_s']:.0f}/s p50 {e['p50_ms']:.2f}ms" for t, e in entry.items())
            print(f"{name:38} {line}", flush=True)
        results["proxy_metrics"] = {n: metrics(h) for n, (_, h) in proxies.items()}
    finally:
        s.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / ("vault-distance.json" if UPSTREAM == "memory" else f"vault-distance-{UPSTREAM}.json")
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

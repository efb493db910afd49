"""Small objects with Vault near and far (issue 15): the same 4 KiB
workloads sent directly to the upstream and through proxies whose OpenBao
is on loopback or behind bench's delay relay (10 ms each way, a 20 ms round
trip), with the data key pool on and off. Every target runs in every
repetition, in an order that rotates, so a noisy neighbour hits them alike.

    BENCH_UPSTREAM=memory|garage REPS=5 [ONLY=PUT] python3 bench/vault_distance.py

Writes bench/results/vault-distance[-garage][-PUT].json. Needs the release build
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
# Extra proxies compared against the pool: "nopool" (a Transit call per
# PUT). The reuse-window comparison in docs/results was run at commit
# 8d7b999, before the window was removed.
VARIANTS = os.environ.get("VARIANTS", "nopool").split(",")


DECRYPTS = 'cloudtaser_s3proxy_vault_calls_total{operation="decrypt",result="ok"}'


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
    pids: dict[str, int] = {}

    def proxy(name: str, **overrides: str) -> None:
        proc, endpoint, health = s.start_proxy(f"proxy-{name}", **env, **overrides)
        proxies[name] = (endpoint, health)
        pids[name] = proc.popen.pid

    proxy("near", VAULT_ADDR=s.vault.addr)
    proxy("far", VAULT_ADDR=far)
    if "nopool" in VARIANTS:
        proxy("near-nopool", VAULT_ADDR=s.vault.addr, CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
        proxy("far-nopool", VAULT_ADDR=far, CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
    # Cold reads: these proxies keep no key cache, so every GET pays a
    # Transit decrypt, or joins one in flight for the same object.
    proxy("near-cold", VAULT_ADDR=s.vault.addr, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0")
    proxy("far-cold", VAULT_ADDR=far, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0")
    # And 32 readers of one object through a proxy started for the run (its
    # cache empty, as after a pod restart): one decrypt should serve them all.
    fresh_vault = {"near-fresh": s.vault.addr, "far-fresh": far}
    # Let the pools fill before measuring (a pod does this at start).
    time.sleep(2)

    put_targets = ["direct", "near", "far"] + [n for n in proxies if n.endswith("nopool")]
    cold_targets = ["near-cold", "far-cold"]
    fresh_targets = ["near-fresh", "far-fresh"]
    cases = [
        ("4KiB PUT c1", "put", {"size": 4 * KiB, "count": 300, "key": "s4k"}, put_targets),
        ("4KiB PUT c32", "put", {"size": 4 * KiB, "count": 3000, "concurrency": 32, "key": "s4k"}, put_targets),
        ("4KiB GET c32, key cached", "get", {"size": 4 * KiB, "count": 3000, "concurrency": 32, "key": "s4k"},
         ["direct", "near", "far"]),
        ("4KiB cold GET c32, distinct objects", "get",
         {"size": 4 * KiB, "count": 1000, "concurrency": 32, "key": "s4k", "read_from": "near"}, cold_targets),
        ("4KiB cold GET c32, one object", "get",
         {"size": 4 * KiB, "count": 1000, "concurrency": 32, "key": "s4k-7", "same": "", "read_from": "near"},
         cold_targets),
        ("4KiB GET, 32 concurrent readers of one object, fresh proxy", "get",
         {"size": 4 * KiB, "count": 32, "concurrency": 32, "key": "s4k-7", "same": "", "read_from": "near"},
         fresh_targets),
    ]
    # ONLY=PUT runs just the cases whose name contains it.
    cases = [c for c in cases if os.environ.get("ONLY", "") in c[0]]
    results: dict = {"machine": "2 cores shared with two other engineers' builds and tests",
                     "vault_one_way_ms": ONE_WAY_MS, "upstream": UPSTREAM, "reps": REPS, "cases": {}}
    try:
        for name, case, kw, targets in cases:
            runs: dict[str, list[dict]] = {t: [] for t in targets}
            for rep in range(REPS):
                order = targets[rep % len(targets):] + targets[:rep % len(targets)]
                for target in order:
                    fresh = None
                    if target in fresh_vault:
                        fresh, endpoint, health = s.start_proxy(f"proxy-{target}", VAULT_ADDR=fresh_vault[target], **env)
                        pid = fresh.popen.pid
                        # Past start-up (login, pool fill) with a Vault connection open,
                        # as a pod that has served traffic would be.
                        time.sleep(1)
                        run.load(endpoint, "get", size=4 * KiB, key="near-s4k-99", same="")
                    elif target == "direct":
                        endpoint, pid = s.s3_endpoint, None
                    else:
                        (endpoint, health), pid = proxies[target], pids[target]
                    args = {k: v for k, v in kw.items() if k != "read_from"}
                    # Reads go to objects a PUT case wrote through the same kind of target.
                    owner = "direct" if target == "direct" else kw.get("read_from", target)
                    args["key"] = f"{owner}-{kw['key']}"
                    before = run.cpu_seconds(pid) if pid else 0.0
                    bao_before = run.cpu_seconds(s.vault.process.popen.pid)
                    decrypts = metrics(health).get(DECRYPTS, 0.0) if pid else 0.0
                    r = run.load(endpoint, case, **args)
                    # OpenBao's CPU for the run: Transit work the proxy caused.
                    r["openbao_cpu_us_per_op"] = (run.cpu_seconds(s.vault.process.popen.pid) - bao_before) / r["ops"] * 1e6
                    if pid:
                        r["proxy_cpu_us_per_op"] = (run.cpu_seconds(pid) - before) / r["ops"] * 1e6
                        r["decrypts_per_op"] = (metrics(health).get(DECRYPTS, 0.0) - decrypts) / r["ops"]
                    if fresh:
                        fresh.stop()
                    runs[target].append(r)
            entry = {}
            for target, rs in runs.items():
                entry[target] = {
                    "ops_s": statistics.median(r["ops"] / r["seconds"] for r in rs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "runs_ops_s": [round(r["ops"] / r["seconds"], 1) for r in rs],
                    "runs_p50_ms": [r["p50_ms"] for r in rs],
                }
                if target != "direct":
                    entry[target]["proxy_cpu_us_per_op"] = statistics.median(r["proxy_cpu_us_per_op"] for r in rs)
                    entry[target]["openbao_cpu_us_per_op"] = statistics.median(r["openbao_cpu_us_per_op"] for r in rs)
                    entry[target]["transit_decrypts_per_op"] = statistics.median(r["decrypts_per_op"] for r in rs)
            if "direct" in entry:
                for target in targets:
                    entry[target]["ratio_to_direct"] = entry[target]["ops_s"] / entry["direct"]["ops_s"]
            results["cases"][name] = entry
            line = "  ".join(f"{t} {e['ops_s']:.0f}/s p50 {e['p50_ms']:.2f}ms"
                             + (f" {e['proxy_cpu_us_per_op']:.0f}+{e['openbao_cpu_us_per_op']:.0f}us/op"
                                if "proxy_cpu_us_per_op" in e else "")
                             for t, e in entry.items())
            print(f"{name:38} {line}", flush=True)
        results["proxy_metrics"] = {n: metrics(h) for n, (_, h) in proxies.items()}
    finally:
        s.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    suffix = ("" if UPSTREAM == "memory" else f"-{UPSTREAM}") + (f"-{os.environ['ONLY']}" if os.environ.get("ONLY") else "")
    path = out / f"vault-distance{suffix}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

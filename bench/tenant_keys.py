"""Keys per tenant (issue 28): what routing costs. One run, one OpenBao and
one in-memory upstream; three targets measured in every repetition, in an
order that rotates: the upstream directly, a proxy with one Transit key (no
rules), and a proxy whose objects spread over 8 routed keys plus the
default (rules on the object names' first digit, so consecutive PUTs
alternate keys, each key with its own pool). Each figure is the median over
the repetitions of each repetition's ops/s, with p50/p99 latency and the
proxy's CPU per operation.

    REPS=5 COUNT=2000 python3 bench/tenant_keys.py

Writes bench/results/tenant_keys.json. Needs the release build of
cloudtaser-s3proxy and cloudtaser-bench (s3-load, s3-memory)."""

from __future__ import annotations

import datetime
import json
import os
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402
import run  # noqa: E402

RELEASE = ROOT / "target" / "release"
KiB = 1 << 10
REPS = int(os.environ.get("REPS", "5"))
COUNT = int(os.environ.get("COUNT", "2000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))
BUCKET = "bench"
KEYS = 8


def main() -> None:
    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-bench-tenants"))
    s = harness.vault_stack(work, RELEASE)
    try:
        harness.start_memory_upstream(s, RELEASE)
        run.load(s.s3_endpoint, "create-bucket", bucket=BUCKET)
        names = [f"tenant-{i}" for i in range(1, KEYS + 1)]
        for name in names:
            s.vault.ok("POST", f"transit/keys/{name}", {})
        quiet = {"CLOUDTASER_S3PROXY_LOG": "warn"}
        _, one_endpoint, _ = s.start_proxy("proxy-one-key", **quiet)
        one_pid = s.processes[-1].popen.pid
        # Object names are `<target>-s4k-<i>`: the first digit of i picks the key.
        rules = ",".join(f"{BUCKET}/r8-s4k-{i}={name}" for i, name in enumerate(names, start=1))
        _, eight_endpoint, eight_health = s.start_proxy("proxy-eight-keys", CLOUDTASER_S3PROXY_KEY_RULES=rules, **quiet)
        eight_pid = s.processes[-1].popen.pid
        targets = {"direct": (s.s3_endpoint, None, "d"), "1 key": (one_endpoint, one_pid, "r1"),
                   "8 routed keys": (eight_endpoint, eight_pid, "r8")}
        results: dict = {"date": datetime.date.today().isoformat(), "reps": REPS, "count": COUNT,
                         "concurrency": CONCURRENCY, "cases": {}}
        for label, case in (("4KiB PUT", "put"), ("4KiB GET", "get")):
            keyed = {t: (endpoint, pid, f"{prefix}-s4k") for t, (endpoint, pid, prefix) in targets.items()}
            entry = run.rotating_case(keyed, case, REPS, size=4 * KiB, count=COUNT, concurrency=CONCURRENCY,
                                      bucket=BUCKET)
            entry["8 keys / 1 key"] = entry["8 routed keys"]["ops_s"] / entry["1 key"]["ops_s"]
            results["cases"][label] = entry
            print(f"{label:10} " + "  ".join(
                f"{t} {e['ops_s']:.0f}/s p50 {e['p50_ms']:.2f} ms" for t, e in entry.items() if isinstance(e, dict))
                + f"  ratio 8/1 {entry['8 keys / 1 key']:.3f}", flush=True)
        # Every routed key wrapped objects: the spread is real.
        results["pool_refills_by_key"] = pool_refills(eight_health)
        print("pool refills by key (8-key proxy):", results["pool_refills_by_key"], flush=True)
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "tenant_keys.json").write_text(json.dumps(results, indent=2))
    finally:
        s.stop()


def pool_refills(health: str) -> dict[str, float]:
    """Successful pool refills per Transit key, from the proxy's metrics."""
    text = urllib.request.urlopen(f"{health}/metrics", timeout=5).read().decode()
    refills: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cloudtaser_s3proxy_key_pool_refills_total{") and 'result="ok"' in line:
            key = line.split('key="')[1].split('"')[0]
            refills[key] = float(line.rsplit(" ", 1)[1])
    return refills


if __name__ == "__main__":
    main()

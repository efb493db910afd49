"""Bucket keys (issue 29): cold reads of many small objects, with and
without them, against direct, in ONE run. 20,000 objects of 4 KiB are
written through a proxy with CLOUDTASER_S3PROXY_BUCKET_KEYS=on (one
window) and 20,000 through one with it off; then each set is read once at
concurrency 32 by a FRESH proxy (empty key cache), so every read is cold:
without bucket keys each needs its own Transit `decrypt`. Reported per
case: ops/s (median of REPS fresh readers), ratio to direct, p50/p99, the
reader's Transit `decrypt` calls, with OpenBao on loopback and behind the
delay relay (VAULT_ONE_WAY_MS each way; 10 ms = a 20 ms round trip).

    REPS=3 COUNT=20000 python3 bench/bucket_keys.py

Writes bench/results/bucket_keys.json. Needs the release build of
cloudtaser-s3proxy and cloudtaser-bench (s3-load, s3-memory, delay-relay)."""

from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402
import run  # noqa: E402
import stack as stack_mod  # noqa: E402

RELEASE = ROOT / "target" / "release"
KiB = 1 << 10
REPS = int(os.environ.get("REPS", "3"))
COUNT = int(os.environ.get("COUNT", "20000"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "32"))
ONE_WAY_MS = float(os.environ.get("VAULT_ONE_WAY_MS", "10"))
BUCKET = "bench"
KEY = "cloudtaser-e2e"


def decrypts(health: str) -> float:
    text = urllib.request.urlopen(f"{health}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("cloudtaser_s3proxy_vault_calls_total{")
               and 'operation="decrypt"' in line and 'result="ok"' in line)


def main() -> None:
    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-bench-bucket-keys"))
    s = harness.vault_stack(work, RELEASE)
    try:
        harness.start_memory_upstream(s, RELEASE)
        run.load(s.s3_endpoint, "create-bucket", bucket=BUCKET)
        relay_port = stack_mod.free_port()
        bao = s.vault.addr.removeprefix("http://")
        s.start_process("delay-relay", [str(RELEASE / "delay-relay"), str(relay_port), bao, str(ONE_WAY_MS)])
        far = f"http://127.0.0.1:{relay_port}"
        stack_mod.wait_for(lambda: urllib.request.urlopen(f"{far}/v1/sys/health", timeout=2).status == 200, "relay")
        quiet = {"CLOUDTASER_S3PROXY_LOG": "warn"}
        load = {"size": 4 * KiB, "count": COUNT, "concurrency": CONCURRENCY, "bucket": BUCKET}

        # The objects: direct, through a proxy with bucket keys, and without.
        run.load(s.s3_endpoint, "put", key="direct", **load)
        for prefix, mode in (("bk", "on"), ("own", "off")):
            writer, endpoint, _ = s.start_proxy(f"writer-{prefix}", CLOUDTASER_S3PROXY_BUCKET_KEYS=mode, **quiet)
            run.load(endpoint, "put", key=prefix, **load)
            writer.stop()

        results: dict = {"date": datetime.date.today().isoformat(), "reps": REPS, "count": COUNT,
                         "concurrency": CONCURRENCY, "vault_one_way_ms": ONE_WAY_MS, "cases": {}}
        direct = [run.load(s.s3_endpoint, "get", key="direct", **load) for _ in range(REPS)]
        direct_ops = statistics.median(r["ops"] / r["seconds"] for r in direct)
        results["cases"]["direct"] = {"ops_s": direct_ops,
                                      "p50_ms": statistics.median(r["p50_ms"] for r in direct)}
        print(f"{'direct':34} {direct_ops:8.0f}/s", flush=True)
        for vault_label, vault_addr in (("vault loopback", s.vault.addr), ("vault 20 ms away", far)):
            for prefix, label in (("bk", "bucket keys"), ("own", "a key per object")):
                runs, calls, warm = [], [], []
                for rep in range(REPS):
                    reader, endpoint, health = s.start_proxy(f"reader-{prefix}-{rep}", VAULT_ADDR=vault_addr, **quiet)
                    before = decrypts(health)
                    runs.append(run.load(endpoint, "get", key=prefix, **load))
                    calls.append(decrypts(health) - before)
                    # The same reader again: every key cached.
                    warm.append(run.load(endpoint, "get", key=prefix, **load))
                    reader.stop()
                ops = statistics.median(r["ops"] / r["seconds"] for r in runs)
                entry = {"ops_s": ops, "of_direct": ops / direct_ops,
                         "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                         "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                         "transit_decrypts": statistics.median(calls),
                         "warm_ops_s": statistics.median(r["ops"] / r["seconds"] for r in warm),
                         "warm_p50_ms": statistics.median(r["p50_ms"] for r in warm),
                         "runs_ops_s": [round(r["ops"] / r["seconds"], 1) for r in runs]}
                results["cases"][f"{label}, {vault_label}"] = entry
                print(f"{label + ', ' + vault_label:34} {ops:8.0f}/s  {entry['of_direct']:.2f} of direct  "
                      f"p50 {entry['p50_ms']:.2f} ms (warm {entry['warm_p50_ms']:.2f})  p99 {entry['p99_ms']:.2f} ms  "
                      f"decrypts {entry['transit_decrypts']:.0f}",
                      flush=True)
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "bucket_keys.json").write_text(json.dumps(results, indent=2))
    finally:
        s.stop()


if __name__ == "__main__":
    main()

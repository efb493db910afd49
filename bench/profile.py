"""Profiles the proxy under one benchmark workload with `perf record`.

    cargo build --profile profiling -p cloudtaser-s3proxy -p cloudtaser-bench
    python3 bench/profile.py get --size 4096 --count 5000 --concurrency 32

Starts OpenBao, the in-memory upstream and the proxy built with symbols,
writes the objects once, then records the proxy (call graphs by DWARF) while
the workload runs through it, and prints the top of `perf report`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402

BIN = ROOT / "target" / "profiling"


def load(endpoint: str, case: str, args: argparse.Namespace, key: str) -> None:
    cmd = [str(BIN / "s3-load"), "--endpoint", endpoint, "--case", case, "--size", str(args.size),
           "--count", str(args.count), "--concurrency", str(args.concurrency), "--key", key]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    print(f"{case}: {out.stdout.strip().splitlines()[-1]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["put", "get"])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", default="/tmp/cloudtaser-perf.data")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the proxy")
    args = parser.parse_args()

    s = harness.vault_stack(Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-profile")), BIN)
    harness.start_memory_upstream(s, BIN)
    extra = dict(e.split("=", 1) for e in args.env)
    proxy, endpoint, _ = s.start_proxy("proxy-profile", CLOUDTASER_S3PROXY_LOG="warn", **extra)
    try:
        if args.case == "get":
            load(endpoint, "put", args, "p")
        perf = subprocess.Popen(["perf", "record", "-F", "999", "--call-graph", "dwarf,16384", "-o", args.out,
                                 "-p", str(proxy.popen.pid)], stderr=subprocess.DEVNULL)
        load(endpoint, args.case, args, "p")
        perf.send_signal(2)
        perf.wait()
    finally:
        s.stop()
    report = subprocess.run(["perf", "report", "-i", args.out, "--no-children", "--percent-limit", "1",
                             "--stdio", "-g", "none"], capture_output=True, text=True)
    print(report.stdout[:6000])


if __name__ == "__main__":
    main()

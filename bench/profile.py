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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402

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

    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-profile"))
    work.mkdir(parents=True, exist_ok=True)
    vault = stack_mod.start_vault(work)
    port = stack_mod.free_port()
    s = stack_mod.Stack(workdir=work, vault=vault, s3_endpoint=f"http://127.0.0.1:{port}", s3_data=work)
    s.processes.append(vault.process)
    s.start_process("s3-memory", [str(BIN / "s3-memory"), str(port)])
    stack_mod.wait_for(lambda: urllib.request.urlopen(f"{s.s3_endpoint}/__served", timeout=1).status == 200, "s3-memory")
    os.environ["CLOUDTASER_PROXY_BIN"] = str(BIN / "cloudtaser-s3proxy")
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

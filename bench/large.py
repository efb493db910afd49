"""Large objects through direct, the forwarding baseline and the proxy
(issue 15): the same 1 GiB PUT and GET sent straight to the upstream,
through `forward-baseline` (hyper, re-signing, no cryptography) and through
the proxy, and optionally through a second proxy build (`BEFORE_BIN`, e.g.
main's, so a change is measured before and after in one run). Every target
runs in every repetition, in an order that rotates, so a noisy neighbour
hits them alike. Reported: medians of throughput, ratio to direct, CPU-s/GB
of the hop (proxy or baseline) and of the upstream (Garage), and each hop's
peak RSS (VmHWM; every transfer here is one stream).

    BENCH_UPSTREAM=garage|memory REPS=3 [BEFORE_BIN=/path/to/old/cloudtaser-s3proxy] \
        [INTEGRITY=crc32c-trailer|unsigned] [SIZE=4096 COUNT=3000 CONCURRENCY=32] \
        [CASES=mp-put,ranged-get PART=8388608] [PROXY_ENV=N=V,... COMMON_ENV=N=V,...] \
        [RESULT_NAME=name] python3 bench/large.py

Writes bench/results/large[-garage].json. Needs the release build of
cloudtaser-s3proxy and cloudtaser-bench."""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import garage  # noqa: E402
import harness  # noqa: E402
import run  # noqa: E402
import stack as stack_mod  # noqa: E402

RELEASE = ROOT / "target" / "release"
GiB = 1 << 30
REPS = int(os.environ.get("REPS", "3"))
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "garage")
SIZE = int(os.environ.get("SIZE", str(GiB)))
# Many small objects instead of one large one: COUNT objects, CONCURRENCY at a time.
LOAD = {k.lower(): int(os.environ[k]) for k in ("COUNT", "CONCURRENCY", "PART") if k in os.environ}
# The s3-load cases to run, in order ("mp-put,ranged-get" with PART for multipart).
CASES = tuple(os.environ.get("CASES", "put,get").split(","))
BEFORE_BIN = os.environ.get("BEFORE_BIN")
INTEGRITY = os.environ.get("INTEGRITY")
# Extra environment for the proxy under test only ("NAME=value,NAME=value"),
# so a setting can be compared against BEFORE_BIN in the same run.
PROXY_ENV = dict(kv.split("=", 1) for kv in os.environ.get("PROXY_ENV", "").split(",") if kv)
# Extra environment for both proxies (e.g. bucket keys on for a thread-count comparison).
COMMON_ENV = dict(kv.split("=", 1) for kv in os.environ.get("COMMON_ENV", "").split(",") if kv)


def main() -> None:
    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-bench-large"))
    s = harness.vault_stack(work, RELEASE)
    proxy_env = {"CLOUDTASER_S3PROXY_LOG": "warn", **COMMON_ENV}
    if INTEGRITY:
        proxy_env["CLOUDTASER_S3PROXY_UPLOAD_INTEGRITY"] = INTEGRITY
    upstream_pid = None
    if UPSTREAM == "garage":
        g = garage.start(work, s)
        s.s3_endpoint = g.endpoint
        upstream_pid = g.process.popen.pid
        access, secret = garage.ACCESS_KEY, garage.SECRET_KEY
        run.DIRECT_KEYS.update(access_key=access, secret_key=secret)
        run.load(s.s3_endpoint, "create-bucket")
    else:
        harness.start_memory_upstream(s, RELEASE)
        upstream_pid = s.processes[-1].popen.pid
        access, secret = "benchkey", "benchsecret"
    proxy_env.update(AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret)

    port = stack_mod.free_port()
    baseline = s.start_process("forward-baseline", [str(RELEASE / "forward-baseline"), str(port), s.s3_endpoint,
                                                    access, secret])
    baseline_endpoint = f"http://127.0.0.1:{port}"
    stack_mod.wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, "baseline")

    targets: dict[str, tuple[str, int | None]] = {"direct": (s.s3_endpoint, None),
                                                  "baseline": (baseline_endpoint, baseline.popen.pid)}
    if BEFORE_BIN:
        os.environ["CLOUDTASER_PROXY_BIN"] = BEFORE_BIN
        before, before_endpoint, _ = s.start_proxy("proxy-before", **proxy_env)
        targets["proxy-before"] = (before_endpoint, before.popen.pid)
        os.environ["CLOUDTASER_PROXY_BIN"] = str(RELEASE / "cloudtaser-s3proxy")
    proxy, proxy_endpoint, _ = s.start_proxy("proxy", **proxy_env, **PROXY_ENV)
    targets["proxy"] = (proxy_endpoint, proxy.popen.pid)

    names = list(targets)
    samples: dict[str, dict[str, list]] = {}
    try:
        for rep in range(REPS):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for case in CASES:
                for t in order:
                    endpoint, pid = targets[t]
                    hop0 = run.cpu_seconds(pid) if pid else 0.0
                    up0 = run.cpu_seconds(upstream_pid)
                    r = run.load(endpoint, case, size=SIZE, key=f"{t}-large", **LOAD)
                    gb = r["bytes"] / 1e9
                    entry = samples.setdefault(f"{case} {t}", {"MBps": [], "hop_cpu": [], "upstream_cpu": []})
                    entry["MBps"].append(r["bytes"] / r["seconds"] / 1e6)
                    entry["hop_cpu"].append((run.cpu_seconds(pid) - hop0) / gb if pid else 0.0)
                    entry["upstream_cpu"].append((run.cpu_seconds(upstream_pid) - up0) / gb)
                    print(f"rep {rep} {case:3} {t:12} {entry['MBps'][-1]:8.1f} MB/s  hop {entry['hop_cpu'][-1]:.2f} "
                          f"s/GB  upstream {entry['upstream_cpu'][-1]:.2f} s/GB", flush=True)
    finally:
        rss = {t: run.peak_rss_mib(pid) for t, (_, pid) in targets.items() if pid}
        s.stop()

    results: dict = {"upstream": UPSTREAM, "size": SIZE, "load": LOAD, "reps": REPS, "integrity": INTEGRITY or "default",
               "before_bin": BEFORE_BIN, "proxy_env": PROXY_ENV, "common_env": COMMON_ENV,
                     "peak_rss_MiB": rss, "cases": {}}
    for case in CASES:
        direct = statistics.median(samples[f"{case} direct"]["MBps"])
        for t in names:
            e = samples[f"{case} {t}"]
            row = {"MBps": statistics.median(e["MBps"]), "ratio": statistics.median(e["MBps"]) / direct,
                   "hop_cpu_s_per_GB": statistics.median(e["hop_cpu"]),
                   "upstream_cpu_s_per_GB": statistics.median(e["upstream_cpu"]), "samples": e}
            results["cases"][f"{case} {t}"] = row
            print(f"{case:3} {t:12} {row['MBps']:8.1f} MB/s  ratio {row['ratio']:.2f}  hop {row['hop_cpu_s_per_GB']:.2f} "
                  f"s/GB  upstream {row['upstream_cpu_s_per_GB']:.2f} s/GB", flush=True)
    print("peak RSS MiB:", rss)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    name = os.environ.get("RESULT_NAME") or ("large" if UPSTREAM == "memory" else f"large-{UPSTREAM}")
    path = out / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""The benchmark: the same workloads sent directly to an S3 upstream and
through the proxy, interleaved, repeated, reported as medians and
proxy/direct ratios, with the proxy's CPU-seconds per GB and peak RSS.
The upstream is the in-memory one (BENCH_UPSTREAM=memory, the default) or
Garage (BENCH_UPSTREAM=garage). Run with scripts/bench.sh; writes
bench/results/latest.json (latest-garage.json for Garage)."""

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
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from vault_faults import VaultFaults  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import garage  # noqa: E402
import harness  # noqa: E402

RELEASE = ROOT / "target" / "release"
GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10
REPS = int(os.environ.get("REPS", "3"))
UPSTREAM = os.environ.get("BENCH_UPSTREAM", "memory")
# Signing keys for requests sent directly to the upstream.
DIRECT_KEYS: dict = {}
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(endpoint: str, case: str, **kw) -> dict:
    args = [str(RELEASE / "s3-load"), "--endpoint", endpoint, "--case", case]
    kw = {**DIRECT_KEYS, **kw}
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}"] + ([] if v == "" else [str(v)])
    out = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


CASES = [
    # name, case, kwargs, prepare (a case that must have run first on the same target)
    ("1GiB PUT", "put", {"size": GiB, "key": "big"}),
    ("1GiB GET", "get", {"size": GiB, "key": "big"}),
    ("1GiB multipart PUT (8 MiB x4)", "mp-put", {"size": GiB, "key": "mp", "part": 8 * MiB, "concurrency": 4}),
    ("1GiB ranged GET (8 MiB x4)", "ranged-get", {"size": GiB, "key": "mp", "part": 8 * MiB, "concurrency": 4}),
    ("4KiB PUT c1", "put", {"size": 4 * KiB, "count": 300, "key": "s4k"}),
    ("4KiB GET c1", "get", {"size": 4 * KiB, "count": 300, "key": "s4k"}),
    ("4KiB PUT c32", "put", {"size": 4 * KiB, "count": 3000, "concurrency": 32, "key": "s4k"}),
    ("4KiB GET c32", "get", {"size": 4 * KiB, "count": 3000, "concurrency": 32, "key": "s4k"}),
    ("256KiB PUT c1", "put", {"size": 256 * KiB, "count": 200, "key": "s256k"}),
    ("256KiB GET c1", "get", {"size": 256 * KiB, "count": 200, "key": "s256k"}),
    ("256KiB PUT c32", "put", {"size": 256 * KiB, "count": 2000, "concurrency": 32, "key": "s256k"}),
    ("256KiB GET c32", "get", {"size": 256 * KiB, "count": 2000, "concurrency": 32, "key": "s256k"}),
]


def rotating_case(targets: dict[str, tuple[str, int | None, str]], case: str, reps: int, **kw) -> dict:
    """Runs one s3-load `case` against every target in every repetition, in
    an order that rotates so a noisy neighbour hits them alike. `targets`
    maps a name to (endpoint, pid of the hop or None, object key prefix).
    Returns, per target, medians of ops/s, p50 and p99 and, for a hop, its
    CPU per operation."""
    names = list(targets)
    runs: dict[str, list[dict]] = {t: [] for t in names}
    for rep in range(reps):
        for t in names[rep % len(names):] + names[:rep % len(names)]:
            endpoint, pid, key = targets[t]
            cpu = cpu_seconds(pid) if pid else 0.0
            r = load(endpoint, case, key=key, **kw)
            if pid:
                r["proxy_cpu_us_per_op"] = (cpu_seconds(pid) - cpu) / r["ops"] * 1e6
            runs[t].append(r)
    entry = {}
    for t, rs in runs.items():
        entry[t] = {"ops_s": statistics.median(r["ops"] / r["seconds"] for r in rs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                    "runs_ops_s": [round(r["ops"] / r["seconds"], 1) for r in rs]}
        if "proxy_cpu_us_per_op" in rs[0]:
            entry[t]["proxy_cpu_us_per_op"] = statistics.median(r["proxy_cpu_us_per_op"] for r in rs)
    return entry


def main() -> None:
    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-bench"))
    s = harness.vault_stack(work, RELEASE)
    proxy_env = {"CLOUDTASER_S3PROXY_LOG": "warn"}
    if UPSTREAM == "garage":
        s.s3_endpoint = garage.start(work, s).endpoint
        proxy_env.update(AWS_ACCESS_KEY_ID=garage.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=garage.SECRET_KEY)
        DIRECT_KEYS.update(access_key=garage.ACCESS_KEY, secret_key=garage.SECRET_KEY)
        load(s.s3_endpoint, "create-bucket")
    else:
        harness.start_memory_upstream(s, RELEASE)
    proxy, proxy_endpoint, _ = s.start_proxy("proxy-bench", **proxy_env)
    pid = proxy.popen.pid
    results: dict[str, dict] = {}
    try:
        for name, case, kw in CASES:
            direct, through, cpu = [], [], []
            for rep in range(REPS):
                order = [("direct", s.s3_endpoint), ("proxy", proxy_endpoint)]
                if rep % 2:
                    order.reverse()
                for target, endpoint in order:
                    args = dict(kw, key=f"{target}-{kw['key']}")
                    before = cpu_seconds(pid)
                    r = load(endpoint, case, **args)
                    if target == "proxy":
                        cpu.append((cpu_seconds(pid) - before) / max(r["bytes"], 1) * 1e9)
                        through.append(r)
                    else:
                        direct.append(r)
            rate = lambda rs: statistics.median(x["bytes"] / x["seconds"] for x in rs)  # noqa: E731
            ops = lambda rs: statistics.median(x["ops"] / x["seconds"] for x in rs)  # noqa: E731
            entry = {
                "direct_MBps": rate(direct) / 1e6, "proxy_MBps": rate(through) / 1e6,
                "ratio": rate(through) / rate(direct), "proxy_cpu_s_per_GB": statistics.median(cpu),
                "direct_ops_s": ops(direct), "proxy_ops_s": ops(through),
            }
            if direct[0].get("p50_ms") is not None:
                entry.update({
                    "direct_p50_ms": statistics.median(x["p50_ms"] for x in direct),
                    "proxy_p50_ms": statistics.median(x["p50_ms"] for x in through),
                    "direct_p99_ms": statistics.median(x["p99_ms"] for x in direct),
                    "proxy_p99_ms": statistics.median(x["p99_ms"] for x in through),
                })
            results[name] = entry
            print(f"{name:34} ratio {entry['ratio']:.2f}  proxy {entry['proxy_MBps']:8.1f} MB/s  direct {entry['direct_MBps']:8.1f} MB/s  "
                  f"proxy CPU {entry['proxy_cpu_s_per_GB']:.2f} s/GB", flush=True)

        if UPSTREAM == "memory":
            # A 1 MiB range from the middle of a 1 GiB object: upstream bytes fetched.
            served = lambda: int(urllib.request.urlopen(f"{s.s3_endpoint}/__served", timeout=5).read())  # noqa: E731
            before = served()
            load(proxy_endpoint, "range", key="proxy-big-0", part=MiB, offset=GiB // 2 + 12345)
            results["1MiB range of 1GiB"] = {"upstream_bytes": served() - before, "segments_needed": 17}
            print(f"1 MiB range from the middle of 1 GiB: {served() - before} upstream bytes", flush=True)

        # Small GETs whose data key is not cached: a Transit decrypt each.
        cold, cold_endpoint, _ = s.start_proxy("proxy-cold", CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0", **proxy_env)
        runs = [load(cold_endpoint, "get", size=4 * KiB, count=1000, concurrency=32, key="proxy-s4k") for _ in range(REPS)]
        cold.stop()
        results["4KiB GET c32, key not cached"] = {
            "proxy_ops_s": statistics.median(r["ops"] / r["seconds"] for r in runs),
            "proxy_p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "proxy_p99_ms": statistics.median(r["p99_ms"] for r in runs),
        }
        print(f"4KiB GET c32, key not cached: {results['4KiB GET c32, key not cached']['proxy_ops_s']:.0f} ops/s", flush=True)

        # 64 concurrent 1 GiB GETs through the proxy: memory under load.
        t = time.monotonic()
        load(proxy_endpoint, "get", size=GiB, count=64, concurrency=64, key="proxy-big-0", same="")
        results["64 concurrent 1GiB GETs"] = {"seconds": time.monotonic() - t}
    except AssertionError:
        raise
    finally:
        results["proxy_peak_rss_MiB"] = peak_rss_mib(pid)
        print(f"proxy peak RSS: {results['proxy_peak_rss_MiB']:.1f} MiB", flush=True)
        s.stop()
    if UPSTREAM == "memory":
        vault_calls(results, work)
        webhook(results)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    name = "latest.json" if UPSTREAM == "memory" else f"latest-{UPSTREAM}.json"
    (out / name).write_text(json.dumps(results, indent=2))
    print(f"wrote {out / name}")


def webhook(results: dict) -> None:
    """The admission webhook at 200 admissions/s, kept-alive and fresh TLS connections."""
    for fresh in (False, True):
        runs = []
        for _ in range(REPS):
            args = [str(RELEASE / "webhook-load"), "--rate", "200", "--seconds", "15"]
            out = subprocess.run(args + (["--fresh-connections"] if fresh else []), capture_output=True, text=True,
                                 timeout=300)
            assert out.returncode == 0, out.stderr
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        name = "webhook 200/s, " + ("a new TLS connection each" if fresh else "kept-alive connections")
        entry = {k: statistics.median(r[k] for r in runs) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "achieved_per_s")}
        results[name] = entry
        print(f"{name:50} p50 {entry['p50_ms']:.2f} ms  p99 {entry['p99_ms']:.2f} ms  max {entry['max_ms']:.2f} ms", flush=True)


def vault_calls(results: dict, work: Path) -> None:
    """Transit calls per operation, counted in front of OpenBao."""
    s = harness.vault_stack(work, RELEASE)
    faults = VaultFaults(s.vault.addr)
    harness.start_memory_upstream(s, RELEASE, "s3-memory-calls")
    proxy, endpoint, _ = s.start_proxy("proxy-calls", VAULT_ADDR=faults.addr, CLOUDTASER_S3PROXY_LOG="warn")
    try:
        transit = lambda: sum("/transit/" in c for c in faults.calls)  # noqa: E731
        base = transit()
        load(endpoint, "put", size=4 * KiB, count=100, key="calls")
        after_put = transit()
        load(endpoint, "get", size=4 * KiB, count=100, key="calls")
        after_get = transit()
        results["vault_calls_per_put"] = (after_put - base) / 100
        results["vault_calls_per_recent_get"] = (after_get - after_put) / 100
        print(f"Vault calls: {results['vault_calls_per_put']:.2f} per PUT, {results['vault_calls_per_recent_get']:.2f} per GET of a recent object")
    finally:
        s.stop()
        faults.close()


if __name__ == "__main__":
    main()

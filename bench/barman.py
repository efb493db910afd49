"""barman-cloud (the backup tool CloudNativePG runs) through the proxy against
direct to Garage, in one run: a base backup of a pgbench cluster and a burst
of WAL segments archived one process per segment, as PostgreSQL's
archive_command does. Each workload runs REPS times per target, the order
alternating every repetition; the report gives medians, the proxy/direct
throughput ratio, the proxy's CPU-seconds per GB (utime+stime from
/proc/<pid>/stat) and its peak RSS (VmHWM).

Needs root (PostgreSQL runs as the postgres user), PostgreSQL from Debian,
the recipe tools' virtualenv (scripts/install-deps.sh) and Garage
(scripts/bench.sh garage installs it). Build the proxy with
`cargo build --release -p cloudtaser-s3proxy`, then `python3 bench/barman.py`.
Settings (environment): SCALE (pgbench scale, default 70: about 1.1 GB),
SEGMENTS (WAL segments in the burst, default 200, 16 MiB each as
CloudNativePG's clusters have), REPS (default 3), JOBS (barman-cloud-backup
-J, default 2 as CloudNativePG's `data.jobs`), WORKLOADS (default
"base,wal"), BIN_DIR (default target/release), BENCH_DIR (work directory).
Writes bench/results/barman[-jobs<J>].json."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Garage compresses blocks by default; through the proxy it only ever sees
# ciphertext, so with compression on, direct and proxied uploads of WAL
# (mostly compressible) would not be the same work for Garage. S3 does not
# compress; neither does Garage here unless the caller asks.
os.environ.setdefault("GARAGE_COMPRESSION", "none")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

import garage  # noqa: E402
import harness  # noqa: E402
import stack as stack_mod  # noqa: E402
from run import cpu_seconds, peak_rss_mib  # noqa: E402

SCALE = int(os.environ.get("SCALE", "70"))
SEGMENTS = int(os.environ.get("SEGMENTS", "200"))
REPS = int(os.environ.get("REPS", "3"))
JOBS = int(os.environ.get("JOBS", "2"))
WORKLOADS = set(os.environ.get("WORKLOADS", "base,wal").split(","))
BIN_DIR = Path(os.environ.get("BIN_DIR", ROOT / "target" / "release"))
PG_BIN = Path(os.environ.get("CLOUDTASER_PG_BIN", "/usr/lib/postgresql/15/bin"))
VENV = Path(os.environ.get("CLOUDTASER_RECIPES_VENV", "/opt/cloudtaser-recipes"))
SERVER = "pg-bench"
BUCKET = "bench-barman"
GB = 1e9


def sh(args: list[str], env: dict | None = None, user: str | None = None, timeout: float = 3600) -> str:
    if user:
        args = ["runuser", "-u", user, "--", *args]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}): {r.stderr[-3000:]}")
    return r.stdout


class Postgres:
    """One cluster in `root`, run by postgres, its WAL copied to a spool
    directory by archive_command (the burst archives those files later,
    so both targets get the same segments)."""

    def __init__(self, root: Path):
        self.data, self.spool, self.log = root / "data", root / "spool", root / "pg.log"
        self.port = stack_mod.free_port()
        self.socket = root

    def start(self) -> None:
        self.spool.mkdir()
        shutil.chown(self.spool, "postgres", "postgres")
        sh([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-instructions"],
           user="postgres")
        with open(self.data / "postgresql.conf", "a") as f:
            for k, v in {"port": self.port, "listen_addresses": "127.0.0.1", "unix_socket_directories": self.socket,
                         "archive_mode": "on", "archive_command": f"cp %p {self.spool}/%f", "max_wal_size": "4GB",
                         "fsync": "off"}.items():
                f.write(f"{k} = '{v}'\n")
        sh([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"], user="postgres")

    def sql(self, query: str) -> str:
        return sh([str(PG_BIN / "psql"), "-X", "-qAt", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                   "-c", query], user="postgres").strip()

    def fill(self) -> None:
        """pgbench's tables at SCALE, then WAL until the spool holds SEGMENTS."""
        sh([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(SCALE), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", "postgres"], user="postgres")
        self.sql("CREATE TABLE IF NOT EXISTS filler (id bigserial, v text)")
        while self.segments_spooled() < SEGMENTS:
            self.sql("INSERT INTO filler (v) SELECT md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 400000) g;"
                     "SELECT pg_switch_wal()")
            time.sleep(0.5)
        self.sql("CHECKPOINT")

    def segments_spooled(self) -> int:
        return sum(1 for p in self.spool.iterdir() if len(p.name) == 24)

    def database_bytes(self) -> int:
        return int(self.sql("SELECT sum(pg_database_size(datname)) FROM pg_database"))

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                        "-w", "stop"], capture_output=True, timeout=300)


def complete_seconds(log: Path, offset: int) -> tuple[float, int]:
    """Seconds the proxy spent in CompleteMultipartUpload (its request log
    line's duration, which includes the seal's server-side part copy) and
    the UploadParts it served, in the log written after `offset`."""
    with open(log, errors="replace") as f:
        f.seek(offset)
        text = f.read()
    # The text format (operation="X" … duration_ms=N) or the JSON one.
    done = re.findall(r'"?operation"?[=:]"?CompleteMultipartUpload"?.*?"?duration_ms"?[=:]([0-9.]+)', text)
    return sum(map(float, done)) / 1e3, len(re.findall(r'"?operation"?[=:]"?UploadPart"?[ ,]', text))


def env_for(access_key: str, secret_key: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key, AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")
    return env


def stored_bytes(client, prefix: str) -> int:
    """Plaintext bytes under `prefix` as the target lists them (through the
    proxy, listings show plaintext sizes)."""
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/barman.py runs PostgreSQL as the postgres user: run it as root")
    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-bench-barman"))
    shutil.rmtree(work, ignore_errors=True)
    s = harness.vault_stack(work, BIN_DIR)
    pg_root = work / "pg"
    pg_root.mkdir()
    pg_root.chmod(0o755)
    shutil.chown(pg_root, "postgres", "postgres")
    pg = Postgres(pg_root)
    results: dict = {"scale": SCALE, "segments": SEGMENTS, "reps": REPS, "jobs": JOBS}
    try:
        s.s3_endpoint = garage.start(work, s).endpoint
        proxy, proxy_endpoint, _ = s.start_proxy(
            # info: one line per request, with its duration (no keys, no bodies).
            "proxy-barman", CLOUDTASER_S3PROXY_LOG="info",
            AWS_ACCESS_KEY_ID=garage.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=garage.SECRET_KEY)
        pid = proxy.popen.pid
        config = Config(s3={"addressing_style": "path"})
        direct = boto3.client("s3", endpoint_url=s.s3_endpoint, aws_access_key_id=garage.ACCESS_KEY,
                              aws_secret_access_key=garage.SECRET_KEY, region_name="us-east-1", config=config)
        through = boto3.client("s3", endpoint_url=proxy_endpoint, aws_access_key_id="workload",
                               aws_secret_access_key="unused", region_name="us-east-1", config=config)
        direct.create_bucket(Bucket=BUCKET)
        targets = {
            "direct": (s.s3_endpoint, env_for(garage.ACCESS_KEY, garage.SECRET_KEY), direct),
            "proxy": (proxy_endpoint, env_for("workload", "unused"), through),
        }

        t = time.monotonic()
        pg.start()
        pg.fill()
        results["database_bytes"] = pg.database_bytes()
        wal = sorted(p for p in pg.spool.iterdir() if len(p.name) == 24)[:SEGMENTS]
        print(f"cluster ready in {time.monotonic() - t:.0f} s: {results['database_bytes'] / GB:.2f} GB, "
              f"{len(wal)} WAL segments spooled", flush=True)

        def workload(name: str, run_once) -> None:
            runs: dict[str, list] = {"direct": [], "proxy": []}
            for rep in range(REPS):
                order = ["direct", "proxy"] if rep % 2 == 0 else ["proxy", "direct"]
                for target in order:
                    endpoint, env, client = targets[target]
                    prefix = f"{target}-{name}-{rep}"
                    log_offset = proxy.log.stat().st_size
                    cpu0, t0 = cpu_seconds(pid), time.monotonic()
                    run_once(endpoint, env, prefix)
                    seconds, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
                    size = stored_bytes(client, prefix)
                    run = {"seconds": seconds, "bytes": size, "proxy_cpu_s": cpu}
                    if target == "proxy":
                        run["complete_seconds"], run["parts"] = complete_seconds(proxy.log, log_offset)
                    runs[target].append(run)
                    print(f"  {name} {target} rep {rep}: {seconds:.1f} s, {size / GB:.2f} GB"
                          + (f", Complete {run['complete_seconds']:.1f} s, {run['parts']} parts" if target == "proxy" else ""),
                          flush=True)
            rate = lambda rs: statistics.median(r["bytes"] / r["seconds"] for r in rs)  # noqa: E731
            entry = {
                "direct_seconds": statistics.median(r["seconds"] for r in runs["direct"]),
                "proxy_seconds": statistics.median(r["seconds"] for r in runs["proxy"]),
                "direct_MBps": rate(runs["direct"]) / 1e6, "proxy_MBps": rate(runs["proxy"]) / 1e6,
                "ratio": rate(runs["proxy"]) / rate(runs["direct"]),
                "bytes": statistics.median(r["bytes"] for r in runs["proxy"]),
                "proxy_cpu_s_per_GB": statistics.median(r["proxy_cpu_s"] / r["bytes"] * GB for r in runs["proxy"]),
                "proxy_complete_seconds": statistics.median(r["complete_seconds"] for r in runs["proxy"]),
                "parts": statistics.median(r["parts"] for r in runs["proxy"]),
            }
            results[name] = entry
            print(f"{name:22} ratio {entry['ratio']:.2f}  proxy {entry['proxy_seconds']:.1f} s  direct "
                  f"{entry['direct_seconds']:.1f} s  proxy CPU {entry['proxy_cpu_s_per_GB']:.2f} s/GB", flush=True)

        def base_backup(endpoint: str, env: dict, prefix: str) -> None:
            # CloudNativePG's defaults: no compression, two upload jobs.
            sh([str(VENV / "bin" / "barman-cloud-backup"), "--endpoint-url", endpoint, "--addressing-style", "path",
                "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "--immediate-checkpoint", "-J", str(JOBS),
                f"s3://{BUCKET}/{prefix}", SERVER], env=env)

        def wal_burst(endpoint: str, env: dict, prefix: str) -> None:
            # One process per segment, one after the other, as PostgreSQL
            # runs archive_command; uncompressed, CloudNativePG's default.
            for segment in wal:
                sh([str(VENV / "bin" / "barman-cloud-wal-archive"), "--endpoint-url", endpoint,
                    "--addressing-style", "path", f"s3://{BUCKET}/{prefix}", SERVER, str(segment)], env=env)

        if "base" in WORKLOADS:
            workload("base backup", base_backup)
        if "wal" in WORKLOADS:
            workload("WAL burst", wal_burst)
        results["proxy_peak_rss_MiB"] = peak_rss_mib(pid)
        print(f"proxy peak RSS: {results['proxy_peak_rss_MiB']:.1f} MiB", flush=True)
    finally:
        pg.stop()
        s.stop()
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    name = "barman.json" if JOBS == 2 else f"barman-jobs{JOBS}.json"
    (out / name).write_text(json.dumps(results, indent=2))
    print(f"wrote {out / name}")


if __name__ == "__main__":
    main()

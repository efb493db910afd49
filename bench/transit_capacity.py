"""OpenBao Transit's own cost per call, for docs/CAPACITY.md: how many
`decrypt`, `datakey` and `encrypt` (batches of 256, as the key pool sends)
calls one OpenBao CPU-second serves. A dev-mode OpenBao (in-memory storage:
Transit's cost, not the storage backend's) is driven by THREADS client
threads over kept-alive connections; its CPU time comes from /proc, so the
client's own CPU does not count. Medians of REPS runs.

    REPS=3 CALLS=3000 THREADS=8 python3 bench/transit_capacity.py

Writes bench/results/transit_capacity.json."""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402

REPS = int(os.environ.get("REPS", "3"))
CALLS = int(os.environ.get("CALLS", "3000"))
THREADS = int(os.environ.get("THREADS", "8"))
BATCH = 256
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def drive(addr: str, path: str, body: bytes, calls: int) -> float:
    """`calls` POSTs of `body` to `path` from THREADS threads; wall seconds."""
    url = urllib.parse.urlparse(addr)
    per_thread = calls // THREADS

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        for _ in range(per_thread):
            conn.request("POST", f"/v1/{path}", body, {"X-Vault-Token": stack_mod.VAULT_TOKEN})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def main() -> None:
    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-bench-transit"))
    work.mkdir(parents=True, exist_ok=True)
    vault = stack_mod.start_vault(work)
    try:
        pid = vault.process.popen.pid
        key = stack_mod.TRANSIT_KEY
        plaintext = base64.b64encode(os.urandom(32)).decode()
        wrapped = vault.ok("POST", f"transit/encrypt/{key}", {"plaintext": plaintext})["data"]["ciphertext"]
        batch = {"batch_input": [{"plaintext": base64.b64encode(os.urandom(32)).decode()} for _ in range(BATCH)]}
        cases = {
            "decrypt": (f"transit/decrypt/{key}", {"ciphertext": wrapped}, CALLS, 1),
            "datakey": (f"transit/datakey/plaintext/{key}", {"bits": 256}, CALLS, 1),
            "encrypt batch of 256": (f"transit/encrypt/{key}", batch, max(THREADS, CALLS // 50), BATCH),
        }
        results: dict = {"date": datetime.date.today().isoformat(), "threads": THREADS, "reps": REPS, "cases": {}}
        for label, (path, body, calls, keys_per_call) in cases.items():
            raw = json.dumps(body).encode()
            per_cpu, per_wall = [], []
            for _ in range(REPS):
                cpu = cpu_seconds(pid)
                wall = drive(vault.addr, path, raw, calls)
                used = cpu_seconds(pid) - cpu
                done = (calls // THREADS) * THREADS
                per_cpu.append(done / used)
                per_wall.append(done / wall)
            entry = {"calls_per_cpu_s": statistics.median(per_cpu), "calls_per_s": statistics.median(per_wall),
                     "keys_per_call": keys_per_call}
            entry["keys_per_cpu_s"] = entry["calls_per_cpu_s"] * keys_per_call
            results["cases"][label] = entry
            print(f"{label:22} {entry['calls_per_cpu_s']:8.0f} calls/CPU-s  {entry['calls_per_s']:8.0f} calls/s  "
                  f"{entry['keys_per_cpu_s']:9.0f} keys/CPU-s", flush=True)
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "transit_capacity.json").write_text(json.dumps(results, indent=2))
    finally:
        vault.process.stop()


if __name__ == "__main__":
    main()

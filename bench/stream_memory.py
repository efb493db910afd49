"""Peak RSS of the proxy while a large object streams through it: one PUT and
one GET of SIZE bytes (default 2 GiB) via raw HTTP, against s3s-fs.
Run with scripts/bench-memory.sh; prints a JSON line."""

import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402

SIZE = int(os.environ.get("SIZE", 2 << 30))
CHUNK = 1 << 20


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def chunks():
    block = hashlib.sha256(b"bench").digest() * (CHUNK // 32)
    sent = 0
    while sent < SIZE:
        n = min(CHUNK, SIZE - sent)
        yield block[:n]
        sent += n


def main():
    s = stack_mod.start_stack()
    try:
        u = urllib.parse.urlparse(s.proxy_endpoint)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        conn.request("PUT", "/bench", headers={"Content-Length": "0"})
        assert conn.getresponse().read() is not None
        pid = s.proxy.popen.pid
        t0 = time.monotonic()
        conn.request("PUT", "/bench/big.bin", body=chunks(), headers={"Content-Length": str(SIZE)})
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        put_s = time.monotonic() - t0
        put_hwm = vm_hwm_kib(pid)
        t0 = time.monotonic()
        conn.request("GET", "/bench/big.bin")
        r = conn.getresponse()
        got = 0
        while buf := r.read(CHUNK):
            got += len(buf)
        assert got == SIZE, got
        get_s = time.monotonic() - t0
        print(json.dumps({
            "bytes": SIZE,
            "put_seconds": round(put_s, 2),
            "get_seconds": round(get_s, 2),
            "peak_rss_after_put_mib": round(put_hwm / 1024, 1),
            "peak_rss_mib": round(vm_hwm_kib(pid) / 1024, 1),
        }))
    finally:
        stack_mod.cleanup(s)


if __name__ == "__main__":
    main()

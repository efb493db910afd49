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


class ChunkReader:
    """A file-like SIZE-byte source that holds one chunk at a time."""

    def __init__(self):
        self.chunks = chunks()
        self.pending = b""

    def read(self, n=-1):
        while (n < 0 or len(self.pending) < n) and (nxt := next(self.chunks, None)) is not None:
            self.pending += nxt
        out, self.pending = (self.pending, b"") if n < 0 else (self.pending[:n], self.pending[n:])
        return out


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
        get_hwm = vm_hwm_kib(pid)
        # A multipart object of the same size (8 MiB parts, 4 in flight), then
        # one ranged read across most of it.
        import boto3  # noqa: PLC0415
        from boto3.s3.transfer import TransferConfig  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        s3 = boto3.client("s3", endpoint_url=s.proxy_endpoint, aws_access_key_id="w", aws_secret_access_key="w",
                          region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
        t0 = time.monotonic()
        s3.upload_fileobj(ChunkReader(), "bench", "multipart.bin",
                          Config=TransferConfig(multipart_chunksize=8 << 20, max_concurrency=4))
        mp_put_s = time.monotonic() - t0
        first, last = 100 << 20, SIZE - (100 << 20) - 1
        t0 = time.monotonic()
        body = s3.get_object(Bucket="bench", Key="multipart.bin", Range=f"bytes={first}-{last}")["Body"]
        got = 0
        while buf := body.read(CHUNK):
            got += len(buf)
        assert got == last - first + 1, got
        mp_range_s = time.monotonic() - t0
        print(json.dumps({
            "bytes": SIZE,
            "put_seconds": round(put_s, 2),
            "get_seconds": round(get_s, 2),
            "multipart_put_seconds": round(mp_put_s, 2),
            "multipart_ranged_get_seconds": round(mp_range_s, 2),
            "peak_rss_after_put_mib": round(put_hwm / 1024, 1),
            "peak_rss_after_get_mib": round(get_hwm / 1024, 1),
            "peak_rss_mib": round(vm_hwm_kib(pid) / 1024, 1),
        }))
    finally:
        stack_mod.cleanup(s)


if __name__ == "__main__":
    main()

"""Format 3 against format 2 (issue 25): what an authenticated envelope
costs. Two proxy builds run side by side in ONE run, against the same
OpenBao and the same upstreams: "before" (BEFORE_BIN, a build of commit
c5c0889: formats 1 and 2) and "after" (this tree's target/release: format
3). Every target runs in every repetition, in an order that rotates, so a
noisy neighbour hits them alike; each figure is the median over the
repetitions of each repetition's median.

Measured:
  1. HEAD of a single-PUT object: key cached ("warm"), key not cached
     (CLOUDTASER_S3PROXY_KEY_CACHE_SIZE=0, "cold": format 3 unwraps the
     data key to check the envelope MAC), and cold with OpenBao behind
     bench's delay relay (VAULT_ONE_WAY_MS each way, a 20 ms round trip).
  2. HEAD of a sealed 3-part multipart object, the same targets.
  3. 4 KiB PUT and GET at concurrency 8 (s3-load), direct and through each.
  4. CopyObject of a 64 KiB single-PUT object onto another key.
  5. CompleteMultipartUpload of 10 parts (9 x 5 MiB + 1 MiB): only the
     Complete is timed (the seal included: a server-side part copy).

Cases 1, 2, 4 and 5 run on s3s-fs (the in-memory upstream has no
CopyObject or UploadPartCopy, which sealing needs); case 3 on the in-memory
upstream, so the proxy's cost is what it sees. Latencies are taken by a
small SigV4 client over one kept-alive connection per target.

    BEFORE_BIN=/path/to/c5c0889/cloudtaser-s3proxy REPS=5 python3 bench/format3.py

Writes bench/results/format3.json. Needs the release build of
cloudtaser-s3proxy and cloudtaser-bench (s3-load, s3-memory, delay-relay)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402
import run  # noqa: E402
import stack as stack_mod  # noqa: E402

RELEASE = ROOT / "target" / "release"
BEFORE_BIN = Path(os.environ.get("BEFORE_BIN", ""))
AFTER_BIN = RELEASE / "cloudtaser-s3proxy"
KiB, MiB = 1 << 10, 1 << 20
REPS = int(os.environ.get("REPS", "5"))
ONE_WAY_MS = float(os.environ.get("VAULT_ONE_WAY_MS", "10"))
HEADS = int(os.environ.get("HEADS", "40"))
COPIES = int(os.environ.get("COPIES", "20"))
SMALL_COUNT = int(os.environ.get("SMALL_COUNT", "2000"))
BUCKET = "format3"
DECRYPTS = 'cloudtaser_s3proxy_vault_calls_total{operation="decrypt",result="ok"}'
EMPTY_SHA = hashlib.sha256(b"").hexdigest()


class Client:
    """SigV4-signed requests over one kept-alive connection: little enough
    client time that a HEAD's latency is mostly the server's."""

    def __init__(self, endpoint: str, access: str, secret: str) -> None:
        self.host = endpoint.removeprefix("http://")
        self.access, self.secret = access, secret
        self.conn = http.client.HTTPConnection(self.host, timeout=120)

    def request(self, method: str, path: str, query: dict | None = None, headers: dict | None = None,
                body: bytes = b"") -> tuple[int, dict, bytes]:
        query = query or {}
        now = datetime.datetime.now(datetime.UTC)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA
        h = {"host": self.host, "x-amz-date": amz_date, "x-amz-content-sha256": payload,
             **{k.lower(): v for k, v in (headers or {}).items()}}
        uri = urllib.parse.quote(path, safe="/-_.~")
        qs = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                      for k, v in sorted(query.items()))
        signed = ";".join(sorted(h))
        canonical = "\n".join([method, uri, qs, "".join(f"{k}:{h[k].strip()}\n" for k in sorted(h)), signed, payload])
        scope = f"{day}/us-east-1/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self.secret).encode()
        for part in (day, "us-east-1", "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        h["authorization"] = f"AWS4-HMAC-SHA256 Credential={self.access}/{scope}, SignedHeaders={signed}, Signature={sig}"
        try:
            self.conn.request(method, uri + (f"?{qs}" if qs else ""), body=body or None, headers=h)
            r = self.conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next request opens a new connection
            raise
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def ok(self, method: str, path: str, **kw) -> tuple[dict, bytes]:
        status, headers, data = self.request(method, path, **kw)
        assert 200 <= status < 300, (method, path, status, data[:300])
        return headers, data

    def timed(self, method: str, path: str, **kw) -> float:
        t = time.perf_counter()
        self.ok(method, path, **kw)
        return (time.perf_counter() - t) * 1e3

    def multipart_upload(self, key: str, sizes: list[int]) -> tuple[str, bytes]:
        """Uploads the parts; returns the upload id and the Complete body."""
        _, data = self.ok("POST", f"/{BUCKET}/{key}", query={"uploads": ""})
        upload_id = data.split(b"<UploadId>")[1].split(b"</UploadId>")[0].decode()
        parts = []
        for n, size in enumerate(sizes, 1):
            h, _ = self.ok("PUT", f"/{BUCKET}/{key}", query={"partNumber": str(n), "uploadId": upload_id},
                           body=bytes([n]) * size)
            parts.append(f"<Part><PartNumber>{n}</PartNumber><ETag>{h['etag']}</ETag></Part>")
        return upload_id, f"<CompleteMultipartUpload>{''.join(parts)}</CompleteMultipartUpload>".encode()


def metric(health: str, name: str) -> float:
    with urllib.request.urlopen(f"{health}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    assert BEFORE_BIN.is_file(), "BEFORE_BIN must name a release build of c5c0889's cloudtaser-s3proxy"
    work = Path(os.environ.get("BENCH_DIR", "/tmp/cloudtaser-bench-format3"))
    s = harness.vault_stack(work, RELEASE)
    try:
        setup_and_measure(s)
    finally:
        s.stop()


def setup_and_measure(s: stack_mod.Stack) -> None:
    relay_port = stack_mod.free_port()
    s.start_process("delay-relay", [str(RELEASE / "delay-relay"), str(relay_port),
                                    s.vault.addr.removeprefix("http://"), str(ONE_WAY_MS)])
    far = f"http://127.0.0.1:{relay_port}"
    stack_mod.wait_for(lambda: urllib.request.urlopen(f"{far}/v1/sys/health", timeout=2).status == 200, "relay")

    harness.start_memory_upstream(s, RELEASE)
    memory = s.s3_endpoint
    fs_port = stack_mod.free_port()
    fs = f"http://127.0.0.1:{fs_port}"
    (s.workdir / "s3-data").mkdir(exist_ok=True)
    s.start_process("s3s-fs", [stack_mod.s3s_fs_binary(), "--host", "127.0.0.1", "--port", str(fs_port),
                               "--access-key", stack_mod.UPSTREAM_ACCESS_KEY, "--secret-key",
                               stack_mod.UPSTREAM_SECRET_KEY, str(s.workdir / "s3-data")])
    direct = Client(fs, stack_mod.UPSTREAM_ACCESS_KEY, stack_mod.UPSTREAM_SECRET_KEY)
    stack_mod.wait_for(lambda: direct.request("PUT", f"/{BUCKET}")[0] in (200, 409), "s3s-fs")

    # name -> (S3 endpoint, health endpoint, pid); the proxies' version.
    proxies: dict[str, tuple[str, str, int]] = {}
    version = {"direct": "direct"}

    def proxy(name: str, binary: Path, upstream: str, **env: str) -> None:
        os.environ["CLOUDTASER_PROXY_BIN"] = str(binary)
        s.s3_endpoint = upstream
        proc, endpoint, health = s.start_proxy(f"proxy-{name}", CLOUDTASER_S3PROXY_LOG="warn", **env)
        proxies[name] = (endpoint, health, proc.popen.pid)
        version[name] = name.split("-")[0]

    for v, binary in (("before", BEFORE_BIN), ("after", AFTER_BIN)):
        proxy(v, binary, fs, VAULT_ADDR=s.vault.addr)
        proxy(f"{v}-cold", binary, fs, VAULT_ADDR=s.vault.addr, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0")
        proxy(f"{v}-cold-far", binary, fs, VAULT_ADDR=far, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0")
        proxy(f"{v}-mem", binary, memory, VAULT_ADDR=s.vault.addr)
    time.sleep(2)  # let the data key pools fill, as a pod does at start

    work_key = (stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)
    clients = {"direct": direct} | {n: Client(e, *work_key) for n, (e, _, _) in proxies.items() if "mem" not in n}

    # Objects each version reads: written through its warm proxy (directly for "direct").
    last = MiB
    for v in ("direct", "before", "after"):
        c = clients[v]
        c.ok("PUT", f"/{BUCKET}/{v}-single", body=b"s" * (64 * KiB))
        c.ok("PUT", f"/{BUCKET}/{v}-copy-source", body=b"c" * (64 * KiB))
        upload_id, complete = c.multipart_upload(f"{v}-mp3", [5 * MiB, 5 * MiB, last])
        c.ok("POST", f"/{BUCKET}/{v}-mp3", query={"uploadId": upload_id}, body=complete)

    measure_all(proxies, clients, version, memory)


def measure_all(proxies: dict, clients: dict, version: dict, memory: str) -> None:
    head_targets = ["direct", "before", "after", "before-cold", "after-cold", "before-cold-far", "after-cold-far"]
    results: dict = {
        "machine": f"{os.cpu_count()} cores, shared with other agents' builds and tests",
        "reps": REPS, "vault_one_way_ms": ONE_WAY_MS, "before": "c5c0889 (formats 1/2)",
        "after": "format 3", "cases": {},
    }

    def measure(name: str, targets: list[str], one) -> None:
        """`one(target)` returns the latencies (ms) of one repetition's operations."""
        runs: dict[str, list[list[float]]] = {t: [] for t in targets}
        decrypts: dict[str, list[float]] = {t: [] for t in targets}
        for rep in range(REPS):
            for t in targets[rep % len(targets):] + targets[:rep % len(targets)]:
                health = proxies[t][1] if t in proxies else None
                d0 = metric(health, DECRYPTS) if health else 0.0
                lat = one(t)
                runs[t].append(lat)
                if health:
                    decrypts[t].append((metric(health, DECRYPTS) - d0) / len(lat))
        entry = {}
        for t, rs in runs.items():
            medians = [statistics.median(r) for r in rs]
            entry[t] = {"median_ms": statistics.median(medians), "runs_median_ms": [round(m, 3) for m in medians],
                        "p90_ms": statistics.median(statistics.quantiles(r, n=10)[-1] if len(r) > 1 else r[0]
                                                    for r in rs)}
            if decrypts[t]:
                entry[t]["transit_decrypts_per_op"] = statistics.median(decrypts[t])
        results["cases"][name] = entry
        print(f"{name:40} " + "  ".join(f"{t} {e['median_ms']:.2f}" for t, e in entry.items()), flush=True)

    def heads(key: str):
        def one(t: str) -> list[float]:
            return [clients[t].timed("HEAD", f"/{BUCKET}/{version[t]}-{key}") for _ in range(HEADS)]
        return one

    measure("HEAD single-PUT object (64 KiB)", head_targets, heads("single"))
    measure("HEAD sealed multipart object (3 parts)", head_targets, heads("mp3"))

    def copies(t: str) -> list[float]:
        v = version[t]
        return [clients[t].timed("PUT", f"/{BUCKET}/{v}-copy-{t}",
                                 headers={"x-amz-copy-source": f"/{BUCKET}/{v}-copy-source"}) for _ in range(COPIES)]

    measure("CopyObject (64 KiB source)", ["direct", "before", "after", "before-cold", "after-cold"], copies)

    def completes(t: str) -> list[float]:
        # Parts go through the warm proxy of the version; Complete through `t`.
        key = f"{version[t]}-mp10-{t}"
        upload_id, body = clients[version[t]].multipart_upload(key, [5 * MiB] * 9 + [MiB])
        return [clients[t].timed("POST", f"/{BUCKET}/{key}", query={"uploadId": upload_id}, body=body)]

    measure("CompleteMultipartUpload (10 parts)", ["direct", "before", "after", "before-cold", "after-cold"], completes)

    # 4 KiB PUT and GET at concurrency 8 on the in-memory upstream.
    small_targets = {"direct": (memory, None), "before": proxies["before-mem"][::2], "after": proxies["after-mem"][::2]}
    for label, case in (("4KiB PUT c8", "put"), ("4KiB GET c8", "get")):
        targets = {t: (endpoint, pid, f"{t}-s4k") for t, (endpoint, pid) in small_targets.items()}
        entry = run.rotating_case(targets, case, REPS, size=4 * KiB, count=SMALL_COUNT, concurrency=8)
        results["cases"][label] = entry
        print(f"{label:40} " + "  ".join(f"{t} {e['ops_s']:.0f}/s p50 {e['p50_ms']:.2f}" for t, e in entry.items()),
              flush=True)

    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "format3.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'format3.json'}")


if __name__ == "__main__":
    main()

"""Attack tests: what the provider learns beyond ciphertext, and what a
stalled provider can hold.

- Plaintext digests in user metadata. s3cmd stores `md5:<hex>` of the file
  in `x-amz-meta-s3cmd-attrs` on every upload, rclone the base64 MD5 in
  `x-amz-meta-md5chksum` on multipart uploads. User metadata is stored in
  the clear, so the provider could confirm a guess of the contents. Real
  s3cmd and rclone upload through the proxy; the stored metadata (read
  directly from s3s-fs, and s3s-fs's files on disk) must hold no MD5 of
  the plaintext in hex or base64, unless the keep setting is on.
- An upstream that accepts connections and never answers: the workload
  gets an error within the response timeout and the request's slot is freed.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import subprocess
import threading
import time
import types
import urllib.parse
from pathlib import Path

import botocore.exceptions
import pytest

import stack as stack_mod
from attack_helpers import body_of
from conftest import s3_client
from test_clients import rclone_env, run
from test_core import MiB
from test_failures import scrape
from test_metrics import value

BUCKET = "e2e-digests"


@pytest.fixture(scope="module")
def digests_bucket(upstream):
    upstream.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture(scope="module")
def keeping_proxy(stack):
    proc, endpoint, _ = stack.start_proxy("proxy-keep-digests", CLOUDTASER_S3PROXY_KEEP_PLAINTEXT_DIGESTS="true")
    yield endpoint
    proc.stop()


def s3cmd(endpoint: str, tmp: Path) -> list[str]:
    host = urllib.parse.urlparse(endpoint).netloc
    cfg = tmp / f"s3cfg-{host.replace(':', '-')}"
    cfg.write_text(
        "[default]\n"
        f"access_key = s3cmd-workload\nsecret_key = s3cmd-dummy\nhost_base = {host}\nhost_bucket = {host}\n"
        "use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
    )
    return ["s3cmd", "-c", str(cfg), "--no-progress"]


def rclone(endpoint: str) -> dict:
    return rclone_env(types.SimpleNamespace(proxy_endpoint=endpoint))


RCLONE_MULTIPART = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--retries", "1"]


def digests_of(data: bytes) -> list[str]:
    """Every text form of the plaintext's MD5 a client stores: hex (s3cmd)
    and base64 (rclone), checked case-insensitively."""
    md5 = hashlib.md5(data).digest()  # noqa: S324 - the clients' digest, searched for
    return [md5.hex(), base64.b64encode(md5).decode(), base64.b64encode(md5).decode().rstrip("=")]


def stored_metadata(upstream, key: str) -> dict[str, str]:
    """Every header s3s-fs answers a HEAD of the object with, user metadata included."""
    head = upstream.head_object(Bucket=BUCKET, Key=key)
    return {**{f"x-amz-meta-{k}": v for k, v in head["Metadata"].items()}, **head["ResponseMetadata"]["HTTPHeaders"]}


def found(digests: list[str], values: list[str]) -> list[str]:
    return [d for d in digests for v in values if d.lower() in v.lower()]


def on_disk(stack) -> list[str]:
    """s3s-fs's files that are not object bodies (its metadata sidecars), as text."""
    texts = []
    for path in stack.s3_data.rglob("*"):
        if path.is_file() and path.stat().st_size < 64 * 1024:
            texts.append(path.read_bytes().decode("latin-1"))
    return texts


def upload_with_both_clients(endpoint: str, tmp: Path, prefix: str) -> dict[str, bytes]:
    """s3cmd: a small file and a multipart one; rclone: a multipart one (the
    case in which it stores `md5chksum`). Returns stored key -> plaintext."""
    files = {
        f"{prefix}/s3cmd-small.txt": body_of(3000, f"{prefix}-s3cmd-small"),
        f"{prefix}/s3cmd-big.bin": body_of(11 * MiB + 3, f"{prefix}-s3cmd-big"),
        f"{prefix}/rclone/big.bin": body_of(12 * MiB + 5, f"{prefix}-rclone-big"),
    }
    src = tmp / prefix
    (src / "rclone").mkdir(parents=True)
    for key, data in files.items():
        (src / key.removeprefix(f"{prefix}/")).write_bytes(data)
    cmd = s3cmd(endpoint, tmp)
    run([*cmd, "put", str(src / "s3cmd-small.txt"), f"s3://{BUCKET}/{prefix}/s3cmd-small.txt"])
    run([*cmd, "put", "--multipart-chunk-size-mb=5", str(src / "s3cmd-big.bin"), f"s3://{BUCKET}/{prefix}/s3cmd-big.bin"])
    run(["rclone", "copy", str(src / "rclone"), f"ct:{BUCKET}/{prefix}/rclone", *RCLONE_MULTIPART], rclone(endpoint))
    return files


def test_s3cmd_and_rclone_store_no_plaintext_digest(stack, upstream, digests_bucket, tmp_path):
    files = upload_with_both_clients(stack.proxy_endpoint, tmp_path, "strip")
    disk = on_disk(stack)
    for key, data in files.items():
        meta = stored_metadata(upstream, key)
        leaked = found(digests_of(data), list(meta.values()))
        assert not leaked, f"{key}: the plaintext's MD5 is stored in the clear: {leaked} in {meta}"
        assert not found(digests_of(data), disk), f"{key}: the plaintext's MD5 is in s3s-fs's files"
    # Only the digest went: s3cmd keeps what `--preserve` restores.
    attrs = stored_metadata(upstream, "strip/s3cmd-small.txt")["x-amz-meta-s3cmd-attrs"]
    assert "mode:" in attrs and "uid:" in attrs and "mtime:" in attrs and "md5:" not in attrs, attrs
    assert "x-amz-meta-md5chksum" not in stored_metadata(upstream, "strip/rclone/big.bin")
    # Both clients still read their objects back (neither has an MD5 to check the ETag against).
    cmd = s3cmd(stack.proxy_endpoint, tmp_path)
    for name in ("s3cmd-small.txt", "s3cmd-big.bin"):
        out = tmp_path / f"{name}.back"
        run([*cmd, "get", "--force", f"s3://{BUCKET}/strip/{name}", str(out)])
        assert out.read_bytes() == files[f"strip/{name}"], name
    run(["rclone", "copy", f"ct:{BUCKET}/strip/rclone", str(tmp_path / "rclone-back"), "--retries", "1"],
        rclone(stack.proxy_endpoint))
    assert (tmp_path / "rclone-back" / "big.bin").read_bytes() == files["strip/rclone/big.bin"]


def test_the_keep_setting_stores_the_digests_as_sent(stack, upstream, digests_bucket, keeping_proxy, tmp_path):
    """The same uploads through a proxy with the setting on keep them, and
    through the default proxy do not: the setting, not the clients, decides."""
    kept = upload_with_both_clients(keeping_proxy, tmp_path, "keep")
    stripped = upload_with_both_clients(stack.proxy_endpoint, tmp_path, "default")
    for key, data in kept.items():
        assert found(digests_of(data), list(stored_metadata(upstream, key).values())), f"{key}: digest not kept"
    for key, data in stripped.items():
        assert not found(digests_of(data), list(stored_metadata(upstream, key).values())), f"{key}: digest stored"


# --- a stalled upstream -------------------------------------------------------


class SilentUpstream:
    """Accepts TCP connections and reads them, never answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn: socket.socket) -> None:
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def test_a_silent_upstream_times_out_and_frees_the_slot(stack):
    silent = SilentUpstream()
    proc, endpoint, health = stack.start_proxy(
        "proxy-silent-upstream",
        CLOUDTASER_S3PROXY_S3_ENDPOINT=silent.endpoint,
        CLOUDTASER_S3PROXY_UPSTREAM_RESPONSE_TIMEOUT_SECS="2",
    )
    try:
        # The client would wait 30 s; the proxy must answer long before.
        client = s3_client(endpoint, "w", "w", read_timeout=30, connect_timeout=5)
        for name, call in (
            ("GET", lambda: client.get_object(Bucket="b", Key="k")),
            ("PUT", lambda: client.put_object(Bucket="b", Key="k", Body=b"x" * 100_000)),
        ):
            started = time.monotonic()
            with pytest.raises(botocore.exceptions.ClientError) as err:
                call()
            took = time.monotonic() - started
            status = err.value.response["ResponseMetadata"]["HTTPStatusCode"]
            assert (status, err.value.response["Error"]["Code"]) == (504, "GatewayTimeout"), (name, err.value.response)
            assert 1.5 <= took < 8, f"{name} answered after {took:.1f} s"
        assert silent.accepted >= 1, "the requests reached the silent upstream"
        metrics = scrape(health)
        assert value(metrics, "cloudtaser_s3proxy_in_flight_requests") == 0, "a timed-out request still holds its slot"
        assert "GatewayTimeout" in proc.log_text() or "within 2 s" in proc.log_text()
    finally:
        proc.stop()
        silent.close()


def test_timeouts_are_settings_that_name_themselves(stack):
    env = stack.proxy_env(CLOUDTASER_S3PROXY_UPSTREAM_RESPONSE_TIMEOUT_SECS="0")
    r = subprocess.run([stack_mod.proxy_binary()], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "UPSTREAM_RESPONSE_TIMEOUT_SECS" in r.stdout + r.stderr, r.stdout + r.stderr

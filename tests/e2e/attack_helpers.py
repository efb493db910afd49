"""Helpers for test_attacks_at_rest.py: a raw HTTP/1.1 client (so the tests
control every byte sent and see every byte received, including a body cut
short), the format's size arithmetic, and checks of what is at rest."""

from __future__ import annotations

import hashlib
import re
import socket
import struct
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

SEG = 65536
TAG = 16
HDR = 52
SEALED = SEG + TAG
MiB = 1 << 20


# The proxy's Vault policy as docs/OPERATIONS.md prescribes it: no `create`,
# so a deleted (crypto-shredded) Transit key stays deleted.
PROXY_POLICY = """
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/decrypt/*" { capabilities = ["update"] }
path "transit/datakey/plaintext/*" { capabilities = ["update"] }
path "transit/rewrap/*" { capabilities = ["update"] }
path "transit/keys/*" { capabilities = ["read"] }
"""


def body_of(size: int, seed: int | str = 0) -> bytes:
    """Non-repeating bytes per seed (64 KiB blocks differ between seeds)."""
    block = hashlib.sha256(f"attack-{seed}".encode()).digest() * 2048
    return (block * (size // len(block) + 1))[:size]


def segments(size: int) -> int:
    return max(1, -(-size // SEG))


def ct_len(size: int) -> int:
    return HDR + size + TAG * segments(size)


def flip(blob: bytes, offset: int, mask: int = 0x01) -> bytes:
    b = bytearray(blob)
    b[offset] ^= mask
    return bytes(b)


# --- raw HTTP ---------------------------------------------------------------


@dataclass
class HttpResult:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = field(repr=False)
    #: The body arrived whole: its Content-Length, or a chunked body's last chunk.
    complete: bool
    raw: bytes = field(repr=False, default=b"")

    def __repr__(self) -> str:
        return (f"HttpResult({self.status} {self.code or self.reason}, {len(self.body)} body bytes, "
                f"complete={self.complete}, message={self.message!r})")

    @property
    def code(self) -> str | None:
        m = re.search(rb"<Code>([^<]*)</Code>", self.body)
        return m.group(1).decode() if m else None

    @property
    def message(self) -> str:
        m = re.search(rb"<Message>([^<]*)</Message>", self.body)
        return m.group(1).decode(errors="replace") if m else ""

    def is_s3_error(self) -> bool:
        return self.body.lstrip().startswith(b"<?xml") and b"<Error>" in self.body and self.code is not None


def _endpoint(endpoint: str) -> tuple[str, int]:
    u = urllib.parse.urlparse(endpoint)
    return u.hostname, u.port


def build_request(
    method: str, path: bytes | str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
    content_length: int | None = None, host: str = "127.0.0.1",
) -> bytes:
    """An HTTP/1.1 request with `Connection: close`; `path` is sent byte for byte."""
    if isinstance(path, str):
        path = path.encode()
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: " + host.encode(), b"Connection: close"]
    names = {k.lower() for k, _ in headers or []}
    if "content-length" not in names and "transfer-encoding" not in names:
        if content_length is None and (body or method in ("PUT", "POST")):
            content_length = len(body)
        if content_length is not None:
            lines.append(b"Content-Length: " + str(content_length).encode())
    for k, v in headers or []:
        lines.append(k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send_raw(endpoint: str, data: bytes, *, head: bool = False, half_close: bool = False,
             abort_after_send: bool = False, timeout: float = 30.0) -> HttpResult | None:
    """Sends `data`, reads the answer until the server closes the connection.
    `half_close` shuts down our sending side (a client that stops early but
    still listens); `abort_after_send` closes the socket at once (returns None)."""
    host, port = _endpoint(endpoint)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        if abort_after_send:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            return None
        if half_close:
            s.shutdown(socket.SHUT_WR)
        raw = bytearray()
        while True:
            try:
                chunk = s.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
    return parse_response(bytes(raw), head=head) if raw else None


def parse_response(raw: bytes, head: bool = False) -> HttpResult:
    end = raw.find(b"\r\n\r\n")
    assert end >= 0, f"no complete response head in {raw[:200]!r}"
    head_lines = raw[:end].decode("latin-1").split("\r\n")
    parts = head_lines[0].split(" ", 2)
    status, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
    headers: dict[str, str] = {}
    for line in head_lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    rest = raw[end + 4 :]
    if head or status in (204, 304) or 100 <= status < 200:
        return HttpResult(status, reason, headers, b"", True, raw)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, complete = _dechunk(rest)
        return HttpResult(status, reason, headers, body, complete, raw)
    if "content-length" in headers:
        n = int(headers["content-length"])
        return HttpResult(status, reason, headers, rest[:n], len(rest) >= n, raw)
    return HttpResult(status, reason, headers, rest, True, raw)


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    out = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out), False
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            return bytes(out), data.find(b"\r\n", pos) >= 0
        chunk = data[pos : pos + size]
        out += chunk
        if len(chunk) < size or data[pos + size : pos + size + 2] != b"\r\n":
            return bytes(out), False
        pos += size + 2


def request(endpoint: str, method: str, path: bytes | str, headers: list[tuple[str, str]] | None = None,
            body: bytes = b"", **kw) -> HttpResult:
    res = send_raw(endpoint, build_request(method, path, headers, body), head=method == "HEAD", **kw)
    assert res is not None, f"{method} {path!r}: the connection closed without a response"
    return res


def quote_key(key: str) -> str:
    return urllib.parse.quote(key, safe="/")


# --- at rest ----------------------------------------------------------------


def stored(upstream, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
    """The raw stored bytes and user metadata, read directly from the upstream."""
    got = upstream.get_object(Bucket=bucket, Key=key)
    return got["Body"].read(), got["Metadata"]


def exists_upstream(upstream, bucket: str, key: str) -> bool:
    import botocore.exceptions  # noqa: PLC0415

    try:
        upstream.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


def all_keys(upstream, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in upstream.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def assert_bucket_all_ciphertext(upstream, bucket: str, *plaintexts: bytes) -> int:
    """Every object stored in `bucket` is a format-3 envelope: the CTS3 magic
    with a version-3 stream, a wrapped data key and an envelope MAC; none
    contains any of `plaintexts` (when long enough to tell)."""
    keys = all_keys(upstream, bucket)
    for key in keys:
        raw, meta = stored(upstream, bucket, key)
        assert raw[:5] == b"CTS3\x03", f"{key!r} is stored without a format-3 stream header: {raw[:32]!r}"
        assert meta.get("cloudtaser-key", "").startswith("vault:v"), f"{key!r} has no wrapped data key: {meta}"
        assert meta.get("cloudtaser-format") == "3" and len(meta.get("cloudtaser-mac", "")) == 64, \
            f"{key!r} is not a format-3 envelope: {meta}"
        for p in plaintexts:
            if len(p) >= 8:
                assert p not in raw, f"{key!r} holds plaintext"
    return len(keys)


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def new_files(before: set[Path], root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p not in before)

"""An independent reader of the CloudTaser ciphertext format, written from
docs/FORMAT.md with the `cryptography` package, sharing no code with the proxy."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HEADER_LEN = 52
SEGMENT_LEN = 65536
TAG_LEN = 16
KEY_INFO = b"cloudtaser-s3 v1 segment key"
MANIFEST_KEY_INFO = b"cloudtaser-s3 v2 manifest key"
MANIFEST_CONTEXT = b"cloudtaser-s3 v2 manifest"
ENVELOPE_KEY_INFO = b"cloudtaser-s3 v3 envelope key"
ENVELOPE_CONTEXT = b"cloudtaser-s3 v3 envelope"
UPLOAD_ID_KEY_INFO = b"cloudtaser-s3 v3 upload id key"
OBJECT_KEY_INFO = b"cloudtaser-s3 v3 object key"
# FORMAT.md, "Bucket keys": the MAC input's marker before a derived key's salt.
DERIVED = 1
UPLOAD_ID_CONTEXT = b"cloudtaser-s3 v3 upload id"
# FORMAT.md: u8(binding), 0 = none, 1 = key, 2 = bucket-key.
BINDINGS = {"none": 0, "key": 1, "bucket-key": 2}
KIND_SINGLE, KIND_MULTIPART = 1, 2
# FORMAT.md: the proxy never writes a `cloudtaser-parts` longer than this, so
# a longer one is not the proxy's (and would break the bounded-read promise).
MAX_PARTS_LEN = 1024


class FormatError(ValueError):
    """The object breaks docs/FORMAT.md (segment authentication failures raise
    cryptography's InvalidTag instead)."""


def _derive(data_key: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    # salt=None is RFC 5869's default (HashLen zero bytes), which HMAC treats
    # exactly like FORMAT.md's "salt = empty": both pad to the same block.
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(data_key)


def object_key(bucket_key: bytes, key_salt: bytes) -> bytes:
    """A data key derived from a bucket key: HKDF-SHA256 with the object's
    key salt as the salt and the bucket key as the input key material."""
    if len(bucket_key) != 32 or len(key_salt) != 32:
        raise FormatError("a bucket key and a key salt are 32 bytes")
    return _derive(bucket_key, OBJECT_KEY_INFO, key_salt)


def ciphertext_len(plaintext_len: int) -> int:
    return HEADER_LEN + plaintext_len + TAG_LEN * max(1, -(-plaintext_len // SEGMENT_LEN))


def _decrypt_stream(data_key: bytes, blob: bytes, versions: tuple[int, ...]) -> bytes:
    if len(blob) < HEADER_LEN:
        raise FormatError("short stream header")
    header = blob[:HEADER_LEN]
    magic, version, seg_log2, reserved, _part, length = struct.unpack(">4sBBHIQ", header[:20])
    if magic != b"CTS3" or seg_log2 != 16 or reserved != 0:
        raise FormatError("bad stream header")
    if version not in versions:
        raise FormatError(f"stream version {version}, expected one of {versions}")
    if len(blob) != ciphertext_len(length):
        # Covers truncation and trailing bytes before any segment is opened.
        raise FormatError(f"stream of {len(blob)} bytes, its header says {ciphertext_len(length)}")
    aead = AESGCM(_derive(data_key, KEY_INFO, header[20:52]))
    segments = max(1, -(-length // SEGMENT_LEN))
    out = bytearray()
    pos = HEADER_LEN
    for i in range(segments):
        last = i == segments - 1
        plain_len = length - i * SEGMENT_LEN if last else SEGMENT_LEN
        sealed = blob[pos : pos + plain_len + TAG_LEN]
        pos += plain_len + TAG_LEN
        nonce = bytes(7) + struct.pack(">I", i) + bytes([1 if last else 0])
        out += aead.decrypt(nonce, sealed, header)
    return bytes(out)


def decrypt(data_key: bytes, blob: bytes) -> bytes:
    """One stream of any version (1, 2 or 3). It checks the stream alone, not
    the object's metadata: use verify_v3 for a format-3 object."""
    return _decrypt_stream(data_key, blob, (1, 2, 3))


def unwrap(vault, transit_key: str, wrapped: str) -> bytes:
    status, body = vault.api("POST", f"transit/decrypt/{transit_key}", {"ciphertext": wrapped})
    assert status == 200, body
    return base64.b64decode(body["data"]["plaintext"])


def encrypt(data_key: bytes, salt: bytes, part: int, plaintext: bytes, version: int = 1) -> bytes:
    """Deterministic given the salt: used to cross-check the documented vectors."""
    header = struct.pack(">4sBBHIQ", b"CTS3", version, 16, 0, part, len(plaintext)) + salt
    aead = AESGCM(_derive(data_key, KEY_INFO, salt))
    segments = max(1, -(-len(plaintext) // SEGMENT_LEN))
    out = bytearray(header)
    for i in range(segments):
        nonce = bytes(7) + struct.pack(">I", i) + bytes([1 if i == segments - 1 else 0])
        out += aead.encrypt(nonce, plaintext[i * SEGMENT_LEN : (i + 1) * SEGMENT_LEN], header)
    return bytes(out)


def manifest_tag(data_key: bytes, table: list[tuple[int, int]]) -> bytes:
    """Format 2's manifest tag over (part number, plaintext length) pairs."""
    key = _derive(data_key, MANIFEST_KEY_INFO)
    msg = MANIFEST_CONTEXT + struct.pack(">IQ", len(table), sum(n for _, n in table))
    msg += b"".join(struct.pack(">IQ", part, n) for part, n in table)
    return hmac.new(key, msg, hashlib.sha256).digest()


def streams(blob: bytes) -> list[tuple[int, int, int]]:
    """(version, part number, plaintext length) of each stream, from its header."""
    out, pos = [], 0
    while pos < len(blob):
        _, version, _, _, part, length = struct.unpack(">4sBBHIQ", blob[pos : pos + 20])
        out.append((version, part, length))
        pos += ciphertext_len(length)
    return out


def _str(s: str) -> bytes:
    """FORMAT.md's str(s): u32 byte length, then the UTF-8 bytes (no normalisation)."""
    raw = s.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw


def streams_digest(headers: list[bytes]) -> bytes:
    """`cloudtaser-streams`: SHA-256 over the 52-byte stream headers in stored order."""
    if any(len(h) != HEADER_LEN for h in headers):
        raise FormatError("a stream header is 52 bytes")
    return hashlib.sha256(b"".join(headers)).digest()


def envelope_mac(
    data_key: bytes,
    *,
    binding: str,
    bucket: str,
    key: str,
    transit_key: str,
    size: int,
    salt: bytes | None = None,
    table: list[tuple[int, int]] | None = None,
    streams: bytes | None = None,
    pending: bool = False,
    key_salt: bytes | None = None,
) -> bytes:
    """Format 3's `cloudtaser-mac`. A `multipart-pending` object passes
    `pending=True` (size 0, no salt or table). A single PUT passes `salt`; a multipart
    object passes `table` ((part number, plaintext length) in stored order)
    and `streams` (the 32-byte digest, not hex). `bucket` and `key` are the
    request's names; the binding decides which of them the MAC covers."""
    code = BINDINGS[binding]
    msg = ENVELOPE_CONTEXT + bytes([3, code])
    msg += _str(bucket if code == 2 else "")
    msg += _str(key if code != 0 else "")
    msg += _str(transit_key)
    msg += struct.pack(">Q", size)
    if pending:
        if salt is not None or table is not None or streams is not None or size != 0:
            raise FormatError("a pending object's MAC covers only its name and key")
        msg += bytes([3])
    elif salt is not None:
        if table is not None or streams is not None or len(salt) != 32:
            raise FormatError("a single PUT has a 32-byte salt and no table")
        msg += bytes([KIND_SINGLE]) + salt
    else:
        if table is None or streams is None or len(streams) != 32:
            raise FormatError("a multipart object has a table and a 32-byte streams digest")
        msg += bytes([KIND_MULTIPART]) + struct.pack(">I", len(table))
        msg += b"".join(struct.pack(">IQ", part, n) for part, n in table)
        msg += streams
    if key_salt is not None:
        if salt is None or len(key_salt) != 32:
            raise FormatError("only a single PUT derives its data key, from a 32-byte key salt")
        msg += bytes([DERIVED]) + key_salt
    return hmac.new(_derive(data_key, ENVELOPE_KEY_INFO), msg, hashlib.sha256).digest()


def upload_id_tag(data_key: bytes, bucket: str, key: str, upstream_id: str) -> bytes:
    """The 16-byte tag in a `ctu3.` upload id."""
    msg = UPLOAD_ID_CONTEXT + _str(bucket) + _str(key) + _str(upstream_id)
    return hmac.new(_derive(data_key, UPLOAD_ID_KEY_INFO), msg, hashlib.sha256).digest()[:16]


_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RUN = re.compile(r"([1-9][0-9]*)(?:-([1-9][0-9]*))?:(0|[1-9][0-9]*)")


def _decimal(text: str, what: str) -> int:
    # Canonical decimal only: no sign, spaces or leading zeros, fits u64.
    if not _DECIMAL.fullmatch(text) or int(text) >= 1 << 64:
        raise FormatError(f"{what} is not a decimal u64: {text!r}")
    return int(text)


def _hex32(text: str, what: str) -> bytes:
    # Written in lower case; read in either (docs/FORMAT.md): the MAC covers
    # the bytes, not their spelling.
    if not _HEX64.fullmatch(text.lower()):
        raise FormatError(f"{what} is not 64 hex digits")
    return bytes.fromhex(text)


def parse_parts(text: str) -> list[tuple[int, int]]:
    """`cloudtaser-parts` to (part number, plaintext length) pairs. Strict:
    canonical runs (`n:len`, or `a-b:len` with a < b), ascending part numbers
    1..10000, neighbouring runs not mergeable, at most 1,024 characters."""
    if not text or len(text) > MAX_PARTS_LEN:
        raise FormatError("part table empty or longer than 1,024 characters")
    table: list[tuple[int, int]] = []
    for run in text.split(","):
        m = _RUN.fullmatch(run)
        if not m:
            raise FormatError(f"bad part run {run!r}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else first
        length = _decimal(m.group(3), "part length")
        if (m.group(2) and last <= first) or last > 10000:
            raise FormatError(f"bad part run {run!r}")
        if table and first <= table[-1][0]:
            raise FormatError("part numbers not ascending")
        if table and first == table[-1][0] + 1 and length == table[-1][1]:
            raise FormatError("part runs not maximal")
        table += [(n, length) for n in range(first, last + 1)]
    return table


def verify_v3(data_key: bytes, meta: dict, bucket: str, key: str, body: bytes) -> bytes:
    """Every check FORMAT.md's format-3 reader makes, then the plaintext.

    `meta` is the object's metadata, names with or without the `x-amz-meta-`
    prefix, any case (boto3's `Metadata` has them without). `bucket` and `key`
    are the names the request used. Raises FormatError on a metadata or layout
    failure, cryptography's InvalidTag on a segment that fails."""
    m: dict[str, str] = {}
    for name, value in meta.items():
        name = name.lower().removeprefix("x-amz-meta-")
        if name.startswith("cloudtaser-"):
            if name[len("cloudtaser-") :] in m:
                raise FormatError(f"{name} twice")
            m[name[len("cloudtaser-") :]] = value
    if m.get("format") != "3":
        raise FormatError(f"not format 3: {m.get('format')!r}")
    layout = m.get("layout")
    if layout == "multipart-pending":
        raise FormatError("multipart-pending: the seal did not finish")
    if layout not in (None, "multipart"):
        raise FormatError(f"unknown layout {layout!r}")
    for field in ("key", "transit-key", "binding", "size", "mac"):
        if field not in m:
            raise FormatError(f"cloudtaser-{field} missing")
    if m["binding"] not in BINDINGS:
        raise FormatError(f"unknown binding {m['binding']!r}")
    if "manifest" in m:
        raise FormatError("a format-2 manifest on a format-3 object")
    size = _decimal(m["size"], "cloudtaser-size")
    mac = _hex32(m["mac"], "cloudtaser-mac")
    common = {"binding": m["binding"], "bucket": bucket, "key": key, "transit_key": m["transit-key"], "size": size}

    if layout is None:
        if "parts" in m or "streams" in m:
            raise FormatError("a single PUT with a part table")
        if "salt" not in m:
            raise FormatError("cloudtaser-salt missing")
        salt = _hex32(m["salt"], "cloudtaser-salt")
        # Bucket keys: the unwrapped key is the window's; the object's own derives from it.
        key_salt = _hex32(m["key-salt"], "cloudtaser-key-salt") if "key-salt" in m else None
        if key_salt is not None:
            data_key = object_key(data_key, key_salt)
        if not hmac.compare_digest(envelope_mac(data_key, salt=salt, key_salt=key_salt, **common), mac):
            raise FormatError("envelope MAC mismatch")
        if len(body) < HEADER_LEN:
            raise FormatError("short stream header")
        _, _, _, _, part, length = struct.unpack(">4sBBHIQ", body[:20])
        if body[20:52] != salt or length != size or part != 0:
            raise FormatError("stream header disagrees with the envelope (salt, size or part number)")
        return _decrypt_stream(data_key, body, (3,))

    if "salt" in m or "key-salt" in m:
        raise FormatError("a multipart object with a single-PUT salt or key salt")
    for field in ("parts", "streams"):
        if field not in m:
            raise FormatError(f"cloudtaser-{field} missing")
    table = parse_parts(m["parts"])
    digest = _hex32(m["streams"], "cloudtaser-streams")
    if sum(n for _, n in table) != size:
        raise FormatError("part table total differs from cloudtaser-size")
    if not hmac.compare_digest(envelope_mac(data_key, table=table, streams=digest, **common), mac):
        raise FormatError("envelope MAC mismatch")
    if len(body) != sum(ciphertext_len(n) for _, n in table):
        raise FormatError("stored length differs from the part table's")
    # Headers first, so the digest is checked before any stream is released.
    offsets, pos = [], 0
    for part, length in table:
        header = body[pos : pos + HEADER_LEN]
        _, version, _, _, h_part, h_len = struct.unpack(">4sBBHIQ", header[:20])
        if (version, h_part, h_len) != (3, part, length):
            raise FormatError(f"stream header {(version, h_part, h_len)} against table entry {(3, part, length)}")
        offsets.append((pos, pos + ciphertext_len(length)))
        pos += ciphertext_len(length)
    if not hmac.compare_digest(streams_digest([body[a : a + HEADER_LEN] for a, _ in offsets]), digest):
        raise FormatError("stream headers' digest differs from cloudtaser-streams")
    return b"".join(_decrypt_stream(data_key, body[a:b], (3,)) for a, b in offsets)

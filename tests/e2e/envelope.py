"""An independent reader of the CloudTaser ciphertext format, written from
docs/FORMAT.md with the `cryptography` package, sharing no code with the proxy."""

from __future__ import annotations

import base64
import hashlib
import hmac
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


def decrypt(data_key: bytes, blob: bytes) -> bytes:
    header = blob[:HEADER_LEN]
    magic, version, seg_log2, reserved, part, length = struct.unpack(">4sBBHIQ", header[:20])
    assert magic == b"CTS3" and version in (1, 2) and seg_log2 == 16 and reserved == 0
    salt = header[20:52]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=KEY_INFO).derive(data_key)
    aead = AESGCM(key)
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
    assert pos == len(blob), "trailing bytes"
    return bytes(out)


def unwrap(vault, transit_key: str, wrapped: str) -> bytes:
    status, body = vault.api("POST", f"transit/decrypt/{transit_key}", {"ciphertext": wrapped})
    assert status == 200, body
    return base64.b64decode(body["data"]["plaintext"])


def encrypt(data_key: bytes, salt: bytes, part: int, plaintext: bytes) -> bytes:
    """Deterministic given the salt: used to cross-check the documented vectors."""
    header = struct.pack(">4sBBHIQ", b"CTS3", 1, 16, 0, part, len(plaintext)) + salt
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=KEY_INFO).derive(data_key)
    aead = AESGCM(key)
    segments = max(1, -(-len(plaintext) // SEGMENT_LEN))
    out = bytearray(header)
    for i in range(segments):
        nonce = bytes(7) + struct.pack(">I", i) + bytes([1 if i == segments - 1 else 0])
        out += aead.encrypt(nonce, plaintext[i * SEGMENT_LEN : (i + 1) * SEGMENT_LEN], header)
    return bytes(out)


def manifest_tag(data_key: bytes, table: list[tuple[int, int]]) -> bytes:
    """Format 2's manifest tag over (part number, plaintext length) pairs."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MANIFEST_KEY_INFO).derive(data_key)
    msg = MANIFEST_CONTEXT + struct.pack(">IQ", len(table), sum(n for _, n in table))
    msg += b"".join(struct.pack(">IQ", part, n) for part, n in table)
    return hmac.new(key, msg, hashlib.sha256).digest()


def streams(blob: bytes) -> list[tuple[int, int, int]]:
    """(version, part number, plaintext length) of each stream, from its header."""
    out, pos = [], 0
    while pos < len(blob):
        _, version, _, _, part, length = struct.unpack(">4sBBHIQ", blob[pos : pos + 20])
        out.append((version, part, length))
        pos += HEADER_LEN + length + TAG_LEN * max(1, -(-length // SEGMENT_LEN))
    return out

"""An independent implementation (envelope.py) decrypts docs/FORMAT.md's vectors."""

import hashlib
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

import envelope

DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
DEK = bytes(range(32))


def vectors():
    block = DOC.read_text().split("```vectors\n")[1].split("```")[0]
    return [dict(kv.split("=", 1) for kv in line.split()) for line in block.strip().splitlines()]


def pattern(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


SALT = bytes(range(0xA0, 0xC0))


@pytest.mark.parametrize("vector", vectors(), ids=lambda v: f"part{v['part']}-{v.get('plaintext', v.get('pattern'))[:8]}")
def test_independent_implementation_agrees_with_vector(vector):
    part = int(vector["part"])
    plaintext = pattern(int(vector["pattern"])) if "pattern" in vector else bytes.fromhex(vector["plaintext"])
    ct = envelope.encrypt(DEK, SALT, part, plaintext)
    if "ciphertext" in vector:
        assert ct.hex() == vector["ciphertext"]
    else:
        assert len(ct) == int(vector["ciphertext_len"])
        assert hashlib.sha256(ct).hexdigest() == vector["ciphertext_sha256"]
    assert envelope.decrypt(DEK, ct) == plaintext
    tampered = bytearray(ct)
    tampered[-1] ^= 1
    with pytest.raises(InvalidTag):
        envelope.decrypt(DEK, bytes(tampered))


def manifest_vectors():
    block = DOC.read_text().split("```manifest\n")[1].split("```")[0]
    return [dict(kv.split("=", 1) for kv in line.split()) for line in block.strip().splitlines()]


@pytest.mark.parametrize("vector", manifest_vectors(), ids=lambda v: v["parts"])
def test_independent_manifest_agrees_with_vector(vector):
    table = []
    for run in vector["parts"].split(","):
        numbers, length = run.split(":")
        first, _, last = numbers.partition("-")
        table += [(n, int(length)) for n in range(int(first), int(last or first) + 1)]
    assert envelope.manifest_tag(DEK, table).hex() == vector["tag"]
    # Any other table, or a prefix of it, gets another tag.
    assert envelope.manifest_tag(DEK, table[:-1]).hex() != vector["tag"]

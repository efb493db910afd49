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


# Format 3: the blocks of docs/FORMAT.md's "Format 3" vectors.


def block(name: str) -> list[dict[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    assert f"```{name}\n" in text, f"no ```{name} block in {DOC}"
    body = text.split(f"```{name}\n")[1].split("```")[0]
    return [dict(kv.split("=", 1) for kv in line.split(" ")) for line in body.strip().splitlines()]


def v3_plaintext(vector: dict[str, str]) -> bytes:
    return pattern(int(vector["pattern"])) if "pattern" in vector else bytes.fromhex(vector["plaintext"])


@pytest.mark.parametrize("vector", block("vectors3"), ids=lambda v: f"part{v['part']}-{v.get('plaintext', v.get('pattern'))[:8]}")
def test_independent_v3_stream_agrees_with_vector(vector):
    part, plaintext = int(vector["part"]), v3_plaintext(vector)
    salt = bytes.fromhex(vector["salt"]) if "salt" in vector else SALT
    ct = envelope.encrypt(DEK, salt, part, plaintext, version=3)
    if "ciphertext" in vector:
        assert ct.hex() == vector["ciphertext"]
    else:
        assert len(ct) == int(vector["ciphertext_len"])
        assert hashlib.sha256(ct).hexdigest() == vector["ciphertext_sha256"]
    assert ct[4] == 3 and ct[8:12] == part.to_bytes(4, "big") and ct[20:52] == salt
    assert envelope.decrypt(DEK, ct) == plaintext
    # A version-3 stream is not a version-1 one: the header is every segment's
    # associated data, so relabelling it (flipping the byte back to 1) fails.
    for version in (1, 2):
        relabelled = bytearray(ct)
        relabelled[4] = version
        with pytest.raises(InvalidTag):
            envelope.decrypt(DEK, bytes(relabelled))
    # Part number, salt, first tag or ciphertext byte, last byte.
    for pos in (11, 20, 52, len(ct) - 1):
        tampered = bytearray(ct)
        tampered[pos] ^= 1
        with pytest.raises(InvalidTag):
            envelope.decrypt(DEK, bytes(tampered))


def mac_args(vector: dict[str, str]) -> dict:
    args = {
        "binding": vector["binding"],
        "bucket": vector["bucket"],
        "key": vector["key"],
        "transit_key": vector["transit"],
        "size": int(vector["size"]),
    }
    if "parts" in vector:
        args["table"] = envelope.parse_parts(vector["parts"])
        args["streams"] = bytes.fromhex(vector["streams"])
        assert sum(n for _, n in args["table"]) == args["size"], "a multipart vector's size is its table's total"
    else:
        args["salt"] = bytes.fromhex(vector["salt"])
    return args


def mac_variants(vector: dict[str, str]):
    """(what changed, changed arguments, whether the MAC must change)."""
    args = mac_args(vector)
    binding = args["binding"]
    yield "bucket", {**args, "bucket": args["bucket"] + "2"}, binding == "bucket-key"
    yield "key", {**args, "key": args["key"] + "x"}, binding != "none"
    yield "key-case", {**args, "key": args["key"].upper()}, binding != "none"
    for other in envelope.BINDINGS:
        if other != binding:
            yield f"binding-{other}", {**args, "binding": other}, True
    yield "transit", {**args, "transit_key": args["transit_key"] + "-b"}, True
    yield "size", {**args, "size": args["size"] + 1}, True
    if "salt" in args:
        yield "salt", {**args, "salt": bytes(31) + b"\x01"}, True
        yield "kind", {**{k: v for k, v in args.items() if k != "salt"}, "table": [(1, args["size"])], "streams": args["salt"]}, True
    else:
        table = args["table"]
        yield "table-prefix", {**args, "table": table[:-1]}, True
        yield "table-renumbered", {**args, "table": [(n + 1, length) for n, length in table]}, True
        yield "table-swapped", {**args, "table": [table[1], table[0], *table[2:]]}, True
        yield "streams", {**args, "streams": bytes(32)}, True
    yield "dek", {**args, "data_key": bytes(range(1, 33))}, True


@pytest.mark.parametrize("vector", block("envelope"), ids=lambda v: f"{v['binding']}-{v['key']}")
def test_independent_envelope_mac_agrees_with_vector(vector):
    mac = envelope.envelope_mac(DEK, **mac_args(vector)).hex()
    assert mac == vector["mac"]
    for what, args, changes in mac_variants(vector):
        dek = args.pop("data_key", DEK)
        other = envelope.envelope_mac(dek, **args).hex()
        assert (other != mac) == changes, f"{what}: MAC {'unchanged' if changes else 'changed'}"


def single_object(vector: dict[str, str]) -> tuple[dict[str, str], bytes, bytes]:
    """A stored single-PUT object for an envelope vector: its body is the
    documented stream of that size under the vector's salt."""
    plaintext = {0: b"", 10: b"CloudTaser"}[int(vector["size"])]
    body = envelope.encrypt(DEK, bytes.fromhex(vector["salt"]), 0, plaintext, version=3)
    meta = {
        "x-amz-meta-cloudtaser-format": "3",
        "x-amz-meta-cloudtaser-key": "vault:v1:unused",
        "x-amz-meta-cloudtaser-transit-key": vector["transit"],
        "x-amz-meta-cloudtaser-binding": vector["binding"],
        "x-amz-meta-cloudtaser-size": vector["size"],
        "x-amz-meta-cloudtaser-salt": vector["salt"],
        "x-amz-meta-cloudtaser-mac": vector["mac"],
        "x-amz-meta-user-field": "kept",
    }
    return meta, body, plaintext


SINGLE_VECTORS = [v for v in block("envelope") if "salt" in v]


@pytest.mark.parametrize("vector", SINGLE_VECTORS, ids=lambda v: f"{v['binding']}-{v['key']}")
def test_verify_v3_reads_documented_single_put(vector):
    meta, body, plaintext = single_object(vector)
    assert envelope.verify_v3(DEK, meta, vector["bucket"], vector["key"], body) == plaintext
    # boto3's Metadata spelling (no prefix) reads the same.
    short = {k.removeprefix("x-amz-meta-"): v for k, v in meta.items()}
    assert envelope.verify_v3(DEK, short, vector["bucket"], vector["key"], body) == plaintext
    # The name the MAC binds is the one the request names.
    other_bucket_ok = vector["binding"] != "bucket-key"
    other_key_ok = vector["binding"] == "none"
    for bucket, key, ok in ((vector["bucket"] + "2", vector["key"], other_bucket_ok), (vector["bucket"], "x" + vector["key"], other_key_ok)):
        if ok:
            assert envelope.verify_v3(DEK, meta, bucket, key, body) == plaintext
        else:
            with pytest.raises(envelope.FormatError, match="MAC"):
                envelope.verify_v3(DEK, meta, bucket, key, body)


def single_put_attacks(meta: dict[str, str], body: bytes):
    """(name, metadata, body) of a stored single-PUT object a reader must refuse."""
    p = "x-amz-meta-cloudtaser-"

    def edit(**changes):
        out = dict(meta)
        for k, v in changes.items():
            if v is None:
                out.pop(p + k.replace("_", "-"))
            else:
                out[p + k.replace("_", "-")] = v
        return out

    size = int(meta[p + "size"])
    other_salt = bytes(range(0x40, 0x60))
    yield "no-mac", edit(mac=None), body
    yield "no-salt", edit(salt=None), body
    yield "no-binding", edit(binding=None), body
    yield "no-size", edit(size=None), body
    yield "format-2", edit(format="2"), body
    yield "format-1", edit(format="1"), body
    yield "pending", edit(layout="multipart-pending"), body
    yield "layout-multipart", edit(layout="multipart"), body
    yield "other-binding", edit(binding="none" if meta[p + "binding"] != "none" else "key"), body
    yield "other-transit", edit(transit_key=meta[p + "transit-key"] + "-b"), body
    yield "size-plus-one", edit(size=str(size + 1)), body
    yield "size-leading-zero", edit(size="0" + meta[p + "size"]), body
    yield "mac-flipped", edit(mac=("0" if meta[p + "mac"][0] != "0" else "1") + meta[p + "mac"][1:]), body
    yield "metadata-salt-other", edit(salt=other_salt.hex()), body
    # A body under another salt, metadata untouched: the header salt differs.
    yield "body-other-salt", meta, envelope.encrypt(DEK, other_salt, 0, envelope.decrypt(DEK, body), version=3)
    # The same body sealed as version 1 (as a format-1 writer would) is refused.
    yield "body-version-1", meta, envelope.encrypt(DEK, body[20:52], 0, envelope.decrypt(DEK, body), version=1)
    yield "body-part-1", meta, envelope.encrypt(DEK, body[20:52], 1, envelope.decrypt(DEK, body), version=3)
    yield "body-truncated", meta, body[:-1]
    yield "body-appended", meta, body + b"\0"
    tampered = bytearray(body)
    tampered[-1] ^= 1
    yield "body-tampered", meta, bytes(tampered)
    yield "parts-on-single", edit(parts=f"1:{size}"), body


@pytest.mark.parametrize("case", list(single_put_attacks(*single_object(SINGLE_VECTORS[0])[:2])), ids=lambda c: c[0])
def test_verify_v3_refuses_tampered_single_put(case):
    name, meta, body = case
    vector = SINGLE_VECTORS[0]
    with pytest.raises((envelope.FormatError, InvalidTag), match="seal did not finish" if name == "pending" else None):
        envelope.verify_v3(DEK, meta, vector["bucket"], vector["key"], body)


MP_TABLE = [(1, 65536 + 5), (2, 65536 + 5), (4, 3), (5, 0)]


def multipart_object(table=MP_TABLE, binding="key", version=3, numbers=None):
    """A sealed format-3 multipart object built from the spec text: the parts'
    streams in order, the table, the headers' digest and the envelope MAC.
    `numbers` puts other part numbers in the stream headers (a faulty writer
    holding the DEK), the table, digest and MAC staying consistent."""
    plain = pattern(sum(n for _, n in table) + 1)[1:]
    parts, pos = [], 0
    for i, (number, length) in enumerate(table):
        salt = hashlib.sha256(bytes([i])).digest()
        header_number = numbers[i] if numbers else number
        parts.append(envelope.encrypt(DEK, salt, header_number, plain[pos : pos + length], version=version))
        pos += length
    digest = envelope.streams_digest([p[:52] for p in parts])
    runs = []
    for number, length in table:
        if runs and runs[-1][1] + 1 == number and runs[-1][2] == length:
            runs[-1][1] = number
        else:
            runs.append([number, number, length])
    parts_text = ",".join(f"{a}:{n}" if a == b else f"{a}-{b}:{n}" for a, b, n in runs)
    size = sum(n for _, n in table)
    mac = envelope.envelope_mac(DEK, binding=binding, bucket="bkt", key="big.bin", transit_key="cloudtaser", size=size, table=table, streams=digest)
    meta = {
        "cloudtaser-format": "3",
        "cloudtaser-key": "vault:v1:unused",
        "cloudtaser-transit-key": "cloudtaser",
        "cloudtaser-binding": binding,
        "cloudtaser-layout": "multipart",
        "cloudtaser-size": str(size),
        "cloudtaser-parts": parts_text,
        "cloudtaser-streams": digest.hex(),
        "cloudtaser-mac": mac.hex(),
    }
    return meta, parts, plain


def test_verify_v3_reads_multipart_object():
    meta, parts, plain = multipart_object()
    assert meta["cloudtaser-parts"] == "1-2:65541,4:3,5:0"
    assert envelope.parse_parts(meta["cloudtaser-parts"]) == MP_TABLE
    assert envelope.verify_v3(DEK, meta, "bkt", "big.bin", b"".join(parts)) == plain
    assert envelope.verify_v3(DEK, meta, "other-bucket", "big.bin", b"".join(parts)) == plain
    with pytest.raises(envelope.FormatError, match="MAC"):
        envelope.verify_v3(DEK, meta, "bkt", "big2.bin", b"".join(parts))


def multipart_attacks():
    meta, parts, _ = multipart_object()
    body = b"".join(parts)
    # Part 4 of another upload under the same DEK (same number and length,
    # another salt): only the headers' digest tells it apart.
    spliced_4 = envelope.encrypt(DEK, bytes(32), 4, b"abc", version=3)
    yield "pending", {**meta, "cloudtaser-layout": "multipart-pending"}, body
    yield "no-streams", {k: v for k, v in meta.items() if k != "cloudtaser-streams"}, body
    yield "no-parts", {k: v for k, v in meta.items() if k != "cloudtaser-parts"}, body
    yield "no-mac", {k: v for k, v in meta.items() if k != "cloudtaser-mac"}, body
    yield "prefix-of-parts", meta, b"".join(parts[:2])
    yield "dropped-part", meta, b"".join([parts[0], parts[1], parts[3]])
    yield "swapped-parts", meta, b"".join([parts[1], parts[0], parts[2], parts[3]])
    yield "duplicated-part", meta, b"".join([parts[0], parts[0], parts[2], parts[3]])
    yield "spliced-part", meta, b"".join([parts[0], parts[1], spliced_4, parts[3]])
    yield "table-prefix", {**meta, "cloudtaser-parts": "1-2:65541", "cloudtaser-size": "131082"}, b"".join(parts[:2])
    yield "streams-other", {**meta, "cloudtaser-streams": "00" * 32}, body
    yield "size-other", {**meta, "cloudtaser-size": "131089"}, body
    # A MAC made with the DEK (a faulty writer) over a size that is not the
    # table's total: the reader checks the sum itself.
    wrong_size = envelope.envelope_mac(
        DEK,
        binding="key",
        bucket="bkt",
        key="big.bin",
        transit_key="cloudtaser",
        size=131089,
        table=MP_TABLE,
        streams=bytes.fromhex(meta["cloudtaser-streams"]),
    )
    yield "size-not-table-total", {**meta, "cloudtaser-size": "131089", "cloudtaser-mac": wrong_size.hex()}, body
    yield "parts-non-canonical", {**meta, "cloudtaser-parts": "1:65541,2:65541,4:3,5:0"}, body
    yield "parts-descending", {**meta, "cloudtaser-parts": "4:3,1-2:65541,5:0"}, body
    yield "parts-too-long", {**meta, "cloudtaser-parts": ",".join(f"{n}:{n}" for n in range(1, 400))}, body
    yield "salt-on-multipart", {**meta, "cloudtaser-salt": "00" * 32}, body
    yield "single-layout", {k: v for k, v in meta.items() if k != "cloudtaser-layout"}, body
    v2_meta, v2_parts, _ = multipart_object(version=2)
    yield "version-2-streams", v2_meta, b"".join(v2_parts)
    # Streams whose headers' digest and MAC a DEK holder made consistent, but
    # whose part numbers disagree with the table.
    wrong_meta, wrong_parts, _ = multipart_object(numbers=[2, 1, 4, 5])
    yield "headers-disagree-with-table", wrong_meta, b"".join(wrong_parts)
    yield "trailing-bytes", meta, body + b"\0"
    tampered = bytearray(body)
    tampered[len(parts[0]) + 100] ^= 1
    yield "tampered-part-2", meta, bytes(tampered)


@pytest.mark.parametrize("case", list(multipart_attacks()), ids=lambda c: c[0])
def test_verify_v3_refuses_tampered_multipart(case):
    name, meta, body = case
    with pytest.raises((envelope.FormatError, InvalidTag), match="seal did not finish" if name == "pending" else None):
        envelope.verify_v3(DEK, meta, "bkt", "big.bin", body)


@pytest.mark.parametrize("vector", block("upload-id"), ids=lambda v: f"{v['bucket']}-{v['key']}")
def test_independent_upload_id_tag_agrees_with_vector(vector):
    tag = envelope.upload_id_tag(DEK, vector["bucket"], vector["key"], vector["upstream"])
    assert len(tag) == 16 and tag.hex() == vector["tag"]
    # Good only for the upload, bucket and key it was issued for, under this DEK.
    for bucket, key, upstream, dek in (
        (vector["bucket"] + "2", vector["key"], vector["upstream"], DEK),
        (vector["bucket"], vector["key"] + "2", vector["upstream"], DEK),
        (vector["bucket"], vector["key"], vector["upstream"] + "2", DEK),
        # Moving a byte between fields changes the tag: the fields are length-prefixed.
        (vector["bucket"] + vector["key"][:1], vector["key"][1:], vector["upstream"], DEK),
        (vector["bucket"], vector["key"], vector["upstream"], bytes(range(1, 33))),
    ):
        assert envelope.upload_id_tag(dek, bucket, key, upstream).hex() != vector["tag"]


def test_upload_id_vectors_differ_per_name():
    tags = [v["tag"] for v in block("upload-id")]
    assert len(tags) >= 2 and len(set(tags)) == len(tags)


@pytest.mark.parametrize(
    ("text", "table"),
    [
        ("1:0", [(1, 0)]),
        ("1-3:5,4:1", [(1, 5), (2, 5), (3, 5), (4, 1)]),
        ("2:7,5-6:0", [(2, 7), (5, 0), (6, 0)]),
        ("1-10000:1", [(n, 1) for n in range(1, 10001)]),
    ],
)
def test_parse_parts_reads_canonical_tables(text, table):
    assert envelope.parse_parts(text) == table


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0:5",  # S3 part numbers start at 1
        "1-1:5",  # a one-part run is written `n:len`
        "2-1:5",
        "1:5,1:5",  # duplicate
        "3:5,1:5",  # descending
        "1:5,2:5",  # mergeable runs: one spelling per table
        "01:5",
        "1:05",
        "1:+5",
        " 1:5",
        "1:5,",
        "1:18446744073709551616",  # not a u64
        "10001:1",
        ",".join(f"{n}:{n % 2}" for n in range(1, 400)),  # over 1,024 characters
    ],
    ids=lambda text: text if len(text) < 30 else f"{len(text)}-chars",
)
def test_parse_parts_refuses_other_spellings(text):
    with pytest.raises(envelope.FormatError):
        envelope.parse_parts(text)


@pytest.mark.parametrize("vector", block("bucket-key"), ids=lambda v: f"{v['binding']}-{v['key_salt'][:4]}")
def test_independent_bucket_key_derivation_and_mac_agree_with_vector(vector):
    key_salt = bytes.fromhex(vector["key_salt"])
    derived = envelope.object_key(DEK, key_salt)
    assert derived.hex() == vector["object_key"]
    args = {"binding": vector["binding"], "bucket": vector["bucket"], "key": vector["key"],
            "transit_key": vector["transit"], "size": int(vector["size"]), "salt": bytes.fromhex(vector["salt"])}
    assert envelope.envelope_mac(derived, key_salt=key_salt, **args).hex() == vector["mac"]
    assert envelope.envelope_mac(derived, **args).hex() != vector["mac"], "the key salt is covered"
    # A stored object of the vector reads through verify_v3 from the bucket key.
    plaintext = {0: b"", 10: b"CloudTaser"}[int(vector["size"])]
    body = envelope.encrypt(derived, bytes.fromhex(vector["salt"]), 0, plaintext, version=3)
    meta = {"cloudtaser-format": "3", "cloudtaser-key": "vault:v1:unused", "cloudtaser-transit-key": vector["transit"],
            "cloudtaser-binding": vector["binding"], "cloudtaser-size": vector["size"],
            "cloudtaser-salt": vector["salt"], "cloudtaser-key-salt": vector["key_salt"], "cloudtaser-mac": vector["mac"]}
    assert envelope.verify_v3(DEK, meta, vector["bucket"], vector["key"], body) == plaintext
    with pytest.raises(envelope.FormatError):
        envelope.verify_v3(DEK, {**meta, "cloudtaser-key-salt": "00" * 32}, vector["bucket"], vector["key"], body)

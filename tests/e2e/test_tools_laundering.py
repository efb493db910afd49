"""The bucket tools never launder tampered objects into authentic ones.

Someone holding the upstream's credentials (the `upstream` client, with the
proxy's own upstream credentials) can strip an object's envelope, relabel it
`multipart-pending` or format 1, or cut it short. `scan`, `migrate`, `seal`
and offline `decrypt` are what operators run on such a bucket: none of them
may turn that into an object the proxy then serves as authentic, or lose
the data key that still opens the original (issue 23)."""

from __future__ import annotations

import json
import os
import subprocess

import botocore.exceptions
import pytest

import envelope
import stack as stack_mod
from test_core import MiB, body_of

PART = 5 * MiB
BUCKET = "e2e-launder"
# The stored length of one whole 5 MiB part's stream.
STREAM = 52 + PART + 16 * (PART // 65536)


def tool(stack, *args, check: int | None = 0, **env):
    r = subprocess.run([stack_mod.proxy_binary(), *args], env=stack.proxy_env(**env), capture_output=True, text=True,
                       timeout=300)
    if check is not None:
        assert r.returncode == check, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def launder_bucket(upstream):
    upstream.create_bucket(Bucket=BUCKET)
    return BUCKET


def replace_metadata(upstream, key: str, meta: dict, bucket: str = BUCKET) -> None:
    """The same body under other metadata (a server-side self-copy)."""
    upstream.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, Metadata=meta,
                         MetadataDirective="REPLACE")


def envelope_of(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k.startswith("cloudtaser-")}


def refused_read(call) -> bool:
    try:
        call()
    except botocore.exceptions.ClientError:
        return True
    return False


def put_multipart(upstream, key: str, parts: list[bytes], meta: dict) -> str:
    """A multipart upload straight to the upstream, one part per element."""
    uid = upstream.create_multipart_upload(Bucket=BUCKET, Key=key, Metadata=meta)["UploadId"]
    done = [{"PartNumber": n, "ETag": upstream.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n,
                                                            Body=body)["ETag"]}
            for n, body in enumerate(parts, start=1)]
    return upstream.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                              MultipartUpload={"Parts": done})["ETag"]


def test_a_stripped_envelope_is_tampering_not_plaintext(stack, client, upstream, launder_bucket):
    """Every cloudtaser field removed: the body is still CTS3 ciphertext.
    Before, scan called it plaintext, migrate encrypted it (GET then
    answered 200 with the old ciphertext as the object) and the original
    data key was gone for good."""
    data = body_of(70_000, 23)
    client.put_object(Bucket=BUCKET, Key="strip/obj", Body=data, Metadata={"owner": "ops"})
    meta = upstream.head_object(Bucket=BUCKET, Key="strip/obj")["Metadata"]
    ciphertext = upstream.get_object(Bucket=BUCKET, Key="strip/obj")["Body"].read()
    replace_metadata(upstream, "strip/obj", {"owner": "ops"})

    report = json.loads(tool(stack, "scan", "--bucket", BUCKET, "--prefix", "strip/", "--json", check=1).stdout)
    assert (report["tampered"], report["plaintext"], report["unreadable"]) == (1, 0, 0), report
    assert [(f["key"], f["class"]) for f in report["findings"]] == [("strip/obj", "tampered")]
    assert "CTS3" in report["findings"][0]["reason"]

    r = tool(stack, "migrate", "--bucket", BUCKET, "--prefix", "strip/", "--quiet", check=1)
    assert ("encrypted: 0, upgraded to format 3: 0, "
            "already encrypted: 0, skipped: 0, failed: 0, refused: 1") in r.stdout, r.stdout + r.stderr
    assert "refused: strip/obj" in r.stdout + r.stderr
    stored = upstream.get_object(Bucket=BUCKET, Key="strip/obj")
    assert stored["Body"].read() == ciphertext, "migrate wrote nothing"
    assert not envelope_of(stored["Metadata"])
    # The proxy never answers 200 with the old ciphertext as the object.
    assert refused_read(lambda: client.get_object(Bucket=BUCKET, Key="strip/obj"))

    # The data key is not lost: with its envelope back, the object reads.
    replace_metadata(upstream, "strip/obj", meta)
    assert client.get_object(Bucket=BUCKET, Key="strip/obj")["Body"].read() == data


def test_migrate_exits_non_zero_and_records_nothing_past_a_refusal(stack, client, upstream, launder_bucket,
                                                                   tmp_path):
    """Keys sort a, b, c, d: plaintext, stripped ciphertext, plaintext, and
    a `multipart-pending` leftover (unfinished, never plaintext, never done).
    Before, migrate exited 0 counting the pending object as already
    encrypted, and the state file recorded the last key, so a rerun never
    looked at the refused ones again."""
    upstream.put_object(Bucket=BUCKET, Key="mix/a-plain", Body=b"plaintext a")
    client.put_object(Bucket=BUCKET, Key="mix/b-stripped", Body=b"was encrypted")
    replace_metadata(upstream, "mix/b-stripped", {})
    upstream.put_object(Bucket=BUCKET, Key="mix/c-plain", Body=b"plaintext c")
    uid = client.create_multipart_upload(Bucket=BUCKET, Key="mix/d-pending")["UploadId"]
    etag = client.upload_part(Bucket=BUCKET, Key="mix/d-pending", UploadId=uid, PartNumber=1, Body=b"p" * 1000)["ETag"]
    client.complete_multipart_upload(Bucket=BUCKET, Key="mix/d-pending", UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    meta = upstream.head_object(Bucket=BUCKET, Key="mix/d-pending")["Metadata"]
    pending = {k: meta[k] for k in ("cloudtaser-key", "cloudtaser-transit-key")}
    replace_metadata(upstream, "mix/d-pending", {**pending, "cloudtaser-format": "2",
                                                 "cloudtaser-layout": "multipart-pending"})

    dry = tool(stack, "migrate", "--bucket", BUCKET, "--prefix", "mix/", "--dry-run", "--quiet", check=1)
    assert ("would encrypt: 2, upgraded to format 3: 0, "
            "already encrypted: 0, skipped: 0, failed: 0, refused: 2") in dry.stdout, dry.stdout
    state = tmp_path / "migrate.state"
    r = tool(stack, "migrate", "--bucket", BUCKET, "--prefix", "mix/", "--state-file", str(state), "--quiet",
             check=1)
    assert ("encrypted: 2, upgraded to format 3: 0, "
            "already encrypted: 0, skipped: 0, failed: 0, refused: 2") in r.stdout, r.stdout
    assert "2 refused" in r.stderr and "refused: mix/d-pending" in r.stdout + r.stderr
    assert state.read_text().strip() == "mix/a-plain", "nothing past the first refusal is recorded as done"
    assert upstream.head_object(Bucket=BUCKET, Key="mix/d-pending")["Metadata"]["cloudtaser-layout"] \
        == "multipart-pending"
    # A rerun from the state file looks at the refused objects again.
    again = tool(stack, "migrate", "--bucket", BUCKET, "--prefix", "mix/", "--state-file", str(state), "--quiet",
                 check=1)
    assert ("encrypted: 0, upgraded to format 3: 0, "
            "already encrypted: 1, skipped: 0, failed: 0, refused: 2") in again.stdout, again.stdout


def pending_meta(stack, meta: dict, key: str) -> dict:
    """A genuine format-3 `multipart-pending` envelope for `key`: its MAC binds
    the name and Transit key (what the proxy writes before sealing), so the
    seal's refusals below come from the body, not from a forged label."""
    keep = {k: meta[k] for k in ("cloudtaser-key", "cloudtaser-transit-key", "cloudtaser-binding")}
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    mac = envelope.envelope_mac(dek, binding=meta["cloudtaser-binding"], bucket=BUCKET, key=key,
                                transit_key=meta["cloudtaser-transit-key"], size=0, pending=True)
    return {**keep, "cloudtaser-format": "3", "cloudtaser-layout": "multipart-pending", "cloudtaser-mac": mac.hex()}


def test_seal_refuses_a_pending_marker_on_a_tampered_object(stack, client, upstream, launder_bucket):
    """A three-part format-3 object, cut back to its first two parts (a
    single PUT: no part count; one part holding two streams: a wrong part
    count), or with one flipped bit (re-uploaded part by part, so the count
    matches), each labelled `multipart-pending`. Before, `seal` read the
    table from the stream headers and sealed each as authentic."""
    data = body_of(2 * PART + 1000, 77)
    uid = client.create_multipart_upload(Bucket=BUCKET, Key="pending/whole")["UploadId"]
    parts = [{"PartNumber": n, "ETag": client.upload_part(Bucket=BUCKET, Key="pending/whole", UploadId=uid,
                                                         PartNumber=n, Body=data[(n - 1) * PART : n * PART])["ETag"]}
             for n in (1, 2, 3)]
    client.complete_multipart_upload(Bucket=BUCKET, Key="pending/whole", UploadId=uid,
                                     MultipartUpload={"Parts": parts})
    meta = upstream.head_object(Bucket=BUCKET, Key="pending/whole")["Metadata"]
    body = upstream.get_object(Bucket=BUCKET, Key="pending/whole")["Body"].read()
    assert [s[1] for s in envelope.streams(body)] == [1, 2, 3]
    assert meta["cloudtaser-format"] == "3"

    def label(key):
        return pending_meta(stack, meta, key)

    upstream.put_object(Bucket=BUCKET, Key="pending/cut-put", Body=body[: 2 * STREAM],
                        Metadata=label("pending/cut-put"))
    put_multipart(upstream, "pending/cut-one-part", [body[: 2 * STREAM]], label("pending/cut-one-part"))
    flipped = bytearray(body)
    flipped[STREAM + 1000] ^= 1
    put_multipart(upstream, "pending/flipped",
                  [bytes(flipped[:STREAM]), bytes(flipped[STREAM : 2 * STREAM]), bytes(flipped[2 * STREAM :])],
                  label("pending/flipped"))
    # The reader's 503 sends operators to the verifying mode, not to a blind seal.
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=BUCKET, Key="pending/cut-put")
    error = e.value.response["Error"]
    assert error["Code"] == "ServiceUnavailable" and "seal --key" in error["Message"], error
    assert "tampered" in error["Message"]

    reasons = {"pending/cut-put": "no part count", "pending/cut-one-part": "says 1 part(s) but its body holds 2",
               "pending/flipped": "a segment failed verification"}
    for key, why in reasons.items():
        r = tool(stack, "seal", "--bucket", BUCKET, "--key", key, "--quiet", check=1)
        out = r.stdout + r.stderr
        assert "sealed: 0, already sealed: 0, not multipart or not encrypted: 0, failed: 0, refused: 1" in r.stdout, out
        assert why in out and "may have been tampered with" in out, out
        assert upstream.head_object(Bucket=BUCKET, Key=key)["Metadata"]["cloudtaser-layout"] == "multipart-pending"
        assert refused_read(lambda: client.get_object(Bucket=BUCKET, Key=key)), key
    # The bucket-wide mode checks the same way and refuses all three.
    r = tool(stack, "seal", "--bucket", BUCKET, "--prefix", "pending/", "--quiet", check=1)
    assert "already sealed: 1, not multipart or not encrypted: 0, failed: 0, refused: 3" in r.stdout, r.stdout

    # An honest leftover (the whole object relabelled pending) is sealed by --key and reads.
    replace_metadata(upstream, "pending/whole", label("pending/whole"))
    r = tool(stack, "seal", "--bucket", BUCKET, "--key", "pending/whole", "--quiet")
    assert "sealed: 1, already sealed: 0, not multipart or not encrypted: 0, failed: 0, refused: 0" in r.stdout
    assert client.get_object(Bucket=BUCKET, Key="pending/whole")["Body"].read() == data
    sealed = upstream.get_object(Bucket=BUCKET, Key="pending/whole")
    assert sealed["Metadata"]["cloudtaser-mac"] == meta["cloudtaser-mac"], "the same table, headers and name"
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    assert envelope.verify_v3(dek, sealed["Metadata"], BUCKET, "pending/whole", sealed["Body"].read()) == data


def test_seal_refuses_a_format_1_label_on_a_truncated_object(stack, client, upstream, launder_bucket):
    """A format-1 object (version-1 streams, no manifest) replaced by its
    first two streams under the same label: before, `seal` upgraded the
    prefix to a sealed format-2 object. The whole object, uploaded part by
    part as format 1 was, is upgraded."""
    client.put_object(Bucket=BUCKET, Key="v1/key-donor", Body=b"x")
    donor = upstream.head_object(Bucket=BUCKET, Key="v1/key-donor")["Metadata"]
    dek = envelope.unwrap(stack.vault, donor["cloudtaser-transit-key"], donor["cloudtaser-key"])
    data = body_of(2 * PART + 999, 11)
    chunks = [data[i : i + PART] for i in range(0, len(data), PART)]
    streams = [envelope.encrypt(dek, os.urandom(32), n, c) for n, c in enumerate(chunks, start=1)]
    label = {"cloudtaser-format": "1", "cloudtaser-layout": "multipart", "cloudtaser-key": donor["cloudtaser-key"],
             "cloudtaser-transit-key": donor["cloudtaser-transit-key"]}
    put_multipart(upstream, "v1/whole", streams, label)
    upstream.put_object(Bucket=BUCKET, Key="v1/cut", Body=b"".join(streams[:2]), Metadata=label)
    # Format-1 reads are allowed (the default): the cut object reads short until something vouches for it.
    assert client.get_object(Bucket=BUCKET, Key="v1/cut")["Body"].read() == data[: 2 * PART]

    r = tool(stack, "seal", "--bucket", BUCKET, "--key", "v1/cut", "--quiet", check=1)
    assert "refused: 1" in r.stdout and "may have been tampered with" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "cloudtaser-manifest" not in upstream.head_object(Bucket=BUCKET, Key="v1/cut")["Metadata"]

    r = tool(stack, "seal", "--bucket", BUCKET, "--key", "v1/whole", "--quiet")
    assert "sealed: 1," in r.stdout and "refused: 0" in r.stdout, r.stdout
    sealed = upstream.head_object(Bucket=BUCKET, Key="v1/whole")["Metadata"]
    table = [(n, len(c)) for n, c in enumerate(chunks, start=1)]
    assert sealed["cloudtaser-manifest"] == envelope.manifest_tag(dek, table).hex()
    assert client.get_object(Bucket=BUCKET, Key="v1/whole")["Body"].read() == data


def test_decrypt_checks_a_single_put_objects_salt_and_size(stack, client, upstream, launder_bucket, tmp_path):
    """Offline `decrypt` checks what the proxy checks: a single-PUT object
    must carry its salt, the stream's salt must be it, the plaintext length
    must be the envelope's size, and (format 3) the MAC must verify over the
    binding and the name given. Before, a body moved from another
    object under the same data key, or one whose size was altered, decrypted."""
    client.put_object(Bucket=BUCKET, Key="offline/a", Body=b"object a " * 100)
    client.put_object(Bucket=BUCKET, Key="offline/b", Body=b"object b")
    meta = upstream.head_object(Bucket=BUCKET, Key="offline/a")["Metadata"]
    other = upstream.head_object(Bucket=BUCKET, Key="offline/b")["Metadata"]
    raw = tmp_path / "a.bin"
    raw.write_bytes(upstream.get_object(Bucket=BUCKET, Key="offline/a")["Body"].read())
    out = tmp_path / "a.out"
    assert meta["cloudtaser-format"] == other["cloudtaser-format"] == "3"
    base = ["decrypt", "--in", str(raw), "--out", str(out), "--wrapped-key", meta["cloudtaser-key"],
            "--key-name", meta["cloudtaser-transit-key"]]
    # Format 3 adds the envelope: its MAC, binding and the name it binds.
    v3 = ["--mac", meta["cloudtaser-mac"], "--binding", meta["cloudtaser-binding"], "--object-key", "offline/a"]
    tool(stack, *base, *v3, "--salt", meta["cloudtaser-salt"], "--size", meta["cloudtaser-size"])
    assert out.read_bytes() == b"object a " * 100
    out.unlink()
    salt_size = ["--salt", meta["cloudtaser-salt"], "--size", meta["cloudtaser-size"]]
    cases = {
        "no salt": (v3, "needs --salt and --size"),
        "no size": ([*v3, "--salt", meta["cloudtaser-salt"]], "needs --salt and --size"),
        "another object's salt": ([*v3, "--salt", other["cloudtaser-salt"], "--size", meta["cloudtaser-size"]],
                                  "another object"),
        "a wrong size": ([*v3, "--salt", meta["cloudtaser-salt"], "--size", str(int(meta["cloudtaser-size"]) - 1)],
                         "cloudtaser-size"),
        "no MAC (a format-3 stream read as format 1 or 2)": (salt_size, "version 3"),
        # The name and binding sit under the MAC with the salt and size.
        "another object's MAC": (["--mac", other["cloudtaser-mac"], "--object-key", "offline/a", *salt_size],
                                 "does not verify"),
        "another object key": (["--mac", meta["cloudtaser-mac"], "--object-key", "offline/b", *salt_size],
                               "does not verify"),
        "another binding": (["--mac", meta["cloudtaser-mac"], "--binding", "none", "--object-key", "offline/a",
                             *salt_size], "does not verify"),
    }
    for name, (extra, why) in cases.items():
        r = tool(stack, *base, *extra, check=None)
        assert r.returncode != 0 and why in r.stderr, (name, r.stderr)
        assert not out.exists(), name


def test_migrate_refuses_a_replacement_of_an_encrypted_object_on_a_versioned_bucket(stack, moto_stack):
    """A replacement body that is not ciphertext cannot be told from the
    owner's plaintext by itself; on a versioned bucket (moto) the version
    it replaced was encrypted, so it was written around the proxy, and
    migrate refuses to vouch for it. Before, migrate encrypted it as if the
    owner had written it."""
    bucket = "e2e-launder-versioned"
    moto_stack.direct.create_bucket(Bucket=bucket)
    moto_stack.direct.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    moto_stack.client.put_object(Bucket=bucket, Key="ver/obj", Body=b"the owner's data")
    moto_stack.direct.put_object(Bucket=bucket, Key="ver/obj", Body=b"the attacker's replacement")
    # An object that was plaintext in every version is migrated as before.
    moto_stack.direct.put_object(Bucket=bucket, Key="ver/obj-legacy", Body=b"v1")
    moto_stack.direct.put_object(Bucket=bucket, Key="ver/obj-legacy", Body=b"v2")
    env = {"CLOUDTASER_S3PROXY_S3_ENDPOINT": moto_stack.endpoint}
    r = tool(stack, "migrate", "--bucket", bucket, "--prefix", "ver/", "--quiet", "--assume-quiesced", check=1,
             **env)
    assert ("encrypted: 1, upgraded to format 3: 0, "
            "already encrypted: 0, skipped: 0, failed: 0, refused: 1") in r.stdout, r.stdout + r.stderr
    assert "refused: ver/obj: an earlier version of it is encrypted" in r.stderr, r.stderr
    assert moto_stack.direct.get_object(Bucket=bucket, Key="ver/obj")["Body"].read() == b"the attacker's replacement"
    assert moto_stack.client.get_object(Bucket=bucket, Key="ver/obj-legacy")["Body"].read() == b"v2"

"""`scan` (prove a bucket holds only ciphertext) and `migrate` (encrypt what
was written before the proxy), run as a platform team would run them."""

from __future__ import annotations

import json
import subprocess

import pytest

import envelope
import stack as stack_mod
from conftest import s3_client

MIB = 1 << 20


def admin(stack, *args, check: int | None = 0):
    r = subprocess.run([stack_mod.proxy_binary(), *args], env=stack.proxy_env(), capture_output=True, text=True,
                       timeout=300)
    if check is not None:
        assert r.returncode == check, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def tools_bucket(stack, upstream, client):
    upstream.create_bucket(Bucket="e2e-tools")
    client.put_object(Bucket="e2e-tools", Key="enc/one", Body=b"1" * 1000)
    client.put_object(Bucket="e2e-tools", Key="enc/two", Body=b"2" * 70_000)
    up = client.create_multipart_upload(Bucket="e2e-tools", Key="enc/multi")
    part = client.upload_part(Bucket="e2e-tools", Key="enc/multi", UploadId=up["UploadId"], PartNumber=1,
                              Body=b"m" * (5 << 20))
    client.complete_multipart_upload(Bucket="e2e-tools", Key="enc/multi", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    return "e2e-tools"


def test_scan_of_an_encrypted_prefix_is_clean(stack, tools_bucket):
    r = admin(stack, "scan", "--bucket", tools_bucket, "--prefix", "enc/", "--json", "--verify")
    report = json.loads(r.stdout)
    assert (report["objects"], report["encrypted_single"], report["encrypted_multipart"]) == (3, 2, 1)
    assert (report["plaintext"], report["unreadable"], report["findings"]) == (0, 0, [])
    assert report["verified"] is True
    assert report["key_versions"] == {f"{stack_mod.TRANSIT_KEY}:v1": 3}
    human = admin(stack, "scan", "--bucket", tools_bucket, "--prefix", "enc/", "--quiet").stdout
    assert "scanned 3 objects" in human and "0 plaintext, 0 unreadable" in human


def test_scan_finds_plaintext_and_damage(stack, upstream, client, tools_bucket):
    upstream.put_object(Bucket=tools_bucket, Key="mixed/plain.csv", Body=b"name,iban\n")
    client.put_object(Bucket=tools_bucket, Key="mixed/ok", Body=b"fine")
    client.put_object(Bucket=tools_bucket, Key="mixed/damaged", Body=b"d" * 5000)
    stored = upstream.get_object(Bucket=tools_bucket, Key="mixed/damaged")
    data = bytearray(stored["Body"].read())
    data[-1] ^= 1
    upstream.put_object(Bucket=tools_bucket, Key="mixed/damaged", Body=bytes(data), Metadata=stored["Metadata"])
    # Without --verify the damage is invisible to metadata: only the plaintext object is found.
    quick = json.loads(admin(stack, "scan", "--bucket", tools_bucket, "--prefix", "mixed/", "--json", check=1).stdout)
    assert quick["findings"] == [{"key": "mixed/plain.csv", "class": "plaintext", "reason": "no encryption envelope"}]
    full = json.loads(admin(stack, "scan", "--bucket", tools_bucket, "--prefix", "mixed/", "--json", "--verify",
                            check=1).stdout)
    assert (full["plaintext"], full["unreadable"], full["encrypted_single"]) == (1, 1, 1)
    damaged = [f for f in full["findings"] if f["key"] == "mixed/damaged"]
    assert damaged and damaged[0]["class"] == "unreadable"


def test_scan_that_cannot_list_exits_2(stack):
    r = admin(stack, "scan", "--bucket", "no-such-bucket-here", "--quiet", check=2)
    assert "listing the bucket" in r.stderr


def test_migrate_encrypts_pre_proxy_objects_in_place(stack, upstream, client, tools_bucket, tmp_path):
    legacy = {
        "legacy/report.csv": (b"name,iban\nalice,DE00\n", {"ContentType": "text/csv", "CacheControl": "max-age=60",
                                                            "ContentDisposition": "attachment", "ContentLanguage": "de",
                                                            "Metadata": {"owner": "finance"}}),
        "legacy/blob.bin": (bytes(range(256)) * 1000, {"ContentEncoding": "gzip"}),
        "legacy/empty": (b"", {}),
    }
    for key, (body, extra) in legacy.items():
        upstream.put_object(Bucket=tools_bucket, Key=key, Body=body, **extra)
    client.put_object(Bucket=tools_bucket, Key="legacy/already", Body=b"written through the proxy")
    before = json.loads(admin(stack, "scan", "--bucket", tools_bucket, "--prefix", "legacy/", "--json", check=1).stdout)
    assert before["plaintext"] == 3

    dry = admin(stack, "migrate", "--bucket", tools_bucket, "--prefix", "legacy/", "--dry-run", "--quiet").stdout
    assert "would encrypt: 3, upgraded to format 3: 0, already encrypted: 1, skipped: 0, failed: 0" in dry
    assert upstream.get_object(Bucket=tools_bucket, Key="legacy/report.csv")["Body"].read().startswith(b"name")

    state = tmp_path / "migrate.state"
    out = admin(stack, "migrate", "--bucket", tools_bucket, "--prefix", "legacy/", "--state-file", str(state),
                "--quiet").stdout
    assert "encrypted: 3, upgraded to format 3: 0, already encrypted: 1, skipped: 0, failed: 0" in out
    assert state.read_text().strip() == "legacy/report.csv"  # the last key listed

    after = json.loads(admin(stack, "scan", "--bucket", tools_bucket, "--prefix", "legacy/", "--json", "--verify").stdout)
    assert (after["plaintext"], after["unreadable"], after["encrypted_single"]) == (0, 0, 4)
    for key, (body, extra) in legacy.items():
        stored = upstream.get_object(Bucket=tools_bucket, Key=key)
        raw, meta = stored["Body"].read(), stored["Metadata"]
        assert raw[:4] == b"CTS3"
        # Migrated objects are format 3, as the proxy writes them: the
        # independent reader verifies the envelope bound to the key.
        dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
        assert envelope.verify_v3(dek, meta, tools_bucket, key, raw) == body
        # Read back through an ordinary proxy: no plaintext-read setting needed.
        got = client.get_object(Bucket=tools_bucket, Key=key)
        assert got["Body"].read() == body
        for field in ("ContentType", "CacheControl", "ContentDisposition", "ContentLanguage", "ContentEncoding"):
            if field in extra:
                assert got[field] == extra[field], field
        assert got["Metadata"] == extra.get("Metadata", {})

    # A rerun with the state file continues after the last key: nothing left to do.
    again = admin(stack, "migrate", "--bucket", tools_bucket, "--prefix", "legacy/", "--state-file", str(state),
                  "--quiet").stdout
    assert "encrypted: 0" in again and "failed: 0" in again


def test_migrate_rewrites_large_objects_as_multipart(stack, upstream, client, tools_bucket):
    body = bytes(range(251)) * (11 * MIB // 251)  # about 11 MiB: three 5 MiB parts
    upstream.put_object(Bucket=tools_bucket, Key="large/video.bin", Body=body, ContentType="video/mp4",
                        Metadata={"camera": "a"})
    out = admin(stack, "migrate", "--bucket", tools_bucket, "--prefix", "large/", "--part-size-mib", "5",
                "--quiet").stdout
    assert "encrypted: 1, upgraded to format 3: 0, already encrypted: 0, skipped: 0, failed: 0" in out
    stored = upstream.get_object(Bucket=tools_bucket, Key="large/video.bin")
    meta = stored["Metadata"]
    assert meta["cloudtaser-layout"] == "multipart" and meta["cloudtaser-format"] == "3"
    assert envelope.parse_parts(meta["cloudtaser-parts"]) == [(1, 5 * MIB), (2, 5 * MIB), (3, len(body) - 10 * MIB)]
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    assert envelope.verify_v3(dek, meta, tools_bucket, "large/video.bin", stored["Body"].read()) == body
    got = client.get_object(Bucket=tools_bucket, Key="large/video.bin")
    assert got["Body"].read() == body
    assert (got["ContentType"], got["Metadata"]) == ("video/mp4", {"camera": "a"})
    ranged = client.get_object(Bucket=tools_bucket, Key="large/video.bin", Range="bytes=5242870-5242889")
    assert ranged["Body"].read() == body[5242870:5242890]
    report = json.loads(admin(stack, "scan", "--bucket", tools_bucket, "--prefix", "large/", "--json",
                              "--verify").stdout)
    assert (report["encrypted_multipart"], report["plaintext"], report["unreadable"]) == (1, 0, 0)

"""`scan` (prove a bucket holds only ciphertext) and `migrate` (encrypt what
was written before the proxy), run as a platform team would run them."""

from __future__ import annotations

import json
import subprocess

import pytest

import stack as stack_mod
from conftest import s3_client


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

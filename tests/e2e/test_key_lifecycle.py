"""Transit key rotation, min_decryption_version, and the rewrap and decrypt
commands, against real OpenBao and s3s-fs. Each test uses its own Transit
key so rotations do not leak into other tests."""

from __future__ import annotations

import subprocess

import botocore.exceptions
import pytest

import stack as stack_mod
from conftest import s3_client
from test_core import MiB, body_of

PART = 5 * MiB


@pytest.fixture()
def rotating(stack, request):
    """A proxy on a Transit key of this test's own, without a key pool, so
    a write right after a rotation uses the new version. (With the pool it
    does within the pool's maximum age: test_key_pool.py.)"""
    name = f"rot-{request.node.name[:40]}".replace("_", "-")
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    proc, endpoint, _ = stack.start_proxy(f"proxy-{name}", CLOUDTASER_S3PROXY_TRANSIT_KEY=name, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0",
                                          CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
    yield name, s3_client(endpoint, "w", "w")
    proc.stop()


def wrapped(upstream, bucket, key):
    return upstream.head_object(Bucket=bucket, Key=key)["Metadata"]["cloudtaser-key"]


def admin(stack, key_name, *args, env=None, check=True):
    # rewrap waits twice the version check after a rotation: 2 s here.
    merged = {"CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1", **(env or {})}
    cmd_env = stack.proxy_env(CLOUDTASER_S3PROXY_TRANSIT_KEY=key_name, **merged)
    r = subprocess.run([stack_mod.proxy_binary(), *args], env=cmd_env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_rotation_new_writes_use_newest_version_old_still_read(stack, rotating, upstream, bucket):
    name, client = rotating
    client.put_object(Bucket=bucket, Key="rot/old", Body=b"before rotation")
    assert wrapped(upstream, bucket, "rot/old").startswith("vault:v1:")
    stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
    client.put_object(Bucket=bucket, Key="rot/new", Body=b"after rotation")
    assert wrapped(upstream, bucket, "rot/new").startswith("vault:v2:")
    assert client.get_object(Bucket=bucket, Key="rot/old")["Body"].read() == b"before rotation"
    assert client.get_object(Bucket=bucket, Key="rot/new")["Body"].read() == b"after rotation"


def test_min_decryption_version_gives_a_clear_error(stack, rotating, bucket):
    name, client = rotating
    client.put_object(Bucket=bucket, Key="mindec/old", Body=b"v1 object")
    stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
    stack.vault.ok("POST", f"transit/keys/{name}/config", {"min_decryption_version": 2})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=bucket, Key="mindec/old")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "too old" in e.value.response["Error"]["Message"]


def test_rewrap_command(stack, rotating, upstream, bucket, tmp_path):
    name, client = rotating
    single = {f"rw/single-{i}": body_of(1000 + i, i) for i in range(3)}
    for k, v in single.items():
        client.put_object(Bucket=bucket, Key=k, Body=v, Metadata={"owner": "team"}, ContentType="text/x-rw")
    big = body_of(2 * PART + 333, 77)
    up = client.create_multipart_upload(Bucket=bucket, Key="rw/multi")
    etags = [client.upload_part(Bucket=bucket, Key="rw/multi", UploadId=up["UploadId"], PartNumber=n,
                                Body=big[(n - 1) * PART : n * PART])["ETag"] for n in (1, 2, 3)]
    client.complete_multipart_upload(Bucket=bucket, Key="rw/multi", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2, 3), etags)]})
    upstream.put_object(Bucket=bucket, Key="rw/plain-legacy", Body=b"not ours")
    stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})

    dry = admin(stack, name, "rewrap", "--bucket", bucket, "--prefix", "rw/", "--dry-run", "--quiet")
    assert "would rewrap: 4, already current: 0, not encrypted: 1, failed: 0" in dry.stdout
    assert wrapped(upstream, bucket, "rw/single-0").startswith("vault:v1:"), "dry run changes nothing"

    state = tmp_path / "rewrap.state"
    run = admin(stack, name, "rewrap", "--bucket", bucket, "--prefix", "rw/", "--state-file", str(state), "--quiet",
                "--assume-quiesced")
    assert "rewrapped: 4, already current: 0, not encrypted: 1, failed: 0" in run.stdout
    for k in [*single, "rw/multi"]:
        assert wrapped(upstream, bucket, k).startswith("vault:v2:"), k
    # The keys moved, the bodies and metadata did not.
    for k, v in single.items():
        got = client.get_object(Bucket=bucket, Key=k)
        assert got["Body"].read() == v and got["Metadata"] == {"owner": "team"} and got["ContentType"] == "text/x-rw"
    assert client.get_object(Bucket=bucket, Key="rw/multi")["Body"].read() == big
    assert client.get_object(Bucket=bucket, Key="rw/multi", Range=f"bytes={PART - 3}-{PART + 3}")["Body"].read() == big[PART - 3 : PART + 4]
    assert upstream.head_object(Bucket=bucket, Key="rw/multi")["ETag"].endswith('-3"'), "the part layout is kept"
    # Old key versions can now be retired.
    stack.vault.ok("POST", f"transit/keys/{name}/config", {"min_decryption_version": 2})
    assert client.get_object(Bucket=bucket, Key="rw/single-1")["Body"].read() == single["rw/single-1"]

    # A rerun resumes after the recorded key and finds nothing left to do.
    assert state.read_text().strip() == "rw/single-2"
    again = admin(stack, name, "rewrap", "--bucket", bucket, "--prefix", "rw/", "--quiet", "--assume-quiesced")
    assert "rewrapped: 0, already current: 4, not encrypted: 1" in again.stdout
    resumed = admin(stack, name, "rewrap", "--bucket", bucket, "--prefix", "rw/", "--state-file", str(state), "--quiet",
                    "--assume-quiesced")
    assert "rewrapped: 0, already current: 0, not encrypted: 0, failed: 0" in resumed.stdout


def test_decrypt_command_recovers_objects_without_the_proxy(stack, rotating, upstream, bucket, tmp_path):
    name, client = rotating
    data = body_of(2 * PART + 9, 78)
    client.put_object(Bucket=bucket, Key="recover/single", Body=data[:70_000])
    up = client.create_multipart_upload(Bucket=bucket, Key="recover/multi")
    etags = [client.upload_part(Bucket=bucket, Key="recover/multi", UploadId=up["UploadId"], PartNumber=n,
                                Body=data[(n - 1) * PART : n * PART])["ETag"] for n in (1, 2, 3)]
    client.complete_multipart_upload(Bucket=bucket, Key="recover/multi", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2, 3), etags)]})
    for key, want in (("recover/single", data[:70_000]), ("recover/multi", data)):
        raw = tmp_path / "download.bin"
        raw.write_bytes(upstream.get_object(Bucket=bucket, Key=key)["Body"].read())
        meta = upstream.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert meta["cloudtaser-format"] == "3"
        out = tmp_path / "plain.bin"
        # A format-3 object is checked against its envelope MAC, over the
        # binding and the object key it was written under.
        v3 = ["--mac", meta["cloudtaser-mac"], "--binding", meta["cloudtaser-binding"], "--object-key", key]
        # A single-PUT object's salt and size are checked, as the proxy checks them.
        single = ["--salt", meta["cloudtaser-salt"], "--size", meta["cloudtaser-size"]] if "cloudtaser-salt" in meta \
            else []
        admin(stack, "", "decrypt", "--in", str(raw), "--out", str(out), "--wrapped-key", meta["cloudtaser-key"],
              "--key-name", meta["cloudtaser-transit-key"], *v3, *single)
        assert out.read_bytes() == want
    assert not single and meta["cloudtaser-layout"] == "multipart", "the last object is multipart"
    bad = tmp_path / "bad.bin"
    args = ["--wrapped-key", meta["cloudtaser-key"], "--key-name", meta["cloudtaser-transit-key"]]
    whole = raw.read_bytes()
    # Without its MAC a format-3 download is refused (its streams are version 3).
    r = admin(stack, "", "decrypt", "--in", str(raw), "--out", str(bad), *args, check=False)
    assert r.returncode != 0 and not bad.exists() and "version 3" in r.stderr, r.stderr
    # Under another object key the MAC does not verify.
    r = admin(stack, "", "decrypt", "--in", str(raw), "--out", str(bad), *args, "--mac", meta["cloudtaser-mac"],
              "--object-key", "recover/other", check=False)
    assert r.returncode != 0 and not bad.exists() and "does not verify" in r.stderr, r.stderr
    # A damaged download, or one cut back to its first two parts, is refused and leaves no output behind.
    two_parts = 2 * (52 + PART + 16 * (PART // 65536))
    for damaged in (whole[:-100], whole[:two_parts]):
        raw.write_bytes(damaged)
        r = admin(stack, "", "decrypt", "--in", str(raw), "--out", str(bad), *args, *v3, check=False)
        assert r.returncode != 0 and not bad.exists(), r.stderr


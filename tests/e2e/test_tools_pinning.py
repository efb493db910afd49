"""The tools that copy objects onto themselves (`rewrap`, `seal`, `migrate`)
never revert or destroy a write that lands during the copy: the copy's
destination is pinned with If-Match; the tools first probe whether the
upstream enforces the conditional writes they rely on and refuse to run
where it does not (unless --assume-quiesced); and the proxy's own seal at
CompleteMultipartUpload runs to completion whatever the client does.

What the stores here enforce (If-Match / If-None-Match: * answered 412):
s3s-fs 0.17: PutObject and CompleteMultipartUpload, not CopyObject; moto
5.2: PutObject only; Garage 2.x: none."""

from __future__ import annotations

import signal
import subprocess
import time

import boto3
import botocore.exceptions
from botocore.config import Config
import pytest

import envelope
import stack as stack_mod
from conftest import s3_client
from hostile_upstream import Forged, HostileUpstream
from test_core import MiB, body_of

BUCKET = "e2e-pinning"
TRANSIT_KEY = "pinning-e2e"
PART = 5 * MiB
REFUSAL = "does not enforce conditional writes"
CHANGED = "another writer changed the object"


def tool(stack, env: dict, *args, check: int | None = 0) -> subprocess.CompletedProcess:
    r = subprocess.run([stack_mod.proxy_binary(), *args], env=stack.proxy_env(**env), capture_output=True, text=True,
                       timeout=300)
    if check is not None:
        assert r.returncode == check, r.stdout + r.stderr
    return r


def start_tool(stack, env: dict, *args) -> subprocess.Popen:
    return subprocess.Popen([stack_mod.proxy_binary(), *args], env=stack.proxy_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def probe_left_nothing(direct, bucket: str) -> None:
    listed = direct.list_objects_v2(Bucket=bucket, Prefix=".cloudtaser-probe/")
    assert not listed.get("Contents"), listed


def upload(client, key: str, data: bytes) -> dict:
    uid = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = []
    for n, off in enumerate(range(0, len(data), PART), start=1):
        r = client.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n, Body=data[off : off + PART])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    return {"UploadId": uid, "MultipartUpload": {"Parts": parts}}


def is_complete(method: str, path: str, headers: dict) -> bool:
    """A copy's CompleteMultipartUpload (not a Create, nor the probe's)."""
    return method == "POST" and "uploadId=" in path and ".cloudtaser-probe" not in path


def aborted(relay: HostileUpstream) -> bool:
    """Whether an AbortMultipartUpload went through the relay (s3s-fs has
    no ListMultipartUploads to ask)."""
    return any(s.method == "DELETE" and "uploadId=" in s.path for s in relay.seen)


def is_part_copy(method: str, path: str, headers: dict) -> bool:
    return method == "PUT" and "x-amz-copy-source" in headers and "partNumber=" in path


@pytest.fixture(scope="module")
def pinning(stack, upstream):
    """The bucket, a Transit key of its own (rotated by a test), and a
    workload proxy writing with it straight to s3s-fs."""
    upstream.create_bucket(Bucket=BUCKET)
    stack.vault.ok("POST", f"transit/keys/{TRANSIT_KEY}", {"type": "aes256-gcm96"})
    env = {"CLOUDTASER_S3PROXY_TRANSIT_KEY": TRANSIT_KEY}
    proc, endpoint, _ = stack.start_proxy("proxy-pinning", **env)
    yield env, s3_client(endpoint, "w", "w")
    proc.stop()


def test_tools_refuse_an_upstream_that_does_not_enforce_conditional_writes(stack, upstream, garage_stack, pinning):
    """Garage enforces no conditional write: every tool refuses to run, says
    why, and changes nothing, unless --assume-quiesced (or its variable) is
    given. s3s-fs ignores If-Match on CopyObject: `rewrap` (which copies
    single objects whole) is refused there, while `seal` (Complete, which
    s3s-fs enforces) runs. The probe leaves nothing behind."""
    import garage  # noqa: PLC0415 - bench/garage.py, put on the path by the garage_stack fixture

    env, _ = pinning
    on_garage = {**env, "CLOUDTASER_S3PROXY_S3_ENDPOINT": garage_stack.endpoint,
                 "AWS_ACCESS_KEY_ID": garage.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": garage.SECRET_KEY}
    garage_stack.direct.create_bucket(Bucket=BUCKET)
    garage_stack.direct.put_object(Bucket=BUCKET, Key="legacy/plain", Body=b"written before the proxy")
    for args in (["rewrap"], ["seal"], ["migrate"]):
        r = tool(stack, on_garage, *args, "--bucket", BUCKET, "--quiet", check=1)
        assert REFUSAL in r.stderr and "--assume-quiesced" in r.stderr and "reverted" in r.stderr, r.stderr
        assert "PutObject with If-Match" in r.stderr, r.stderr
    # Refused before anything was touched: the plaintext object is as it was.
    assert garage_stack.direct.head_object(Bucket=BUCKET, Key="legacy/plain")["Metadata"] == {}
    probe_left_nothing(garage_stack.direct, BUCKET)
    # The operator's word that writers are stopped: the flag, or its variable.
    out = tool(stack, on_garage, "migrate", "--bucket", BUCKET, "--quiet", "--assume-quiesced").stdout
    assert "encrypted: 1," in out, out
    tool(stack, {**on_garage, "CLOUDTASER_S3PROXY_ASSUME_QUIESCED": "true"}, "rewrap", "--bucket", BUCKET, "--quiet")
    # A dry run writes nothing, so it needs no probe.
    tool(stack, on_garage, "rewrap", "--bucket", BUCKET, "--quiet", "--dry-run")

    r = tool(stack, env, "rewrap", "--bucket", BUCKET, "--prefix", "none/", "--quiet", check=1)
    assert REFUSAL in r.stderr and "CopyObject with If-Match" in r.stderr, r.stderr
    tool(stack, env, "seal", "--bucket", BUCKET, "--prefix", "none/", "--quiet")
    probe_left_nothing(upstream, BUCKET)


def test_a_write_during_rewraps_copy_survives(stack, upstream, pinning):
    """`rewrap` copies a multipart object onto itself; a relay holds the
    copy upload's Complete while the workload writes a newer object at the
    key. The Complete carries If-Match (s3s-fs enforces it on Complete), so
    it fails: the tool reports the object as changed by another writer and
    exits non-zero, its copy upload is aborted, and the newer write reads
    back. Without the pin the Complete reverted the key to the old body."""
    env, c = pinning
    old, newer = body_of(PART + 1000, "rewrap-old"), body_of(3000, "rewrap-newer")
    c.complete_multipart_upload(Bucket=BUCKET, Key="rw/multi", **upload(c, "rw/multi", old))
    stack.vault.ok("POST", f"transit/keys/{TRANSIT_KEY}/rotate")
    relay = HostileUpstream(stack.s3_endpoint)
    try:
        held = relay.hold(is_complete)
        # s3s-fs ignores If-Match on CopyObject, so rewrap needs the flag here;
        # the multipart path's Complete is pinned all the same.
        run = start_tool(stack, {**env, "CLOUDTASER_S3PROXY_S3_ENDPOINT": relay.endpoint}, "rewrap", "--bucket",
                         BUCKET, "--prefix", "rw/", "--quiet", "--assume-quiesced")
        assert held.arrived.wait(60), "rewrap never sent its copy's Complete"
        c.put_object(Bucket=BUCKET, Key="rw/multi", Body=newer)
        held.release()
        out, err = run.communicate(timeout=120)
    finally:
        relay.close()
    assert run.returncode == 1, out + err
    assert f"rw/multi: {CHANGED} while it was being rewrapped" in out + err, out + err
    assert "rewrapped: 0," in out, out
    assert c.get_object(Bucket=BUCKET, Key="rw/multi")["Body"].read() == newer
    assert aborted(relay), "the copy upload was not aborted"
    # A rerun with no writer in the way rewraps what is there now.
    tool(stack, env, "rewrap", "--bucket", BUCKET, "--prefix", "rw/", "--quiet", "--assume-quiesced")
    assert c.get_object(Bucket=BUCKET, Key="rw/multi")["Body"].read() == newer


def test_a_write_during_seals_copy_survives(stack, upstream, pinning):
    """The same race against the `seal` command, which needs no flag on
    s3s-fs (its copies rely on Complete's If-Match, which s3s-fs enforces):
    an object left pending is being sealed when a newer write lands."""
    env, c = pinning
    old, newer = body_of(PART + 2000, "seal-old"), body_of(4000, "seal-newer")
    relay = HostileUpstream(stack.s3_endpoint)
    try:
        # A proxy whose seal copies fail leaves the completed object pending.
        relay.forge(lambda m, p, h: Forged(500, [], b"<Error><Code>InternalError</Code></Error>")
                    if m == "PUT" and "x-amz-copy-source" in h else None)
        proc, endpoint, _ = stack.start_proxy("proxy-pinning-fault", **env, CLOUDTASER_S3PROXY_S3_ENDPOINT=relay.endpoint)
        try:
            f = s3_client(endpoint, "w", "w")
            with pytest.raises(botocore.exceptions.ClientError):
                f.complete_multipart_upload(Bucket=BUCKET, Key="seal/multi", **upload(f, "seal/multi", old))
        finally:
            proc.stop()
        assert upstream.head_object(Bucket=BUCKET, Key="seal/multi")["Metadata"]["cloudtaser-layout"] == \
            "multipart-pending"
        relay.reset()
        held = relay.hold(is_complete)
        run = start_tool(stack, {**env, "CLOUDTASER_S3PROXY_S3_ENDPOINT": relay.endpoint}, "seal", "--bucket", BUCKET,
                         "--prefix", "seal/", "--quiet")
        assert held.arrived.wait(60), "seal never sent its copy's Complete"
        c.put_object(Bucket=BUCKET, Key="seal/multi", Body=newer)
        held.release()
        out, err = run.communicate(timeout=120)
    finally:
        relay.close()
    assert run.returncode == 1, out + err
    assert f"seal/multi: {CHANGED} while it was being sealed" in out + err, out + err
    assert c.get_object(Bucket=BUCKET, Key="seal/multi")["Body"].read() == newer
    assert aborted(relay), "the copy upload was not aborted"


def test_a_seal_outlives_its_client_and_a_sigterm(stack, upstream, pinning):
    """A client sends CompleteMultipartUpload and goes away while the seal's
    part copy is held; the proxy then gets SIGTERM. The seal runs as its own
    task and the shutdown drain waits for it: once the copy is released the
    object ends sealed and reads back. Before, the disconnect dropped the
    seal half done (the object stayed pending, its reads refused)."""
    env, c = pinning
    data = body_of(2 * PART + 3000, "outlives")
    relay = HostileUpstream(stack.s3_endpoint)
    proc = None
    try:
        held = relay.hold(is_part_copy)
        proc, endpoint, _ = stack.start_proxy("proxy-pinning-drain", **env, CLOUDTASER_S3PROXY_S3_ENDPOINT=relay.endpoint)
        # Gives up after a second, and never retries (a retried Complete
        # would finish the seal itself).
        impatient = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="w", aws_secret_access_key="w",
                                 region_name="us-east-1",
                                 config=Config(s3={"addressing_style": "path"}, read_timeout=1,
                                               retries={"total_max_attempts": 1, "mode": "standard"}))
        completion = upload(impatient, "drain/multi", data)
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            impatient.complete_multipart_upload(Bucket=BUCKET, Key="drain/multi", **completion)
        assert held.arrived.wait(30), "the seal never started"
        time.sleep(0.5)
        proc.popen.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert proc.popen.poll() is None, "the proxy exited with a seal running"
        held.release()
        assert proc.popen.wait(30) == 0
    finally:
        if proc is not None:
            proc.stop()
        relay.close()
    stored = upstream.get_object(Bucket=BUCKET, Key="drain/multi")
    meta = stored["Metadata"]
    assert meta["cloudtaser-layout"] == "multipart" and meta["cloudtaser-format"] == "3", meta
    # Sealed whole: the independent reader verifies the table, digest and MAC.
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    assert envelope.verify_v3(dek, meta, BUCKET, "drain/multi", stored["Body"].read()) == data
    assert c.get_object(Bucket=BUCKET, Key="drain/multi")["Body"].read() == data


"""The rest of the S3 surface: objects written before the proxy, virtual-hosted
requests, pass-through operations."""

from __future__ import annotations

import http.client
import urllib.parse

import botocore.exceptions
import pytest

from conftest import s3_client
from test_core import body_of


@pytest.fixture(scope="module")
def legacy(stack, upstream):
    """A proxy that may read pre-proxy objects under legacy/old/ only."""
    upstream.create_bucket(Bucket="legacy")
    proc, endpoint, _ = stack.start_proxy("proxy-legacy", CLOUDTASER_S3PROXY_PLAINTEXT_READS="legacy/old/")
    yield s3_client(endpoint, "w", "w")
    proc.stop()


def test_pre_proxy_objects_read_where_allowed(legacy, upstream):
    data = body_of(200_000, 40)
    upstream.put_object(Bucket="legacy", Key="old/plain.bin", Body=data)
    assert legacy.get_object(Bucket="legacy", Key="old/plain.bin")["Body"].read() == data
    assert legacy.head_object(Bucket="legacy", Key="old/plain.bin")["ContentLength"] == len(data)
    ranged = legacy.get_object(Bucket="legacy", Key="old/plain.bin", Range="bytes=100-199")
    assert ranged["Body"].read() == data[100:200]
    assert ranged["ContentRange"] == f"bytes 100-199/{len(data)}"
    assert legacy.get_object(Bucket="legacy", Key="old/plain.bin", Range="bytes=-10")["Body"].read() == data[-10:]


def test_pre_proxy_objects_refused_elsewhere(legacy, upstream):
    upstream.put_object(Bucket="legacy", Key="new/plain.txt", Body=b"plaintext")
    for call in (
        lambda: legacy.get_object(Bucket="legacy", Key="new/plain.txt"),
        lambda: legacy.get_object(Bucket="legacy", Key="new/plain.txt", Range="bytes=0-1"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        legacy.head_object(Bucket="legacy", Key="new/plain.txt")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_writes_in_plaintext_prefixes_are_still_encrypted(legacy, stack):
    legacy.put_object(Bucket="legacy", Key="old/written-now.txt", Body=b"fresh secret")
    assert b"fresh secret" not in (stack.s3_data / "legacy" / "old" / "written-now.txt").read_bytes()
    assert legacy.get_object(Bucket="legacy", Key="old/written-now.txt")["Body"].read() == b"fresh secret"


def test_virtual_hosted_style_requests(stack, client, bucket):
    client.put_object(Bucket=bucket, Key="vhost/obj.txt", Body=b"virtual host")
    u = urllib.parse.urlparse(stack.proxy_endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/vhost/obj.txt", headers={"Host": f"{bucket}.localhost:{u.port}"})
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"virtual host")


def test_body_less_operations_pass_through_resigned(client, bucket):
    client.put_object(Bucket=bucket, Key="batch/a", Body=b"a")
    client.put_object(Bucket=bucket, Key="batch/b", Body=b"b")
    deleted = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "batch/a"}, {"Key": "batch/b"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["batch/a", "batch/b"]
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="batch/")
    client.head_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="v1list/one", Body=b"12345")
    v1 = client.list_objects(Bucket=bucket, Prefix="v1list/")
    assert [(o["Key"], o["Size"]) for o in v1["Contents"]] == [("v1list/one", 5)]


def test_unencryptable_body_operations_are_refused(stack, bucket):
    u = urllib.parse.urlparse(stack.proxy_endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("POST", f"/{bucket}", body=b"--x--", headers={"Content-Type": "multipart/form-data; boundary=x"})
    r = conn.getresponse()
    assert r.status == 501 and b"<Code>NotImplemented</Code>" in r.read()


def test_wait_ready_for_classic_sidecars(stack):
    """A classic sidecar's postStart runs `wait-ready`, so the workload starts after the proxy."""
    import subprocess

    import stack as stack_mod

    health = stack.health_endpoint.removeprefix("http://")
    ok = subprocess.run([stack_mod.proxy_binary(), "wait-ready", "--timeout-secs", "5"], capture_output=True, text=True,
                        env={"CLOUDTASER_S3PROXY_HEALTH_LISTEN": health}, timeout=30)
    assert ok.returncode == 0, ok.stderr
    closed = f"127.0.0.1:{stack_mod.free_port()}"
    late = subprocess.run([stack_mod.proxy_binary(), "wait-ready", "--timeout-secs", "1"], capture_output=True, text=True,
                          env={"CLOUDTASER_S3PROXY_HEALTH_LISTEN": closed}, timeout=30)
    assert late.returncode != 0 and "not ready" in late.stderr


def test_wait_idle_keeps_a_classic_sidecar_serving_until_uploads_finish(stack, bucket):
    """A classic sidecar's preStop runs `wait-idle`: the kubelet sends SIGTERM
    to the proxy only when no request has been in flight for the quiet
    period, so an upload the application starts while it shuts down ends."""
    import subprocess
    import threading
    import time

    import stack as stack_mod
    from test_key_rotation import slow_put

    health = stack.health_endpoint.removeprefix("http://")
    env = {"CLOUDTASER_S3PROXY_HEALTH_LISTEN": health}
    cmd = [stack_mod.proxy_binary(), "wait-idle", "--quiet-secs", "1", "--max-secs", "20"]
    started = time.monotonic()
    idle = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    assert idle.returncode == 0 and time.monotonic() - started < 5, "an idle proxy is let go at once"

    result = {}
    upload = threading.Thread(target=lambda: result.update(
        r=slow_put(stack.proxy_endpoint, f"/{bucket}/shutdown/last-upload", b"x" * 40_000, 0.5, 8)))
    upload.start()
    time.sleep(0.5)
    started = time.monotonic()
    waited = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    finished_after = time.monotonic() - started
    upload.join(30)
    assert waited.returncode == 0, waited.stderr
    assert result["r"][0] == 200, result
    assert finished_after >= 3, f"wait-idle returned after {finished_after:.1f}s, before the upload ended"

"""The proxy's own upstream credentials in every scenario: IRSA (web
identity through a real STS, moto), EKS Pod Identity (the agent's
protocol), static keys from a mounted Secret that changes, and GCS HMAC
keys (region `auto` and GCS request shapes). The upstream that verifies
the signatures is s3s-fs, started with whatever key the scenario issues."""

from __future__ import annotations

import datetime
import http.server
import json
import sys
import threading
import time
import urllib.request

import botocore.exceptions
import pytest

import envelope
import stack as stack_mod
from conftest import s3_client
from recorder import Recorder


def start_s3s_fs(stack, port: int, access: str, secret: str, name: str) -> stack_mod.Process:
    proc = stack.start_process(name, [stack_mod.s3s_fs_binary(), "--host", "127.0.0.1", "--port", str(port),
                                      "--access-key", access, "--secret-key", secret, str(stack.s3_data)])
    stack_mod.wait_for(lambda: __import__("socket").create_connection(("127.0.0.1", port), timeout=1).close() or True, name)
    return proc


def start_keyless_proxy(stack, name, **env):
    """A proxy whose environment carries no static keys at all."""
    original = stack.proxy_env

    def env_without_static(**overrides):
        e = original(**overrides)
        e.pop("AWS_ACCESS_KEY_ID", None)
        e.pop("AWS_SECRET_ACCESS_KEY", None)
        return e

    stack.proxy_env = env_without_static
    try:
        # ListBuckets and CreateBucket are refused by default; these tests use them.
        return stack.start_proxy(name, CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS="all", **env)
    finally:
        stack.proxy_env = original


def test_irsa_web_identity_through_sts_with_refresh(stack, tmp_path):
    moto_port, s3_port = stack_mod.free_port(), stack_mod.free_port()
    moto = stack.start_process("moto-sts", [sys.executable, "-m", "moto.server", "-p", str(moto_port)])
    stack_mod.wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{moto_port}/moto-api/data.json", timeout=2), "moto")
    token = tmp_path / "eks.amazonaws.com" / "serviceaccount" / "token"
    token.parent.mkdir(parents=True)
    token.write_text("projected-token-1")
    proc, endpoint, _ = start_keyless_proxy(
        stack, "proxy-irsa",
        AWS_ROLE_ARN="arn:aws:iam::123456789012:role/s3proxy", AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
        AWS_ENDPOINT_URL_STS=f"http://127.0.0.1:{moto_port}", AWS_REGION="us-east-1",
        CLOUDTASER_S3PROXY_S3_ENDPOINT=f"http://127.0.0.1:{s3_port}",
        # STS issues one-hour credentials: treat them as due for renewal after ~5 s.
        CLOUDTASER_S3PROXY_CREDENTIALS_REFRESH_SECS="3595",
    )
    client = s3_client(endpoint, "workload", "workload")

    def assumed():
        data = json.load(urllib.request.urlopen(f"http://127.0.0.1:{moto_port}/moto-api/data.json", timeout=5))
        return data["sts"]["AssumedRole"]

    try:
        # The first request makes the proxy assume the role; the upstream is not up yet.
        with pytest.raises(botocore.exceptions.ClientError):
            client.list_buckets()
        first = assumed()[-1]
        assert first["role_arn"] == "arn:aws:iam::123456789012:role/s3proxy"
        # An upstream that accepts only the STS-issued key proves the proxy signs with it.
        s3 = start_s3s_fs(stack, s3_port, first["access_key_id"], first["secret_access_key"], "s3s-fs-irsa-1")
        client.create_bucket(Bucket="irsa")
        client.put_object(Bucket="irsa", Key="k", Body=b"signed with web identity credentials")
        # Past the renewal point the proxy assumes the role again, re-reading
        # the projected token, which the kubelet has rotated meanwhile.
        token.write_text("projected-token-2")
        time.sleep(6)
        with pytest.raises(botocore.exceptions.ClientError):
            client.get_object(Bucket="irsa", Key="k")  # signed with the new key, unknown to this s3s-fs
        second = assumed()[-1]
        assert second["access_key_id"] != first["access_key_id"]
        s3.stop()
        start_s3s_fs(stack, s3_port, second["access_key_id"], second["secret_access_key"], "s3s-fs-irsa-2")
        assert client.get_object(Bucket="irsa", Key="k")["Body"].read() == b"signed with web identity credentials"
        log = proc.log_text()
        for secret in (first["secret_access_key"], second["secret_access_key"], first["session_token"][:40]):
            assert secret not in log
    finally:
        proc.stop()
        moto.stop()


class PodIdentityAgent(http.server.BaseHTTPRequestHandler):
    """The EKS Pod Identity agent's protocol: GET with the projected token
    in Authorization, JSON credentials with an expiry back."""

    seen_tokens: list[str] = []
    lifetime = datetime.timedelta(minutes=5, seconds=4)

    def do_GET(self):  # noqa: N802
        PodIdentityAgent.seen_tokens.append(self.headers.get("Authorization", ""))
        expiry = datetime.datetime.now(datetime.timezone.utc) + PodIdentityAgent.lifetime
        body = json.dumps({
            "AccessKeyId": stack_mod.UPSTREAM_ACCESS_KEY, "SecretAccessKey": stack_mod.UPSTREAM_SECRET_KEY,
            "Token": "pod-identity-session-token", "AccountId": "123456789012",
            "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_pod_identity_agent_with_expiry_and_refresh(stack, bucket, tmp_path):
    agent = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PodIdentityAgent)
    threading.Thread(target=agent.serve_forever, daemon=True).start()
    token = tmp_path / "eks-pod-identity-token"
    token.write_text("pod-token-1")
    proc, endpoint, _ = start_keyless_proxy(
        stack, "proxy-pod-identity",
        AWS_CONTAINER_CREDENTIALS_FULL_URI=f"http://127.0.0.1:{agent.server_address[1]}/v1/credentials",
        AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token),
    )
    try:
        client = s3_client(endpoint, "workload", "workload")
        client.put_object(Bucket=bucket, Key="pod-identity/1", Body=b"via pod identity")
        assert PodIdentityAgent.seen_tokens == ["pod-token-1"]
        # Credentials with 4 s of life left before the 5-minute margin: renewed
        # on the first request after that, with the rotated token.
        token.write_text("pod-token-2")
        time.sleep(5)
        assert client.get_object(Bucket=bucket, Key="pod-identity/1")["Body"].read() == b"via pod identity"
        assert PodIdentityAgent.seen_tokens[-1] == "pod-token-2"
        assert "pod-identity-session-token" not in proc.log_text()
    finally:
        proc.stop()
        agent.shutdown()


def test_static_keys_from_a_mounted_secret_are_reloaded(stack, bucket, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "access-key-id").write_text("stale-key")
    (secret / "secret-access-key").write_text("stale-secret")
    proc, endpoint, _ = stack.start_proxy("proxy-mounted-secret", CLOUDTASER_S3PROXY_CREDENTIALS_DIR=str(secret))
    try:
        client = s3_client(endpoint, "workload", "workload")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.put_object(Bucket=bucket, Key="mounted/1", Body=b"x")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        # The Secret is updated in place, as the kubelet does: no restart.
        (secret / "access-key-id").write_text(stack_mod.UPSTREAM_ACCESS_KEY + "\n")
        (secret / "secret-access-key").write_text(stack_mod.UPSTREAM_SECRET_KEY + "\n")
        time.sleep(2.5)
        client.put_object(Bucket=bucket, Key="mounted/1", Body=b"after the rotation")
        assert client.get_object(Bucket=bucket, Key="mounted/1")["Body"].read() == b"after the rotation"
        assert stack_mod.UPSTREAM_SECRET_KEY not in proc.log_text()
    finally:
        proc.stop()


def test_gcs_region_auto_signs_correctly(stack, bucket):
    proc, endpoint, _ = stack.start_proxy("proxy-region-auto", CLOUDTASER_S3PROXY_S3_REGION="auto")
    try:
        client = s3_client(endpoint, "workload", "workload")
        client.put_object(Bucket=bucket, Key="auto/1", Body=b"signed for region auto")
        assert client.get_object(Bucket=bucket, Key="auto/1")["Body"].read() == b"signed for region auto"
    finally:
        proc.stop()


def test_gcs_request_shapes(stack):
    """What GCS's XML API requires, checked on the wire (no GCS here)."""
    rec = Recorder()
    proc, endpoint, _ = stack.start_proxy(
        "proxy-gcs-shapes", CLOUDTASER_S3PROXY_S3_ENDPOINT=rec.endpoint, CLOUDTASER_S3PROXY_S3_REGION="auto",
        CLOUDTASER_S3PROXY_S3_FLAVOR="gcs",
    )
    try:
        client = s3_client(endpoint, "workload", "workload")
        client.put_object(Bucket="gcs", Key="obj", Body=b"hello gcs", ChecksumAlgorithm="CRC32")
        up = client.create_multipart_upload(Bucket="gcs", Key="mp")
        part = client.upload_part(Bucket="gcs", Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"p" * 1000,
                                  ChecksumAlgorithm="CRC32")
        client.complete_multipart_upload(Bucket="gcs", Key="mp", UploadId=up["UploadId"],
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"],
                                                                     "ChecksumCRC32": part.get("ChecksumCRC32")}]})
        client.delete_objects(Bucket="gcs", Delete={"Objects": [{"Key": "obj"}]})
        assert len(rec.requests) >= 5
        for r in rec.requests:
            h = r["headers"]
            assert "/auto/s3/aws4_request" in h["authorization"], h["authorization"]
            signed = h["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
            assert "accept-encoding" not in signed
            assert not [k for k in h if k.startswith("x-amz-checksum-")], (r["method"], r["path"], h)
            assert "aws-chunked" not in h.get("content-encoding", "")
            assert not h.get("x-amz-content-sha256", "").startswith("STREAMING-")
            assert "x-amz-trailer" not in h
        put = next(r for r in rec.requests if r["method"] == "PUT" and r["path"] == "/gcs/obj")
        assert put["headers"]["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert put["body"][:4] == b"CTS3" and int(put["headers"]["content-length"]) == len(put["body"])
        create = next(r for r in rec.requests if r["method"] == "POST" and "uploads" in r["path"])
        assert create["headers"]["content-length"] == "0"
        # GCS's XML API has no UploadPartCopy: the part table is sealed by
        # one CopyObject onto the object itself, pinned to the completed ETag.
        copies = [r for r in rec.requests if r["method"] == "PUT" and "x-amz-copy-source" in r["headers"]]
        assert len(copies) == 1 and "partNumber" not in copies[0]["path"], copies
        seal = copies[0]["headers"]
        assert seal["x-amz-metadata-directive"] == "REPLACE" and seal["x-amz-copy-source-if-match"] == '"mp-1"'
        assert seal["x-amz-meta-cloudtaser-format"] == "3" and "x-amz-meta-cloudtaser-manifest" not in seal
        # The seal read the stream header back (one ranged read of 52 bytes)
        # and wrote a format-3 envelope the independent reader verifies.
        reads = [r for r in rec.requests if r["method"] == "GET" and "range" in r["headers"]]
        assert [r["headers"]["range"] for r in reads] == ["bytes=0-51"], reads
        body = rec.parts[1]
        dek = envelope.unwrap(stack.vault, seal["x-amz-meta-cloudtaser-transit-key"], seal["x-amz-meta-cloudtaser-key"])
        assert envelope.verify_v3(dek, seal, "gcs", "mp", body) == b"p" * 1000
    finally:
        proc.stop()
        rec.close()

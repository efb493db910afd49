"""The multipart sealing step when it did not run: the `multipart-pending` state
an interrupted CompleteMultipartUpload leaves is never served, and
`cloudtaser-s3proxy seal` finishes it; format-1 multipart objects (written
before format 2) stay readable and are upgraded by the same command."""

from __future__ import annotations

import os

import botocore.exceptions
import pytest

import envelope
from test_bucket_tools import admin
from conftest import s3_client
from test_core import MiB, body_of

PART = 5 * MiB
BUCKET = "e2e-seal"


@pytest.fixture(scope="module")
def seal_bucket(upstream):
    upstream.create_bucket(Bucket=BUCKET)
    return BUCKET


def upload(client, key: str, data: bytes, part: int = PART) -> str:
    uid = client.create_multipart_upload(Bucket=BUCKET, Key=key, ContentType="text/x-sealed",
                                         Metadata={"origin": "seal-test"})["UploadId"]
    parts = []
    for n, off in enumerate(range(0, len(data), part), start=1):
        r = client.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n, Body=data[off : off + part])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    return client.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                            MultipartUpload={"Parts": parts})["ETag"]


def rewrite_metadata(upstream, key: str, meta: dict) -> None:
    """What someone with the upstream's credentials, or a crash before
    sealing, leaves: the same body under other metadata."""
    upstream.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key}, Metadata=meta,
                         MetadataDirective="REPLACE", ContentType="text/x-sealed")


def pending(stack, meta: dict, key: str) -> dict:
    """The `multipart-pending` envelope the proxy writes at Complete, before
    the seal: format 3, its MAC binding only the name and Transit key (no
    size, table or digest yet)."""
    keep = {k: v for k, v in meta.items()
            if k in ("cloudtaser-key", "cloudtaser-transit-key", "cloudtaser-binding", "origin")}
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    mac = envelope.envelope_mac(dek, binding=meta["cloudtaser-binding"], bucket=BUCKET, key=key,
                                transit_key=meta["cloudtaser-transit-key"], size=0, pending=True)
    return {**keep, "cloudtaser-format": "3", "cloudtaser-layout": "multipart-pending", "cloudtaser-mac": mac.hex()}


def error_of(call) -> tuple[int, str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"].get("Code", ""), r["Error"].get("Message", "")


def test_pending_objects_are_refused_until_sealed(stack, client, upstream, seal_bucket):
    data = body_of(2 * PART + 12_345, "pending")
    upload(client, "pending/obj", data)
    meta = upstream.head_object(Bucket=BUCKET, Key="pending/obj")["Metadata"]
    assert meta["cloudtaser-format"] == "3"
    rewrite_metadata(upstream, "pending/obj", pending(stack, meta, "pending/obj"))
    status, code, message = error_of(lambda: client.get_object(Bucket=BUCKET, Key="pending/obj"))
    assert (status, code) == (503, "ServiceUnavailable") and "cloudtaser-s3proxy seal" in message
    status, code, _ = error_of(lambda: client.get_object(Bucket=BUCKET, Key="pending/obj", Range="bytes=5-10"))
    assert (status, code) == (503, "ServiceUnavailable")
    assert error_of(lambda: client.head_object(Bucket=BUCKET, Key="pending/obj"))[0] == 503

    r = admin(stack, "seal", "--bucket", BUCKET, "--prefix", "pending/", "--quiet")
    assert "sealed: 1," in r.stdout, r.stdout
    got = client.get_object(Bucket=BUCKET, Key="pending/obj")
    assert got["Body"].read() == data and got["ContentType"] == "text/x-sealed"
    assert got["Metadata"] == {"origin": "seal-test"}
    resealed = upstream.get_object(Bucket=BUCKET, Key="pending/obj")
    again = resealed["Metadata"]
    for field in ("cloudtaser-parts", "cloudtaser-streams", "cloudtaser-size", "cloudtaser-mac"):
        assert again[field] == meta[field], f"the same table and headers, the same {field}"
    dek = envelope.unwrap(stack.vault, again["cloudtaser-transit-key"], again["cloudtaser-key"])
    assert envelope.verify_v3(dek, again, BUCKET, "pending/obj", resealed["Body"].read()) == data
    # A second run finds nothing to do.
    assert "sealed: 0, already sealed: 1" in admin(stack, "seal", "--bucket", BUCKET, "--prefix", "pending/").stdout


def test_format_1_objects_read_and_are_upgraded(stack, client, upstream, seal_bucket):
    """A format-1 object (version-1 streams, no manifest), built with the
    independent writer under a data key Vault wrapped for the proxy."""
    client.put_object(Bucket=BUCKET, Key="v1/key-donor", Body=b"x")
    donor = upstream.head_object(Bucket=BUCKET, Key="v1/key-donor")["Metadata"]
    dek = envelope.unwrap(stack.vault, donor["cloudtaser-transit-key"], donor["cloudtaser-key"])
    data = body_of(2 * PART + 999, "format-1")
    chunks = [data[i : i + PART] for i in range(0, len(data), PART)]
    meta = {"cloudtaser-format": "1", "cloudtaser-layout": "multipart", "cloudtaser-key": donor["cloudtaser-key"],
            "cloudtaser-transit-key": donor["cloudtaser-transit-key"]}
    # Uploaded part by part, as format-1 objects were: the ETag's part count
    # is what `seal` checks the streams against.
    uid = upstream.create_multipart_upload(Bucket=BUCKET, Key="v1/obj", Metadata=meta)["UploadId"]
    streams = [envelope.encrypt(dek, os.urandom(32), n, c) for n, c in enumerate(chunks, start=1)]
    body = b"".join(streams)
    parts = [{"PartNumber": n, "ETag": upstream.upload_part(Bucket=BUCKET, Key="v1/obj", UploadId=uid, PartNumber=n,
                                                           Body=stream)["ETag"]}
             for n, stream in enumerate(streams, start=1)]
    upstream.complete_multipart_upload(Bucket=BUCKET, Key="v1/obj", UploadId=uid, MultipartUpload={"Parts": parts})
    assert client.get_object(Bucket=BUCKET, Key="v1/obj")["Body"].read() == data
    r = admin(stack, "seal", "--bucket", BUCKET, "--prefix", "v1/", "--quiet")
    assert "sealed: 1, already sealed: 0, not multipart or not encrypted: 1" in r.stdout, r.stdout
    sealed = upstream.get_object(Bucket=BUCKET, Key="v1/obj")
    assert sealed["Body"].read() == body, "sealing moves no body byte"
    table = [(n, len(c)) for n, c in enumerate(chunks, start=1)]
    assert sealed["Metadata"]["cloudtaser-manifest"] == envelope.manifest_tag(dek, table).hex()
    assert client.get_object(Bucket=BUCKET, Key="v1/obj")["Body"].read() == data
    assert client.get_object(Bucket=BUCKET, Key="v1/obj", Range=f"bytes={PART - 2}-{PART + 2}")["Body"].read() \
        == data[PART - 2 : PART + 3]
    # Once sealed, the format-1 streams can no longer be cut back to a prefix.
    upstream.put_object(Bucket=BUCKET, Key="v1/cut", Body=body[: len(body) // 2 + 10], Metadata=sealed["Metadata"])
    assert error_of(lambda: client.get_object(Bucket=BUCKET, Key="v1/cut"))[0] == 500
    # Unless the object is relabelled format 1 (its streams are version 1):
    # the attacker's downgrade reads short while format-1 reads are allowed,
    # and is refused once CLOUDTASER_S3PROXY_FORMAT1_MULTIPART=refuse.
    two_parts = 2 * (52 + PART + 16 * (PART // 65536))
    upstream.put_object(Bucket=BUCKET, Key="v1/downgraded", Body=body[:two_parts], Metadata=meta)
    assert client.get_object(Bucket=BUCKET, Key="v1/downgraded")["Body"].read() == data[: 2 * PART]
    proc, endpoint, _ = stack.start_proxy("proxy-format1-refused", CLOUDTASER_S3PROXY_FORMAT1_MULTIPART="refuse")
    try:
        strict = s3_client(endpoint, "w", "w")
        assert error_of(lambda: strict.get_object(Bucket=BUCKET, Key="v1/downgraded"))[:2] == (403, "AccessDenied")
        assert error_of(lambda: strict.head_object(Bucket=BUCKET, Key="v1/downgraded"))[0] == 403
        assert strict.get_object(Bucket=BUCKET, Key="v1/obj")["Body"].read() == data, "sealed objects still read"
    finally:
        proc.stop()


def test_format_2_streams_without_a_manifest_are_refused(stack, client, upstream, seal_bucket):
    """Relabelling a format-2 object as format 1 (where no manifest is
    required) does not switch the check off: the version is in every
    segment's associated data."""
    data = body_of(PART + 10, "relabel")
    upload(client, "relabel/obj", data)
    meta = upstream.head_object(Bucket=BUCKET, Key="relabel/obj")["Metadata"]
    keep = {k: v for k, v in meta.items() if k in ("cloudtaser-key", "cloudtaser-transit-key")}
    rewrite_metadata(upstream, "relabel/obj", {**keep, "cloudtaser-format": "1", "cloudtaser-layout": "multipart"})
    assert error_of(lambda: client.get_object(Bucket=BUCKET, Key="relabel/obj"))[:2] == (500, "InternalError")
    assert error_of(lambda: client.get_object(Bucket=BUCKET, Key="relabel/obj", Range="bytes=0-9"))[0] == 500
    assert error_of(lambda: client.head_object(Bucket=BUCKET, Key="relabel/obj"))[0] == 500
    # `seal` does not upgrade it either: a format-1 label on version-2 streams is not a format-1 object.
    r = admin(stack, "seal", "--bucket", BUCKET, "--prefix", "relabel/", "--quiet", check=1)
    assert "failed: 0, refused: 1" in r.stdout, r.stdout


def test_a_slow_complete_keeps_the_connection_alive(stack, seal_bucket):
    """Sealing copies every part server-side; on s3s-fs that takes seconds
    for a few parts. Past CLOUDTASER_S3PROXY_COMPLETE_KEEPALIVE_SECS the
    proxy answers as S3 does for a slow Complete (50 ms here, so that the
    seal of twelve parts on s3s-fs outlasts it): 200 at once, the XML
    declaration, a space every interval, then the result, which boto3
    parses like any other."""
    from attack_helpers import request  # noqa: PLC0415

    proc, endpoint, _ = stack.start_proxy("proxy-keepalive", CLOUDTASER_S3PROXY_COMPLETE_KEEPALIVE_MS="50")
    try:
        c = s3_client(endpoint, "w", "w")
        data = body_of(12 * PART, "keepalive")
        # Through boto3: the spaces are invisible to the client.
        etag = upload(c, "keepalive/boto3", data)
        assert c.head_object(Bucket=BUCKET, Key="keepalive/boto3")["ETag"] == etag
        assert c.get_object(Bucket=BUCKET, Key="keepalive/boto3")["Body"].read() == data
        # On the wire.
        uid = c.create_multipart_upload(Bucket=BUCKET, Key="keepalive/raw")["UploadId"]
        parts = [c.upload_part(Bucket=BUCKET, Key="keepalive/raw", UploadId=uid, PartNumber=n,
                               Body=data[(n - 1) * PART : n * PART])["ETag"] for n in range(1, 13)]
        doc = "<CompleteMultipartUpload>" + "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(parts, start=1)
        ) + "</CompleteMultipartUpload>"
        res = request(endpoint, "POST", f"/{BUCKET}/keepalive/raw?uploadId={uid}", body=doc.encode(), timeout=300)
        assert res.status == 200 and res.complete
        declaration = b'<?xml version="1.0" encoding="UTF-8"?>\n'
        assert res.body.startswith(declaration + b" "), res.body[:80]
        rest = res.body[len(declaration):]
        assert rest.lstrip(b" ").startswith(b"<CompleteMultipartUploadResult"), rest[:120]
        shown = c.head_object(Bucket=BUCKET, Key="keepalive/raw")["ETag"]
        assert f"<ETag>{shown}</ETag>".encode() in rest or f"<ETag>{shown.replace(chr(34), '&quot;')}</ETag>".encode() in rest
        assert c.get_object(Bucket=BUCKET, Key="keepalive/raw")["Body"].read() == data
    finally:
        proc.stop()


def fault_relay(upstream: str):
    """A relay to the upstream (hostile_upstream.py) that refuses the
    server-side copies a seal makes (any PUT with `x-amz-copy-source`) with
    a 500: a crash between the upstream's Complete and the finishing step,
    which neither s3s-fs nor OpenBao can be made to produce. Everything else
    passes byte for byte; `forged` counts the refusals."""
    from hostile_upstream import Forged, HostileUpstream  # noqa: PLC0415

    relay = HostileUpstream(upstream)
    error = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
    relay.forge(lambda m, p, h: Forged(500, [], error) if m == "PUT" and "x-amz-copy-source" in h else None)
    return relay


def test_a_seal_that_fails_after_complete_is_finished_by_a_retry_or_by_seal(stack, client, upstream, seal_bucket):
    """The crash between the upstream's Complete and the finishing step:
    the client gets 502 (its SDK retries, and the retry fails the same way
    while the fault lasts); the object stays `multipart-pending`, never
    served. A later retry of the same Complete finishes the seal and answers
    as Complete would have; otherwise `cloudtaser-s3proxy seal` does."""
    relay = fault_relay(stack.s3_endpoint)
    proc, endpoint, _ = stack.start_proxy("proxy-seal-fault", CLOUDTASER_S3PROXY_S3_ENDPOINT=relay.endpoint)
    data = {key: body_of(2 * PART + 4321, key) for key in ("crash/retried", "crash/sealed")}
    uploads = {}
    try:
        c = s3_client(endpoint, "w", "w")
        for key, body in data.items():
            uid = c.create_multipart_upload(Bucket=BUCKET, Key=key, ContentType="text/x-sealed")["UploadId"]
            parts = [{"PartNumber": n, "ETag": c.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n,
                                                            Body=body[(n - 1) * PART : n * PART])["ETag"]}
                     for n in (1, 2, 3)]
            uploads[key] = (uid, parts)
            status, code, _ = error_of(lambda: c.complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={"Parts": parts}))
            assert (status, code) == (502, "BadGateway")
        assert relay.forged >= 2
    finally:
        proc.stop()
        relay.close()
    for key in data:
        meta = upstream.head_object(Bucket=BUCKET, Key=key)["Metadata"]
        assert meta["cloudtaser-layout"] == "multipart-pending", "completed upstream, never sealed"
        assert upstream.get_object(Bucket=BUCKET, Key=key)["Body"].read()[:4] == b"CTS3"
        status, code, message = error_of(lambda: client.get_object(Bucket=BUCKET, Key=key))
        assert (status, code) == (503, "ServiceUnavailable") and "seal" in message
    # The SDK's retry, once the fault is gone, finishes it.
    uid, parts = uploads["crash/retried"]
    done = client.complete_multipart_upload(Bucket=BUCKET, Key="crash/retried", UploadId=uid,
                                            MultipartUpload={"Parts": parts})
    assert done["ETag"] == client.head_object(Bucket=BUCKET, Key="crash/retried")["ETag"]
    assert client.get_object(Bucket=BUCKET, Key="crash/retried")["Body"].read() == data["crash/retried"]
    # A retry naming other parts is not taken for this upload.
    uid, parts = uploads["crash/sealed"]
    assert error_of(lambda: client.complete_multipart_upload(
        Bucket=BUCKET, Key="crash/sealed", UploadId=uid, MultipartUpload={"Parts": parts[:2]}))[:2] == (400, "InvalidPart")
    # Or the operator's command.
    r = admin(stack, "seal", "--bucket", BUCKET, "--prefix", "crash/", "--quiet")
    assert "sealed: 1, already sealed: 1" in r.stdout, r.stdout
    got = client.get_object(Bucket=BUCKET, Key="crash/sealed")
    assert got["Body"].read() == data["crash/sealed"] and got["ContentType"] == "text/x-sealed"

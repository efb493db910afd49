"""S3 conformance through the proxy on two upstreams: s3s-fs (which ignores
conditional reads, so the proxy decides them) and Garage (which evaluates
them, checks part ETags and has SSE-C). Conditional reads, multipart error
codes, SSE-C, and the limits the proxy documents (docs/COMPATIBILITY.md)."""

from __future__ import annotations

import base64
import datetime
import os
import secrets
from dataclasses import dataclass

import botocore.exceptions
import pytest

import stack as stack_mod
from attack_helpers import MiB, request
from conftest import s3_client
from test_core import MiB, body_of

PART = 5 * MiB


@dataclass
class Upstream:
    name: str
    proxy_endpoint: str
    client: object  # through the proxy
    direct: object  # the upstream's own credentials
    bucket: str


@pytest.fixture(scope="module", params=["s3s-fs", "garage"])
def upstream_under_test(request, stack, upstream):
    bucket = f"e2e-conformance-{secrets.token_hex(3)}"
    if request.param == "s3s-fs":
        upstream.create_bucket(Bucket=bucket)
        client = s3_client(stack.proxy_endpoint, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)
        return Upstream("s3s-fs", stack.proxy_endpoint, client, upstream, bucket)
    g = request.getfixturevalue("garage_stack")
    g.direct.create_bucket(Bucket=bucket)
    return Upstream("garage", g.proxy_endpoint, g.client, g.direct, bucket)


def failure(call) -> tuple[int, str, dict]:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    r = e.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"].get("Code", ""), r["ResponseMetadata"]["HTTPHeaders"]


def outcome(call) -> tuple[int, str | None]:
    """Status and the ETag the client sees, for a call that may answer 304/412."""
    try:
        r = call()
        if "Body" in r:
            r["Body"].read()
        return r["ResponseMetadata"]["HTTPStatusCode"], r.get("ETag")
    except botocore.exceptions.ClientError as e:
        h = e.response["ResponseMetadata"]["HTTPHeaders"]
        return e.response["ResponseMetadata"]["HTTPStatusCode"], h.get("etag")


def put_multipart(client, bucket, key, data, part=PART):
    uid = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for n, off in enumerate(range(0, len(data), part), start=1):
        etag = client.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=data[off : off + part])["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    return client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})


# --- conditional reads: every path shows the ETag PUT, HEAD and GET show ----


@pytest.mark.parametrize("shape", ["single", "multipart"])
def test_conditional_reads_show_one_etag(upstream_under_test, shape):
    u = upstream_under_test
    key = f"cond-{shape}"
    if shape == "single":
        u.client.put_object(Bucket=u.bucket, Key=key, Body=body_of(100_000, 3))
    else:
        put_multipart(u.client, u.bucket, key, body_of(PART + 77, 4))
    head = u.client.head_object(Bucket=u.bucket, Key=key)
    etag, modified = head["ETag"], head["LastModified"]
    before, after = modified - datetime.timedelta(days=1), modified + datetime.timedelta(days=1)
    cases = [
        ({"IfNoneMatch": etag}, 304),
        ({"IfModifiedSince": modified}, 304),
        ({"IfModifiedSince": after}, 304),
        ({"IfModifiedSince": before}, 200),
        ({"IfMatch": etag}, 200),
        ({"IfMatch": '"0123456789abcdef0123456789abcdef"'}, 412),
        ({"IfUnmodifiedSince": before}, 412),
        ({"IfUnmodifiedSince": after}, 200),
        # S3's precedence: a true If-Match overrides a false If-Unmodified-Since,
        # and a true If-None-Match a false If-Modified-Since.
        ({"IfMatch": etag, "IfUnmodifiedSince": before}, 200),
        ({"IfNoneMatch": '"other"', "IfModifiedSince": after}, 200),
        ({"IfNoneMatch": etag, "IfModifiedSince": before}, 304),
    ]
    for conditions, want in cases:
        for name, call in (("GET", u.client.get_object), ("HEAD", u.client.head_object),
                           ("ranged GET", lambda **kw: u.client.get_object(Range="bytes=1-10", **kw))):
            status, shown = outcome(lambda: call(Bucket=u.bucket, Key=key, **conditions))
            expected = 206 if (want == 200 and name == "ranged GET") else want
            assert status == expected, (u.name, shape, name, conditions, status)
            if status in (200, 206, 304):
                assert shown == etag, (u.name, shape, name, conditions, shown, etag)


# --- multipart error codes ----------------------------------------------------


def test_unknown_upload_ids_are_no_such_upload(upstream_under_test):
    u = upstream_under_test
    key = "unknown-upload"
    real = u.client.create_multipart_upload(Bucket=u.bucket, Key=key)["UploadId"]
    # Format 3: ctu3.<transit key>.<wrapped key>.<tag>.<upstream id> (docs/FORMAT.md).
    prefix, transit, wrapped, tag, upstream_id = real.split(".", 4)
    assert prefix == "ctu3", real
    bogus_key = base64.urlsafe_b64encode(b"vault:v1:" + base64.b64encode(os.urandom(60))).decode().rstrip("=")
    bogus_tag = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    ids = {
        "bare upstream-style id": upstream_id,
        "a wrapped key Vault never issued": f"{prefix}.{transit}.{bogus_key}.{tag}.{upstream_id}",
        "a tag the data key did not make": f"{prefix}.{transit}.{wrapped}.{bogus_tag}.{upstream_id}",
        # Format 2's id shape (no tag) is refused unless CLOUDTASER_S3PROXY_LEGACY_UPLOAD_IDS=accept.
        "a legacy ctu1 id": f"ctu1.{transit}.{wrapped}.{upstream_id}",
    }
    u.direct.abort_multipart_upload(Bucket=u.bucket, Key=key, UploadId=upstream_id)
    ids["a proxy id whose upstream upload is gone"] = real
    part = {"Parts": [{"PartNumber": 1, "ETag": '"0123456789abcdef0123456789abcdef"'}]}
    for what, uid in ids.items():
        calls = {
            "UploadPart": lambda: u.client.upload_part(Bucket=u.bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"x"),
            "CompleteMultipartUpload": lambda: u.client.complete_multipart_upload(
                Bucket=u.bucket, Key=key, UploadId=uid, MultipartUpload=part),
        }
        if u.name == "garage":  # s3s-fs lists and aborts unknown uploads as empty ones
            calls["ListParts"] = lambda: u.client.list_parts(Bucket=u.bucket, Key=key, UploadId=uid)
            calls["AbortMultipartUpload"] = lambda: u.client.abort_multipart_upload(Bucket=u.bucket, Key=key,
                                                                                    UploadId=uid)
        for op, call in calls.items():
            if u.name == "s3s-fs" and what.startswith("a proxy id"):
                # The upstream decides: s3s-fs answers 403 to a part for a gone
                # upload and lists it as one with no parts (InvalidPart).
                continue
            status, code, _ = failure(call)
            assert (status, code) == (404, "NoSuchUpload"), (u.name, what, op, status, code)


def test_complete_names_missing_and_mismatched_parts(upstream_under_test):
    u = upstream_under_test
    key = "invalid-part"
    uid = u.client.create_multipart_upload(Bucket=u.bucket, Key=key)["UploadId"]
    e1 = u.client.upload_part(Bucket=u.bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"a" * 100)["ETag"]

    def complete(parts):
        return failure(lambda: u.client.complete_multipart_upload(Bucket=u.bucket, Key=key, UploadId=uid,
                                                                  MultipartUpload={"Parts": parts}))[:2]

    assert complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e1}]) == (400, "InvalidPart")
    assert complete([{"PartNumber": 1, "ETag": '"ffffffffffffffffffffffffffffffff"'}]) == (400, "InvalidPart")
    done = u.client.complete_multipart_upload(Bucket=u.bucket, Key=key, UploadId=uid,
                                              MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
    assert u.client.get_object(Bucket=u.bucket, Key=key)["Body"].read() == b"a" * 100
    assert done["ETag"] == u.client.head_object(Bucket=u.bucket, Key=key)["ETag"]


def test_part_number_gaps(upstream_under_test):
    """S3 allows gaps in part numbers; s3s-fs does not (its limit, not the proxy's)."""
    u = upstream_under_test
    if u.name == "s3s-fs":
        pytest.skip("s3s-fs refuses part-number gaps itself (\"invalid part order\"); the unit tests cover them")
    data = body_of(2 * PART + 5, 8)
    key = "gaps"
    uid = u.client.create_multipart_upload(Bucket=u.bucket, Key=key)["UploadId"]
    parts = []
    for n, (a, b) in zip((2, 7, 9), ((0, PART), (PART, 2 * PART), (2 * PART, len(data)))):
        etag = u.client.upload_part(Bucket=u.bucket, Key=key, UploadId=uid, PartNumber=n, Body=data[a:b])["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    u.client.complete_multipart_upload(Bucket=u.bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    assert u.client.get_object(Bucket=u.bucket, Key=key)["Body"].read() == data
    got = u.client.get_object(Bucket=u.bucket, Key=key, Range=f"bytes={PART - 2}-{PART + 2}")["Body"].read()
    assert got == data[PART - 2 : PART + 3]
    assert u.client.get_object(Bucket=u.bucket, Key=key, PartNumber=2)["Body"].read() == data[PART : 2 * PART]
    assert u.direct.get_object(Bucket=u.bucket, Key=key)["Body"].read()[:4] == b"CTS3"


# --- SSE-C ---------------------------------------------------------------------


def sse_c(key: str, prefix: str = "SSECustomer") -> dict:
    """boto3 base64-encodes the key and adds its MD5."""
    return {f"{prefix}Algorithm": "AES256", f"{prefix}Key": key}


def new_key() -> str:
    return secrets.token_hex(16)  # 32 bytes


def test_sse_c_works_for_every_single_object_operation(garage_stack):
    """SSE-C on top of CloudTaser's encryption: every request the proxy makes
    for the workload carries the customer key (Garage checks it)."""
    c, direct = garage_stack.client, garage_stack.direct
    bucket = f"e2e-ssec-{secrets.token_hex(3)}"
    direct.create_bucket(Bucket=bucket)
    key = new_key()
    data = body_of(3 * 65536 + 123, 12)
    c.put_object(Bucket=bucket, Key="obj", Body=data, **sse_c(key))
    assert c.get_object(Bucket=bucket, Key="obj", **sse_c(key))["Body"].read() == data
    for a, b in ((0, 0), (70_000, 140_000), (len(data) - 5, len(data) - 1)):
        got = c.get_object(Bucket=bucket, Key="obj", Range=f"bytes={a}-{b}", **sse_c(key))["Body"].read()
        assert got == data[a : b + 1]
    assert c.head_object(Bucket=bucket, Key="obj", **sse_c(key))["ContentLength"] == len(data)
    # Without the key, or with another, the upstream refuses every shape.
    for call in (lambda **k: c.get_object(Bucket=bucket, Key="obj", **k),
                 lambda **k: c.get_object(Bucket=bucket, Key="obj", Range="bytes=5-9", **k),
                 lambda **k: c.head_object(Bucket=bucket, Key="obj", **k)):
        assert failure(lambda: call())[0] == 400
        assert failure(lambda: call(**sse_c(new_key())))[0] in (400, 403)
    # Copies read the source with its key and write with the destination's.
    key2 = new_key()
    c.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "obj"},
                  **sse_c(key, "CopySourceSSECustomer"), **sse_c(key2))
    assert c.get_object(Bucket=bucket, Key="copy", **sse_c(key2))["Body"].read() == data
    uid = c.create_multipart_upload(Bucket=bucket, Key="from-ssec")["UploadId"]
    part = c.upload_part_copy(Bucket=bucket, Key="from-ssec", UploadId=uid, PartNumber=1,
                              CopySource={"Bucket": bucket, "Key": "obj"}, CopySourceRange="bytes=10-70009",
                              **sse_c(key, "CopySourceSSECustomer"))
    c.complete_multipart_upload(Bucket=bucket, Key="from-ssec", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert c.get_object(Bucket=bucket, Key="from-ssec")["Body"].read() == data[10:70_010]
    # At rest: the provider's SSE-C over CloudTaser's ciphertext.
    assert direct.get_object(Bucket=bucket, Key="obj", **sse_c(key))["Body"].read()[:4] == b"CTS3"
    # Multipart uploads with SSE-C: the upload id carries the key, sealed under
    # the data key, so the Complete (sent without it) can seal the object.
    mp = body_of(5 * MiB + 70_000, 13)
    uid = c.create_multipart_upload(Bucket=bucket, Key="mp", **sse_c(key))["UploadId"]
    assert uid.startswith("ctu3c.")
    etags = [c.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=n, Body=body, **sse_c(key))["ETag"]
             for n, body in ((1, mp[: 5 * MiB]), (2, mp[5 * MiB :]))]
    c.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]})
    assert c.get_object(Bucket=bucket, Key="mp", **sse_c(key))["Body"].read() == mp
    got = c.get_object(Bucket=bucket, Key="mp", Range="bytes=5242870-5242899", **sse_c(key))["Body"].read()
    assert got == mp[5242870:5242900]
    assert c.head_object(Bucket=bucket, Key="mp", **sse_c(key))["ContentLength"] == len(mp)
    assert failure(lambda: c.get_object(Bucket=bucket, Key="mp"))[0] == 400
    stored = direct.head_object(Bucket=bucket, Key="mp", **sse_c(key))
    assert stored["Metadata"]["cloudtaser-format"] == "3" and stored["Metadata"]["cloudtaser-layout"] == "multipart"
    assert direct.get_object(Bucket=bucket, Key="mp", **sse_c(key))["Body"].read()[:4] == b"CTS3"


# --- limits the proxy documents, pinned ----------------------------------------


def test_resent_part_has_a_new_etag(upstream_under_test):
    """A retried UploadPart is encrypted under a fresh salt, so its ETag
    differs; completing with the superseded attempt's ETag is InvalidPart."""
    u = upstream_under_test
    key = "resend"
    uid = u.client.create_multipart_upload(Bucket=u.bucket, Key=key)["UploadId"]
    first = u.client.upload_part(Bucket=u.bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"same bytes")["ETag"]
    second = u.client.upload_part(Bucket=u.bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"same bytes")["ETag"]
    assert first != second
    status, code, _ = failure(lambda: u.client.complete_multipart_upload(
        Bucket=u.bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first}]}))
    assert (status, code) == (400, "InvalidPart")
    u.client.complete_multipart_upload(Bucket=u.bucket, Key=key, UploadId=uid,
                                       MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": second}]})
    assert u.client.get_object(Bucket=u.bucket, Key=key)["Body"].read() == b"same bytes"


def test_listed_upload_ids_cannot_take_parts(upstream_under_test):
    u = upstream_under_test
    if u.name == "s3s-fs":
        pytest.skip("s3s-fs has no ListMultipartUploads")
    key = "listed"
    uid = u.client.create_multipart_upload(Bucket=u.bucket, Key=key)["UploadId"]
    listed = [x["UploadId"] for x in u.client.list_multipart_uploads(Bucket=u.bucket).get("Uploads", [])
              if x["Key"] == key]
    assert listed and uid not in listed, "ListMultipartUploads shows the upstream's ids"
    status, code, _ = failure(lambda: u.client.upload_part(Bucket=u.bucket, Key=key, UploadId=listed[0],
                                                           PartNumber=1, Body=b"x"))
    assert (status, code) == (404, "NoSuchUpload")
    u.client.abort_multipart_upload(Bucket=u.bucket, Key=key, UploadId=listed[0])


def test_chunked_put_without_length_is_missing_content_length(upstream_under_test):
    u = upstream_under_test
    body = b"5\r\nhello\r\n0\r\n\r\n"
    res = request(u.proxy_endpoint, "PUT", f"/{u.bucket}/chunked", [("Transfer-Encoding", "chunked")], body)
    assert (res.status, res.code) == (411, "MissingContentLength")
    assert failure(lambda: u.direct.head_object(Bucket=u.bucket, Key="chunked"))[0] == 404

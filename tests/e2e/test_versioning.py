"""Versioned, tagged and locked buckets, through the proxy, with moto's S3
as the upstream that has these features (s3s-fs has none of them; Garage
has no versioning, object lock or object tags). Where S3 defines the
behaviour, the proxy's answer is compared with moto's answer to the same
steps on an object written directly. Every object the proxy writes is
checked at rest: moto holds only ciphertext."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import subprocess
import urllib.error
import urllib.request
import uuid

import botocore.exceptions
import pytest

import stack as stack_mod
from conftest import s3_client
from recorder import Recorder
from test_core import MiB, aws, body_of

MAGIC = b"CTS3"


def new_bucket(moto_stack, lock: bool = False) -> str:
    # Buckets are the platform's: created directly, as the proxy refuses CreateBucket by default.
    name = f"v-{uuid.uuid4().hex[:12]}"
    moto_stack.direct.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    moto_stack.direct.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def at_rest(moto_stack, bucket: str, key: str, version: str) -> bytes:
    return moto_stack.direct.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()


def assert_encrypted_at_rest(moto_stack, bucket: str, key: str, version: str, plaintext: bytes) -> None:
    stored = at_rest(moto_stack, bucket, key, version)
    assert stored[:4] == MAGIC, stored[:16]
    assert plaintext[:64] not in stored


def error(call) -> tuple[int, str]:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    return e.value.response["ResponseMetadata"]["HTTPStatusCode"], e.value.response["Error"]["Code"]


def outcome(call):
    """A call's observable result: ('ok', value) or ('error', status, code)."""
    try:
        return ("ok", call())
    except botocore.exceptions.ClientError as e:
        return ("error", e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"])


def put_multipart(client, bucket: str, key: str, sizes: list[int], seed: int, **create) -> tuple[bytes, dict]:
    up = client.create_multipart_upload(Bucket=bucket, Key=key, **create)
    parts, data = [], b""
    for n, size in enumerate(sizes, 1):
        body = body_of(size, seed + n)
        data += body
        p = client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=body)
        parts.append({"PartNumber": n, "ETag": p["ETag"]})
    done = client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                            MultipartUpload={"Parts": parts})
    return data, done


# --- versioning ---------------------------------------------------------------


def test_versions_put_get_head_and_ranges_never_mix(moto_stack):
    c, bucket = moto_stack.client, new_bucket(moto_stack)
    v1_data, v2_data = body_of(90_000, 1), body_of(200_000, 2)
    v1 = c.put_object(Bucket=bucket, Key="doc", Body=v1_data)["VersionId"]
    v2 = c.put_object(Bucket=bucket, Key="doc", Body=v2_data)["VersionId"]
    listed = {v["VersionId"] for v in moto_stack.direct.list_object_versions(Bucket=bucket)["Versions"]}
    assert v1 and v2 and v1 != v2 and listed == {v1, v2}
    for version, data in ((v1, v1_data), (v2, v2_data)):
        assert_encrypted_at_rest(moto_stack, bucket, "doc", version, data)
        got = c.get_object(Bucket=bucket, Key="doc", VersionId=version)
        assert got["Body"].read() == data and got["VersionId"] == version
        head = c.head_object(Bucket=bucket, Key="doc", VersionId=version)
        assert head["ContentLength"] == len(data) and head["ETag"].endswith('-1"')
    # Alternating ranged reads of both versions: each range is pinned to its
    # own version's layout (the layout cache is keyed by version).
    for first, last in ((0, 99), (65_000, 70_000), (89_000, 89_999), (70_000, 140_000), (5, 65_540)):
        for version, data in ((v1, v1_data), (v2, v2_data), (v1, v1_data)):
            r = c.get_object(Bucket=bucket, Key="doc", VersionId=version, Range=f"bytes={first}-{last}")
            assert r["Body"].read() == data[first:last + 1], (version, first, last)
            assert r["ContentRange"] == f"bytes {first}-{min(last, len(data) - 1)}/{len(data)}"
    # Without a version a range follows the current version, also after an overwrite.
    assert c.get_object(Bucket=bucket, Key="doc", Range="bytes=0-9")["Body"].read() == v2_data[:10]
    v3_data = body_of(70_000, 3)
    c.put_object(Bucket=bucket, Key="doc", Body=v3_data)
    assert c.get_object(Bucket=bucket, Key="doc", Range="bytes=65530-65545")["Body"].read() == v3_data[65530:65546]
    assert c.get_object(Bucket=bucket, Key="doc", VersionId=v1, Range="bytes=0-9")["Body"].read() == v1_data[:10]


def test_list_object_versions_reports_plaintext_like_list_objects(moto_stack):
    c, bucket = moto_stack.client, new_bucket(moto_stack)
    c.put_object(Bucket=bucket, Key="a", Body=body_of(90_000, 4))
    c.put_object(Bucket=bucket, Key="a", Body=b"short")
    mp_data, _ = put_multipart(c, bucket, "mp", [5 * MiB, 5 * MiB, 777], 10)
    c.put_object(Bucket=bucket, Key="gone", Body=b"deleted later")
    c.delete_object(Bucket=bucket, Key="gone")
    proxy = c.list_object_versions(Bucket=bucket)
    direct = moto_stack.direct.list_object_versions(Bucket=bucket)
    # The same versions and delete markers as direct, in the same order.
    ids = lambda doc, kind: [(v["Key"], v["VersionId"], v["IsLatest"]) for v in doc.get(kind, [])]  # noqa: E731
    assert ids(proxy, "Versions") == ids(direct, "Versions")
    assert ids(proxy, "DeleteMarkers") == ids(direct, "DeleteMarkers") and len(proxy["DeleteMarkers"]) == 1
    for v in proxy["Versions"]:
        head = c.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        assert (v["Size"], v["ETag"]) == (head["ContentLength"], head["ETag"]), v
        assert "ChecksumAlgorithm" not in v and "ChecksumType" not in v
    sizes = {(v["Key"], v["IsLatest"]): v["Size"] for v in proxy["Versions"]}
    assert sizes == {("a", True): 5, ("a", False): 90_000, ("mp", True): len(mp_data), ("gone", False): 13}
    # The current versions read exactly as ListObjectsV2 and ListObjects show them.
    for listing in (c.list_objects_v2(Bucket=bucket)["Contents"], c.list_objects(Bucket=bucket)["Contents"]):
        current = {(v["Key"], v["Size"], v["ETag"]) for v in proxy["Versions"] if v["IsLatest"]}
        assert {(o["Key"], o["Size"], o["ETag"]) for o in listing} == current
    # Direct shows ciphertext facts, which is what the proxy must not pass on.
    assert {v["Size"] for v in direct["Versions"] if v["Key"] == "a"} != {5, 90_000}


def delete_marker_steps(client, bucket: str, key: str) -> list:
    """One history of versions and delete markers; what a client observes."""
    seen = []
    v1 = client.put_object(Bucket=bucket, Key=key, Body=b"first version")["VersionId"]
    v2 = client.put_object(Bucket=bucket, Key=key, Body=b"second version!")["VersionId"]
    marker = client.delete_object(Bucket=bucket, Key=key)
    seen.append(("delete", marker["DeleteMarker"], bool(marker["VersionId"])))
    seen.append(("get current", outcome(lambda: client.get_object(Bucket=bucket, Key=key))))
    seen.append(("head current", outcome(lambda: client.head_object(Bucket=bucket, Key=key))))
    seen.append(("get marker", outcome(lambda: client.get_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"]))))
    seen.append(("head marker", outcome(lambda: client.head_object(Bucket=bucket, Key=key,
                                                                   VersionId=marker["VersionId"]))))
    seen.append(("get v1", client.get_object(Bucket=bucket, Key=key, VersionId=v1)["Body"].read()))
    removed = client.delete_object(Bucket=bucket, Key=key, VersionId=marker["VersionId"])
    seen.append(("remove marker", removed.get("DeleteMarker"), removed["VersionId"] == marker["VersionId"]))
    seen.append(("get current again", client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    gone = client.delete_object(Bucket=bucket, Key=key, VersionId=v2)
    seen.append(("delete v2", gone["VersionId"] == v2, "DeleteMarker" in gone))
    seen.append(("current is v1", client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    seen.append(("get deleted v2", outcome(lambda: client.get_object(Bucket=bucket, Key=key, VersionId=v2))))
    versions = client.list_object_versions(Bucket=bucket, Prefix=key)
    seen.append(("versions", [v["VersionId"] == v1 for v in versions["Versions"]], versions.get("DeleteMarkers")))
    return seen


def test_delete_by_version_and_delete_markers_behave_as_direct(moto_stack):
    bucket = new_bucket(moto_stack)
    through_proxy = delete_marker_steps(moto_stack.client, bucket, "via-proxy")
    direct = delete_marker_steps(moto_stack.direct, bucket, "direct")
    assert through_proxy == direct
    assert ("get current", ("error", 404, "NoSuchKey")) in through_proxy


def test_copies_from_versions(moto_stack):
    c, bucket = moto_stack.client, new_bucket(moto_stack)
    v1_data = body_of(90_000, 5)
    v1 = c.put_object(Bucket=bucket, Key="src", Body=v1_data)["VersionId"]
    c.put_object(Bucket=bucket, Key="src", Body=b"newer")
    copied = c.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "src", "VersionId": v1})
    assert copied["CopySourceVersionId"] == v1
    assert c.get_object(Bucket=bucket, Key="copy")["Body"].read() == v1_data
    assert_encrypted_at_rest(moto_stack, bucket, "copy", copied["VersionId"], v1_data)
    # UploadPartCopy of an old version: the proxy reads it as plaintext and encrypts the part.
    up = c.create_multipart_upload(Bucket=bucket, Key="assembled")
    first = body_of(5 * MiB, 6)
    p1 = c.upload_part(Bucket=bucket, Key="assembled", UploadId=up["UploadId"], PartNumber=1, Body=first)
    p2 = c.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=up["UploadId"], PartNumber=2,
                            CopySource={"Bucket": bucket, "Key": "src", "VersionId": v1},
                            CopySourceRange="bytes=1000-80999")
    done = c.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]}]})
    assert c.get_object(Bucket=bucket, Key="assembled")["Body"].read() == first + v1_data[1000:81000]
    assert_encrypted_at_rest(moto_stack, bucket, "assembled", done["VersionId"], first)


def conditional_steps(client, bucket: str, key: str, etag: str, version: str) -> list:
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    status = lambda call: outcome(lambda: call()["ResponseMetadata"]["HTTPStatusCode"])  # noqa: E731
    get = lambda **kw: client.get_object(Bucket=bucket, Key=key, VersionId=version, **kw)  # noqa: E731
    head = lambda **kw: client.head_object(Bucket=bucket, Key=key, VersionId=version, **kw)  # noqa: E731
    return [
        status(lambda: get(IfMatch=etag)),
        status(lambda: get(IfMatch=etag, Range="bytes=0-9")),
        status(lambda: get(IfNoneMatch=etag)),
        status(lambda: get(IfMatch='"0123456789abcdef0123456789abcdef"')),
        status(lambda: get(IfModifiedSince=future)),
        status(lambda: get(IfUnmodifiedSince=past)),
        status(lambda: head(IfMatch=etag)),
        status(lambda: head(IfNoneMatch=etag)),
    ]


def test_conditional_reads_on_a_version_behave_as_direct(moto_stack):
    bucket = new_bucket(moto_stack)
    results = []
    for client, key in ((moto_stack.client, "via-proxy"), (moto_stack.direct, "direct")):
        old = client.put_object(Bucket=bucket, Key=key, Body=body_of(70_000, 7))
        client.put_object(Bucket=bucket, Key=key, Body=b"current")
        # Each client sends the ETag it was shown for that version.
        results.append(conditional_steps(client, bucket, key, old["ETag"], old["VersionId"]))
    assert results[0] == results[1]
    assert results[0][:3] == [("ok", 200), ("ok", 206), ("error", 304, "304")]


# --- tags ---------------------------------------------------------------------


def tag_steps(client, bucket: str, key: str) -> list:
    tags = lambda **kw: sorted((t["Key"], t["Value"]) for t in client.get_object_tagging(  # noqa: E731
        Bucket=bucket, Key=key, **kw)["TagSet"])
    seen = []
    v1 = client.put_object(Bucket=bucket, Key=key, Body=b"tagged", Tagging="team=a&class=pii")["VersionId"]
    client.put_object(Bucket=bucket, Key=key, Body=b"tagged again", Tagging="team=b")
    seen.append(("current", tags()))
    seen.append(("v1", tags(VersionId=v1)))
    r = client.put_object_tagging(Bucket=bucket, Key=key, VersionId=v1,
                                  Tagging={"TagSet": [{"Key": "retain", "Value": "7y"}]})
    seen.append(("put v1", r.get("VersionId") == v1, tags(VersionId=v1), tags()))
    client.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": "x", "Value": "1"}]})
    seen.append(("put current", tags()))
    r = client.delete_object_tagging(Bucket=bucket, Key=key, VersionId=v1)
    seen.append(("delete v1", r.get("VersionId") == v1, tags(VersionId=v1), tags()))
    client.delete_object_tagging(Bucket=bucket, Key=key)
    seen.append(("delete current", tags()))
    # Copies: tags follow the source by default, REPLACE takes the request's.
    client.put_object_tagging(Bucket=bucket, Key=key, VersionId=v1, Tagging={"TagSet": [{"Key": "s", "Value": "1"}]})
    src = {"Bucket": bucket, "Key": key, "VersionId": v1}
    client.copy_object(Bucket=bucket, Key=key + "-copy", CopySource=src)
    seen.append(("copy", tags_of(client, bucket, key + "-copy")))
    client.copy_object(Bucket=bucket, Key=key + "-replaced", CopySource=src, TaggingDirective="REPLACE",
                       Tagging="new=tag")
    seen.append(("copy replace", tags_of(client, bucket, key + "-replaced")))
    # CreateMultipartUpload with tags.
    up = client.create_multipart_upload(Bucket=bucket, Key=key + "-mp", Tagging="mp=yes")
    p = client.upload_part(Bucket=bucket, Key=key + "-mp", UploadId=up["UploadId"], PartNumber=1, Body=b"part")
    client.complete_multipart_upload(Bucket=bucket, Key=key + "-mp", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p["ETag"]}]})
    seen.append(("multipart", tags_of(client, bucket, key + "-mp")))
    seen.append(("tag count", client.head_object(Bucket=bucket, Key=key + "-mp").get("TagCount")))
    return seen


def tags_of(client, bucket, key):
    return sorted((t["Key"], t["Value"]) for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"])


def test_tags_behave_as_direct(moto_stack):
    bucket = new_bucket(moto_stack)
    through_proxy = tag_steps(moto_stack.client, bucket, "via-proxy")
    direct = tag_steps(moto_stack.direct, bucket, "direct")
    assert through_proxy == direct
    assert ("copy replace", [("new", "tag")]) in through_proxy and ("multipart", [("mp", "yes")]) in through_proxy
    for key in ("via-proxy-copy", "via-proxy-replaced", "via-proxy-mp"):
        stored = moto_stack.direct.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert stored[:4] == MAGIC, key


def test_aws_cli_versions_and_tags(moto_stack, tmp_path):
    bucket = new_bucket(moto_stack)
    data = body_of(100_000, 8)
    v1 = moto_stack.client.put_object(Bucket=bucket, Key="cli", Body=data)["VersionId"]
    moto_stack.client.put_object(Bucket=bucket, Key="cli", Body=b"overwritten")

    versions = json.loads(aws(moto_stack, "s3api", "list-object-versions", "--bucket", bucket).stdout)["Versions"]
    assert sorted(v["Size"] for v in versions) == [11, 100_000]
    assert all(v["ETag"].endswith('-1"') for v in versions)
    out = tmp_path / "v1"
    aws(moto_stack, "s3api", "get-object", "--bucket", bucket, "--key", "cli", "--version-id", v1, str(out))
    assert out.read_bytes() == data
    aws(moto_stack, "s3api", "put-object-tagging", "--bucket", bucket, "--key", "cli", "--version-id", v1,
        "--tagging", "TagSet=[{Key=k,Value=v}]")
    got = json.loads(aws(moto_stack, "s3api", "get-object-tagging", "--bucket", bucket, "--key", "cli",
                         "--version-id", v1).stdout)
    assert got["TagSet"] == [{"Key": "k", "Value": "v"}]
    attrs = json.loads(aws(moto_stack, "s3api", "get-object-attributes", "--bucket", bucket, "--key", "cli",
                           "--version-id", v1, "--object-attributes", "ObjectSize", "ETag").stdout)
    assert attrs["ObjectSize"] == 100_000 and attrs["ETag"].endswith("-1")


# --- object lock and legal hold -------------------------------------------------


def until(days: int = 1) -> datetime.datetime:
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)).replace(microsecond=0)


LOCK = {"ObjectLockMode": "GOVERNANCE", "ObjectLockLegalHoldStatus": "ON"}


def lock_state(client, bucket, key, version):
    h = client.head_object(Bucket=bucket, Key=key, VersionId=version)
    return h.get("ObjectLockMode"), h.get("ObjectLockRetainUntilDate"), h.get("ObjectLockLegalHoldStatus")


def test_lock_headers_need_the_lock_operations(moto_stack):
    bucket = new_bucket(moto_stack, lock=True)
    c = moto_stack.client
    assert error(lambda: c.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                                      ObjectLockRetainUntilDate=until())) == (403, "AccessDenied")
    assert error(lambda: c.put_object(Bucket=bucket, Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON")) == (
        403, "AccessDenied")
    assert error(lambda: c.create_multipart_upload(Bucket=bucket, Key="k", ObjectLockLegalHoldStatus="ON")) == (
        403, "AccessDenied")
    assert "Versions" not in moto_stack.direct.list_object_versions(Bucket=bucket)
    v = c.put_object(Bucket=bucket, Key="k", Body=b"plain write")["VersionId"]
    assert error(lambda: c.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "ON"})) == (
        403, "AccessDenied")
    assert error(lambda: c.put_object_retention(Bucket=bucket, Key="k", Retention={
        "Mode": "GOVERNANCE", "RetainUntilDate": until()})) == (403, "AccessDenied")
    # Bypassing governance retention is a retention change: refused too, and the version survives.
    assert error(lambda: c.delete_object(Bucket=bucket, Key="k", VersionId=v, BypassGovernanceRetention=True)) == (
        403, "AccessDenied")
    assert c.get_object(Bucket=bucket, Key="k", VersionId=v)["Body"].read() == b"plain write"


def lock_steps(client, bucket: str, key: str, retain: datetime.datetime, later: datetime.datetime) -> list:
    seen = []
    data = body_of(80_000, 9)
    v = client.put_object(Bucket=bucket, Key=key, Body=data, ObjectLockRetainUntilDate=retain, **LOCK)["VersionId"]
    seen.append(("put", lock_state(client, bucket, key, v)))
    seen.append(("legal hold", client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=v)["LegalHold"]))
    # Locked versions cannot be deleted; overwriting makes a new version.
    seen.append(("delete locked", outcome(lambda: client.delete_object(Bucket=bucket, Key=key, VersionId=v))))
    seen.append(("delete bypass with hold", outcome(lambda: client.delete_object(
        Bucket=bucket, Key=key, VersionId=v, BypassGovernanceRetention=True))))
    newer = client.put_object(Bucket=bucket, Key=key, Body=b"newer")["VersionId"]
    seen.append(("overwrite", newer != v, client.get_object(Bucket=bucket, Key=key, VersionId=v)["Body"].read() == data))
    client.put_object_legal_hold(Bucket=bucket, Key=key, VersionId=v, LegalHold={"Status": "OFF"})
    seen.append(("hold off", client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=v)["LegalHold"]))
    client.put_object_retention(Bucket=bucket, Key=key, VersionId=v,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": later})
    seen.append(("retention extended", lock_state(client, bucket, key, v)[:2] == ("GOVERNANCE", later)))
    seen.append(("delete retained", outcome(lambda: client.delete_object(Bucket=bucket, Key=key, VersionId=v))))
    seen.append(("delete bypass", outcome(lambda: client.delete_object(
        Bucket=bucket, Key=key, VersionId=v, BypassGovernanceRetention=True)["ResponseMetadata"]["HTTPStatusCode"])))
    # Copy and multipart with lock headers. moto (unlike S3) wants a checksum
    # declaration on a CopyObject that sets a lock; the proxy forwards it.
    declare = lambda request, **_: request.headers.__setitem__("x-amz-sdk-checksum-algorithm", "CRC32")  # noqa: E731
    client.meta.events.register("before-sign.s3.CopyObject", declare)
    try:
        cv = client.copy_object(Bucket=bucket, Key=key + "-copy", CopySource={"Bucket": bucket, "Key": key},
                                ObjectLockLegalHoldStatus="ON")["VersionId"]
    finally:
        client.meta.events.unregister("before-sign.s3.CopyObject", declare)
    seen.append(("copy", lock_state(client, bucket, key + "-copy", cv)[2]))
    data_mp, done = put_multipart(client, bucket, key + "-mp", [5 * MiB, 100], 20,
                                  ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=retain)
    seen.append(("multipart", lock_state(client, bucket, key + "-mp", done["VersionId"])[:2]))
    seen.append(("mp delete", outcome(lambda: client.delete_object(
        Bucket=bucket, Key=key + "-mp", VersionId=done["VersionId"])["ResponseMetadata"]["HTTPStatusCode"])))
    return seen


def test_object_lock_and_legal_hold_behave_as_direct(moto_stack):
    bucket = new_bucket(moto_stack, lock=True)
    retain, later = until(1), until(2)
    through_proxy = lock_steps(moto_stack.lock_client, bucket, "via-proxy", retain, later)
    direct = lock_steps(moto_stack.direct, bucket, "direct", retain, later)
    assert through_proxy == direct
    assert ("delete locked", ("error", 403, "AccessDenied")) in through_proxy
    assert ("legal hold", {"Status": "ON"}) in through_proxy and ("copy", "ON") in through_proxy
    for v in moto_stack.direct.list_object_versions(Bucket=bucket, Prefix="via-proxy")["Versions"]:
        assert at_rest(moto_stack, bucket, v["Key"], v["VersionId"])[:4] == MAGIC, v["Key"]


def test_default_retention_bucket_accepts_encrypted_writes(moto_stack):
    # Writes to a bucket with a default retention must carry a checksum
    # declaration (S3 asks for Content-MD5 or x-amz-sdk-checksum-algorithm);
    # the proxy declares its CRC32C trailer.
    bucket = new_bucket(moto_stack, lock=True)
    moto_stack.direct.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    v = moto_stack.client.put_object(Bucket=bucket, Key="k", Body=b"retained by default")["VersionId"]
    assert lock_state(moto_stack.direct, bucket, "k", v)[0] == "GOVERNANCE"
    assert error(lambda: moto_stack.client.delete_object(Bucket=bucket, Key="k", VersionId=v)) == (403, "AccessDenied")
    assert at_rest(moto_stack, bucket, "k", v)[:4] == MAGIC


def test_get_object_retention_never_returns_an_object(moto_stack):
    """GetObjectRetention passes through. moto 5.2 does not implement it and
    answers with the object itself; the proxy refuses such an answer (502)
    rather than hand the workload ciphertext."""
    bucket = new_bucket(moto_stack, lock=True)
    c = moto_stack.lock_client
    v = c.put_object(Bucket=bucket, Key="k", Body=b"x" * 100, ObjectLockMode="GOVERNANCE",
                     ObjectLockRetainUntilDate=until())["VersionId"]
    raw = signed_get(f"{moto_stack.endpoint}/{bucket}/k?retention&versionId={v}")
    if raw.startswith(MAGIC):
        assert error(lambda: c.get_object_retention(Bucket=bucket, Key="k", VersionId=v)) == (502, "BadGateway")
    else:  # an upstream that implements it: the same answer as direct
        assert c.get_object_retention(Bucket=bucket, Key="k", VersionId=v)["Retention"]["Mode"] == "GOVERNANCE"


def signed_get(url: str) -> bytes:
    """A GET straight to the upstream, signed with the proxy's credentials."""
    from botocore.auth import S3SigV4Auth  # noqa: PLC0415
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415
    from botocore.credentials import Credentials  # noqa: PLC0415

    req = AWSRequest(method="GET", url=url)
    S3SigV4Auth(Credentials(stack_mod.UPSTREAM_ACCESS_KEY, stack_mod.UPSTREAM_SECRET_KEY), "s3", "us-east-1") \
        .add_auth(req)
    with urllib.request.urlopen(urllib.request.Request(url, headers=dict(req.headers)), timeout=5) as r:
        return r.read()


# --- GetObjectAttributes ------------------------------------------------------


ALL_ATTRIBUTES = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def test_get_object_attributes_in_plaintext_terms(moto_stack):
    c, bucket = moto_stack.client, new_bucket(moto_stack)
    old = c.put_object(Bucket=bucket, Key="single", Body=body_of(90_000, 11), ChecksumAlgorithm="SHA256")
    c.put_object(Bucket=bucket, Key="single", Body=b"current", StorageClass="STANDARD_IA")
    mp_data, done = put_multipart(c, bucket, "mp", [5 * MiB, 5 * MiB, 1234], 30)
    for key, version, size, parts in (("single", old["VersionId"], 90_000, None), ("single", None, 7, None),
                                      ("mp", None, len(mp_data), [5 * MiB, 5 * MiB, 1234])):
        kw = {"VersionId": version} if version else {}
        attrs = c.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=ALL_ATTRIBUTES, **kw)
        head = c.head_object(Bucket=bucket, Key=key, **kw)
        assert attrs["ObjectSize"] == size == head["ContentLength"]
        assert attrs["ETag"] == head["ETag"].strip('"') and attrs["VersionId"] == head["VersionId"]
        assert attrs["StorageClass"] == head.get("StorageClass", "STANDARD")
        assert "Checksum" not in attrs
        if parts is None:
            assert "ObjectParts" not in attrs
        else:
            op = attrs["ObjectParts"]
            assert op["TotalPartsCount"] == 3 and [p["Size"] for p in op["Parts"]] == parts
            assert not op["IsTruncated"]
        direct = moto_stack.direct.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=ALL_ATTRIBUTES, **kw)
        assert direct["ObjectSize"] > size  # the upstream's answer is about the ciphertext
    page = c.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=1,
                                   PartNumberMarker=1)["ObjectParts"]
    assert ([p["PartNumber"] for p in page["Parts"]], page["IsTruncated"], page["NextPartNumberMarker"]) == (
        [2], True, 2)
    # Errors as direct: a missing key, a delete marker.
    for client in (c, moto_stack.direct):
        assert error(lambda: client.get_object_attributes(Bucket=bucket, Key="nope",  # noqa: B023
                                                          ObjectAttributes=["ObjectSize"])) == (404, "NoSuchKey")
    marker = c.delete_object(Bucket=bucket, Key="single")["VersionId"]
    got = [outcome(lambda: cl.get_object_attributes(Bucket=bucket, Key="single", VersionId=marker,  # noqa: B023
                                                    ObjectAttributes=["ObjectSize"])["ObjectSize"])
           for cl in (c, moto_stack.direct)]
    assert got[0] == got[1]


def test_get_object_attributes_refuses_bad_attribute_names(moto_stack):
    bucket = new_bucket(moto_stack)
    moto_stack.client.put_object(Bucket=bucket, Key="k", Body=b"x")
    req = urllib.request.Request(f"{moto_stack.proxy_endpoint}/{bucket}/k?attributes",
                                 headers={"x-amz-object-attributes": "ObjectSize,Size"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    body = e.value.read()
    assert e.value.code == 400 and b"<Code>InvalidArgument</Code>" in body and MAGIC not in body


# --- workload-requested SSE, storage class, redirects ---------------------------


def test_sse_storage_class_and_redirect_are_forwarded(moto_stack):
    c, d, bucket = moto_stack.client, moto_stack.direct, new_bucket(moto_stack)
    data = body_of(70_000, 12)
    cases = {
        "aes": dict(ServerSideEncryption="AES256"),
        "kms": dict(ServerSideEncryption="aws:kms", SSEKMSKeyId="arn:aws:kms:us-east-1:123456789012:key/abc"),
        "class": dict(StorageClass="STANDARD_IA", WebsiteRedirectLocation="/elsewhere.html"),
    }
    for key, extra in cases.items():
        v = c.put_object(Bucket=bucket, Key=key, Body=data, **extra)["VersionId"]
        assert c.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        assert_encrypted_at_rest(moto_stack, bucket, key, v, data)
    assert d.head_object(Bucket=bucket, Key="aes")["ServerSideEncryption"] == "AES256"
    kms = d.head_object(Bucket=bucket, Key="kms")
    assert (kms["ServerSideEncryption"], kms["SSEKMSKeyId"]) == ("aws:kms", cases["kms"]["SSEKMSKeyId"])
    stored = d.head_object(Bucket=bucket, Key="class")
    assert (stored["StorageClass"], stored["WebsiteRedirectLocation"]) == ("STANDARD_IA", "/elsewhere.html")
    shown = c.head_object(Bucket=bucket, Key="class")
    assert (shown["StorageClass"], shown["WebsiteRedirectLocation"]) == ("STANDARD_IA", "/elsewhere.html")
    # The same for a multipart upload.
    mp_data, _ = put_multipart(c, bucket, "mp-kms", [5 * MiB, 10], 40, **cases["kms"])
    assert d.head_object(Bucket=bucket, Key="mp-kms")["SSEKMSKeyId"] == cases["kms"]["SSEKMSKeyId"]
    assert c.get_object(Bucket=bucket, Key="mp-kms")["Body"].read() == mp_data


def test_sse_c_is_forwarded_on_put_and_whole_get(stack, moto_stack):
    """The customer-key headers go upstream with PutObject, next to the
    ciphertext, so a whole object round-trips in a versioned bucket; moto
    ignores SSE-C, so the PUT's shape is checked on the wire. Every other
    operation is covered on Garage, which checks the key
    (`test_conformance.py::test_sse_c_works_for_every_single_object_operation`)."""
    key = b"k" * 32
    sse = dict(SSECustomerAlgorithm="AES256", SSECustomerKey=key.decode())
    md5 = base64.b64encode(hashlib.md5(key).digest()).decode()
    data = body_of(50_000, 13)
    rec = Recorder()
    proc, endpoint, _ = stack.start_proxy("proxy-ssec-shape", CLOUDTASER_S3PROXY_S3_ENDPOINT=rec.endpoint)
    try:
        s3_client(endpoint, "workload", "workload").put_object(Bucket="b", Key="ssec", Body=data, **sse)
        put = next(r for r in rec.requests if r["method"] == "PUT")
        h = put["headers"]
        assert h["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
        assert h["x-amz-server-side-encryption-customer-key"] == base64.b64encode(key).decode()
        assert h["x-amz-server-side-encryption-customer-key-md5"] == md5
        assert MAGIC in put["body"][:64] and data[:64] not in put["body"]
    finally:
        proc.stop()
        rec.close()
    c, bucket = moto_stack.client, new_bucket(moto_stack)
    v = c.put_object(Bucket=bucket, Key="ssec", Body=data, **sse)["VersionId"]
    assert c.get_object(Bucket=bucket, Key="ssec", **sse)["Body"].read() == data
    assert at_rest(moto_stack, bucket, "ssec", v)[:4] == MAGIC


# --- admin commands on versioned buckets ----------------------------------------


def test_rewrap_and_scan_see_noncurrent_versions(stack, moto_stack):
    """rewrap rewrites current versions (each rewrite is a new version) and,
    with --all-versions, reports the noncurrent ones still under an older
    key version; scan --all-versions finds a plaintext noncurrent version
    that a current-only scan cannot see."""
    transit_key = "versions-e2e"
    stack.vault.ok("POST", f"transit/keys/{transit_key}", {"type": "aes256-gcm96"})
    env = {"CLOUDTASER_S3PROXY_S3_ENDPOINT": moto_stack.endpoint, "CLOUDTASER_S3PROXY_TRANSIT_KEY": transit_key,
           "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1"}
    proc, endpoint, _ = stack.start_proxy("proxy-versions-admin", **env)
    try:
        c, d, bucket = s3_client(endpoint, "w", "w"), moto_stack.direct, new_bucket(moto_stack)
        plain = d.put_object(Bucket=bucket, Key="k", Body=b"written before the proxy")["VersionId"]
        first = c.put_object(Bucket=bucket, Key="k", Body=b"encrypted under v1")["VersionId"]
        stack.vault.ok("POST", f"transit/keys/{transit_key}/rotate")

        def admin(*args, check):
            r = subprocess.run([stack_mod.proxy_binary(), *args], env=stack.proxy_env(**env), capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == check, r.stdout + r.stderr
            return r.stdout

        out = admin("rewrap", "--bucket", bucket, "--all-versions", "--quiet", "--assume-quiesced", check=0)
        assert "rewrapped: 1," in out, out
        assert f"noncurrent: k (version {first}) uses {transit_key}:v1" in out, out
        assert "noncurrent versions under an older key version: 1" in out, out
        versions = d.list_object_versions(Bucket=bucket)["Versions"]
        assert len(versions) == 3
        current = next(v for v in versions if v["IsLatest"])["VersionId"]
        wrapped = {v["VersionId"]: d.head_object(Bucket=bucket, Key="k", VersionId=v["VersionId"])["Metadata"]
                   .get("cloudtaser-key", "")[:9] for v in versions}
        assert wrapped == {plain: "", first: "vault:v1:", current: "vault:v2:"}
        # Every encrypted version still reads (min_decryption_version not raised).
        assert c.get_object(Bucket=bucket, Key="k", VersionId=first)["Body"].read() == b"encrypted under v1"
        assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"encrypted under v1"

        only_current = json.loads(admin("scan", "--bucket", bucket, "--json", check=0))
        assert (only_current["objects"], only_current["noncurrent"], only_current["findings"]) == (1, 0, [])
        every = json.loads(admin("scan", "--bucket", bucket, "--json", "--verify", "--all-versions", check=1))
        assert (every["objects"], every["noncurrent"], every["all_versions"]) == (3, 2, True)
        assert every["key_versions"] == {f"{transit_key}:v1": 1, f"{transit_key}:v2": 1}
        assert every["findings"] == [{"key": "k", "version_id": plain, "class": "plaintext",
                                      "reason": "no encryption envelope"}]
    finally:
        proc.stop()

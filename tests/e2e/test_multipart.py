"""Multipart uploads and reads of multipart objects, through boto3 and the
AWS CLI, against s3s-fs."""

from __future__ import annotations

import concurrent.futures
import datetime
import os

import boto3.s3.transfer
import botocore.exceptions
import pytest

import envelope
import stack as stack_mod
from conftest import s3_client
from test_core import MiB, SEG, aws, body_of, read_fails  # noqa: F401

PART = 5 * MiB


@pytest.fixture(scope="module")
def mp_bucket(upstream):
    upstream.create_bucket(Bucket="e2e-multipart")
    return "e2e-multipart"


def upload_parts(client, bucket, key, data, part=PART, order=None, workers=1):
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"origin": "multipart-test"})
    uid = upload["UploadId"]
    chunks = [data[i : i + part] for i in range(0, len(data), part)] or [b""]
    numbers = order or list(range(1, len(chunks) + 1))

    def put(n):
        r = client.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=chunks[n - 1])
        return n, r["ETag"]

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        etags = dict(pool.map(put, numbers))
    parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    return uid


def test_boto3_upload_and_download_file_multipart(client, mp_bucket, tmp_path):
    data = body_of(3 * 8 * MiB + 12345, 21)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)
    client.upload_file(str(src), mp_bucket, "boto3/big.bin", Config=config)
    head = client.head_object(Bucket=mp_bucket, Key="boto3/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-4"')
    # download_file splits into ranged GETs fetched in parallel.
    client.download_file(mp_bucket, "boto3/big.bin", str(dst), Config=config)
    assert dst.read_bytes() == data
    listed = client.list_objects_v2(Bucket=mp_bucket, Prefix="boto3/")["Contents"]
    if "ETag" in listed[0]:
        assert [(o["Key"], o["Size"]) for o in listed] == [("boto3/big.bin", len(data))]
    else:
        # s3s-fs lists no ETags, so the part count is unknown there (docs/COMPATIBILITY.md):
        # the size is off by the N-1 extra stream headers, never more.
        assert listed[0]["Size"] - len(data) == 3 * 52


def test_parts_in_parallel_out_of_order_and_retried(client, mp_bucket):
    data = body_of(4 * PART + 777, 22)
    upload = client.create_multipart_upload(Bucket=mp_bucket, Key="mp/parallel")
    uid = upload["UploadId"]
    chunks = [data[i : i + PART] for i in range(0, len(data), PART)]
    # A first attempt at part 2 with wrong bytes, retried with the right ones.
    client.upload_part(Bucket=mp_bucket, Key="mp/parallel", UploadId=uid, PartNumber=2, Body=b"x" * PART)

    def put(n):
        return n, client.upload_part(Bucket=mp_bucket, Key="mp/parallel", UploadId=uid, PartNumber=n, Body=chunks[n - 1])["ETag"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        etags = dict(pool.map(put, [5, 3, 1, 4, 2]))
    listed = client.list_parts(Bucket=mp_bucket, Key="mp/parallel", UploadId=uid)
    parts_listed = sorted((p["PartNumber"], p["Size"]) for p in listed["Parts"])
    assert parts_listed == [(n, len(chunks[n - 1])) for n in range(1, 6)]
    assert listed["UploadId"] == uid
    parts = [{"PartNumber": n, "ETag": etags[n]} for n in range(1, 6)]
    client.complete_multipart_upload(Bucket=mp_bucket, Key="mp/parallel", UploadId=uid, MultipartUpload={"Parts": parts})
    got = client.get_object(Bucket=mp_bucket, Key="mp/parallel")
    assert got["ContentLength"] == len(data)
    assert got["Body"].read() == data


@pytest.mark.parametrize(
    ("first", "last"),
    [(0, 10), (PART - 5, PART + 5), (PART, 2 * PART - 1), (2 * PART + SEG + 3, 3 * PART + 100), (3 * PART + 1, None)],
)
def test_ranges_across_part_boundaries(client, mp_bucket, first, last):
    data = body_of(3 * PART + 1000, 23)
    if "mp/ranged" not in {o["Key"] for o in client.list_objects_v2(Bucket=mp_bucket, Prefix="mp/ranged").get("Contents", [])}:
        upload_parts(client, mp_bucket, "mp/ranged", data)
    spec = f"bytes={first}-" + ("" if last is None else str(last))
    want = data[first:] if last is None else data[first : last + 1]
    got = client.get_object(Bucket=mp_bucket, Key="mp/ranged", Range=spec)
    assert got["Body"].read() == want
    assert got["ContentRange"] == f"bytes {first}-{first + len(want) - 1}/{len(data)}"


def test_get_by_part_number(client, mp_bucket):
    data = body_of(2 * PART + 99, 24)
    upload_parts(client, mp_bucket, "mp/by-part", data)
    for n, (a, b) in {1: (0, PART - 1), 3: (2 * PART, len(data) - 1)}.items():
        got = client.get_object(Bucket=mp_bucket, Key="mp/by-part", PartNumber=n)
        assert got["Body"].read() == data[a : b + 1]
        assert got["ContentRange"] == f"bytes {a}-{b}/{len(data)}"
        assert got["PartsCount"] == 3
    head = client.head_object(Bucket=mp_bucket, Key="mp/by-part", PartNumber=3)
    assert head["ContentLength"] == 99 and head["PartsCount"] == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=mp_bucket, Key="mp/by-part", PartNumber=4)
    assert e.value.response["Error"]["Code"] == "InvalidPartNumber"


def test_upload_survives_a_proxy_restart(stack, mp_bucket):
    data = body_of(2 * PART + 5, 25)
    first, endpoint, _ = stack.start_proxy("proxy-before-restart")
    c1 = s3_client(endpoint, "w", "w")
    uid = c1.create_multipart_upload(Bucket=mp_bucket, Key="mp/restart")["UploadId"]
    e1 = c1.upload_part(Bucket=mp_bucket, Key="mp/restart", UploadId=uid, PartNumber=1, Body=data[:PART])["ETag"]
    first.stop()
    second, endpoint, _ = stack.start_proxy("proxy-after-restart")
    try:
        c2 = s3_client(endpoint, "w", "w")
        e2 = c2.upload_part(Bucket=mp_bucket, Key="mp/restart", UploadId=uid, PartNumber=2, Body=data[PART : 2 * PART])["ETag"]
        e3 = c2.upload_part(Bucket=mp_bucket, Key="mp/restart", UploadId=uid, PartNumber=3, Body=data[2 * PART :])["ETag"]
        parts = [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate([e1, e2, e3])]
        c2.complete_multipart_upload(Bucket=mp_bucket, Key="mp/restart", UploadId=uid, MultipartUpload={"Parts": parts})
        assert c2.get_object(Bucket=mp_bucket, Key="mp/restart")["Body"].read() == data
    finally:
        second.stop()


def test_abort_and_list_uploads(client, mp_bucket):
    uid = client.create_multipart_upload(Bucket=mp_bucket, Key="mp/aborted")["UploadId"]
    client.upload_part(Bucket=mp_bucket, Key="mp/aborted", UploadId=uid, PartNumber=1, Body=b"abc")
    listed = client.list_parts(Bucket=mp_bucket, Key="mp/aborted", UploadId=uid)
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, 3)]
    client.abort_multipart_upload(Bucket=mp_bucket, Key="mp/aborted", UploadId=uid)
    try:  # S3 answers NoSuchUpload; s3s-fs an empty list.
        assert client.list_parts(Bucket=mp_bucket, Key="mp/aborted", UploadId=uid).get("Parts", []) == []
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchUpload"


@pytest.mark.parametrize("sizes", [
    pytest.param([PART + 1, PART + 1, 10], id="unaligned-5MiB+1"),
    pytest.param([PART + 70_001, 2 * PART + 3, PART, 0], id="uneven-with-empty-last"),
    pytest.param([PART + 17], id="one-unaligned-part"),
])
def test_any_part_sizes_s3_accepts(client, upstream, stack, mp_bucket, sizes):
    """Format 3 records the part table, so any layout S3 accepts works:
    whole, ranged (across every boundary) and per-part reads are exact.
    (Gaps in the part numbers are covered by the unit tests: s3s-fs refuses
    them, answering "invalid part order".)"""
    data = body_of(sum(sizes), sum(sizes) % 97)
    key = f"mp/sizes-{len(sizes)}-{sizes[0]}"
    uid = client.create_multipart_upload(Bucket=mp_bucket, Key=key)["UploadId"]
    numbers = list(range(1, len(sizes) + 1))
    parts, offset = [], 0
    for n, size in zip(numbers, sizes):
        r = client.upload_part(Bucket=mp_bucket, Key=key, UploadId=uid, PartNumber=n, Body=data[offset : offset + size])
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
        offset += size
    done = client.complete_multipart_upload(Bucket=mp_bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    head = client.head_object(Bucket=mp_bucket, Key=key)
    assert head["ContentLength"] == len(data) and head["ETag"] == done["ETag"]
    assert done["ETag"].strip('"').endswith(f"-{len(sizes)}")
    assert client.get_object(Bucket=mp_bucket, Key=key)["Body"].read() == data
    bounds = [sum(sizes[:i]) for i in range(1, len(sizes))]
    for a, b in [(0, 0), (len(data) - 1, len(data) - 1)] + [(max(0, x - 3), min(len(data) - 1, x + 3)) for x in bounds]:
        got = client.get_object(Bucket=mp_bucket, Key=key, Range=f"bytes={a}-{b}")["Body"].read()
        assert got == data[a : b + 1], (a, b)
    offset = 0
    for i, size in enumerate(sizes, start=1):
        if size:
            r = client.get_object(Bucket=mp_bucket, Key=key, PartNumber=i)
            assert r["Body"].read() == data[offset : offset + size] and r["PartsCount"] == len(sizes)
        offset += size
    stored = upstream.get_object(Bucket=mp_bucket, Key=key)
    meta = stored["Metadata"]
    assert meta["cloudtaser-format"] == "3" and meta["cloudtaser-layout"] == "multipart"
    assert envelope.parse_parts(meta["cloudtaser-parts"]) == list(zip(numbers, sizes))
    raw = stored["Body"].read()
    assert raw[:4] == b"CTS3"
    # At rest it is the documented format 3: the MAC over name, table and the
    # stream headers' digest, each header against its table entry, every segment.
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    assert envelope.verify_v3(dek, meta, mp_bucket, key, raw) == data


def test_complete_checks_parts_before_sizes(client, upstream, mp_bucket):
    key = "mp/complete-errors"
    uid = client.create_multipart_upload(Bucket=mp_bucket, Key=key)["UploadId"]
    e1 = client.upload_part(Bucket=mp_bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"small")["ETag"]
    e2 = client.upload_part(Bucket=mp_bucket, Key=key, UploadId=uid, PartNumber=2, Body=b"tail")["ETag"]

    def complete(parts, upload=uid):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.complete_multipart_upload(Bucket=mp_bucket, Key=key, UploadId=upload,
                                             MultipartUpload={"Parts": parts})
        return e.value.response["Error"]["Code"], e.value.response["ResponseMetadata"]["HTTPStatusCode"]

    # A part never uploaded is InvalidPart, though part 1 is also too small.
    assert complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}]) == ("InvalidPart", 400)
    assert complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": '"0123"'}]) == ("InvalidPart", 400)
    assert complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]) == ("InvalidPartOrder", 400)
    assert complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]) == ("EntityTooSmall", 400)
    assert complete([{"PartNumber": 1, "ETag": e1}], upload="not-a-proxy-upload-id") == ("NoSuchUpload", 404)
    with pytest.raises(botocore.exceptions.ClientError):
        upstream.head_object(Bucket=mp_bucket, Key=key)
    # The upload is still whole: completing it with one (last, so small) part works.
    client.complete_multipart_upload(Bucket=mp_bucket, Key=key, UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
    assert client.get_object(Bucket=mp_bucket, Key=key)["Body"].read() == b"small"


def test_upload_part_copy_with_and_without_range(client, mp_bucket):
    src = body_of(PART + 3 * SEG + 11, 27)
    whole = body_of(PART, 30)
    client.put_object(Bucket=mp_bucket, Key="copy/source", Body=src)
    client.put_object(Bucket=mp_bucket, Key="copy/whole", Body=whole)
    uid = client.create_multipart_upload(Bucket=mp_bucket, Key="copy/assembled")["UploadId"]
    p1 = client.upload_part_copy(
        Bucket=mp_bucket, Key="copy/assembled", UploadId=uid, PartNumber=1,
        CopySource={"Bucket": mp_bucket, "Key": "copy/whole"},
    )["CopyPartResult"]["ETag"]
    p2 = client.upload_part_copy(
        Bucket=mp_bucket, Key="copy/assembled", UploadId=uid, PartNumber=2,
        CopySource={"Bucket": mp_bucket, "Key": "copy/source"}, CopySourceRange=f"bytes={PART}-{len(src) - 1}",
    )["CopyPartResult"]["ETag"]
    client.complete_multipart_upload(
        Bucket=mp_bucket, Key="copy/assembled", UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]},
    )
    assert client.get_object(Bucket=mp_bucket, Key="copy/assembled")["Body"].read() == whole + src[PART:]


def test_conditional_reads(client, mp_bucket):
    client.put_object(Bucket=mp_bucket, Key="cond.txt", Body=b"conditional")
    etag = client.head_object(Bucket=mp_bucket, Key="cond.txt")["ETag"]
    assert client.get_object(Bucket=mp_bucket, Key="cond.txt", IfMatch=etag)["Body"].read() == b"conditional"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=mp_bucket, Key="cond.txt", IfNoneMatch=etag)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=mp_bucket, Key="cond.txt", IfMatch='"0000"')
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=mp_bucket, Key="cond.txt", IfMatch='"0000"', Range="bytes=0-3")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    modified = client.head_object(Bucket=mp_bucket, Key="cond.txt")["LastModified"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.head_object(Bucket=mp_bucket, Key="cond.txt", IfModifiedSince=modified)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=mp_bucket, Key="cond.txt", IfUnmodifiedSince=modified - datetime.timedelta(days=1))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_swapped_parts_fail(client, stack, mp_bucket):
    data = body_of(2 * PART, 28)
    upload_parts(client, mp_bucket, "mp/swap", data)
    path = stack.s3_data / mp_bucket / "mp" / "swap"
    raw = path.read_bytes()
    half = len(raw) // 2
    path.write_bytes(raw[half:] + raw[:half])
    read_fails(client, mp_bucket, "mp/swap")
    read_fails(client, mp_bucket, "mp/swap", Range=f"bytes={PART + 10}-{PART + 20}")


def test_aws_cli_multipart_cp_and_sync(stack, mp_bucket, tmp_path):
    big = tmp_path / "up" / "big.bin"
    big.parent.mkdir()
    data = body_of(20 * MiB + 3, 29)
    big.write_bytes(data)
    (tmp_path / "up" / "small.txt").write_bytes(b"small file")
    aws(stack, "s3", "cp", str(big), f"s3://{mp_bucket}/cli/big.bin")
    aws(stack, "s3", "cp", f"s3://{mp_bucket}/cli/big.bin", str(tmp_path / "big.out"))
    assert (tmp_path / "big.out").read_bytes() == data
    aws(stack, "s3", "sync", str(tmp_path / "up"), f"s3://{mp_bucket}/synced/")
    second = aws(stack, "s3", "sync", str(tmp_path / "up"), f"s3://{mp_bucket}/synced/").stdout
    # Listed sizes are plaintext, so sync sees nothing to do for single-part objects
    # (multipart sizes need the listing's ETag, which s3s-fs omits).
    assert "small.txt" not in second
    aws(stack, "s3", "sync", f"s3://{mp_bucket}/synced/", str(tmp_path / "down"))
    assert (tmp_path / "down" / "big.bin").read_bytes() == data
    assert (tmp_path / "down" / "small.txt").read_bytes() == b"small file"
    os.sync()


def test_complete_and_part_number_errors_are_s3s(stack, client, mp_bucket):
    """Found by the independent attacker: a DOCTYPE in the client's Complete
    document was a 500 about upstream XML, and HEAD and GET disagreed on
    malformed part numbers."""
    from attack_helpers import request  # noqa: PLC0415 - raw requests, as a hostile client sends them

    key = "mp/doctype"
    uid = client.create_multipart_upload(Bucket=mp_bucket, Key=key)["UploadId"]
    etag = client.upload_part(Bucket=mp_bucket, Key=key, UploadId=uid, PartNumber=1, Body=b"x")["ETag"]
    doc = (f'<!DOCTYPE x [<!ENTITY e "1">]><CompleteMultipartUpload><Part><PartNumber>&e;</PartNumber>'
           f"<ETag>{etag}</ETag></Part></CompleteMultipartUpload>").encode()
    res = request(stack.proxy_endpoint, "POST", f"/{mp_bucket}/{key}?uploadId={uid}", body=doc)
    assert (res.status, res.code) == (400, "MalformedXML"), res.body[:300]
    client.put_object(Bucket=mp_bucket, Key="mp/plain-for-parts", Body=b"abc")
    for bad in ("0", "abc"):
        for method in ("GET", "HEAD"):
            res = request(stack.proxy_endpoint, method, f"/{mp_bucket}/mp/plain-for-parts?partNumber={bad}")
            assert res.status == 400, (method, bad, res.status)

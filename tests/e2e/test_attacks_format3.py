"""Attacks on format 3's authenticated envelope (docs/FORMAT.md, "Format 3"),
on the real stack: boto3 through the proxy as the workload, boto3 straight
to s3s-fs as someone holding the store's credentials, and the proxy's own
metrics as the recording relay that counts upstream requests.

Each test says which claim of docs/THREAT-MODEL.md it proves."""

from __future__ import annotations

import botocore.exceptions
import pytest

from attack_helpers import HDR, SEALED, SEG, MiB, body_of, ct_len, quote_key, request, stored
from test_attacks_at_rest import (
    assert_head_refused,
    assert_refused,
    assert_served,
    ensure_bucket,
    get,
    head,
    put_through,
    unique,
)
from test_failures import scrape

BUCKET = "e2e-format3"
REPLICA = "e2e-format3-replica"
PART = 5 * MiB


@pytest.fixture(scope="module")
def f3_bucket(upstream):
    return ensure_bucket(upstream, BUCKET)


@pytest.fixture(scope="module")
def workload(stack):
    from conftest import s3_client  # noqa: PLC0415

    return s3_client(stack.proxy_endpoint, "w", "w")


def upstream_requests(stack) -> float:
    """Every request the proxy has sent upstream, from its own counter."""
    return sum(v for (name, _), v in scrape(stack.health_endpoint).items()
               if name == "cloudtaser_s3proxy_upstream_requests_total")


def put_single(stack, workload, upstream, key: str, size: int) -> tuple[bytes, bytes, dict]:
    data = body_of(size, key)
    put_through(stack.proxy_endpoint, BUCKET, key, data, workload)
    raw, meta = stored(upstream, BUCKET, key)
    assert meta["cloudtaser-format"] == "3" and meta["cloudtaser-binding"] == "key" and len(meta["cloudtaser-mac"]) == 64
    assert raw[4] == 3, "format-3 streams are version 3"
    return data, raw, meta


def test_single_put_cut_and_relabelled_is_refused_by_head_and_get(stack, workload, upstream, f3_bucket):
    """Cut to its first two segments with `cloudtaser-size` set to match:
    HEAD, GetObjectAttributes and GET refuse; nothing reports 131072."""
    key = unique("cut")
    data, raw, meta = put_single(stack, workload, upstream, key, 3 * SEG + 5)
    cut = raw[: HDR + 2 * SEALED]
    upstream.put_object(Bucket=BUCKET, Key=key, Body=cut, Metadata=dict(meta, **{"cloudtaser-size": str(2 * SEG)}))
    ep = stack.proxy_endpoint
    assert_head_refused(head(ep, BUCKET, key), "HEAD of a cut, relabelled object")
    assert_refused(get(ep, BUCKET, key), data, "GET of a cut, relabelled object", limit=0)
    assert_refused(get(ep, BUCKET, key, (0, 9)), data[:10], "ranged GET of a cut, relabelled object", limit=0)
    attrs = request(ep, "GET", f"/{BUCKET}/{quote_key(key)}?attributes", [("x-amz-object-attributes", "ObjectSize")])
    # s3s-fs has no GetObjectAttributes (501); either way nothing says 131072.
    assert attrs.status in (500, 501) and b"131072" not in attrs.body
    # Relabelled as format 1 (MAC and binding removed): the stream headers
    # say version 3, which is every segment's associated data.
    legacy = {k: v for k, v in meta.items() if k not in ("cloudtaser-mac", "cloudtaser-binding")}
    legacy["cloudtaser-format"] = "1"
    upstream.put_object(Bucket=BUCKET, Key=key, Body=raw, Metadata=legacy)
    assert_refused(get(ep, BUCKET, key), data, "GET of a format-3 body relabelled format 1", limit=0)
    assert_head_refused(head(ep, BUCKET, key), "HEAD of a format-3 body relabelled format 1")


def test_whole_object_copied_onto_another_key_is_refused(stack, workload, upstream, f3_bucket):
    """Body and metadata of B copied over A by the store's credentials: the
    MAC binds B's key, so A is refused (it used to read as B's content)."""
    ka, kb = unique("bind/a"), unique("bind/b")
    a, _, _ = put_single(stack, workload, upstream, ka, 2 * SEG + 3)
    b, rb, mb = put_single(stack, workload, upstream, kb, 2 * SEG + 3)
    upstream.copy_object(Bucket=BUCKET, Key=ka, CopySource={"Bucket": BUCKET, "Key": kb})
    assert stored(upstream, BUCKET, ka) == (rb, mb)
    ep = stack.proxy_endpoint
    for res in (get(ep, BUCKET, ka), get(ep, BUCKET, ka, (0, 9))):
        assert_refused(res, b, "B served under A's key", limit=0)
        assert_refused(res, a, "A's old content", limit=0)
    assert_head_refused(head(ep, BUCKET, ka), "HEAD of B under A's key")
    # The default binding is the key alone: a replica under the same key in
    # another bucket (replication, DR) still reads.
    ensure_bucket(upstream, REPLICA)
    upstream.copy_object(Bucket=REPLICA, Key=kb, CopySource={"Bucket": BUCKET, "Key": kb})
    assert_served(get(ep, REPLICA, kb), b, "a replica in another bucket under the same key")


def test_copy_through_the_proxy_rebinds_and_refuses_an_unverified_source(stack, workload, upstream, f3_bucket):
    src, dst, bad = unique("copy/src"), unique("copy/dst"), unique("copy/bad")
    data, _, meta = put_single(stack, workload, upstream, src, SEG + 77)
    workload.copy_object(Bucket=BUCKET, Key=dst, CopySource={"Bucket": BUCKET, "Key": src})
    raw, dmeta = stored(upstream, BUCKET, dst)
    assert dmeta["cloudtaser-mac"] != meta["cloudtaser-mac"], "the copy is bound to its own key"
    assert dmeta["cloudtaser-key"] == meta["cloudtaser-key"], "no body byte was rewritten"
    assert_served(get(stack.proxy_endpoint, BUCKET, dst), data, "the copy")
    assert workload.head_object(Bucket=BUCKET, Key=dst)["ContentLength"] == len(data)
    # A source copied onto its key by the store's credentials is not copied on.
    upstream.copy_object(Bucket=BUCKET, Key=bad, CopySource={"Bucket": BUCKET, "Key": src})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        workload.copy_object(Bucket=BUCKET, Key=unique("copy/laundered"), CopySource={"Bucket": BUCKET, "Key": bad})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def upstream_upload_id(upload_id: str) -> str:
    assert upload_id.startswith("ctu3."), upload_id
    return upload_id.split(".", 4)[4]


def test_upload_id_moved_to_another_key_or_upload_is_refused(stack, workload, upstream, f3_bucket):
    mine, theirs = unique("mpid/mine"), unique("mpid/theirs")
    uid = workload.create_multipart_upload(Bucket=BUCKET, Key=mine)["UploadId"]
    other = workload.create_multipart_upload(Bucket=BUCKET, Key=theirs)["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        workload.upload_part(Bucket=BUCKET, Key=theirs, UploadId=uid, PartNumber=1, Body=b"x" * 100)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    # The other upload's upstream id under this upload's key and tag.
    moved = ".".join(uid.split(".")[:4] + [upstream_upload_id(other)])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        workload.upload_part(Bucket=BUCKET, Key=theirs, UploadId=moved, PartNumber=1, Body=b"x" * 100)
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        workload.complete_multipart_upload(Bucket=BUCKET, Key=theirs, UploadId=moved,
                                           MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    upstream_parts = upstream.list_parts(Bucket=BUCKET, Key=theirs, UploadId=upstream_upload_id(other))
    assert not upstream_parts.get("Parts"), "nothing was uploaded with a moved id"
    for key, upload in ((mine, uid), (theirs, other)):
        workload.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload)


def test_a_part_replaced_by_another_attempt_of_it_is_refused_by_whole_reads(stack, workload, upstream, f3_bucket):
    """Part 1 uploaded twice (same length, other content); the store keeps the
    first attempt's ciphertext and puts it back in the completed object.
    The sealed envelope covers every stream header, salt included, so a
    whole GET refuses before the last part's first byte. Ranged reads check
    each header against the sealed table (number, length, version) but not
    the salt: docs/THREAT-MODEL.md lists that as not detected."""
    key = unique("attempts")
    first, second, last = body_of(PART, key + "1"), body_of(PART, key + "2"), body_of(1000, key + "3")
    uid = workload.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    workload.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=first)
    part_file = stack.s3_data / BUCKET / f".upload_id-{upstream_upload_id(uid)}.part-1"
    if not part_file.exists():
        part_file = stack.s3_data / f".upload_id-{upstream_upload_id(uid)}.part-1"
    stale = part_file.read_bytes()
    assert stale[:4] == b"CTS3" and len(stale) == ct_len(PART)
    e1 = workload.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=second)["ETag"]
    e2 = workload.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2, Body=last)["ETag"]
    workload.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    raw, meta = stored(upstream, BUCKET, key)
    assert meta["cloudtaser-format"] == "3" and "cloudtaser-streams" in meta
    assert_served(get(stack.proxy_endpoint, BUCKET, key), second + last, "the sealed object")
    spliced = stale + raw[len(stale):]
    upstream.put_object(Bucket=BUCKET, Key=key, Body=spliced, Metadata=meta)
    res = get(stack.proxy_endpoint, BUCKET, key)
    assert res.status >= 400 or not res.complete, "a whole read of a spliced attempt ended cleanly"
    assert last[:64] not in res.body, "the last part was released before the headers were checked"


def test_irregular_part_tables_are_refused_at_complete_and_reads_are_bounded(stack, workload, upstream, f3_bucket):
    """95 parts alternating 5 MiB and 5 MiB + 1 would need a part table too
    long for metadata, and so a walk of every part header on each read.
    Format 3 refuses the Complete (400 InvalidRequest) before the upstream
    completes anything; the upload stays open. An accepted object's HEAD
    costs one upstream request, its whole GET one, a range two."""
    key = unique("irregular")
    uid = workload.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = []
    for n in range(1, 96):
        body = b"\x00" * (PART + (n % 2))
        parts.append({"PartNumber": n, "ETag": workload.upload_part(Bucket=BUCKET, Key=key, UploadId=uid,
                                                                    PartNumber=n, Body=body)["ETag"]})
    with pytest.raises(botocore.exceptions.ClientError) as e:
        workload.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    assert e.value.response["Error"]["Code"] == "InvalidRequest"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(botocore.exceptions.ClientError):
        upstream.head_object(Bucket=BUCKET, Key=key)
    assert len(upstream.list_parts(Bucket=BUCKET, Key=key, UploadId=upstream_upload_id(uid))["Parts"]) == 95
    workload.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid)

    # A regular three-part object: requests per read, counted by the proxy.
    key = unique("regular")
    data = body_of(2 * PART + 1000, key)
    uid = workload.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etags = [workload.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n,
                                  Body=data[(n - 1) * PART : n * PART])["ETag"] for n in (1, 2, 3)]
    workload.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2, 3), etags)]})
    ep = stack.proxy_endpoint
    for what, read, cost in (("HEAD", lambda: head(ep, BUCKET, key), 1),
                             ("GET", lambda: get(ep, BUCKET, key), 1),
                             ("range in part 2", lambda: get(ep, BUCKET, key, (PART + 10, PART + 20)), 2)):
        before = upstream_requests(stack)
        res = read()
        assert res.status in (200, 206), (what, res.status)
        assert upstream_requests(stack) - before == cost, f"{what}: upstream requests"


def test_a_multipart_copy_keeps_its_part_count_and_lists_its_exact_size(garage_stack):
    """CopyObject of a multipart object through the proxy is a multipart copy,
    one UploadPartCopy per stream (as the seal does): the copy keeps its `-N`
    ETag, so listings compute its exact size (a CopyObject would list
    52 bytes too large per extra part: Spark, Trino and DuckDB take file
    lengths from listings). On Garage, whose listings carry ETags."""
    import secrets  # noqa: PLC0415

    c, direct = garage_stack.client, garage_stack.direct
    bucket = f"e2e-f3copy-{secrets.token_hex(3)}"
    direct.create_bucket(Bucket=bucket)
    data = body_of(2 * PART + 1000, "mpcopy")
    uid = c.create_multipart_upload(Bucket=bucket, Key="src", ContentType="application/x-parquet",
                                    Metadata={"owner": "team-a"})["UploadId"]
    etags = [c.upload_part(Bucket=bucket, Key="src", UploadId=uid, PartNumber=n,
                           Body=data[(n - 1) * PART : n * PART])["ETag"] for n in (1, 2, 3)]
    c.complete_multipart_upload(Bucket=bucket, Key="src", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2, 3), etags)]})
    done = c.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert done["CopyObjectResult"]["ETag"].endswith('-3"'), done
    listed = {o["Key"]: o for o in c.list_objects_v2(Bucket=bucket)["Contents"]}
    assert listed["dst"]["Size"] == listed["src"]["Size"] == len(data), listed
    assert listed["dst"]["ETag"].endswith('-3"')
    got = c.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data and got["ContentType"] == "application/x-parquet"
    assert got["Metadata"] == {"owner": "team-a"}
    src_meta = direct.head_object(Bucket=bucket, Key="src")["Metadata"]
    dst_meta = direct.head_object(Bucket=bucket, Key="dst")["Metadata"]
    assert dst_meta["cloudtaser-key"] == src_meta["cloudtaser-key"] and dst_meta["cloudtaser-mac"] != src_meta["cloudtaser-mac"]
    assert direct.get_object(Bucket=bucket, Key="dst")["Body"].read()[:4] == b"CTS3"
    # A copy with REPLACE takes the request's metadata, still part for part.
    c.copy_object(Bucket=bucket, Key="dst2", CopySource={"Bucket": bucket, "Key": "src"},
                  MetadataDirective="REPLACE", Metadata={"owner": "team-b"}, ContentType="text/csv")
    head = c.head_object(Bucket=bucket, Key="dst2")
    assert head["Metadata"] == {"owner": "team-b"} and head["ContentType"] == "text/csv"
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')

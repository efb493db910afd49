"""The proxy core through real clients (boto3, the AWS CLI) against s3s-fs,
which only accepts the proxy's credentials and verifies every signature."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import urllib.parse

import botocore.exceptions
import pytest

import envelope
import stack as stack_mod
from conftest import s3_client

SEG = 65536
MiB = 1 << 20


def body_of(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB of non-repeating-per-seed bytes
    return (block * (size // len(block) + 1))[:size]


def stored(stack, bucket: str, key: str) -> bytes:
    return (stack.s3_data / bucket / key).read_bytes()


@pytest.mark.parametrize("size", [0, 1, SEG, SEG + 1, 50 * MiB], ids=["empty", "1B", "1seg", "1seg+1", "50MiB"])
def test_round_trip_sizes(client, upstream, stack, bucket, size):
    key = f"sizes/{size}"
    data = body_of(size, size)
    client.put_object(Bucket=bucket, Key=key, Body=data)
    got = client.get_object(Bucket=bucket, Key=key)
    assert got["ContentLength"] == size
    assert got["Body"].read() == data
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == size
    listed = {o["Key"]: o["Size"] for o in client.list_objects_v2(Bucket=bucket, Prefix="sizes/")["Contents"]}
    assert listed[key] == size
    # At rest: ciphertext of the documented length, not the plaintext.
    raw = stored(stack, bucket, key)
    segments = max(1, -(-size // SEG))
    assert len(raw) == 52 + size + 16 * segments
    if size >= 16:
        assert data[:4096] not in raw


def test_at_rest_decrypts_with_the_documented_format(client, upstream, stack, bucket):
    data = body_of(3 * SEG + 123, 7)
    client.put_object(Bucket=bucket, Key="spec/check.bin", Body=data)
    meta = upstream.head_object(Bucket=bucket, Key="spec/check.bin")["Metadata"]
    assert meta["cloudtaser-key"].startswith("vault:v1:")
    assert meta["cloudtaser-size"] == str(len(data))
    assert meta["cloudtaser-format"] == "3"
    assert meta["cloudtaser-binding"] == "key", "the default binding names the object key"
    assert "cloudtaser-manifest" not in meta and "cloudtaser-layout" not in meta
    key = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    raw = stored(stack, bucket, "spec/check.bin")
    assert raw[4] == 3, "format-3 stream header"
    # Every check FORMAT.md asks of a format-3 reader: the MAC over the name,
    # size and salt, the header against the envelope, then every segment.
    assert envelope.verify_v3(key, meta, bucket, "spec/check.bin", raw) == data
    # The MAC binds the key: the same bytes under another name do not verify.
    with pytest.raises(envelope.FormatError):
        envelope.verify_v3(key, meta, bucket, "spec/other.bin", raw)


def test_user_metadata_round_trips_and_envelope_stays_hidden(client, bucket):
    client.put_object(
        Bucket=bucket, Key="meta.txt", Body=b"x", Metadata={"color": "blue", "owner": "team-a"},
        ContentType="text/x-custom", CacheControl="no-cache",
    )
    for resp in (client.head_object(Bucket=bucket, Key="meta.txt"), client.get_object(Bucket=bucket, Key="meta.txt")):
        assert resp["Metadata"] == {"color": "blue", "owner": "team-a"}
        assert resp["ContentType"] == "text/x-custom"
        assert resp["CacheControl"] == "no-cache"


def test_reserved_metadata_is_refused(client, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.put_object(Bucket=bucket, Key="reserved", Body=b"x", Metadata={"cloudtaser-key": "vault:v1:forged"})
    assert e.value.response["Error"]["Code"] == "InvalidArgument"


@pytest.mark.parametrize("key", ["with space.txt", "unicodé/ключ/文件.bin", "plus+sign+key", "tilde~and=equals&amp"])
def test_awkward_keys(client, upstream, stack, bucket, key):
    client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    assert (stack.s3_data / bucket / key).exists(), "stored under exactly the workload's key"
    # Listing shows what the upstream shows (s3s-fs itself decodes '+' in listings as a space).
    through = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=key[:4])["Contents"]]
    direct = [o["Key"] for o in upstream.list_objects_v2(Bucket=bucket, Prefix=key[:4])["Contents"]]
    assert through == direct and len(through) == 1
    client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.head_object(Bucket=bucket, Key=key)
    assert e.value.response["Error"]["Code"] == "404"


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [("bytes=0-0", 0, 0), ("bytes=10-70000", 10, 70000), (f"bytes={SEG}-{2 * SEG - 1}", SEG, 2 * SEG - 1),
     ("bytes=200000-", 200000, None), ("bytes=-5", -5, None), ("bytes=-999999", 0, None), ("bytes=5-99999999", 5, None)],
)
def test_range_reads_are_plaintext_coordinates(client, bucket, spec, start, end):
    data = body_of(4 * SEG + 1000, 3)
    client.put_object(Bucket=bucket, Key="ranged.bin", Body=data)
    want = data[start:] if end is None else data[start : end + 1]
    got = client.get_object(Bucket=bucket, Key="ranged.bin", Range=spec)
    assert got["Body"].read() == want
    assert got["ContentLength"] == len(want)
    first = start if start >= 0 else len(data) + start
    assert got["ContentRange"] == f"bytes {first}-{first + len(want) - 1}/{len(data)}"


def upstream_ranged_reads(stack) -> int:
    return sum('"upstream request"' in line and '"range":"bytes=' in line for line in stack.proxy.log_text().splitlines())


def test_ranged_reads_remember_the_layout_until_the_object_changes(client, stack, bucket):
    key = "layout/remembered.bin"
    first = body_of(3 * SEG + 100, 7)
    client.put_object(Bucket=bucket, Key=key, Body=first)
    assert client.get_object(Bucket=bucket, Key=key, Range="bytes=10-20")["Body"].read() == first[10:21]
    before = upstream_ranged_reads(stack)
    got = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={SEG}-{SEG + 99}")
    assert got["Body"].read() == first[SEG : SEG + 100]
    assert upstream_ranged_reads(stack) - before == 1, "the second range reads its segments only"

    # Overwritten with another size: the remembered layout no longer applies.
    second = body_of(5 * SEG + 7, 8)
    client.put_object(Bucket=bucket, Key=key, Body=second)
    got = client.get_object(Bucket=bucket, Key=key, Range="bytes=-10")
    assert got["Body"].read() == second[-10:]
    assert got["ContentRange"] == f"bytes {len(second) - 10}-{len(second) - 1}/{len(second)}"

    # Overwritten as a multipart object: another layout kind.
    mp = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = body_of(5 << 20, 9)
    etag = client.upload_part(Bucket=bucket, Key=key, UploadId=mp, PartNumber=1, Body=part)["ETag"]
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=mp,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert client.get_object(Bucket=bucket, Key=key, Range="bytes=100-199")["Body"].read() == part[100:200]

    client.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-9")
    assert e.value.response["Error"]["Code"] == "NoSuchKey"


def test_unsatisfiable_range_is_416(client, bucket):
    client.put_object(Bucket=bucket, Key="short.txt", Body=b"12345")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=bucket, Key="short.txt", Range="bytes=5-")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    assert e.value.response["Error"]["Code"] == "InvalidRange"


def test_bad_content_md5_stores_nothing(client, upstream, bucket):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.put_object(Bucket=bucket, Key="bad-md5", Body=b"hello", ContentMD5="XrY7u+Ae7tCTyyK7j1rNww==")
    assert e.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(botocore.exceptions.ClientError):
        upstream.head_object(Bucket=bucket, Key="bad-md5")


def test_checksum_header_verified_and_echoed(client, bucket):
    resp = client.put_object(Bucket=bucket, Key="crc.txt", Body=b"hello world", ChecksumAlgorithm="CRC32")
    assert resp["ChecksumCRC32"] == "DUoRhQ=="


def raw_put(endpoint: str, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    u = urllib.parse.urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("PUT", path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()


def test_aws_chunked_trailer_body_is_decoded_before_encryption(client, stack, bucket):
    payload = b"hello world"
    framed = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n"
    status, text = raw_put(stack.proxy_endpoint, f"/{bucket}/chunked.txt", framed, {
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(payload)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "Content-Length": str(len(framed)),
        "Authorization": "AWS4-HMAC-SHA256 Credential=dummy/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
    })
    assert status == 200, text
    assert client.get_object(Bucket=bucket, Key="chunked.txt")["Body"].read() == payload
    bad = framed.replace(b"DUoRhQ==", b"AAAAAA==")
    status, text = raw_put(stack.proxy_endpoint, f"/{bucket}/chunked-bad.txt", bad, {
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(payload)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "Content-Length": str(len(bad)),
    })
    assert status == 400 and b"<Code>BadDigest</Code>" in text
    with pytest.raises(botocore.exceptions.ClientError):
        client.head_object(Bucket=bucket, Key="chunked-bad.txt")


def test_presigned_url_from_workload_is_resigned(client, bucket):
    client.put_object(Bucket=bucket, Key="presigned.txt", Body=b"presigned body")
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "presigned.txt"}, ExpiresIn=60)
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"presigned body"


def test_copy_object_stays_readable_with_replace(client, bucket):
    data = body_of(SEG * 2 + 5, 9)
    client.put_object(Bucket=bucket, Key="copy/src", Body=data, Metadata={"a": "1"})
    client.copy_object(Bucket=bucket, Key="copy/same-meta", CopySource={"Bucket": bucket, "Key": "copy/src"})
    client.copy_object(
        Bucket=bucket, Key="copy/replaced", CopySource={"Bucket": bucket, "Key": "copy/src"},
        MetadataDirective="REPLACE", Metadata={"b": "2"},
    )
    assert client.get_object(Bucket=bucket, Key="copy/same-meta")["Body"].read() == data
    got = client.get_object(Bucket=bucket, Key="copy/replaced")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"b": "2"}


# --- tampering upstream: every GET fails, none returns wrong bytes --------


def test_flipped_byte_in_first_segment_is_an_error_status(client, stack, bucket):
    client.put_object(Bucket=bucket, Key="tamper/first", Body=body_of(1000, 1))
    path = stack.s3_data / bucket / "tamper" / "first"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=bucket, Key="tamper/first")["Body"].read()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


def read_fails(client, bucket, key, **kw) -> None:
    """The read must not complete cleanly: an error status or an aborted body."""
    with pytest.raises((botocore.exceptions.ClientError, botocore.exceptions.ResponseStreamingError,
                        botocore.exceptions.IncompleteReadError, ConnectionError)):
        client.get_object(Bucket=bucket, Key=key, **kw)["Body"].read()


def test_flipped_byte_in_a_later_segment_aborts_the_body(client, stack, bucket):
    data = body_of(5 * SEG, 2)
    client.put_object(Bucket=bucket, Key="tamper/later", Body=data)
    path = stack.s3_data / bucket / "tamper" / "later"
    raw = bytearray(path.read_bytes())
    raw[52 + 3 * (SEG + 16) + 10] ^= 0x80
    path.write_bytes(bytes(raw))
    read_fails(client, bucket, "tamper/later")
    read_fails(client, bucket, "tamper/later", Range=f"bytes={3 * SEG}-{3 * SEG + 5}")


def test_truncated_object_fails(client, stack, bucket):
    client.put_object(Bucket=bucket, Key="tamper/trunc", Body=body_of(3 * SEG, 4))
    path = stack.s3_data / bucket / "tamper" / "trunc"
    raw = path.read_bytes()
    path.write_bytes(raw[: 52 + 2 * (SEG + 16)])  # drop the final segment
    read_fails(client, bucket, "tamper/trunc")


def test_swapped_bodies_fail(client, stack, bucket):
    a, b = body_of(2000, 5), body_of(2000, 6)
    client.put_object(Bucket=bucket, Key="tamper/a", Body=a)
    client.put_object(Bucket=bucket, Key="tamper/b", Body=b)
    pa, pb = stack.s3_data / bucket / "tamper" / "a", stack.s3_data / bucket / "tamper" / "b"
    ra, rb = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(rb)
    pb.write_bytes(ra)
    read_fails(client, bucket, "tamper/a")
    read_fails(client, bucket, "tamper/b")


# --- Vault failures: nothing stored, clear errors ---------------------------


def test_vault_unreachable_put_fails_and_stores_nothing(stack, upstream, bucket):
    proc, endpoint, health = stack.start_proxy(
        "proxy-dead-vault", VAULT_ADDR=f"http://127.0.0.1:{stack_mod.free_port()}", CLOUDTASER_S3PROXY_VAULT_TIMEOUT_SECS="2"
    )
    try:
        c = s3_client(endpoint, "x", "y")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.put_object(Bucket=bucket, Key="vault-down.txt", Body=b"secret")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        # A fixed message: the workload learns nothing about Vault from it.
        assert e.value.response["Error"]["Message"] == "The key service is unavailable."
        assert "Vault" in proc.log_text()  # the cause is in the proxy's log
        with pytest.raises(botocore.exceptions.ClientError):
            upstream.head_object(Bucket=bucket, Key="vault-down.txt")
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(f"{health}/readyz", timeout=5)
        assert ready.value.code == 503
    finally:
        proc.stop()


def test_sealed_vault_put_fails_and_get_fails_without_ciphertext(stack, upstream, client, bucket, tmp_path):
    client.put_object(Bucket=bucket, Key="sealed/existing", Body=b"written before the seal")
    vault = stack_mod.start_vault(tmp_path)
    try:
        # No key pool: a pool filled before the seal would serve this PUT (test_key_pool.py).
        proc, endpoint, _ = stack.start_proxy("proxy-sealed", VAULT_ADDR=vault.addr, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0",
                                              CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
        c = s3_client(endpoint, "x", "y")
        vault.seal()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.put_object(Bucket=bucket, Key="sealed/new", Body=b"secret")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        with pytest.raises(botocore.exceptions.ClientError):
            upstream.head_object(Bucket=bucket, Key="sealed/new")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.get_object(Bucket=bucket, Key="sealed/existing")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (403, 503)
        proc.stop()
    finally:
        vault.process.stop()


def test_readyz_and_healthz(stack):
    import urllib.request

    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(stack.health_endpoint + path, timeout=5) as r:
            assert r.status == 200


def test_objects_written_without_the_proxy_are_refused(client, upstream, bucket):
    upstream.put_object(Bucket=bucket, Key="legacy.txt", Body=b"plaintext from before")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=bucket, Key="legacy.txt")
    assert e.value.response["Error"]["Code"] == "AccessDenied"


def test_missing_setting_fails_start_with_one_clear_line(stack):
    env = stack.proxy_env()
    del env["CLOUDTASER_S3PROXY_TRANSIT_KEY"]
    r = subprocess.run([stack_mod.proxy_binary()], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "transit-key" in r.stderr.lower() or "CLOUDTASER_S3PROXY_TRANSIT_KEY" in r.stderr
    env = stack.proxy_env(CLOUDTASER_S3PROXY_S3_ENDPOINT="ftp://nowhere")
    r = subprocess.run([stack_mod.proxy_binary()], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "CLOUDTASER_S3PROXY_S3_ENDPOINT" in r.stderr


# --- the AWS CLI -------------------------------------------------------------


def aws(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": stack_mod.WORKLOAD_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": stack_mod.WORKLOAD_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": stack.proxy_endpoint,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    })
    r = subprocess.run(["aws", *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_aws_cli_object_lifecycle(stack, bucket, tmp_path):
    src = tmp_path / "cli.bin"
    data = body_of(2 * MiB + 17, 11)
    src.write_bytes(data)
    aws(stack, "s3api", "put-object", "--bucket", bucket, "--key", "cli/obj.bin", "--body", str(src), "--metadata", "k=v")
    head = aws(stack, "s3api", "head-object", "--bucket", bucket, "--key", "cli/obj.bin").stdout
    assert f'"ContentLength": {len(data)}' in head and '"k": "v"' in head
    out = tmp_path / "out.bin"
    aws(stack, "s3api", "get-object", "--bucket", bucket, "--key", "cli/obj.bin", str(out))
    assert out.read_bytes() == data
    small = tmp_path / "small.txt"
    small.write_bytes(b"copied with aws s3 cp")
    aws(stack, "s3", "cp", str(small), f"s3://{bucket}/cli/small.txt")
    listing = aws(stack, "s3", "ls", f"s3://{bucket}/cli/").stdout
    assert str(len(data)) in listing and "small.txt" in listing
    aws(stack, "s3", "cp", f"s3://{bucket}/cli/small.txt", str(tmp_path / "small.out"))
    assert (tmp_path / "small.out").read_bytes() == b"copied with aws s3 cp"
    assert b"copied with" not in stored(stack, bucket, "cli/small.txt")
    aws(stack, "s3api", "delete-object", "--bucket", bucket, "--key", "cli/obj.bin")
    assert aws(stack, "s3api", "head-object", "--bucket", bucket, "--key", "cli/obj.bin", check=False).returncode != 0

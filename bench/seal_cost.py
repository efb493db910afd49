"""What it costs to record authenticated facts on a multipart object after
CompleteMultipartUpload, for docs/design/multipart-v2.md.

For each object size it uploads a multipart object of 8 MiB parts straight
to the upstream (the cost of sealing does not depend on what the bytes are),
then times each candidate way of writing the facts where a reader finds
them:

- `copy`: HEAD, then CopyObject onto the same key with replaced metadata
  (S3 allows this up to 5 GiB);
- `aligned-copy`: CreateMultipartUpload, one UploadPartCopy per original part
  (8 at a time, ranges on the part boundaries, so the ETag keeps its `-N`),
  CompleteMultipartUpload;
- `tags`: PutObjectTagging, and GetObjectTagging as a first read would.

Usage: python3 bench/seal_cost.py [s3s-fs|garage] [SIZES_GIB ...]
Prints one JSON line per (size, candidate) with the median of the runs."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.exceptions
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402

PART = 8 << 20
RUNS = 3


def client(endpoint: str, access: str, secret: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16,
                                      retries={"max_attempts": 1}))


def upload(c, bucket: str, key: str, size: int) -> int:
    chunk = bytes(range(256)) * (PART // 256)
    up = c.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"cloudtaser-layout": "multipart-pending"})
    parts, n, left = [], 1, size
    while left > 0:
        body = chunk[: min(PART, left)]
        etag = c.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=body)["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
        left -= len(body)
        n += 1
    c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    return len(parts)


def copy(c, bucket: str, key: str, size: int, parts: int) -> None:
    head = c.head_object(Bucket=bucket, Key=key)
    meta = {**head["Metadata"], "cloudtaser-layout": "multipart", "cloudtaser-manifest": "00" * 32}
    c.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, Metadata=meta,
                  MetadataDirective="REPLACE", CopySourceIfMatch=head["ETag"])


def aligned_copy(c, bucket: str, key: str, size: int, parts: int) -> None:
    head = c.head_object(Bucket=bucket, Key=key)
    meta = {**head["Metadata"], "cloudtaser-layout": "multipart", "cloudtaser-manifest": "00" * 32}
    up = c.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta)

    def part(n: int) -> dict:
        first = (n - 1) * PART
        last = min(size, n * PART) - 1
        r = c.upload_part_copy(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n,
                               CopySource={"Bucket": bucket, "Key": key}, CopySourceRange=f"bytes={first}-{last}",
                               CopySourceIfMatch=head["ETag"])
        return {"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]}

    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(part, range(1, parts + 1)))
    c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": done})


def tags(c, bucket: str, key: str, size: int, parts: int) -> None:
    c.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [
        {"Key": "cloudtaser-manifest", "Value": "A" * 43}, {"Key": "cloudtaser-parts", "Value": str(parts)}]})
    c.get_object_tagging(Bucket=bucket, Key=key)


CANDIDATES = {"copy": copy, "aligned-copy": aligned_copy, "tags": tags}


def main() -> None:
    upstream = sys.argv[1] if len(sys.argv) > 1 else "s3s-fs"
    sizes = [float(s) for s in sys.argv[2:]] or [1.0]
    work = Path(tempfile.mkdtemp(prefix="seal-cost-"))
    s = stack_mod.Stack(workdir=work, vault=None, s3_endpoint="", s3_data=work)  # type: ignore[arg-type]
    try:
        if upstream == "garage":
            import garage  # noqa: PLC0415

            g = garage.start(work, s)
            c = client(g.endpoint, garage.ACCESS_KEY, garage.SECRET_KEY)
        else:
            port = stack_mod.free_port()
            data = work / "data"
            data.mkdir()
            s.start_process("s3s-fs", [stack_mod.s3s_fs_binary(), "--host", "127.0.0.1", "--port", str(port),
                                       "--access-key", "ak", "--secret-key", "sk", str(data)])
            stack_mod.wait_for(lambda: client(f"http://127.0.0.1:{port}", "ak", "sk").list_buckets(), "s3s-fs")
            c = client(f"http://127.0.0.1:{port}", "ak", "sk")
        c.create_bucket(Bucket="seal")
        for gib in sizes:
            size = int(gib * (1 << 30))
            key = f"obj-{gib}"
            started = time.monotonic()
            parts = upload(c, "seal", key, size)
            upload_s = time.monotonic() - started
            runs = 1 if gib > 2 else RUNS
            for name, fn in CANDIDATES.items():
                if name == "copy" and size > 5 << 30:
                    print(json.dumps({"upstream": upstream, "gib": gib, "candidate": name,
                                      "result": "not possible above 5 GiB"}))
                    continue
                times, error = [], None
                for _ in range(runs):
                    t = time.monotonic()
                    try:
                        fn(c, "seal", key, size, parts)
                    except botocore.exceptions.ClientError as e:
                        error = e.response["Error"]["Code"]
                        break
                    times.append(time.monotonic() - t)
                print(json.dumps({"upstream": upstream, "gib": gib, "parts": parts, "candidate": name,
                                  "median_s": round(statistics.median(times), 3) if times else None,
                                  "runs": len(times), "error": error, "upload_s": round(upload_s, 2)}), flush=True)
            c.delete_object(Bucket="seal", Key=key)
    finally:
        s.stop()


if __name__ == "__main__":
    main()

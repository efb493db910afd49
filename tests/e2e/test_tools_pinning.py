"""The tools that copy objects onto themselves (`rewrap`, `seal`, `migrate`)
never revert or destroy a write that lands during the copy: the copy's
destination is pinned with If-Match, the tools first find out whether the
upstream enforces conditional writes and refuse to run where it does not
(unless --assume-quiesced), and the proxy's own seal at Complete runs to
completion whatever the client does."""

from __future__ import annotations

import subprocess

import pytest

import stack as stack_mod
from conftest import s3_client

REFUSAL = "does not enforce conditional writes"


def tool(stack, env: dict, *args, check: int | None = 0) -> subprocess.CompletedProcess:
    r = subprocess.run([stack_mod.proxy_binary(), *args], env=stack.proxy_env(**env), capture_output=True, text=True,
                       timeout=300)
    if check is not None:
        assert r.returncode == check, r.stdout + r.stderr
    return r


def probe_left_nothing(direct, bucket: str) -> None:
    listed = direct.list_object_versions(Bucket=bucket, Prefix=".cloudtaser-probe/")
    assert not listed.get("Versions") and not listed.get("DeleteMarkers"), listed


def test_survey(stack, upstream, moto_stack, garage_stack):
    import botocore
    for name, c in (("s3s-fs", upstream), ("moto", moto_stack.direct), ("garage", garage_stack.direct)):
        c.create_bucket(Bucket="survey")
        c.put_object(Bucket="survey", Key="k", Body=b"x")
        res = {}
        def st(f):
            try:
                f(); return 200
            except botocore.exceptions.ClientError as e:
                return e.response["ResponseMetadata"]["HTTPStatusCode"]
        res["put-if-match"] = st(lambda: c.put_object(Bucket="survey", Key="k", Body=b"y", IfMatch='"0000"'))
        res["put-if-none-match"] = st(lambda: c.put_object(Bucket="survey", Key="k", Body=b"y", IfNoneMatch="*"))
        def copy():
            c.meta.events.register_first("before-sign.s3.CopyObject", lambda request, **kw: request.headers.__setitem__("If-Match", '"0000"'))
            c.copy_object(Bucket="survey", Key="k", CopySource={"Bucket": "survey", "Key": "k"}, MetadataDirective="REPLACE")
        res["copy-if-match"] = st(copy)
        def complete():
            up = c.create_multipart_upload(Bucket="survey", Key="k")["UploadId"]
            e = c.upload_part(Bucket="survey", Key="k", UploadId=up, PartNumber=1, Body=b"z")["ETag"]
            c.complete_multipart_upload(Bucket="survey", Key="k", UploadId=up, IfMatch='"0000"',
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
        res["complete-if-match"] = st(complete)
        print("SURVEY", name, res, c.get_object(Bucket="survey", Key="k")["Body"].read())
    assert False

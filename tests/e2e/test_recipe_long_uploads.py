"""Recipe-level: multipart uploads held open across proxy replicas and a
killed proxy, against Garage (which enforces S3's part rules).

This is what Spark's S3A magic committer and barman-cloud do to the proxy.
The magic committer opens one multipart upload per task output, uploads the
parts from whichever executor runs the task, and leaves the uploads open
until job commit, when the driver completes them all, through its own
sidecar, possibly long after and after pods have restarted. barman-cloud
uploads a base backup's parts in parallel (`-J`). With a sidecar per pod,
or proxies behind a Service, the parts and the Complete of one upload go
through different proxy processes.

The upload id the proxy hands out carries the upload's wrapped data key
(docs/COMPATIBILITY.md, Multipart rules), so no proxy keeps state about an
open upload. The test holds that claim to account: two uploads are opened
through replica A, their parts go through A and B in parallel (B runs all
along with the same settings), a part is retried on the other replica, A is
killed (SIGKILL: no graceful shutdown) while the uploads are open and
restarted on the same address, and the job commit completes both uploads
through the restarted A with the same client. The objects read back exactly
through both replicas and are format-3 envelopes at rest, which the test
decrypts itself. docs/recipes/hadoop-s3a.md and docs/recipes/barman-cloud.md
cite it."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import envelope
import stack as stack_mod
from attack_helpers import MiB, body_of, stored
from conftest import s3_client
from recipes import assert_all_ciphertext, start_garage_proxy

PART = 5 * MiB


def test_open_uploads_survive_parts_on_two_replicas_and_a_killed_proxy(stack, garage_stack):
    bucket = f"recipe-long-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    marker = f"CLOUDTASER-PLAINTEXT-{secrets.token_hex(8)}".encode()
    # Two task outputs of one job, as the magic committer leaves them under
    # the job's destination (the `__magic` path is rewritten to the final key).
    files = {
        "warehouse/t/part-00000.parquet": marker + body_of(3 * PART + 12345, "long-0"),
        "warehouse/t/part-00001.parquet": marker + body_of(4 * PART + 7, "long-1"),
    }
    chunks = {k: [d[i : i + PART] for i in range(0, len(d), PART)] for k, d in files.items()}
    port_a, health_a = stack_mod.free_port(), stack_mod.free_port()
    replica_a, endpoint_a = start_garage_proxy(stack, garage_stack.endpoint, "replica-a", port_a, health_a)
    replica_b, endpoint_b = start_garage_proxy(stack, garage_stack.endpoint, "replica-b")
    restarted = None
    try:
        client_a = s3_client(endpoint_a, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)
        client_b = s3_client(endpoint_b, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)
        uploads = {k: client_a.create_multipart_upload(Bucket=bucket, Key=k, ContentType="application/vnd.apache.parquet")
                   ["UploadId"] for k in files}

        # Parts through both replicas at once, odd numbers through A, even
        # through B, in descending order: no replica sees a whole upload.
        def put(job):
            key, n = job
            client = client_a if n % 2 else client_b
            r = client.upload_part(Bucket=bucket, Key=key, UploadId=uploads[key], PartNumber=n, Body=chunks[key][n - 1])
            return (key, n), r["ETag"]

        jobs = [(k, n) for k in files for n in range(len(chunks[k]), 0, -1)]
        with ThreadPoolExecutor(6) as pool:
            etags = dict(pool.map(put, jobs))
        # A task retried on another executor: part 2 of the first file (sent
        # through B) again through A. The retry's ETag supersedes the first.
        retried = next(iter(files))
        first_attempt = etags[(retried, 2)]
        etags[(retried, 2)] = client_a.upload_part(Bucket=bucket, Key=retried, UploadId=uploads[retried], PartNumber=2,
                                                   Body=chunks[retried][1])["ETag"]
        assert etags[(retried, 2)] != first_attempt

        # A dies with both uploads open; B lists their parts meanwhile.
        replica_a.popen.kill()
        replica_a.popen.wait()
        for key in files:
            listed = client_b.list_parts(Bucket=bucket, Key=key, UploadId=uploads[key])["Parts"]
            assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [
                (n, len(c), etags[(key, n)]) for n, c in enumerate(chunks[key], start=1)], listed

        # The job commit: the driver's client, unchanged, completes every
        # upload through A restarted on its old address.
        restarted, _ = start_garage_proxy(stack, garage_stack.endpoint, "replica-a-restarted", port_a, health_a)
        for key in files:
            parts = [{"PartNumber": n, "ETag": etags[(key, n)]} for n in range(1, len(chunks[key]) + 1)]
            done = client_a.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uploads[key],
                                                      MultipartUpload={"Parts": parts})
            assert done["ETag"].strip('"').endswith(f"-{len(parts)}"), done

        for key, data in files.items():
            for client in (client_a, client_b):
                assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
                head = client.head_object(Bucket=bucket, Key=key)
                assert head["ContentLength"] == len(data) and head["ContentType"] == "application/vnd.apache.parquet"
            # A Parquet reader's tail read through the other replica, at the listed length.
            size = {o["Key"]: o["Size"] for o in client_b.list_objects_v2(Bucket=bucket)["Contents"]}[key]
            assert size == len(data)
            tail = client_b.get_object(Bucket=bucket, Key=key, Range=f"bytes={size - 8}-{size - 1}")["Body"].read()
            assert tail == data[-8:]
        assert client_b.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

        keys = assert_all_ciphertext(garage_stack.direct, bucket, marker)
        assert sorted(keys) == sorted(files)
        for key, data in files.items():
            raw, meta = stored(garage_stack.direct, bucket, key)
            assert meta.get("cloudtaser-layout") == "multipart", meta
            assert envelope.parse_parts(meta["cloudtaser-parts"]) == [
                (n, len(c)) for n, c in enumerate(chunks[key], start=1)]
            dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
            assert envelope.verify_v3(dek, meta, bucket, key, raw) == data
    finally:
        for proc in (restarted, replica_b, replica_a):
            if proc is not None:
                proc.stop()

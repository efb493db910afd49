"""The pool of pre-wrapped data keys (docs/SECURITY.md, "Data key pool"):
every object and upload still gets its own key, PUTs go on from the pool
while Vault is down and fail closed once it is empty, an empty pool falls
back to a Transit call per PUT, and a Transit key rotation reaches new
objects within the pool's maximum age."""

from __future__ import annotations

import time

import botocore.exceptions
import pytest

import stack as stack_mod
from conftest import s3_client
from test_failures import scrape
from vault_faults import VaultFaults


def wrapped_key(upstream, bucket: str, key: str) -> str:
    return upstream.head_object(Bucket=bucket, Key=key)["Metadata"]["cloudtaser-key"]


def pool_keys(health: str, key: str = stack_mod.TRANSIT_KEY) -> float:
    return scrape(health)[("cloudtaser_s3proxy_key_pool_keys", (("key", key),))]


def wait_pool(health: str, n: int, key: str = stack_mod.TRANSIT_KEY) -> None:
    stack_mod.wait_for(lambda: pool_keys(health, key) == n, f"a pool of {n} keys")


def test_every_object_and_upload_gets_its_own_pooled_key(stack, upstream, bucket):
    faults = VaultFaults(stack.vault.addr)
    proc, endpoint, health = stack.start_proxy("proxy-pool-unique", VAULT_ADDR=faults.addr,
                                               CLOUDTASER_S3PROXY_KEY_POOL_SIZE="64")
    try:
        wait_pool(health, 64)
        client = s3_client(endpoint, "w", "w")
        before = len(faults.calls)
        for i in range(20):
            client.put_object(Bucket=bucket, Key=f"pool/unique/{i}", Body=b"same body")
        up = client.create_multipart_upload(Bucket=bucket, Key="pool/unique/mp")
        part = client.upload_part(Bucket=bucket, Key="pool/unique/mp", UploadId=up["UploadId"], PartNumber=1,
                                  Body=b"p" * 1000)
        client.complete_multipart_upload(Bucket=bucket, Key="pool/unique/mp", UploadId=up["UploadId"],
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        keys = [wrapped_key(upstream, bucket, f"pool/unique/{i}") for i in range(20)]
        keys.append(wrapped_key(upstream, bucket, "pool/unique/mp"))
        assert len(set(keys)) == 21, "a data key served two objects"
        assert all(k.startswith("vault:v") for k in keys)
        # No PUT waited on Vault: the keys came from the pool. What Vault saw
        # (and its audit log records) is batches of `encrypt`, no `datakey`.
        calls = faults.calls[before:]
        assert not [c for c in calls if "/datakey/" in c], calls
        metrics = scrape(health)
        assert metrics[("cloudtaser_s3proxy_key_pool_misses_total", (("key", stack_mod.TRANSIT_KEY),))] == 0
        assert metrics[("cloudtaser_s3proxy_key_pool_refills_total", (("key", stack_mod.TRANSIT_KEY), ("result", "ok")))] >= 1
        assert metrics[("cloudtaser_s3proxy_vault_calls_total", (("key", stack_mod.TRANSIT_KEY), ("operation", "encrypt"), ("result", "ok")))] >= 1
        # Another proxy, which never saw these keys, unwraps them through Vault.
        other = s3_client(stack.proxy_endpoint, "w", "w")
        assert other.get_object(Bucket=bucket, Key="pool/unique/7")["Body"].read() == b"same body"
        assert other.get_object(Bucket=bucket, Key="pool/unique/mp")["Body"].read() == b"p" * 1000
    finally:
        proc.stop()
        faults.close()


def test_puts_go_on_from_the_pool_while_openbao_is_down_then_fail_closed(stack, upstream, bucket, tmp_path):
    """A real OpenBao, killed: the pool's keys were wrapped before, so the
    objects written meanwhile are as safe as any; once they are used up,
    PUTs get 503 and nothing is stored."""
    vault = stack_mod.start_vault(tmp_path)
    proc, endpoint, health = stack.start_proxy(
        "proxy-pool-outage", VAULT_ADDR=vault.addr, CLOUDTASER_S3PROXY_KEY_POOL_SIZE="4",
        CLOUDTASER_S3PROXY_VAULT_TIMEOUT_SECS="2",
    )
    try:
        wait_pool(health, 4)
        vault.process.popen.kill()
        vault.process.popen.wait()
        client = s3_client(endpoint, "w", "w")
        for i in range(4):
            client.put_object(Bucket=bucket, Key=f"pool/outage/{i}", Body=f"written during the outage {i}".encode())
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.put_object(Bucket=bucket, Key="pool/outage/late", Body=b"must not be stored")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert e.value.response["Error"]["Message"] == "The key service is unavailable."
        with pytest.raises(botocore.exceptions.ClientError):
            upstream.head_object(Bucket=bucket, Key="pool/outage/late")
        # What was written is ciphertext under four different wrapped keys,
        # and reads back (its keys are cached; Vault is still down).
        assert len({wrapped_key(upstream, bucket, f"pool/outage/{i}") for i in range(4)}) == 4
        for i in range(4):
            stored = upstream.get_object(Bucket=bucket, Key=f"pool/outage/{i}")["Body"].read()
            assert stored.startswith(b"CTS3") and b"written during" not in stored
            got = client.get_object(Bucket=bucket, Key=f"pool/outage/{i}")["Body"].read()
            assert got == f"written during the outage {i}".encode()
        metrics = scrape(health)
        assert metrics[("cloudtaser_s3proxy_key_pool_keys", (("key", stack_mod.TRANSIT_KEY),))] == 0
        assert metrics[("cloudtaser_s3proxy_key_pool_misses_total", (("key", stack_mod.TRANSIT_KEY),))] >= 1
        assert metrics[("cloudtaser_s3proxy_vault_reachable", ())] == 0
    finally:
        proc.stop()
        vault.process.stop()


def test_an_empty_pool_calls_vault_for_each_put(stack, upstream, bucket):
    faults = VaultFaults(stack.vault.addr)
    faults.fail_matching = "/transit/encrypt/"  # the pool can never fill
    proc, endpoint, health = stack.start_proxy("proxy-pool-empty", VAULT_ADDR=faults.addr,
                                               CLOUDTASER_S3PROXY_KEY_POOL_SIZE="8")
    try:
        client = s3_client(endpoint, "w", "w")
        for i in range(3):
            client.put_object(Bucket=bucket, Key=f"pool/empty/{i}", Body=b"direct")
        assert len({wrapped_key(upstream, bucket, f"pool/empty/{i}") for i in range(3)}) == 3
        metrics = scrape(health)
        assert metrics[("cloudtaser_s3proxy_key_pool_keys", (("key", stack_mod.TRANSIT_KEY),))] == 0
        assert metrics[("cloudtaser_s3proxy_key_pool_misses_total", (("key", stack_mod.TRANSIT_KEY),))] == 3
        assert metrics[("cloudtaser_s3proxy_vault_calls_total", (("key", stack_mod.TRANSIT_KEY), ("operation", "datakey"), ("result", "ok")))] == 3
        assert metrics[("cloudtaser_s3proxy_key_pool_refills_total", (("key", stack_mod.TRANSIT_KEY), ("result", "error")))] >= 1
        # Once Vault wraps again, the pool fills and PUTs stop calling it.
        faults.fail_matching = ""
        wait_pool(health, 8)
    finally:
        proc.stop()
        faults.close()


def test_a_rotation_reaches_new_objects_within_the_max_age(stack, upstream, bucket):
    name = "pool-rotation"
    stack.vault.ok("POST", f"transit/keys/{name}", {"type": "aes256-gcm96"})
    proc, endpoint, health = stack.start_proxy(
        "proxy-pool-rotation", CLOUDTASER_S3PROXY_TRANSIT_KEY=name, CLOUDTASER_S3PROXY_KEY_POOL_SIZE="4",
        CLOUDTASER_S3PROXY_KEY_POOL_MAX_AGE_SECS="2",
    )
    try:
        wait_pool(health, 4, name)
        client = s3_client(endpoint, "w", "w")
        client.put_object(Bucket=bucket, Key="pool/rotation/before", Body=b"v1")
        assert wrapped_key(upstream, bucket, "pool/rotation/before").startswith("vault:v1:")
        stack.vault.ok("POST", f"transit/keys/{name}/rotate")
        time.sleep(2.5)
        client.put_object(Bucket=bucket, Key="pool/rotation/after", Body=b"v2")
        assert wrapped_key(upstream, bucket, "pool/rotation/after").startswith("vault:v2:")
        assert client.get_object(Bucket=bucket, Key="pool/rotation/before")["Body"].read() == b"v1"
        # The v1 keys left the pool: wiped at their age, or retired as soon
        # as a refill's answer carried v2 (test_key_rotation.py).
        m = scrape(health)
        label = (("key", name),)
        assert m[("cloudtaser_s3proxy_key_pool_expired_total", label)] + m[("cloudtaser_s3proxy_key_pool_retired_total", label)] >= 1
    finally:
        proc.stop()

"""Vault failures: PUTs fail cleanly with nothing stored, GETs whose keys
are cached keep working, /readyz follows Vault, and a token that stops
working mid-flight is replaced without failing the request."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import botocore.exceptions
import pytest

from conftest import s3_client
from vault_faults import VaultFaults


def ready(health: str) -> int:
    try:
        with urllib.request.urlopen(f"{health}/readyz", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture()
def faulty(stack):
    faults = VaultFaults(stack.vault.addr)
    proc, endpoint, health = stack.start_proxy(
        "proxy-faults", VAULT_ADDR=faults.addr, CLOUDTASER_S3PROXY_VAULT_TIMEOUT_SECS="2",
    )
    yield faults, s3_client(endpoint, "w", "w"), health, proc
    proc.stop()
    faults.close()


@pytest.mark.parametrize(("mode", "code"), [("503", "ServiceUnavailable"), ("500", "ServiceUnavailable"),
                                             ("429", "SlowDown"), ("hang", "ServiceUnavailable")])
def test_vault_faults_fail_puts_cleanly(faulty, upstream, bucket, mode, code):
    faults, client, health, _ = faulty
    client.put_object(Bucket=bucket, Key=f"faults/{mode}/cached", Body=b"written while Vault was fine")
    faults.mode = mode
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.put_object(Bucket=bucket, Key=f"faults/{mode}/new", Body=b"must not be stored")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert e.value.response["Error"]["Code"] == code
    with pytest.raises(botocore.exceptions.ClientError):
        upstream.head_object(Bucket=bucket, Key=f"faults/{mode}/new")
    # The data key of a recent write is cached: reads go on without Vault.
    got = client.get_object(Bucket=bucket, Key=f"faults/{mode}/cached")
    assert got["Body"].read() == b"written while Vault was fine"
    assert ready(health) == 503
    faults.mode = "pass"
    assert ready(health) == 200
    client.put_object(Bucket=bucket, Key=f"faults/{mode}/after", Body=b"recovered")


def test_uncached_get_during_an_outage_is_an_error_not_ciphertext(faulty, upstream, bucket, stack):
    faults, _, _, _ = faulty
    # Written by another proxy, so this one has never seen the key.
    other = s3_client(stack.proxy_endpoint, "w", "w")
    other.put_object(Bucket=bucket, Key="faults/uncached", Body=b"plaintext")
    _, client, _, _ = faulty
    faults.mode = "503"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=bucket, Key="faults/uncached")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


def test_token_refused_mid_flight_is_replaced(faulty, bucket):
    faults, client, _, proc = faulty
    faults.reject_next = 1
    client.put_object(Bucket=bucket, Key="faults/relogin", Body=b"through a re-login")
    assert client.get_object(Bucket=bucket, Key="faults/relogin")["Body"].read() == b"through a re-login"
    assert faults.reject_next == 0, "the refusal was injected"
    time.sleep(0.2)
    assert proc.log_text().count("logged in to Vault") >= 2

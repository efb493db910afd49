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


def readyz(health: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"{health}/readyz", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ready(health: str) -> int:
    return readyz(health)[0]


def scrape(health: str) -> dict[tuple[str, tuple], float]:
    """The proxy's /metrics, parsed by Prometheus's own OpenMetrics parser."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families  # noqa: PLC0415

    with urllib.request.urlopen(f"{health}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture()
def faulty(stack):
    faults = VaultFaults(stack.vault.addr)
    # No key pool: these tests are about each PUT's own Transit call. What
    # the pool changes in an outage is tested in test_key_pool.py.
    proc, endpoint, health = stack.start_proxy(
        "proxy-faults", VAULT_ADDR=faults.addr, CLOUDTASER_S3PROXY_VAULT_TIMEOUT_SECS="2",
        CLOUDTASER_S3PROXY_VAULT_PROBE_SECS="1", CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0",
    )
    yield faults, s3_client(endpoint, "w", "w"), health, proc
    proc.stop()
    faults.close()


@pytest.mark.parametrize(("mode", "code"), [("503", "ServiceUnavailable"), ("500", "ServiceUnavailable"),
                                             ("429", "SlowDown"), ("hang", "ServiceUnavailable")])
def test_vault_faults_fail_puts_cleanly(faulty, upstream, bucket, mode, code):
    faults, client, health, proc = faulty
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
    # Once started, the proxy stays ready through a Vault outage (readiness
    # gates the pod's Service endpoints) and says it is degraded, without
    # Vault's own text. A rate limit is not an outage.
    status, text = readyz(health)
    assert status == 200
    assert text == ("ready" if mode == "429" else "ready (degraded: vault unreachable)")
    assert "injected fault" not in text
    # The degraded state shows in the metrics.
    assert scrape(health)[("cloudtaser_s3proxy_vault_reachable", ())] == (1 if mode == "429" else 0)
    faults.mode = "pass"
    client.put_object(Bucket=bucket, Key=f"faults/{mode}/after", Body=b"recovered")
    assert readyz(health) == (200, "ready")
    metrics = scrape(health)
    assert metrics[("cloudtaser_s3proxy_vault_reachable", ())] == 1
    # One count per failed request the proxy logged (the SDK may retry).
    failed = proc.log_text().count('"request failed","operation":"PutObject"')
    assert failed >= 1
    assert metrics[("cloudtaser_s3proxy_requests_total", (("code", "503"), ("operation", "PutObject")))] == failed
    assert metrics[("cloudtaser_s3proxy_requests_total", (("code", "200"), ("operation", "PutObject")))] == 2


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


def test_readyz_reads_cached_state_and_never_calls_vault(faulty):
    faults, _, health, _ = faulty
    wait_ready = time.monotonic() + 10
    while ready(health) != 200 and time.monotonic() < wait_ready:
        time.sleep(0.1)
    before = len(faults.calls)
    for _ in range(200):
        assert ready(health) == 200
    # The background probe runs once a second here; 200 probes made at most a few calls.
    assert len(faults.calls) - before <= 3, faults.calls[before:]
    assert readyz(health, "POST")[0] == 405
    assert readyz(health, "DELETE")[0] == 405
    assert readyz(health, "HEAD")[0] == 200


def test_a_proxy_that_never_reached_vault_is_not_ready(stack):
    faults = VaultFaults(stack.vault.addr)
    faults.mode = "503"
    proc, _, health = stack.start_proxy("proxy-never-ready", VAULT_ADDR=faults.addr, CLOUDTASER_S3PROXY_VAULT_PROBE_SECS="1")
    try:
        assert readyz(health) == (503, "not ready: vault unreachable")
        faults.mode = "pass"
        deadline = time.monotonic() + 10
        while ready(health) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert readyz(health) == (200, "ready")
    finally:
        proc.stop()
        faults.close()
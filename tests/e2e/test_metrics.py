"""The proxy's /metrics after real traffic, parsed by Prometheus's own
OpenMetrics parser, with the values asserted."""

from __future__ import annotations

import pytest

from conftest import s3_client
from stack import TRANSIT_KEY
from test_failures import scrape


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture()
def measured(stack):
    proc, endpoint, health = stack.start_proxy("proxy-metrics")
    yield s3_client(endpoint, "w", "w"), health, proc
    proc.stop()


def test_metrics_follow_real_traffic(measured, upstream, bucket):
    client, health, _ = measured
    before = scrape(health)
    body = b"m" * 100_000
    client.put_object(Bucket=bucket, Key="metrics/one", Body=body)
    assert client.get_object(Bucket=bucket, Key="metrics/one")["Body"].read() == body
    assert client.get_object(Bucket=bucket, Key="metrics/one", Range="bytes=0-9")["Body"].read() == body[:10]
    client.head_object(Bucket=bucket, Key="metrics/one")
    after = scrape(health)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cloudtaser_s3proxy_requests_total", operation="PutObject", code="200") == 1
    assert delta("cloudtaser_s3proxy_requests_total", operation="GetObject", code="200") == 1
    assert delta("cloudtaser_s3proxy_requests_total", operation="GetObject", code="206") == 1
    assert delta("cloudtaser_s3proxy_requests_total", operation="HeadObject", code="200") == 1
    assert delta("cloudtaser_s3proxy_request_duration_seconds_count", operation="PutObject") == 1
    assert delta("cloudtaser_s3proxy_bytes_total", direction="in", kind="plaintext") == len(body)
    # 52-byte header and a 16-byte tag per 64 KiB segment (docs/FORMAT.md).
    assert delta("cloudtaser_s3proxy_bytes_total", direction="out", kind="ciphertext") == 52 + len(body) + 2 * 16
    assert delta("cloudtaser_s3proxy_bytes_total", direction="out", kind="plaintext") == len(body) + 10
    # The PUT's data key came from the pool, or from Transit if the pool was still empty.
    assert delta("cloudtaser_s3proxy_vault_calls_total", operation="datakey", result="ok", key=TRANSIT_KEY) == delta(
        "cloudtaser_s3proxy_key_pool_misses_total", key=TRANSIT_KEY)
    # The writer's key is cached: both reads and the HEAD (a format-3 HEAD
    # unwraps the key to check the MAC) hit the cache, no Transit decrypt.
    # (A whole GET looks the key up twice, a first ranged GET once per
    # upstream read: 2 + 2 + 1, every one a hit.)
    assert delta("cloudtaser_s3proxy_key_cache_hits_total") == 5
    assert delta("cloudtaser_s3proxy_key_cache_misses_total") == 0
    assert delta("cloudtaser_s3proxy_vault_calls_total", operation="decrypt", result="ok", key=TRANSIT_KEY) == 0
    assert value(after, "cloudtaser_s3proxy_key_cache_size") >= 1
    assert delta("cloudtaser_s3proxy_upstream_requests_total", method="PUT", **{"class": "2xx"}) == 1
    assert value(after, "cloudtaser_s3proxy_vault_reachable") == 1
    assert value(after, "cloudtaser_s3proxy_in_flight_requests") == 0
    assert value(after, "cloudtaser_s3proxy_open_connections") >= 1
    # Static keys do not expire: no expiry gauge that could look like an expiring key.
    assert not any(name == "cloudtaser_s3proxy_upstream_credentials_expiry_seconds" for name, _ in after)


def test_integrity_failures_are_counted(measured, stack, upstream, bucket):
    client, health, proc = measured
    client.put_object(Bucket=bucket, Key="metrics/tampered", Body=b"t" * 1000)
    stored = upstream.get_object(Bucket=bucket, Key="metrics/tampered")
    data = bytearray(stored["Body"].read())
    data[60] ^= 1
    upstream.put_object(Bucket=bucket, Key="metrics/tampered", Body=bytes(data), Metadata=stored["Metadata"])
    before = value(scrape(health), "cloudtaser_s3proxy_integrity_failures_total")
    with pytest.raises(Exception):  # noqa: B017 - an error status or an aborted body
        client.get_object(Bucket=bucket, Key="metrics/tampered")["Body"].read()
    # One per refused read (the SDK retries a 500).
    failed = proc.log_text().count('"request failed","operation":"GetObject"')
    assert failed >= 1
    assert value(scrape(health), "cloudtaser_s3proxy_integrity_failures_total") == before + failed


def test_bad_checksums_are_counted_as_refusals(measured, bucket):
    client, health, _ = measured
    before = value(scrape(health), "cloudtaser_s3proxy_refused_requests_total", reason="bad_checksum")
    with pytest.raises(Exception):  # noqa: B017
        client.put_object(Bucket=bucket, Key="metrics/bad-md5", Body=b"abc", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert value(scrape(health), "cloudtaser_s3proxy_refused_requests_total", reason="bad_checksum") >= before + 1


def request_lines(proc) -> list[dict]:
    import json  # noqa: PLC0415

    lines = [json.loads(line) for line in proc.log_text().splitlines() if line.startswith("{")]
    return [line["fields"] for line in lines if line["fields"].get("message") in ("request", "request failed")]


@pytest.mark.parametrize("log_keys", [False, True])
def test_one_correlating_log_line_per_request(stack, bucket, log_keys):
    env = {"CLOUDTASER_S3PROXY_LOG_KEYS": "true"} if log_keys else {}
    proc, endpoint, _ = stack.start_proxy(f"proxy-logs-{log_keys}", **env)
    try:
        client = s3_client(endpoint, "w", "w")
        client.put_object(Bucket=bucket, Key="logs/personal-data-key", Body=b"x" * 1234)
        got = client.get_object(Bucket=bucket, Key="logs/personal-data-key")
        assert got["Body"].read() == b"x" * 1234
        lines = request_lines(proc)
        assert [(line["operation"], line["status"]) for line in lines] == [("PutObject", 200), ("GetObject", 200)]
        get = lines[1]
        assert get["bucket"] == bucket and get["bytes"] == "1234" and get["duration_ms"] > 0
        assert len(get["request_id"]) == 16
        # The id the client sees correlates with the line: the upstream's when it sent one, else the proxy's.
        client_id = got["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
        assert client_id == (get["upstream_request_id"] or get["request_id"])
        if log_keys:
            assert get["key"] == "logs/personal-data-key"
        else:
            assert "key" not in get
            assert "personal-data-key" not in proc.log_text()
    finally:
        proc.stop()

"""Bucket keys (docs/FORMAT.md, "Bucket keys"; CLOUDTASER_S3PROXY_BUCKET_KEYS):
the single objects of one window share one wrapped intermediate key and
derive their own data keys from it with their key salts, so a proxy that
never saw them reads a whole window with ONE Transit decrypt. Attacked as
someone with the upstream's credentials: an object moved, its key salt
relabelled or removed, another window's wrapped key swapped in: each is
refused, and no plaintext byte is served. Checked independently by the
Python reader (tests/e2e/envelope.py) and recovered with the `decrypt` tool."""

from __future__ import annotations

import secrets
import subprocess
import time

import botocore.exceptions
import pytest

import envelope
import stack as stack_mod
from conftest import s3_client
from test_failures import scrape


@pytest.fixture(scope="module")
def windowed(stack, upstream):
    name = f"bk-{secrets.token_hex(3)}"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    bucket = f"e2e-bucket-keys-{secrets.token_hex(3)}"
    upstream.create_bucket(Bucket=bucket)
    settings = {"CLOUDTASER_S3PROXY_TRANSIT_KEY": name, "CLOUDTASER_S3PROXY_BUCKET_KEYS": "on",
                "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1"}
    proc, endpoint, health = stack.start_proxy(f"proxy-{name}", **settings)
    yield {"name": name, "bucket": bucket, "settings": settings, "client": s3_client(endpoint, "w", "w"),
           "health": health}
    proc.stop()


def decrypts(health: str, key: str) -> float:
    return scrape(health).get(
        ("cloudtaser_s3proxy_vault_calls_total", (("key", key), ("operation", "decrypt"), ("result", "ok"))), 0.0)


def meta_of(upstream, bucket: str, key: str) -> dict:
    return upstream.head_object(Bucket=bucket, Key=key)["Metadata"]


def test_a_window_shares_one_wrapped_key_and_a_cold_reader_unwraps_it_once(stack, windowed, upstream):
    client, bucket, name = windowed["client"], windowed["bucket"], windowed["name"]
    marker = b"BUCKET-KEY-PLAINTEXT-" + secrets.token_hex(6).encode()
    bodies = {f"w/{i}": marker + secrets.token_bytes(4096 + i) for i in range(50)}
    for key, body in bodies.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    metas = {key: meta_of(upstream, bucket, key) for key in bodies}
    assert len({m["cloudtaser-key"] for m in metas.values()}) == 1, "one window, one wrapped bucket key"
    assert len({m["cloudtaser-key-salt"] for m in metas.values()}) == 50, "each object its own key salt"
    bucket_key = envelope.unwrap(stack.vault, name, next(iter(metas.values()))["cloudtaser-key"])
    for key, body in bodies.items():
        stored = upstream.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert stored.startswith(b"CTS3") and marker not in stored
        # The independent reader: derive, check the MAC, decrypt.
        assert envelope.verify_v3(bucket_key, metas[key], bucket, key, stored) == body
    # A proxy that never saw them (bucket keys off: readers need no setting).
    proc, endpoint, health = stack.start_proxy("proxy-bk-reader", CLOUDTASER_S3PROXY_TRANSIT_KEY=name)
    try:
        reader = s3_client(endpoint, "r", "r")
        before = decrypts(health, name)
        for key, body in bodies.items():
            assert reader.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        assert decrypts(health, name) - before == 1, "50 cold reads of one window: one Transit decrypt"
    finally:
        proc.stop()


def test_a_window_ends_at_its_object_count_and_at_a_rotation(stack, upstream):
    name = f"bk-count-{secrets.token_hex(3)}"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    bucket = f"e2e-bk-count-{secrets.token_hex(3)}"
    upstream.create_bucket(Bucket=bucket)
    proc, endpoint, health = stack.start_proxy(
        f"proxy-{name}", CLOUDTASER_S3PROXY_TRANSIT_KEY=name, CLOUDTASER_S3PROXY_BUCKET_KEYS="on",
        CLOUDTASER_S3PROXY_BUCKET_KEY_MAX_OBJECTS="3", CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS="1")
    client = s3_client(endpoint, "w", "w")
    try:
        for i in range(7):
            client.put_object(Bucket=bucket, Key=f"c/{i}", Body=b"x" * 100)
        wrapped = [meta_of(upstream, bucket, f"c/{i}")["cloudtaser-key"] for i in range(7)]
        assert len(set(wrapped[0:3])) == 1 and len(set(wrapped[3:6])) == 1 and wrapped[2] != wrapped[3]
        assert len(set(wrapped)) == 3
        assert scrape(health)[("cloudtaser_s3proxy_bucket_keys_total", (("key", name),))] == 3
        stack.vault.ok("POST", f"transit/keys/{name}/rotate")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            client.put_object(Bucket=bucket, Key="c/after", Body=b"y")
            if meta_of(upstream, bucket, "c/after")["cloudtaser-key"].startswith("vault:v2:"):
                break
            time.sleep(0.2)
        assert meta_of(upstream, bucket, "c/after")["cloudtaser-key"].startswith("vault:v2:"), \
            "a rotation ends the window: new objects get a bucket key of the new version"
        for i in range(7):
            assert client.get_object(Bucket=bucket, Key=f"c/{i}")["Body"].read() == b"x" * 100
    finally:
        proc.stop()


def refused(client, bucket: str, key: str) -> dict:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return e.value.response


def test_moved_relabelled_and_swapped_envelopes_are_refused(stack, windowed, upstream):
    client, bucket, name = windowed["client"], windowed["bucket"], windowed["name"]
    client.put_object(Bucket=bucket, Key="atk/a", Body=b"A" * 1000)
    client.put_object(Bucket=bucket, Key="atk/b", Body=b"B" * 1000)
    a, b = meta_of(upstream, bucket, "atk/a"), meta_of(upstream, bucket, "atk/b")

    def rewrite(src: str, dst: str, **changes: str | None) -> None:
        meta = dict(meta_of(upstream, bucket, src))
        for field, value in changes.items():
            field = "cloudtaser-" + field.replace("_", "-")
            if value is None:
                meta.pop(field, None)
            else:
                meta[field] = value
        upstream.copy_object(Bucket=bucket, Key=dst, CopySource={"Bucket": bucket, "Key": src},
                             Metadata=meta, MetadataDirective="REPLACE")

    rewrite("atk/a", "atk/moved")  # the whole object, copied onto another name
    rewrite("atk/a", "atk/salt-of-b", key_salt=b["cloudtaser-key-salt"])
    rewrite("atk/a", "atk/no-salt", key_salt=None)
    # Another window's bucket key: a proxy restart begins a new window.
    proc, endpoint, _ = stack.start_proxy("proxy-bk-other-window", **windowed["settings"])
    try:
        s3_client(endpoint, "w", "w").put_object(Bucket=bucket, Key="atk/other-window", Body=b"C" * 1000)
    finally:
        proc.stop()
    other = meta_of(upstream, bucket, "atk/other-window")
    assert other["cloudtaser-key"] != a["cloudtaser-key"]
    rewrite("atk/a", "atk/a", key=other["cloudtaser-key"])
    for key in ("atk/moved", "atk/salt-of-b", "atk/no-salt", "atk/a"):
        resp = refused(client, bucket, key)
        assert resp["ResponseMetadata"]["HTTPStatusCode"] >= 500, (key, resp["Error"])
        with pytest.raises(botocore.exceptions.ClientError):
            client.head_object(Bucket=bucket, Key=key)
    # The untouched object still reads.
    assert client.get_object(Bucket=bucket, Key="atk/b")["Body"].read() == b"B" * 1000
    assert client.get_object(Bucket=bucket, Key="atk/other-window")["Body"].read() == b"C" * 1000
    # The independent reader agrees: the swapped key gives a MAC mismatch.
    with pytest.raises(envelope.FormatError):
        bucket_key = envelope.unwrap(stack.vault, name, other["cloudtaser-key"])
        envelope.verify_v3(bucket_key, meta_of(upstream, bucket, "atk/a"), bucket, "atk/a",
                           upstream.get_object(Bucket=bucket, Key="atk/a")["Body"].read())


def test_the_decrypt_tool_recovers_a_derived_object(stack, windowed, upstream, tmp_path):
    client, bucket, name = windowed["client"], windowed["bucket"], windowed["name"]
    body = secrets.token_bytes(70_000)
    client.put_object(Bucket=bucket, Key="tool/derived", Body=body)
    meta = meta_of(upstream, bucket, "tool/derived")
    src, out = tmp_path / "blob", tmp_path / "plain"
    src.write_bytes(upstream.get_object(Bucket=bucket, Key="tool/derived")["Body"].read())
    args = [stack_mod.proxy_binary(), "decrypt", "--in", str(src), "--out", str(out),
            "--wrapped-key", meta["cloudtaser-key"], "--key-name", name, "--salt", meta["cloudtaser-salt"],
            "--size", meta["cloudtaser-size"], "--mac", meta["cloudtaser-mac"], "--object-key", "tool/derived"]
    env = stack.proxy_env(CLOUDTASER_S3PROXY_TRANSIT_KEY=name)
    without = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert without.returncode != 0 and not out.exists(), "without its key salt the object does not verify"
    ok = subprocess.run(args + ["--key-salt", meta["cloudtaser-key-salt"]], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert out.read_bytes() == body


def test_concurrent_cold_reads_of_different_objects_share_decrypt_calls(stack, upstream):
    """Coalesced decrypts (a key per object): cold reads that arrive while a
    Transit `decrypt` is in flight go as one `batch_input` call; a tampered
    wrapped key among them fails only its own read."""
    import concurrent.futures  # noqa: PLC0415

    name = f"co-{secrets.token_hex(3)}"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    bucket = f"e2e-coalesce-{secrets.token_hex(3)}"
    upstream.create_bucket(Bucket=bucket)
    writer, endpoint, _ = stack.start_proxy(f"proxy-{name}-w", CLOUDTASER_S3PROXY_TRANSIT_KEY=name)
    bodies = {f"co/{i}": secrets.token_bytes(1000 + i) for i in range(96)}
    try:
        client = s3_client(endpoint, "w", "w")
        for key, body in bodies.items():
            client.put_object(Bucket=bucket, Key=key, Body=body)
    finally:
        writer.stop()
    # One object's wrapped key replaced by garbage of the right shape.
    meta = dict(meta_of(upstream, bucket, "co/7"))
    meta["cloudtaser-key"] = "vault:v1:" + "A" * 60
    upstream.copy_object(Bucket=bucket, Key="co/7", CopySource={"Bucket": bucket, "Key": "co/7"}, Metadata=meta,
                         MetadataDirective="REPLACE")
    reader, endpoint, health = stack.start_proxy(f"proxy-{name}-r", CLOUDTASER_S3PROXY_TRANSIT_KEY=name)
    try:
        client = s3_client(endpoint, "r", "r", max_pool_connections=32)

        def read(key: str) -> bytes | str:
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except botocore.exceptions.ClientError as e:
                return e.response["Error"]["Code"]

        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            got = dict(zip(bodies, pool.map(read, bodies)))
        assert got.pop("co/7") == "KMS.AccessDeniedException"
        assert got == {k: v for k, v in bodies.items() if k != "co/7"}
        m = scrape(health)
        calls = m.get(("cloudtaser_s3proxy_vault_calls_total", (("key", name), ("operation", "decrypt"),
                                                                ("result", "ok"))), 0.0)
        batched = m.get(("cloudtaser_s3proxy_vault_decrypt_batch_size_count", (("key", name),)), 0.0)
        assert batched >= 1, "no cold read waited for a batch"
        assert calls < 95, f"{calls} decrypt calls for 95 concurrent cold reads"
    finally:
        reader.stop()

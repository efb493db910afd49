"""The documented key rotation (docs/OPERATIONS.md, "Rotating the Transit
key"), run end to end against real OpenBao and s3s-fs with writes going on
throughout: rotate, wait for the proxies to see it, `rewrap` until it
reports nothing left, raise `min_decryption_version`, restart the proxy.
Every acknowledged object must still read.

What this attacks: the key pool handing out keys wrapped under the old
version after a rotation (for up to its maximum age), and `rewrap` saying
"nothing left" while open uploads or late writes still use that version.
Either way an object gets 200 on its PUT and can never be decrypted once
`min_decryption_version` passes its version."""

from __future__ import annotations

import secrets
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import s3_client
from test_core import MiB, body_of
from test_failures import scrape
from test_key_lifecycle import admin, wrapped

PART = 5 * MiB

# Garage, moto and s3s-fs do not refuse a CopyObject whose If-Match fails
# (docs/OPERATIONS.md, "The tools and concurrent writers"), so rewrap runs
# only when told no writer touches the objects it rewrites. The writers here
# add new keys; none rewrites one rewrap copies.
QUIESCED = ("--assume-quiesced",)


class Writer(threading.Thread):
    """PUTs small objects one after another until stopped; remembers the
    ones the proxy acknowledged (those must never be lost)."""

    def __init__(self, client, bucket: str, prefix: str):
        super().__init__(daemon=True)
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.acked: dict[str, bytes] = {}
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            key, body = f"{self.prefix}{i:06d}", body_of(100 + i % 900, i)
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
                self.acked[key] = body
            except Exception as e:  # noqa: BLE001 - counted, and the test fails on any
                self.errors.append(f"{key}: {e}")
            i += 1
            time.sleep(0.01)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def rotations_seen(health: str, key: str) -> float:
    return scrape(health).get(("cloudtaser_s3proxy_key_rotations_total", (("key", key),)), 0.0)


@pytest.fixture()
def pooled(stack, request):
    """A proxy with a key pool (the default) on a Transit key of its own,
    checking the key's version every second."""
    name = f"rot-p-{secrets.token_hex(3)}"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    settings = {"CLOUDTASER_S3PROXY_TRANSIT_KEY": name, "CLOUDTASER_S3PROXY_KEY_POOL_SIZE": "64",
                "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1"}
    proc, endpoint, health = stack.start_proxy(f"proxy-{name}", **settings)
    yield name, settings, proc, endpoint, health
    proc.stop()


@pytest.fixture()
def on_garage(stack, garage_stack, request):
    """The same on Garage, which lists open multipart uploads (s3s-fs does
    not, and rewrap then says it cannot know)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import garage  # noqa: PLC0415 - bench/garage.py

    name = f"rot-g-{secrets.token_hex(3)}"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    settings = {"CLOUDTASER_S3PROXY_TRANSIT_KEY": name, "CLOUDTASER_S3PROXY_KEY_POOL_SIZE": "64",
                "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1", "CLOUDTASER_S3PROXY_S3_ENDPOINT": garage_stack.endpoint,
                "AWS_ACCESS_KEY_ID": garage.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": garage.SECRET_KEY}
    bucket = f"e2e-rotation-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    proc, endpoint, health = stack.start_proxy(f"proxy-{name}", **settings)
    yield name, settings, proc, endpoint, health, garage_stack.direct, bucket
    proc.stop()


def test_the_documented_rotation_loses_no_acknowledged_object(stack, on_garage):
    name, settings, proc, endpoint, health, upstream, bucket = on_garage
    client = s3_client(endpoint, "w", "w")
    tool_env = {k: v for k, v in settings.items() if k != "CLOUDTASER_S3PROXY_TRANSIT_KEY"}

    # An upload begun before the rotation: its key is the old version's.
    big = body_of(PART + 77, 5)
    up = client.create_multipart_upload(Bucket=bucket, Key="rot/open-upload")["UploadId"]
    e1 = client.upload_part(Bucket=bucket, Key="rot/open-upload", UploadId=up, PartNumber=1, Body=big[:PART])["ETag"]

    writer = Writer(client, bucket, "rot/w-")
    writer.start()
    try:
        time.sleep(1)
        assert rotations_seen(health, name) == 0
        stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
        rotated = time.monotonic()
        # The proxy sees the rotation within its check interval, and wipes
        # the pooled keys of the old version at once.
        while rotations_seen(health, name) < 1:
            assert time.monotonic() - rotated < 10, "the proxy never saw the rotation"
            time.sleep(0.1)
        seen_after = time.monotonic() - rotated
        assert seen_after < 3, f"rotation seen after {seen_after:.1f}s with a 1s check"
        metrics = scrape(health)
        assert metrics[("cloudtaser_s3proxy_key_version", (("key", name),))] == 2
        assert metrics[("cloudtaser_s3proxy_key_pool_retired_total", (("key", name),))] > 0, "old pooled keys were wiped"

        # The dry run counts the open upload as left: it will complete under v1.
        dry = admin(stack, name, "rewrap", "--bucket", bucket, "--prefix", "rot/", "--dry-run", "--quiet", env=tool_env)
        assert "open upload: rot/open-upload" in dry.stdout, dry.stdout
        assert "left under older key versions: 0" not in dry.stdout, dry.stdout
        # A real run rewraps what is there and refuses to call itself done.
        run = admin(stack, name, "rewrap", "--bucket", bucket, "--prefix", "rot/", "--quiet", *QUIESCED, env=tool_env,
                    check=False)
        assert run.returncode != 0 and "open multipart upload(s) may be written under an older key version" in run.stderr, run
        # The workload finishes its upload (under v1); rewrap then takes it too.
        e2 = client.upload_part(Bucket=bucket, Key="rot/open-upload", UploadId=up, PartNumber=2, Body=big[PART:])["ETag"]
        client.complete_multipart_upload(Bucket=bucket, Key="rot/open-upload", UploadId=up,
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
        assert wrapped(upstream, bucket, "rot/open-upload").startswith("vault:v1:")
        final = admin(stack, name, "rewrap", "--bucket", bucket, "--prefix", "rot/", "--quiet", *QUIESCED, env=tool_env)
        assert "left under older key versions: 0" in final.stdout, final.stdout
        time.sleep(1)  # more writes after the last rewrap: they must be v2 by themselves
    finally:
        writer.stop()
    assert not writer.errors, writer.errors[:5]
    assert len(writer.acked) > 50, len(writer.acked)

    # Everything at rest is under v2: nothing written after the rotation was
    # seen got a v1 key, and rewrap moved everything before it.
    keys = [*writer.acked, "rot/open-upload"]
    old = [k for k in keys if not wrapped(upstream, bucket, k).startswith("vault:v2:")]
    assert not old, f"{len(old)} objects still under v1 after the procedure: {old[:5]}"

    # Retire v1 and restart the proxy (an empty key cache): every
    # acknowledged object still reads.
    stack.vault.ok("POST", f"transit/keys/{name}/config", {"min_decryption_version": 2})
    proc.stop()
    proc2, endpoint2, _ = stack.start_proxy(f"proxy-{name}-restarted", **settings)
    try:
        fresh = s3_client(endpoint2, "w", "w")
        for key, body in writer.acked.items():
            assert fresh.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
        assert fresh.get_object(Bucket=bucket, Key="rot/open-upload")["Body"].read() == big
    finally:
        proc2.stop()


def test_a_pooled_key_of_the_old_version_is_never_handed_out_after_the_check(stack, pooled, upstream, bucket):
    """Without writes to drain it, the pool holds 64 keys of v1 for up to
    its maximum age (300 s); after one check interval none is used."""
    name, _settings, _proc, endpoint, health = pooled
    client = s3_client(endpoint, "w", "w")
    client.put_object(Bucket=bucket, Key="pool/before", Body=b"v1")
    assert wrapped(upstream, bucket, "pool/before").startswith("vault:v1:")
    stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
    time.sleep(3)  # three check intervals
    old = []
    for i in range(80):  # more than the pool held
        client.put_object(Bucket=bucket, Key=f"pool/after-{i}", Body=b"v2")
        if not wrapped(upstream, bucket, f"pool/after-{i}").startswith("vault:v2:"):
            old.append(i)
    assert not old, f"{len(old)} of 80 writes after the rotation got a v1 key"
    assert rotations_seen(health, name) == 1


def test_rewrap_keeps_the_tags_of_multipart_objects_on_moto(stack, moto_stack):
    """Found by the review: rewrap copies a multipart object part by part,
    and CreateMultipartUpload copies no tags, so every multipart object
    lost its tags. moto keeps tags; s3s-fs has none."""
    name = f"rw-tags-{secrets.token_hex(3)}"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    env = {"CLOUDTASER_S3PROXY_S3_ENDPOINT": moto_stack.endpoint, "CLOUDTASER_S3PROXY_TRANSIT_KEY": name,
           "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1"}
    proc, endpoint, _ = stack.start_proxy(f"proxy-{name}", **env)
    try:
        c, d = s3_client(endpoint, "w", "w"), moto_stack.direct
        bucket = name
        d.create_bucket(Bucket=bucket)
        big = body_of(PART + 99, 9)
        up = c.create_multipart_upload(Bucket=bucket, Key="multi", Tagging="team=a&tier=gold")["UploadId"]
        parts = [{"PartNumber": n, "ETag": c.upload_part(Bucket=bucket, Key="multi", UploadId=up, PartNumber=n,
                                                          Body=chunk)["ETag"]}
                 for n, chunk in ((1, big[:PART]), (2, big[PART:]))]
        c.complete_multipart_upload(Bucket=bucket, Key="multi", UploadId=up, MultipartUpload={"Parts": parts})
        c.put_object(Bucket=bucket, Key="single", Body=b"s", Tagging="team=b")
        tags = lambda key: sorted((t["Key"], t["Value"]) for t in d.get_object_tagging(Bucket=bucket, Key=key)["TagSet"])  # noqa: E731
        assert tags("multi") == [("team", "a"), ("tier", "gold")]
        stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
        tool_env = {k: v for k, v in env.items() if k != "CLOUDTASER_S3PROXY_TRANSIT_KEY"}
        out = admin(stack, name, "rewrap", "--bucket", bucket, "--quiet", *QUIESCED, env=tool_env)
        assert "rewrapped: 2," in out.stdout, out.stdout
        assert wrapped(d, bucket, "multi").startswith("vault:v2:")
        assert tags("multi") == [("team", "a"), ("tier", "gold")], "the multipart object's tags were carried"
        assert tags("single") == [("team", "b")]
        assert c.get_object(Bucket=bucket, Key="multi")["Body"].read() == big
    finally:
        proc.stop()


def test_rewrap_leaves_objects_naming_a_transit_key_the_proxy_may_not_use(stack, upstream, bucket):
    """Someone with the upstream's credentials relabels an object's envelope
    to name another Transit key (one the admin token may reach). rewrap
    refuses it, as the proxy refuses to read it, and calls Vault for nothing."""
    name = f"rw-own-{secrets.token_hex(3)}"
    foreign = f"rw-foreign-{secrets.token_hex(3)}"
    for k in (name, foreign):
        stack.vault.ok("POST", f"transit/keys/{k}", {})
    proc, endpoint, _ = stack.start_proxy(f"proxy-{name}", CLOUDTASER_S3PROXY_TRANSIT_KEY=name)
    try:
        s3_client(endpoint, "w", "w").put_object(Bucket=bucket, Key="rwforeign/x", Body=b"mine")
        head = upstream.head_object(Bucket=bucket, Key="rwforeign/x")
        meta = {**head["Metadata"], "cloudtaser-transit-key": foreign}
        upstream.copy_object(Bucket=bucket, Key="rwforeign/x", CopySource={"Bucket": bucket, "Key": "rwforeign/x"},
                             Metadata=meta, MetadataDirective="REPLACE")
        before = upstream.head_object(Bucket=bucket, Key="rwforeign/x")["Metadata"]
        out = admin(stack, name, "rewrap", "--bucket", bucket, "--prefix", "rwforeign/", "--quiet", *QUIESCED,
                    check=False)
        assert out.returncode != 0
        assert "outside CLOUDTASER_S3PROXY_TRANSIT_KEY, _KEY_RULES" in out.stdout + out.stderr, out
        assert upstream.head_object(Bucket=bucket, Key="rwforeign/x")["Metadata"] == before, "not touched"
    finally:
        proc.stop()


def slow_put(endpoint: str, path: str, body: bytes, pause: float, chunks: int):
    """A PUT whose body arrives in `chunks` pieces `pause` seconds apart."""
    import http.client  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    u = urllib.parse.urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    step = -(-len(body) // chunks)

    def pieces():
        for i in range(0, len(body), step):
            yield body[i:i + step]
            time.sleep(pause)

    conn.request("PUT", path, body=pieces(), headers={"Content-Length": str(len(body))})
    r = conn.getresponse()
    out = (r.status, r.read())
    conn.close()
    return out


def test_a_put_that_streams_across_a_rotation_is_refused_not_stored_old(stack, pooled, upstream, bucket):
    """Found by the independent attack: a PUT that took its key before the
    rotation and finished after rewrap's walk was stored under v1, and lost
    once min_decryption_version rose. Its end now checks the key is still
    current: 503 (SDKs retry), nothing stored."""
    name, _settings, _proc, endpoint, health = pooled
    body = body_of(64 * 1024, 31)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=slow_put(endpoint, f"/{bucket}/slow/put", body, 0.4, 10)))
    t.start()
    time.sleep(0.8)
    stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
    t.join(60)
    status, answer = result["r"]
    assert status == 503 and b"rotated while this upload was in progress" in answer, (status, answer[:300])
    with pytest.raises(Exception):
        upstream.head_object(Bucket=bucket, Key="slow/put")
    client = s3_client(endpoint, "w", "w")
    client.put_object(Bucket=bucket, Key="slow/put", Body=body)
    assert wrapped(upstream, bucket, "slow/put").startswith("vault:v2:")


def rewrap_in_background(stack, name: str, bucket: str, prefix: str, relay):
    """Starts `rewrap` on `prefix` with the relay as its upstream; returns a
    function that waits for it and gives its completed process."""
    tool_env = {"CLOUDTASER_S3PROXY_S3_ENDPOINT": relay.endpoint, "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1"}
    out = {}
    t = threading.Thread(target=lambda: out.update(r=admin(
        stack, name, "rewrap", "--bucket", bucket, "--prefix", prefix, "--quiet", *QUIESCED, env=tool_env, check=False)))
    t.start()

    def wait():
        t.join(120)
        return out["r"]

    return wait


def test_rewrap_takes_objects_copied_behind_its_walk(stack, upstream, bucket):
    """Found by the independent attack: a workload's CopyObject keeps its
    source's envelope, so a copy made during the walk, to a key the walk had
    passed, stayed under v1 while rewrap said 0. rewrap now takes, pass
    after pass, what changed since the walk began."""
    from hostile_upstream import HostileUpstream  # noqa: PLC0415

    name = f"rw-copy-{secrets.token_hex(3)}"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    settings = {"CLOUDTASER_S3PROXY_TRANSIT_KEY": name, "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1"}
    proc, endpoint, _ = stack.start_proxy(f"proxy-{name}", **settings)
    relay = HostileUpstream(stack.s3_endpoint)
    try:
        c = s3_client(endpoint, "w", "w")
        c.put_object(Bucket=bucket, Key="rwcopy/a-first", Body=b"first")
        c.put_object(Bucket=bucket, Key="rwcopy/tmp-z", Body=b"the job's output")
        stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
        time.sleep(2.5)
        held = relay.hold(lambda m, p, h: m == "PUT" and p.split("?")[0].endswith("/rwcopy/a-first")
                          and "x-amz-copy-source" in h)
        run = rewrap_in_background(stack, name, bucket, "rwcopy/", relay)
        assert held.arrived.wait(60), "rewrap never copied a-first"
        # Behind the walk's listing: a copy of the not-yet-rewrapped object.
        c.copy_object(Bucket=bucket, Key="rwcopy/b-final", CopySource={"Bucket": bucket, "Key": "rwcopy/tmp-z"})
        # The copy took the source's v1 envelope (the listing page is already read).
        assert wrapped(upstream, bucket, "rwcopy/b-final").startswith("vault:v1:")
        held.release()
        r = run()
        assert r.returncode == 0, r.stdout + r.stderr
        assert "left under older key versions: 0" in r.stdout, r.stdout
        for k in ("rwcopy/a-first", "rwcopy/tmp-z", "rwcopy/b-final"):
            assert wrapped(upstream, bucket, k).startswith("vault:v2:"), k
    finally:
        relay.close()
        proc.stop()


def test_a_rotation_during_rewrap_is_reported_not_counted_done(stack, upstream, bucket):
    """Found by the independent attack: a second rotation while rewrap ran
    (auto_rotate_period) left everything a version behind while it said 0."""
    from hostile_upstream import HostileUpstream  # noqa: PLC0415

    name = f"rw-rot2-{secrets.token_hex(3)}"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    proc, endpoint, _ = stack.start_proxy(f"proxy-{name}", CLOUDTASER_S3PROXY_TRANSIT_KEY=name)
    relay = HostileUpstream(stack.s3_endpoint)
    try:
        s3_client(endpoint, "w", "w").put_object(Bucket=bucket, Key="rwrot2/x", Body=b"x")
        stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
        time.sleep(2.5)
        held = relay.hold(lambda m, p, h: m == "PUT" and "x-amz-copy-source" in h)
        run = rewrap_in_background(stack, name, bucket, "rwrot2/", relay)
        assert held.arrived.wait(60)
        stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
        held.release()
        r = run()
        assert r.returncode != 0, r.stdout
        assert "the key was rotated during this run (v2 to v3)" in r.stdout + r.stderr, r.stdout + r.stderr
        assert "left under older key versions: 0" not in r.stdout
    finally:
        relay.close()
        proc.stop()

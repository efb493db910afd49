"""Keys per tenant (docs/OPERATIONS.md, "Keys per tenant"), on real OpenBao
with a proxy token that may use exactly its keys (no `create`, no root):
two tenants' prefixes write under two Transit keys on two mounts (checked at
rest, and in Vault: each wrapped key opens under its own key only); a
workload naming a key id off the allow-list is refused before any Vault or
upstream call; each routed key's pool refills on its own; `rewrap --to-key`
and a rule change move a prefix; erasing one tenant's key makes exactly its
objects unreadable within the stated bound, and nothing new is written
under it; Vault's audit log names the request and the reason."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import time
import boto3.s3.transfer
import botocore.exceptions
import pytest

import stack as stack_mod
from conftest import s3_client
from test_failures import scrape

EU_MOUNT = "transit-eu"


def policy_token(stack, name: str, keys: list[tuple[str, str]]) -> str:
    """A token whose policy allows the proxy's three Transit paths on each
    (mount, key), as docs/OPERATIONS.md says: no `create`, so Transit never
    recreates a deleted key on `encrypt`."""
    rules = "\n".join(
        f'path "{mount}/{op}/{key}" {{ capabilities = ["update"] }}'
        for mount, key in keys for op in ("encrypt", "decrypt", "datakey/plaintext", "rewrap")
    )
    rules += '\npath "auth/token/lookup-self" { capabilities = ["read"] }'
    rules += "\n" + "\n".join(f'path "{mount}/keys/{key}" {{ capabilities = ["read"] }}' for mount, key in keys)
    stack.vault.ok("PUT", f"sys/policies/acl/{name}", {"policy": rules})
    out = stack.vault.ok("POST", "auth/token/create", {"policies": [name], "ttl": "2h"})
    return out["auth"]["client_token"]


@pytest.fixture(scope="module")
def tenants(stack, upstream):
    """Keys tenant-a (default mount), tenant-b (on a second mount) and the
    default, a bucket, and a proxy routing `a/` and `b/` to the tenants."""
    status, _ = stack.vault.api("GET", f"sys/mounts/{EU_MOUNT}")
    if status != 200:
        stack.vault.ok("POST", f"sys/mounts/{EU_MOUNT}", {"type": "transit"})
    tag = secrets.token_hex(3)
    names = {"a": f"tenant-a-{tag}", "b": f"tenant-b-{tag}", "d": f"default-{tag}"}
    stack.vault.ok("POST", f"transit/keys/{names['a']}", {})
    stack.vault.ok("POST", f"{EU_MOUNT}/keys/{names['b']}", {})
    stack.vault.ok("POST", f"transit/keys/{names['d']}", {})
    token = policy_token(stack, f"tenants-{tag}",
                         [("transit", names["a"]), (EU_MOUNT, names["b"]), ("transit", names["d"])])
    bucket = f"e2e-tenants-{tag}"
    upstream.create_bucket(Bucket=bucket)
    settings = {
        "VAULT_TOKEN": token,
        "CLOUDTASER_S3PROXY_TRANSIT_KEY": names["d"],
        "CLOUDTASER_S3PROXY_KEY_RULES": f"{bucket}/a/={names['a']}:pool=4,{bucket}/b/={EU_MOUNT}/{names['b']}",
        "CLOUDTASER_S3PROXY_KMS_KEY_IDS": f"alias/tenant-a={names['a']}",
        "CLOUDTASER_S3PROXY_KEY_POOL_SIZE": "8",
        # No version check while these tests run: each adds a key to a pool.
        "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "3600",
    }
    proc, endpoint, health = stack.start_proxy(f"proxy-tenants-{tag}", **settings)
    yield {"names": names, "bucket": bucket, "settings": settings, "proc": proc, "health": health,
           "client": s3_client(endpoint, "w", "w"), "endpoint": endpoint, "token": token}
    proc.stop()


def stored_key(upstream, bucket: str, key: str) -> tuple[str, str]:
    meta = upstream.head_object(Bucket=bucket, Key=key)["Metadata"]
    return meta["cloudtaser-transit-key"], meta["cloudtaser-key"]


def opens_under(stack, mount: str, key: str, wrapped: str) -> bool:
    status, _ = stack.vault.api("POST", f"{mount}/decrypt/{key}", {"ciphertext": wrapped})
    return status == 200


def tool(stack, settings: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = stack.proxy_env(**settings)
    r = subprocess.run([stack_mod.proxy_binary(), *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def counters(health: str, name: str) -> float:
    return sum(v for (n, _), v in scrape(health).items() if n == name)


def test_two_tenants_prefixes_write_under_their_own_keys_at_rest(stack, tenants, upstream):
    client, bucket, names = tenants["client"], tenants["bucket"], tenants["names"]
    marker = b"TENANT-PLAINTEXT-" + secrets.token_hex(8).encode()
    client.put_object(Bucket=bucket, Key="a/one", Body=marker * 100)
    client.put_object(Bucket=bucket, Key="b/one", Body=marker * 100)
    client.put_object(Bucket=bucket, Key="other/one", Body=marker * 100)
    up = client.create_multipart_upload(Bucket=bucket, Key="b/multi")["UploadId"]
    etag = client.upload_part(Bucket=bucket, Key="b/multi", UploadId=up, PartNumber=1, Body=marker * 1000)["ETag"]
    client.complete_multipart_upload(Bucket=bucket, Key="b/multi", UploadId=up,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    # Copied into the other tenant's prefix: the copy is tenant B's.
    client.copy_object(Bucket=bucket, Key="b/copied-from-a", CopySource={"Bucket": bucket, "Key": "a/one"})
    expected = {"a/one": ("transit", names["a"]), "b/one": (EU_MOUNT, names["b"]),
                "other/one": ("transit", names["d"]), "b/multi": (EU_MOUNT, names["b"]),
                "b/copied-from-a": (EU_MOUNT, names["b"])}
    for key, (mount, name) in expected.items():
        transit_key, wrapped = stored_key(upstream, bucket, key)
        assert transit_key == name, (key, transit_key)
        # In Vault: the wrapped key opens under its own key, and under no other tenant's.
        assert opens_under(stack, mount, name, wrapped), key
        other = names["a"] if name != names["a"] else names["d"]
        assert not opens_under(stack, "transit", other, wrapped), (key, other)
        body = upstream.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body.startswith(b"CTS3") and marker not in body, key
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read().startswith(marker), key
    # The answer names the key the object is under.
    head = client.head_object(Bucket=bucket, Key="b/one")
    assert head["SSEKMSKeyId"] == f"vault-transit:{names['b']}"


def test_a_key_id_off_the_allow_list_is_refused_before_vault_and_the_upstream(stack, tenants, upstream):
    bucket, names = tenants["bucket"], tenants["names"]
    # No pool and no version check: any Vault call this proxy makes is the request's own.
    proc, endpoint, health = stack.start_proxy(
        "proxy-tenants-ids", **{**tenants["settings"], "CLOUDTASER_S3PROXY_KEY_POOL_SIZE": "0"})
    client = s3_client(endpoint, "w", "w")
    try:
        refused_before_any_call(stack, client, bucket, names, health, upstream)
    finally:
        proc.stop()


def refused_before_any_call(stack, client, bucket, names, health, upstream):
    before_vault = counters(health, "cloudtaser_s3proxy_vault_calls_total")
    before_upstream = counters(health, "cloudtaser_s3proxy_upstream_requests_total")
    for call in (
        lambda: client.put_object(Bucket=bucket, Key="other/sel-bad", Body=b"x", ServerSideEncryption="aws:kms",
                                  SSEKMSKeyId="alias/tenant-b"),
        lambda: client.put_object(Bucket=bucket, Key="other/sel-bad", Body=b"x", ServerSideEncryption="aws:kms",
                                  SSEKMSKeyId=f"{EU_MOUNT}/{names['b']}"),
        lambda: client.create_multipart_upload(Bucket=bucket, Key="other/sel-bad", ServerSideEncryption="aws:kms",
                                               SSEKMSKeyId="transit/keys/x"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert e.value.response["Error"]["Code"] == "KMS.AccessDeniedException"
    assert counters(health, "cloudtaser_s3proxy_vault_calls_total") == before_vault, "a refused id reached Vault"
    assert counters(health, "cloudtaser_s3proxy_upstream_requests_total") == before_upstream
    with pytest.raises(botocore.exceptions.ClientError):
        upstream.head_object(Bucket=bucket, Key="other/sel-bad")
    # An id on the list selects its key, whatever the prefix's rule says,
    # and the SSE-KMS fields are the proxy's: the provider never sees them.
    client.put_object(Bucket=bucket, Key="other/sel-good", Body=b"selected", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="alias/tenant-a")
    assert stored_key(upstream, bucket, "other/sel-good")[0] == names["a"]
    assert "ServerSideEncryption" not in upstream.head_object(Bucket=bucket, Key="other/sel-good")
    assert client.get_object(Bucket=bucket, Key="other/sel-good")["Body"].read() == b"selected"


def test_each_routed_key_has_its_own_pool(stack, tenants):
    bucket, names = tenants["bucket"], tenants["names"]
    proc, endpoint, health = stack.start_proxy("proxy-tenants-pools", **tenants["settings"])
    client = s3_client(endpoint, "w", "w")

    def pool(key: str) -> float:
        return scrape(health)[("cloudtaser_s3proxy_key_pool_keys", (("key", key),))]

    def refills(key: str) -> float:
        return scrape(health).get(("cloudtaser_s3proxy_key_pool_refills_total", (("key", key), ("result", "ok"))), 0)

    try:
        stack_mod.wait_for(lambda: pool(names["a"]) == 4 and pool(names["b"]) == 8 and pool(names["d"]) == 8,
                           "each routed key's pool filled to its size (a: :pool=4)")
        before = {k: refills(v) for k, v in names.items()}
        # Three of A's four keys: below its low water (2), so A refills, alone.
        for i in range(3):
            client.put_object(Bucket=bucket, Key=f"a/pool-{i}", Body=b"p")
        stack_mod.wait_for(lambda: pool(names["a"]) == 4, "tenant A's pool refilled")
        assert refills(names["a"]) > before["a"], "tenant A's pool refilled itself"
        assert refills(names["b"]) == before["b"] and refills(names["d"]) == before["d"], "others untouched"
        assert pool(names["b"]) == 8 and pool(names["d"]) == 8
        assert scrape(health)[("cloudtaser_s3proxy_key_pool_misses_total", (("key", names["a"]),))] == 0
    finally:
        proc.stop()


def test_rewrap_to_key_and_a_rule_change_move_a_prefix(stack, tenants, upstream):
    client, bucket, names, settings = tenants["client"], tenants["bucket"], tenants["names"], tenants["settings"]
    body = secrets.token_bytes(6 << 20)
    client.put_object(Bucket=bucket, Key="move/single", Body=b"single object")
    client.upload_fileobj(io.BytesIO(body), bucket, "move/multi",
                          Config=boto3.s3.transfer.TransferConfig(multipart_threshold=5 << 20,
                                                                  multipart_chunksize=5 << 20))
    assert stored_key(upstream, bucket, "move/multi")[0] == names["d"]
    tool_env = {**settings, "VAULT_TOKEN": stack_mod.VAULT_TOKEN, "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1"}
    dry = tool(stack, tool_env, "rewrap", "--bucket", bucket, "--prefix", "move/", "--to-key", names["a"],
               "--dry-run", "--quiet")
    assert "would move to another Transit key: 2" in dry.stdout, dry.stdout
    assert stored_key(upstream, bucket, "move/single")[0] == names["d"], "a dry run wrote"
    run = tool(stack, tool_env, "rewrap", "--bucket", bucket, "--prefix", "move/", "--to-key", names["a"],
               "--quiet", "--assume-quiesced")
    assert "moved to another Transit key: 2" in run.stdout, run.stdout
    for key in ("move/single", "move/multi"):
        transit_key, wrapped = stored_key(upstream, bucket, key)
        assert transit_key == names["a"] and opens_under(stack, "transit", names["a"], wrapped), key
    assert client.get_object(Bucket=bucket, Key="move/multi")["Body"].read() == body
    assert client.get_object(Bucket=bucket, Key="move/single")["Body"].read() == b"single object"
    # A rule change, then rewrap without --to-key: the prefix follows its rule.
    ruled = {**tool_env, "CLOUDTASER_S3PROXY_KEY_RULES":
             settings["CLOUDTASER_S3PROXY_KEY_RULES"] + f",{bucket}/move/={EU_MOUNT}/{names['b']}"}
    tool(stack, ruled, "rewrap", "--bucket", bucket, "--prefix", "move/", "--quiet", "--assume-quiesced")
    for key in ("move/single", "move/multi"):
        assert stored_key(upstream, bucket, key)[0] == names["b"], key
    assert client.get_object(Bucket=bucket, Key="move/multi")["Body"].read() == body
    # Moved again with the rules unchanged: nothing to do.
    again = tool(stack, ruled, "rewrap", "--bucket", bucket, "--prefix", "move/", "--quiet", "--assume-quiesced")
    assert "rewrapped: 0, already current: 2" in again.stdout, again.stdout


def test_vault_audit_log_names_the_request_and_the_reason(stack, upstream, tmp_path):
    """docs/OPERATIONS.md, "Finding the Vault calls of one object": an
    OpenBao with a file audit device and the two headers audited unhashed;
    a cold read's `decrypt` entry carries the proxy's request id (also in
    its request log and the response) and the reason `read`; the pool's
    batches carry `pool`."""
    audit_log = tmp_path / "audit.log"
    config = f'audit "file" "cloudtaser" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n'
    vault = stack_mod.start_vault(tmp_path, config=config)
    name = "audited"
    try:
        vault.ok("POST", f"transit/keys/{name}", {})
        for header in ("x-cloudtaser-request-id", "x-cloudtaser-reason"):
            vault.ok("POST", f"sys/config/auditing/request-headers/{header}", {"hmac": False})
        bucket = f"e2e-audit-{secrets.token_hex(3)}"
        upstream.create_bucket(Bucket=bucket)
        settings = {"VAULT_ADDR": vault.addr, "CLOUDTASER_S3PROXY_TRANSIT_KEY": name}
        writer, endpoint, _ = stack.start_proxy("proxy-audit-writer", **settings)
        try:
            s3_client(endpoint, "w", "w").put_object(Bucket=bucket, Key="audited", Body=b"audited")
        finally:
            writer.stop()
        # A proxy that never saw the key: its read unwraps through Vault.
        reader, endpoint, _ = stack.start_proxy("proxy-audit-reader", **settings)
        try:
            got = s3_client(endpoint, "r", "r").get_object(Bucket=bucket, Key="audited")
            request_id = got["ResponseMetadata"]["HTTPHeaders"]["x-cloudtaser-request-id"]
            assert got["Body"].read() == b"audited"
            log = reader.log_text()
        finally:
            reader.stop()
        assert f'"request_id":"{request_id}"' in log, "the proxy's request log carries the id"

        def entries() -> list[dict]:
            lines = audit_log.read_text().splitlines() if audit_log.exists() else []
            return [e for e in map(json.loads, filter(str.strip, lines)) if e.get("type") == "request"]

        def unwraps() -> list[dict]:
            return [e for e in entries() if e["request"].get("path") == f"transit/decrypt/{name}"
                    and e["request"].get("headers", {}).get("x-cloudtaser-request-id") == [request_id]]

        stack_mod.wait_for(lambda: unwraps(), "Vault's audit entry for the read's unwrap", timeout=10)
        assert unwraps()[0]["request"]["headers"]["x-cloudtaser-reason"] == ["read"]
        pool = [e for e in entries() if e["request"].get("path") == f"transit/encrypt/{name}"]
        assert pool and all(e["request"]["headers"]["x-cloudtaser-reason"] == ["pool"] for e in pool)
    finally:
        vault.process.stop()


def test_erasing_a_tenant_key_makes_exactly_its_objects_unreadable_within_the_bound(stack, upstream):
    """Crypto-shredding (docs/OPERATIONS.md): delete tenant A's Transit key
    while a proxy holds its data keys in cache and pool. Within
    CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS (1 s here) plus two Vault
    round trips every read of A's objects fails with a constant message
    that says the key is gone, writes under A store nothing, and tenant B
    is untouched. This test runs last in the module: it destroys a key."""
    tag = secrets.token_hex(3)
    a, b = f"erase-a-{tag}", f"erase-b-{tag}"
    for name in (a, b):
        stack.vault.ok("POST", f"transit/keys/{name}", {})
    token = policy_token(stack, f"erase-{tag}", [("transit", a), ("transit", b)])
    bucket = f"e2e-erase-{tag}"
    upstream.create_bucket(Bucket=bucket)
    settings = {"VAULT_TOKEN": token, "CLOUDTASER_S3PROXY_TRANSIT_KEY": b,
                "CLOUDTASER_S3PROXY_KEY_RULES": f"{bucket}/a/={a}",
                "CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS": "1", "CLOUDTASER_S3PROXY_KEY_POOL_SIZE": "16"}
    proc, endpoint, health = stack.start_proxy(f"proxy-erase-{tag}", **settings)
    client = s3_client(endpoint, "w", "w")
    try:
        for i in range(5):
            client.put_object(Bucket=bucket, Key=f"a/{i}", Body=b"A" * 100)
            client.put_object(Bucket=bucket, Key=f"b/{i}", Body=b"B" * 100)
        for i in range(5):  # every data key is now cached
            assert client.get_object(Bucket=bucket, Key=f"a/{i}")["Body"].read() == b"A" * 100
        stack.vault.ok("POST", f"transit/keys/{a}/config", {"deletion_allowed": True})
        stack.vault.ok("DELETE", f"transit/keys/{a}")
        erased_at = time.monotonic()

        def refused() -> str | None:
            try:
                client.get_object(Bucket=bucket, Key="a/0")["Body"].read()
                return None
            except botocore.exceptions.ClientError as e:
                return e.response["Error"]["Message"]

        message = None
        while message is None and time.monotonic() - erased_at < 10:
            message = refused()
            time.sleep(0.05)
        elapsed = time.monotonic() - erased_at
        assert message is not None, "a cached key of an erased Transit key was still served after 10 s"
        assert elapsed < 1 + 2.0, f"served for {elapsed:.2f} s after the erasure (bound: 1 s check + 2 s)"
        assert "no longer exists" in message, message
        for i in range(5):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                client.get_object(Bucket=bucket, Key=f"a/{i}")
            assert e.value.response["Error"]["Message"] == message, "one constant message"
            assert "encryption key not found" not in e.value.response["Error"]["Message"], "Vault's text leaked"
        # Nothing new is written under the erased key: refused, nothing stored.
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client.put_object(Bucket=bucket, Key="a/after-erasure", Body=b"lost?")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(botocore.exceptions.ClientError):
            upstream.head_object(Bucket=bucket, Key="a/after-erasure")
        # Tenant B: every object reads, and writes go on.
        for i in range(5):
            assert client.get_object(Bucket=bucket, Key=f"b/{i}")["Body"].read() == b"B" * 100
        client.put_object(Bucket=bucket, Key="b/after-erasure", Body=b"still here")
        assert client.get_object(Bucket=bucket, Key="b/after-erasure")["Body"].read() == b"still here"
        m = scrape(health)
        assert m[("cloudtaser_s3proxy_transit_keys_erased_total", (("key", a),))] >= 1
        assert ("cloudtaser_s3proxy_transit_keys_erased_total", (("key", b),)) not in m
        # The erased key's objects are gone for everyone: a fresh proxy too.
        proc2, endpoint2, _ = stack.start_proxy(f"proxy-erase-fresh-{tag}", **settings)
        try:
            with pytest.raises(botocore.exceptions.ClientError) as e:
                s3_client(endpoint2, "r", "r").get_object(Bucket=bucket, Key="a/1")
            assert "no longer exists" in e.value.response["Error"]["Message"]
        finally:
            proc2.stop()
        assert "erased" in proc.log_text()
    finally:
        proc.stop()

"""`cloudtaser-s3proxy doctor` against real OpenBao and s3s-fs (Garage for
an upstream that does not enforce conditional writes): each check passes
with working settings, and fails, with its fix and exit status 1, for a
realistic cause."""

from __future__ import annotations

import json
import subprocess

import pytest

import stack as stack_mod

BUCKET = "e2e-doctor"


def doctor(stack, *args, **env):
    r = subprocess.run(
        [stack_mod.proxy_binary(), "doctor", *args], env=stack.proxy_env(**env), capture_output=True, text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    # Never a secret: not the token, not the upstream key id or secret.
    assert stack_mod.UPSTREAM_ACCESS_KEY not in out, out
    assert stack_mod.UPSTREAM_SECRET_KEY not in out, out
    assert "hvs." not in out and "s.root" not in out, out
    return r


def line(out: str, status: str, check: str) -> str:
    """The report line of `check` with `status`, and its fix line if any."""
    lines = out.splitlines()
    for i, text in enumerate(lines):
        if text.startswith(f"{status}") and text.split(None, 1)[1].startswith(f"{check}:"):
            fix = lines[i + 1] if i + 1 < len(lines) and lines[i + 1].startswith("      fix: ") else ""
            return text + "\n" + fix
    raise AssertionError(f"no `{status} {check}` line in:\n{out}")


@pytest.fixture(scope="module")
def doctor_bucket(upstream, client):
    upstream.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="a", Body=b"a" * 100)
    client.put_object(Bucket=BUCKET, Key="b", Body=b"b" * 70_000)
    return BUCKET


def scoped_token(stack, name: str, rules: str) -> str:
    stack.vault.ok("PUT", f"sys/policies/acl/{name}", {"policy": rules})
    out = stack.vault.ok("POST", "auth/token/create", {"policies": [name], "no_default_policy": False, "ttl": "1h"})
    return out["auth"]["client_token"]


PROXY_POLICY = f"""
path "transit/datakey/plaintext/{stack_mod.TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/encrypt/{stack_mod.TRANSIT_KEY}" {{ capabilities = ["update"] }}
path "transit/decrypt/{stack_mod.TRANSIT_KEY}" {{ capabilities = ["update"] }}
"""


def test_every_check_passes_with_working_settings(stack, doctor_bucket):
    r = doctor(stack, "--bucket", doctor_bucket, "--write-probe")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "FAIL" not in out, out
    for check in ("settings", "vault reachable", "vault login", "transit keys", "upstream credentials", "buckets",
                  "write probe", "clock"):
        line(out, "ok", check)
    assert "logged in with the token method" in out
    assert f"{doctor_bucket}: 2 object(s) sampled ({stack_mod.TRANSIT_KEY} v1: 2)" in line(
        out, "ok", "key versions of stored objects")
    assert "CTS3 with its envelope at rest" in line(out, "ok", "write probe")
    # The root token can do everything: it works, but more than needed.
    assert "fix: give the proxy a token whose policy grants only" in line(out, "warn", "vault policy")
    # s3s-fs enforces PutObject's conditions but not CopyObject's.
    assert "CopyObject with If-Match" in line(out, "warn", "conditional writes")
    # The probe objects are gone.
    probes = stack.s3_data / doctor_bucket / ".cloudtaser-probe"
    assert not probes.exists() or not [p for p in probes.iterdir() if p.is_file()], list(probes.iterdir())


def test_json_output(stack, doctor_bucket):
    r = doctor(stack, "--bucket", doctor_bucket, "--output", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert statuses["vault reachable"] == "ok" and statuses["buckets"] == "ok"
    assert statuses["write probe"] == "skipped" and statuses["conditional writes"] == "skipped"


def test_a_token_with_exactly_the_proxy_policy_is_ok_and_the_key_read_is_skipped(stack, doctor_bucket):
    token = scoped_token(stack, "doctor-exact", PROXY_POLICY)
    r = doctor(stack, "--bucket", doctor_bucket, VAULT_TOKEN=token)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the 3 Transit paths the proxy needs" in line(r.stdout, "ok", "vault policy")
    # Reading the key's configuration is not the proxy's business: skipped, not failed.
    assert "may not read transit/keys/" in line(r.stdout, "skip", "transit keys")
    assert token not in r.stdout + r.stderr


def test_settings_that_do_not_resolve_fail_first(stack):
    r = doctor(stack, CLOUDTASER_S3PROXY_BUCKETS="a/../b")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "CLOUDTASER_S3PROXY_BUCKETS is invalid" in line(r.stdout, "FAIL", "settings")


def test_a_wrong_vault_address_fails_with_its_fix(stack):
    r = doctor(stack, VAULT_ADDR=f"http://127.0.0.1:{stack_mod.free_port()}")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fix: check VAULT_ADDR" in line(r.stdout, "FAIL", "vault reachable")
    line(r.stdout, "skip", "vault login")


def test_an_untrusted_vault_certificate_fails_with_its_fix(stack):
    tls = stack_mod.start_vault(stack.workdir, tls=True)
    try:
        r = doctor(stack, VAULT_ADDR=tls.addr)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "fix: Vault's TLS certificate is not trusted: set VAULT_CACERT" in line(
            r.stdout, "FAIL", "vault reachable")
        r = doctor(stack, VAULT_ADDR=tls.addr, VAULT_CACERT=tls.cacert)
        line(r.stdout, "ok", "vault reachable")
        line(r.stdout, "ok", "vault login")
    finally:
        tls.process.stop()


def test_a_revoked_token_fails_login(stack):
    token = scoped_token(stack, "doctor-revoked", PROXY_POLICY)
    stack.vault.ok("POST", "auth/token/revoke", {"token": token})
    r = doctor(stack, VAULT_TOKEN=token)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "fix: VAULT_TOKEN (or its file) is not a valid token" in line(r.stdout, "FAIL", "vault login")
    assert token not in r.stdout + r.stderr


def test_a_token_without_datakey_fails_with_the_policy_to_add(stack):
    key = stack_mod.TRANSIT_KEY
    token = scoped_token(stack, "doctor-no-datakey", f"""
path "transit/encrypt/{key}" {{ capabilities = ["update"] }}
path "transit/decrypt/{key}" {{ capabilities = ["update"] }}
""")
    r = doctor(stack, VAULT_TOKEN=token)
    assert r.returncode == 1, r.stdout + r.stderr
    found = line(r.stdout, "FAIL", "vault policy")
    assert f"the token may not call transit/datakey/plaintext/{key}\n" in found, found
    assert f'fix: add to the proxy\'s policy: path "transit/datakey/plaintext/{key}" {{ capabilities = ["update"] }}' \
        in found, found


def test_a_token_that_may_create_transit_keys_fails(stack):
    """With `create` on an encrypt path, Transit's encrypt recreates a
    deleted key: a crypto-shredded key would come back on the next write."""
    key = stack_mod.TRANSIT_KEY
    token = scoped_token(stack, "doctor-upsert", PROXY_POLICY + f"""
path "transit/encrypt/{key}" {{ capabilities = ["create", "update"] }}
""")
    r = doctor(stack, VAULT_TOKEN=token)
    assert r.returncode == 1, r.stdout + r.stderr
    found = line(r.stdout, "FAIL", "vault policy")
    assert f"the token may create Transit keys through transit/encrypt/{key}" in found, found
    assert f'path "transit/encrypt/{key}" {{ capabilities = ["update"] }}' in found, found
    assert token not in r.stdout + r.stderr


def test_a_transit_key_that_does_not_exist_fails(stack):
    r = doctor(stack, CLOUDTASER_S3PROXY_TRANSIT_KEY="doctor-no-such-key")
    assert r.returncode == 1, r.stdout + r.stderr
    found = line(r.stdout, "FAIL", "transit keys")
    assert "transit/keys/doctor-no-such-key does not exist" in found
    assert "fix: create it (bao write -f transit/keys/doctor-no-such-key type=aes256-gcm96)" in found


def test_objects_below_min_decryption_version_fail(stack, upstream):
    key, bucket = "doctor-rotated", "e2e-doctor-rotated"
    stack.vault.ok("POST", f"transit/keys/{key}", {"type": "aes256-gcm96"})
    upstream.create_bucket(Bucket=bucket)
    proc, endpoint, _ = stack.start_proxy("proxy-doctor-rotated", CLOUDTASER_S3PROXY_TRANSIT_KEY=key)
    try:
        from conftest import s3_client  # noqa: PLC0415

        c = s3_client(endpoint, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)
        c.put_object(Bucket=bucket, Key="old", Body=b"written under v1")
    finally:
        proc.stop()
    r = doctor(stack, "--bucket", bucket, CLOUDTASER_S3PROXY_TRANSIT_KEY=key)
    assert r.returncode == 0, r.stdout + r.stderr
    stack.vault.ok("POST", f"transit/keys/{key}/rotate")
    stack.vault.ok("POST", f"transit/keys/{key}/config", {"min_decryption_version": 2})
    r = doctor(stack, "--bucket", bucket, CLOUDTASER_S3PROXY_TRANSIT_KEY=key)
    assert r.returncode == 1, r.stdout + r.stderr
    found = line(r.stdout, "FAIL", "key versions of stored objects")
    assert f"data keys under {key} v1, below its min_decryption_version 2" in found, found
    assert f"rewrap --bucket {bucket}" in found and "min_decryption_version=1" in found, found


def test_a_bucket_that_does_not_exist_fails(stack):
    r = doctor(stack, "--bucket", "e2e-doctor-no-such-bucket")
    assert r.returncode == 1, r.stdout + r.stderr
    found = line(r.stdout, "FAIL", "buckets")
    assert "e2e-doctor-no-such-bucket does not exist (404)" in found
    assert "fix: create the bucket upstream" in found


def test_buckets_of_the_bucket_setting_are_checked(stack, doctor_bucket):
    r = doctor(stack, CLOUDTASER_S3PROXY_BUCKETS=f"{doctor_bucket}/in/,e2e-doctor-missing-too")
    assert r.returncode == 1, r.stdout + r.stderr
    line(r.stdout, "ok", "buckets")
    assert "e2e-doctor-missing-too does not exist" in line(r.stdout, "FAIL", "buckets")


def test_wrong_upstream_credentials_fail(stack, doctor_bucket):
    r = doctor(stack, "--bucket", doctor_bucket, AWS_SECRET_ACCESS_KEY="not-the-proxy-secret-key-000000000000")
    assert r.returncode == 1, r.stdout + r.stderr
    line(r.stdout, "ok", "upstream credentials")
    found = line(r.stdout, "FAIL", "buckets")
    assert "refused the proxy's credentials (403)" in found and "fix: check the proxy's upstream credentials" in found


def test_missing_upstream_credentials_fail(stack, tmp_path):
    r = doctor(stack, CLOUDTASER_S3PROXY_CREDENTIALS_DIR=str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    found = line(r.stdout, "FAIL", "upstream credentials")
    assert "access-key-id is missing" in found and "fix: provide the proxy's upstream credentials" in found


def test_an_upstream_without_conditional_writes_fails_the_probe(stack, garage_stack):
    bucket = "e2e-doctor-garage"
    garage_stack.direct.create_bucket(Bucket=bucket)
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import garage  # noqa: PLC0415

    r = doctor(stack, "--bucket", bucket, "--write-probe", CLOUDTASER_S3PROXY_S3_ENDPOINT=garage_stack.endpoint,
               AWS_ACCESS_KEY_ID=garage.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=garage.SECRET_KEY)
    assert r.returncode == 1, r.stdout + r.stderr
    line(r.stdout, "ok", "write probe")
    found = line(r.stdout, "FAIL", "conditional writes")
    assert "PutObject with If-Match instead of refusing it with 412" in found, found
    assert "--assume-quiesced" in found

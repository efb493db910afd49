"""Vault/OpenBao authentication against a real OpenBao: token files,
AppRole and Kubernetes auth with renewal and re-login, TLS and namespaces."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import stack as stack_mod
from conftest import s3_client

POLICY = """
path "transit/*" { capabilities = ["create", "read", "update"] }
"""


def proxy_for(stack, name, **env):
    proc, endpoint, health = stack.start_proxy(name, CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0", **env)
    return proc, s3_client(endpoint, "w", "w"), health


def round_trip(client, bucket, key, data=b"secret through a fresh Vault login"):
    client.put_object(Bucket=bucket, Key=key, Body=data)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data


@pytest.fixture(scope="module")
def vault_policy(stack):
    stack.vault.ok("PUT", "sys/policies/acl/cloudtaser", {"policy": POLICY})
    return "cloudtaser"


def test_approle_renews_and_logs_in_again(stack, bucket, vault_policy, tmp_path):
    v = stack.vault
    v.ok("POST", "sys/auth/approle", {"type": "approle"})
    # A 3 s token, renewable up to 8 s: the proxy must renew, then log in again.
    v.ok("POST", "auth/approle/role/proxy", {"token_ttl": "3s", "token_max_ttl": "8s", "token_policies": [vault_policy]})
    role_id = v.ok("GET", "auth/approle/role/proxy/role-id")["data"]["role_id"]
    secret_id = v.ok("POST", "auth/approle/role/proxy/secret-id")["data"]["secret_id"]
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret_id)
    proc, client, _ = proxy_for(
        stack, "proxy-approle", VAULT_AUTH_METHOD="approle", VAULT_ROLE_ID=role_id,
        VAULT_SECRET_ID_FILE=str(secret_file), VAULT_TOKEN="",
    )
    try:
        deadline = time.monotonic() + 12
        i = 0
        while time.monotonic() < deadline:
            round_trip(client, bucket, f"approle/{i}")
            i += 1
            time.sleep(0.5)
        log = proc.log_text()
        assert log.count("logged in to Vault") >= 2, "the max TTL forces a second login"
        assert "renewed the Vault token" in log
        assert secret_id not in log
    finally:
        proc.stop()


def test_token_file_is_reread_after_revocation(stack, bucket, vault_policy, tmp_path):
    v = stack.vault
    first = v.ok("POST", "auth/token/create", {"policies": [vault_policy], "ttl": "1h"})["auth"]["client_token"]
    token_file = tmp_path / "token"
    token_file.write_text(first)
    proc, client, _ = proxy_for(stack, "proxy-token-file", VAULT_TOKEN="", VAULT_TOKEN_FILE=str(token_file))
    try:
        round_trip(client, bucket, "token-file/1")
        # The token is revoked and the mounted file rotated: the next call is
        # refused, the proxy re-reads the file and the request still succeeds.
        second = v.ok("POST", "auth/token/create", {"policies": [vault_policy], "ttl": "1h"})["auth"]["client_token"]
        v.ok("POST", "auth/token/revoke", {"token": first})
        token_file.write_text(second)
        round_trip(client, bucket, "token-file/2")
        assert first not in proc.log_text() and second not in proc.log_text()
    finally:
        proc.stop()


class TokenReview(http.server.BaseHTTPRequestHandler):
    """The API server's TokenReview, as Vault's Kubernetes auth calls it."""

    reviews: list[str] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        TokenReview.reviews.append(body["spec"]["token"])
        answer = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "status": {"authenticated": True, "user": {
                "username": "system:serviceaccount:shop:orders", "uid": "6f0c3b2a-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop"]}},
        }
        out = json.dumps(answer).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def service_account_jwt() -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    claims = {
        "iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:shop:orders",
        "kubernetes.io/serviceaccount/namespace": "shop",
        "kubernetes.io/serviceaccount/service-account.name": "orders",
        "kubernetes.io/serviceaccount/service-account.uid": "6f0c3b2a-0000-4000-8000-000000000001",
    }
    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"


def any_ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-ca")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_kubernetes_auth(stack, bucket, vault_policy, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TokenReview)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    v = stack.vault
    try:
        v.ok("POST", "sys/auth/kubernetes", {"type": "kubernetes"})
        v.ok("POST", "auth/kubernetes/config", {
            "kubernetes_host": f"http://127.0.0.1:{server.server_address[1]}",
            "kubernetes_ca_cert": any_ca_pem(), "disable_local_ca_jwt": True,
        })
        v.ok("POST", "auth/kubernetes/role/s3proxy", {
            "bound_service_account_names": ["orders"], "bound_service_account_namespaces": ["shop"],
            "token_policies": [vault_policy], "token_ttl": "1h",
        })
        jwt = tmp_path / "token"
        jwt.write_text(service_account_jwt())
        proc, client, health = proxy_for(
            stack, "proxy-k8s-auth", VAULT_AUTH_METHOD="kubernetes", VAULT_ROLE="s3proxy",
            VAULT_K8S_TOKEN_PATH=str(jwt), VAULT_TOKEN="",
        )
        try:
            round_trip(client, bucket, "k8s-auth/1")
            assert TokenReview.reviews, "Vault reviewed the service account token"
            import urllib.request

            with urllib.request.urlopen(f"{health}/readyz", timeout=5) as r:
                assert r.status == 200
        finally:
            proc.stop()
    finally:
        server.shutdown()


def test_tls_with_vault_cacert(stack, bucket, tmp_path):
    vault = stack_mod.start_vault(tmp_path, tls=True)
    try:
        assert vault.addr.startswith("https://")
        proc, client, _ = proxy_for(stack, "proxy-tls", VAULT_ADDR=vault.addr, VAULT_CACERT=vault.cacert)
        try:
            round_trip(client, bucket, "tls/1")
        finally:
            proc.stop()
        # Without the CA the proxy trusts nothing Vault presents: it fails closed.
        proc, client, _ = proxy_for(stack, "proxy-tls-untrusted", VAULT_ADDR=vault.addr)
        try:
            import botocore.exceptions

            with pytest.raises(botocore.exceptions.ClientError) as e:
                client.put_object(Bucket=bucket, Key="tls/untrusted", Body=b"x")
            assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        finally:
            proc.stop()
    finally:
        vault.process.stop()


def test_vault_namespace(stack, bucket, upstream):
    v = stack.vault
    v.ok("POST", "sys/namespaces/eu", {})
    v.ok("POST", "sys/mounts/transit", {"type": "transit"}, namespace="eu")
    v.ok("POST", f"transit/keys/{stack_mod.TRANSIT_KEY}", {}, namespace="eu")
    proc, client, _ = proxy_for(stack, "proxy-namespace", VAULT_NAMESPACE="eu")
    try:
        round_trip(client, bucket, "namespace/1")
        wrapped = upstream.head_object(Bucket=bucket, Key="namespace/1")["Metadata"]["cloudtaser-key"]
        # The data key is wrapped by the namespace's key, not the root one.
        assert v.api("POST", f"transit/decrypt/{stack_mod.TRANSIT_KEY}", {"ciphertext": wrapped}, namespace="eu")[0] == 200
        assert v.api("POST", f"transit/decrypt/{stack_mod.TRANSIT_KEY}", {"ciphertext": wrapped})[0] != 200
    finally:
        proc.stop()

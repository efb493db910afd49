"""A hostile process in the pod, against the real stack (OpenBao, s3s-fs,
the proxy). Each test asserts what reaches the client and what is at rest:
the plaintext sentinel it sent is nowhere in the upstream's storage, every
stored object is an envelope, and nothing was forwarded when the proxy
refused. The storage-side attacker is in test_attacks_at_rest.py."""

from __future__ import annotations

import base64
import http.client
import os
import resource
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

import stack as stack_mod
from conftest import s3_client

# Every sub-resource and operation-selecting parameter in the S3 API
# reference, plus names other S3 dialects use (`append`, `renameObject`) and
# case variants the upstream might read as something else.
SUBRESOURCES = [
    "accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption", "intelligent-tiering",
    "inventory", "legal-hold", "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
    "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication", "requestPayment",
    "restore", "retention", "select", "select&select-type=2", "session", "tagging", "torrent", "uploadId=zzz",
    "uploads", "versioning", "versions", "website", "list-type=2", "partNumber=1", "uploadId=zzz&partnumber=1",
    "uploadId=zzz&partNumber=1", "versionId=null", "append", "position=0", "renameObject", "metadataTable",
    "metadataConfiguration", "abac", "cors&x-id=PutBucketCors", "id=x&analytics", "inventory&id=x",
    "response-content-type=text/plain", "x-amz-meta-cloudtaser-layout=multipart", "UPLOADS", "Tagging",
]


def raw(endpoint: str, method: str, target: str, body: bytes | None = None,
        headers: dict | None = None) -> tuple[int, bytes, dict]:
    u = urllib.parse.urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


def sentinel() -> bytes:
    return f"PLAINTEXT-SENTINEL-{uuid.uuid4()}".encode()


def assert_nothing_plain_at_rest(stack, upstream, needle: bytes, prefix: str = "attacks/") -> None:
    """The sentinel is in no file the upstream keeps, and every object these
    tests wrote (under `prefix` of the session bucket) is an envelope. Other
    tests deliberately keep tampered or pre-proxy objects elsewhere."""
    for path in Path(stack.s3_data).rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"plaintext at rest in {path}"
    for page in upstream.get_paginator("list_objects_v2").paginate(Bucket="e2e-core", Prefix=prefix):
        for o in page.get("Contents", []):
            got = upstream.get_object(Bucket="e2e-core", Key=o["Key"])
            assert got["Body"].read()[:4] == b"CTS3", f"{o['Key']} is not an envelope"
            assert "cloudtaser-key" in got["Metadata"], f"{o['Key']} has no wrapped key"


def upstream_requests(proc) -> int:
    return proc.log_text().count('"upstream request"')


@pytest.fixture(scope="module")
def open_proxy(stack):
    """Every operation allowed: the shape allow-list is the only guard left."""
    proc, endpoint, _ = stack.start_proxy("proxy-all-ops", CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS="all")
    yield proc, endpoint
    proc.stop()


@pytest.fixture(scope="module")
def victim(client, bucket):
    plaintext = b"victim plaintext " * 100
    client.put_object(Bucket=bucket, Key="attacks/victim", Body=plaintext)
    return "attacks/victim", plaintext


def test_every_subresource_write_is_encrypted_or_refused(stack, upstream, bucket, open_proxy, victim):
    """Finding 1: PUT and POST with each sub-resource on an object key. A 2xx
    would mean the body was handled as object data and encrypted; anything
    else must be an S3 error with nothing forwarded."""
    proc, endpoint = open_proxy
    needle = sentinel()
    outcomes = {}
    for method in ("PUT", "POST"):
        for sub in SUBRESOURCES:
            before = upstream_requests(proc)
            status, body, _ = raw(endpoint, method, f"/{bucket}/attacks/sub-{method}?{sub}", needle,
                                  {"Content-Type": "application/octet-stream"})
            outcomes[(method, sub)] = (status, upstream_requests(proc) - before)
            if status >= 400:
                assert body.startswith(b"<?xml") and b"<Code>" in body, (method, sub, body[:200])
            assert_nothing_plain_at_rest(stack, upstream, needle)
    # The shapes adversarial testing stored plaintext with are refused by the
    # proxy itself, before a byte is forwarded.
    for sub in ("attributes", "uploadId=zzz", "uploadId=zzz&partnumber=1", "torrent", "restore", "uploads",
                "append", "position=0", "renameObject", "UPLOADS", "Tagging", "session", "versions"):
        assert outcomes[("PUT", sub)] == (501, 0), (sub, outcomes[("PUT", sub)])
    for sub in ("attributes", "torrent", "tagging", "acl", "append", "partNumber=1", "uploadId=zzz&partnumber=1"):
        assert outcomes[("POST", sub)] == (501, 0), (sub, outcomes[("POST", sub)])
    assert outcomes[("PUT", "x-amz-meta-cloudtaser-layout=multipart")] == (400, 0)


def test_every_subresource_read_is_decrypted_or_refused(stack, upstream, bucket, open_proxy, victim):
    """Finding 2: no read answers with the stored ciphertext."""
    proc, endpoint = open_proxy
    key, plaintext = victim
    for sub in SUBRESOURCES:
        for method in ("GET", "HEAD"):
            status, body, headers = raw(endpoint, method, f"/{bucket}/{key}?{sub}")
            assert b"CTS3" not in body, f"{method} ?{sub} returned ciphertext"
            assert not any(h.lower().startswith("x-amz-meta-cloudtaser") for h in headers), (method, sub)
            if status == 200 and method == "GET" and sub.startswith("response-"):
                assert body == plaintext
    for sub in ("restore", "uploads", "torrent"):
        status, body, _ = raw(endpoint, "GET", f"/{bucket}/{key}?{sub}")
        assert status == 501 and b"<Code>NotImplemented</Code>" in body, (sub, status, body[:200])
    # GetObjectAttributes is answered in plaintext terms (test_versioning.py,
    # against moto); s3s-fs does not implement it, and its own 501 is passed on.
    status, body, _ = raw(endpoint, "GET", f"/{bucket}/{key}?attributes")
    assert status == 400 and b"<Code>InvalidArgument</Code>" in body, (status, body[:200])
    status, body, headers = raw(endpoint, "GET", f"/{bucket}/{key}?attributes",
                                headers={"x-amz-object-attributes": "ObjectSize,Checksum"})
    assert status == 501 and b"GetObjectAttributes is not implemented" in body, (status, body[:200])
    assert b"CTS3" not in body and not any(h.lower().startswith("x-amz-meta-cloudtaser") for h in headers)


def test_upload_id_cannot_steer_vault(stack, client, upstream, bucket):
    """Finding 3: a Transit key name inside the upload id is never used
    unless it is configured, and Vault's own words never reach the client."""
    vault = stack.vault
    up = client.create_multipart_upload(Bucket=bucket, Key="attacks/mpu")
    # ctu3.<transit>.<wrapped>.<tag>.<upstream id>: the forgeries use the
    # format-3 spelling with this id's own tag, and the format-2 one (no
    # tag), which a proxy accepts for uploads opened before format 3 only
    # with CLOUDTASER_S3PROXY_LEGACY_UPLOAD_IDS=accept: they go to both the
    # default proxy (refused outright) and one that accepts them (refused
    # after parsing, without Vault being steered).
    parts = up["UploadId"].split(".", 4)
    assert parts[0] == "ctu3"
    parts = [parts[0], parts[1], parts[2], parts[4]]
    tag = up["UploadId"].split(".", 4)[3]
    vault.ok("POST", "transit/keys/other-key", {"type": "aes256-gcm96"})
    b64 = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")  # noqa: E731
    forged = {
        "another key, tagged": f"ctu3.{b64('other-key')}.{parts[2]}.{tag}.{parts[3]}",
        "forged wrapped key, tagged": f"ctu3.{parts[1]}.{b64('vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')}.{tag}.{parts[3]}",
        "path traversal": f"ctu1.{b64('../keys/created-by-attacker')}.{parts[2]}.{parts[3]}",
        "another key": f"ctu1.{b64('other-key')}.{parts[2]}.{parts[3]}",
        "percent escape": f"ctu1.{b64('%2e%2e/keys/x')}.{parts[2]}.{parts[3]}",
        "bad wrapped key": f"ctu1.{parts[1]}.{b64('vault:v1:not base64!')}.{parts[3]}",
        "forged wrapped key": f"ctu1.{parts[1]}.{b64('vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA')}.{parts[3]}",
    }
    needle = sentinel()
    legacy, legacy_endpoint, _ = stack.start_proxy("proxy-legacy-upload-ids",
                                                   CLOUDTASER_S3PROXY_LEGACY_UPLOAD_IDS="accept")
    try:
        for endpoint in (stack.proxy_endpoint, legacy_endpoint):
            for what, upload_id in forged.items():
                status, body, _ = raw(endpoint, "PUT",
                                      f"/{bucket}/attacks/mpu?partNumber=1&uploadId={urllib.parse.quote(upload_id)}",
                                      needle)
                assert 400 <= status < 500, (endpoint, what, status, body)
                if endpoint == stack.proxy_endpoint and upload_id.startswith("ctu1."):
                    assert b"<Code>NoSuchUpload</Code>" in body, (what, body)
                text = body.decode()
                for vault_words in ("invalid ciphertext", "permission denied", "encryption key not found", "errors",
                                    "unable to decrypt", "cipher: message authentication failed"):
                    assert vault_words not in text, (endpoint, what, text)
    finally:
        legacy.stop()
    assert vault.api("GET", "transit/keys/created-by-attacker")[0] == 404
    assert vault.api("GET", "transit/keys/x")[0] == 404
    assert_nothing_plain_at_rest(stack, upstream, needle)
    client.abort_multipart_upload(Bucket=bucket, Key="attacks/mpu", UploadId=up["UploadId"])


def test_descriptor_exhaustion_is_survived(stack, bucket):
    """Finding 4: 600 connections against a 128-descriptor limit; once they
    are released both listeners answer."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port, health_port = stack_mod.free_port(), stack_mod.free_port()
    env = stack.proxy_env(CLOUDTASER_S3PROXY_LISTEN=f"127.0.0.1:{port}",
                          CLOUDTASER_S3PROXY_HEALTH_LISTEN=f"127.0.0.1:{health_port}")
    log = stack.workdir / "proxy-128fds.log"
    with open(log, "wb") as fh:
        popen = subprocess.Popen([stack_mod.proxy_binary()], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                 preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128)))
    health = f"http://127.0.0.1:{health_port}"
    try:
        stack_mod.wait_for(lambda: urllib.request.urlopen(f"{health}/readyz", timeout=2).status == 200, "proxy-128fds")
        held, refused = [], 0
        for i in range(600):
            target = port if i % 10 else health_port
            # Past the kernel's accept queue a connect may time out: that is
            # the queue, not the proxy. Hold every one that gets through.
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", target))
                held.append(s)
            except OSError:
                s.close()
                refused += 1
        assert len(held) >= 550, f"only {len(held)} connections were made ({refused} timed out)"
        time.sleep(1.5)
        assert popen.poll() is None, "the proxy exited under descriptor exhaustion:\n" + log.read_text()
        for s in held:
            s.close()

        def both_answer() -> bool:
            with urllib.request.urlopen(f"{health}/healthz", timeout=2) as r:
                assert r.status == 200
            c = s3_client(f"http://127.0.0.1:{port}", "w", "w")
            c.put_object(Bucket=bucket, Key="attacks/after-emfile", Body=b"still serving")
            return c.get_object(Bucket=bucket, Key="attacks/after-emfile")["Body"].read() == b"still serving"

        stack_mod.wait_for(both_answer, "both listeners after descriptor exhaustion", timeout=30)
        assert popen.poll() is None
        assert "accept failed; retrying" in log.read_text()
    finally:
        popen.terminate()
        popen.wait(10)


def test_slow_header_clients_are_dropped_from_the_health_listener(stack):
    """A client that never finishes its headers is cut off, so it cannot hold a slot."""
    u = urllib.parse.urlparse(stack.health_endpoint)
    s = socket.create_connection((u.hostname, u.port), timeout=15)
    s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    answer = b""
    while chunk := s.recv(1024):  # until the proxy closes the connection
        answer += chunk
    elapsed = time.monotonic() - started
    s.close()
    assert 0.5 <= elapsed < 4, f"the slow client was held {elapsed:.1f}s"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


OPERATION_REFUSALS = [
    ("GET", "/", None, "ListBuckets"),
    ("PUT", "/attacker-bucket", b"", "CreateBucket"),
    ("DELETE", "/{bucket}", None, "DeleteBucket"),
    ("PUT", "/{bucket}?policy", b'{"Version":"2012-10-17","Statement":[]}', "PutBucketPolicy"),
    ("PUT", "/{bucket}?versioning", b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>",
     "PutBucketVersioning"),
    ("PUT", "/{bucket}?acl", b"", "PutBucketAcl"),
    ("PUT", "/{bucket}?cors", b"<CORSConfiguration/>", "PutBucketCors"),
    ("PUT", "/{bucket}?lifecycle", b"<LifecycleConfiguration/>", "PutBucketLifecycleConfiguration"),
    ("PUT", "/{bucket}?replication", b"<ReplicationConfiguration/>", "PutBucketReplication"),
    ("PUT", "/{bucket}?encryption", b"<ServerSideEncryptionConfiguration/>", "PutBucketEncryption"),
    ("PUT", "/{bucket}?website", b"<WebsiteConfiguration/>", "PutBucketWebsite"),
    ("DELETE", "/{bucket}?policy", None, "DeleteBucketPolicy"),
    ("PUT", "/{bucket}/attacks/victim?acl", b"", "PutObjectAcl"),
]


@pytest.mark.parametrize(("method", "path", "body", "name"), OPERATION_REFUSALS, ids=[o[3] for o in OPERATION_REFUSALS])
def test_default_policy_refuses_account_management(stack, upstream, bucket, victim, method, path, body, name):
    """Finding 6: the proxy's identity is not the workload's to manage the account with."""
    before = upstream_requests(stack.proxy)
    status, text, _ = raw(stack.proxy_endpoint, method, path.format(bucket=bucket), body)
    assert status == 403, (name, status, text)
    assert b"<Code>AccessDenied</Code>" in text
    assert name.encode() in text and b"CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS" in text
    assert upstream_requests(stack.proxy) == before, f"{name} was forwarded"
    assert bucket in [b["Name"] for b in upstream.list_buckets()["Buckets"]]
    assert "attacker-bucket" not in [b["Name"] for b in upstream.list_buckets()["Buckets"]]


def test_refusals_are_counted_by_reason(stack, bucket):
    from test_failures import scrape  # noqa: PLC0415

    proc, endpoint, health = stack.start_proxy("proxy-refusals")
    try:
        for method, path in (("GET", "/"), ("PUT", f"/{bucket}?policy"), ("PUT", f"/{bucket}/k?attributes"),
                             ("PUT", f"/{bucket}/k?x-amz-meta-cloudtaser-size=1"), ("GET", f"/{bucket}/a/../b")):
            assert raw(endpoint, method, path, b"x" if method == "PUT" else None)[0] in (400, 403, 501)
        m = scrape(health)
        refused = {labels[0][1]: v for (name, labels), v in m.items() if name == "cloudtaser_s3proxy_refused_requests_total"}
        assert refused == {"refused_operation": 2, "unsupported_operation": 1, "reserved_metadata": 1,
                           "malformed_request": 1}, refused
        assert m[("cloudtaser_s3proxy_requests_total", (("code", "403"), ("operation", "ListBuckets")))] == 1
    finally:
        proc.stop()


def test_default_policy_keeps_the_data_path(stack, client, bucket):
    client.put_object(Bucket=bucket, Key="attacks/allowed", Body=b"ok")
    # Object tags are in the default set: forwarded (s3s-fs may answer that it has no tagging).
    for method, body in (("PUT", b"<Tagging><TagSet/></Tagging>"), ("GET", None), ("DELETE", None)):
        before = upstream_requests(stack.proxy)
        status, text, _ = raw(stack.proxy_endpoint, method, f"/{bucket}/attacks/allowed?tagging", body)
        assert b"CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS" not in text, (method, text)
        assert upstream_requests(stack.proxy) == before + 1, method
    client.head_bucket(Bucket=bucket)
    assert client.list_objects_v2(Bucket=bucket, Prefix="attacks/allowed")["KeyCount"] == 1
    client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "attacks/allowed"}]})
    assert client.list_objects_v2(Bucket=bucket, Prefix="attacks/allowed")["KeyCount"] == 0


def test_bucket_allow_list(stack, upstream, bucket, victim):
    """Finding 6: CLOUDTASER_S3PROXY_BUCKETS scopes every request, copy sources included."""
    upstream.create_bucket(Bucket="scoped-other")
    upstream.create_bucket(Bucket="scoped-shared")
    proc, endpoint, _ = stack.start_proxy("proxy-scoped", CLOUDTASER_S3PROXY_BUCKETS=f"{bucket},scoped-shared/team-a/")
    try:
        c = s3_client(endpoint, "w", "w")
        c.put_object(Bucket=bucket, Key="scoped/ok", Body=b"in scope")
        c.put_object(Bucket="scoped-shared", Key="team-a/ok", Body=b"in scope")
        c.list_objects_v2(Bucket="scoped-shared", Prefix="team-a/")
        refusals = [
            ("PUT", "/scoped-other/k", sentinel()),
            ("GET", f"/{bucket}/../scoped-other/k", None),
            ("PUT", "/scoped-shared/team-b/k", sentinel()),
            ("GET", "/scoped-shared?list-type=2", None),
            ("GET", "/scoped-shared?list-type=2&prefix=team-b/", None),
            ("GET", "/", None),
        ]
        for method, path, body in refusals:
            before = upstream_requests(proc)
            status, text, _ = raw(endpoint, method, path, body)
            assert status in (400, 403), (method, path, status, text)
            assert upstream_requests(proc) == before, (method, path)
        status, text, _ = raw(endpoint, "PUT", "/scoped-other/k", b"x")
        assert b"CLOUDTASER_S3PROXY_BUCKETS" in text
        # Virtual-hosted addressing names the bucket in Host: however it is
        # spelled, it is the bucket the scope is checked against.
        port = urllib.parse.urlparse(endpoint).port
        for host in (f"scoped-other.localhost:{port}", f"SCOPED-OTHER.LocalHost:{port}", "scoped-other.localhost.",
                     f"{bucket}.scoped-other.localhost:{port}"):
            before = upstream_requests(proc)
            status, text, _ = raw(endpoint, "PUT", "/jane-doe-scan.pdf", sentinel(), {"Host": host})
            assert status == 403 and b"CLOUDTASER_S3PROXY_BUCKETS" in text, (host, status, text)
            assert upstream_requests(proc) == before, host
        assert "jane-doe-scan" not in proc.log_text(), "a refused key reached the log with key logging off"
        # A copy would decrypt the source with the proxy's keys: the source is checked too.
        status, text, _ = raw(endpoint, "PUT", f"/{bucket}/scoped/copied", b"",
                              {"x-amz-copy-source": f"/{bucket}/{victim[0]}".replace(bucket, "scoped-other", 1)})
        assert status == 403 and b"copy source" in text
        delete = (b"<Delete><Object><Key>team-a/ok</Key></Object><Object><Key>team-b/x</Key></Object></Delete>")
        status, text, _ = raw(endpoint, "POST", "/scoped-shared?delete", delete,
                              {"Content-MD5": base64.b64encode(__import__("hashlib").md5(delete).digest()).decode()})
        assert status == 403, text
        assert c.get_object(Bucket="scoped-shared", Key="team-a/ok")["Body"].read() == b"in scope"
    finally:
        proc.stop()


def test_trace_logs_carry_no_secrets(stack, bucket):
    """Finding 8: at `trace`, no access key id, secret, token, wrapped key or body."""
    status, out = stack.vault.api("POST", "auth/token/create", {"policies": ["root"], "ttl": "1h"})
    assert status == 200, out
    token = out["auth"]["client_token"]
    proc, endpoint, _ = stack.start_proxy("proxy-trace", CLOUDTASER_S3PROXY_LOG="trace", VAULT_TOKEN=token)
    try:
        workload_key = "AKIAWORKLOADSECRETID"
        c = s3_client(endpoint, workload_key, "workload-secret-value")
        body = sentinel()
        c.put_object(Bucket=bucket, Key="attacks/traced", Body=body)
        assert c.get_object(Bucket=bucket, Key="attacks/traced")["Body"].read() == body
        up = c.create_multipart_upload(Bucket=bucket, Key="attacks/traced-mpu")
        c.upload_part(Bucket=bucket, Key="attacks/traced-mpu", UploadId=up["UploadId"], PartNumber=1, Body=body)
        c.abort_multipart_upload(Bucket=bucket, Key="attacks/traced-mpu", UploadId=up["UploadId"])
        time.sleep(0.3)
        log = proc.log_text()
        assert "TRACE" in log or '"level":"TRACE"' in log, "the proxy did not log at trace"
        for secret in (stack_mod.UPSTREAM_ACCESS_KEY, stack_mod.UPSTREAM_SECRET_KEY, token, workload_key,
                       "workload-secret-value", "vault:v", body.decode(), up["UploadId"]):
            assert secret not in log, f"the trace log carries {secret[:12]}…"
    finally:
        proc.stop()


def test_reserved_names_in_the_query_are_refused(stack, upstream, bucket, victim):
    """Finding 9: reserved envelope names are refused in the query as in headers."""
    needle = sentinel()
    for method, path, body in [
        ("PUT", f"/{bucket}/attacks/q1?x-amz-meta-cloudtaser-layout=multipart", needle),
        ("PUT", f"/{bucket}/attacks/q2?X-Amz-Meta-Cloudtaser-Salt=00", needle),
        ("GET", f"/{bucket}/{victim[0]}?x-amz-meta-cloudtaser-size=1", None),
        ("POST", f"/{bucket}/attacks/q3?uploads&x-amz-meta-cloudtaser-key=vault:v1:x", None),
    ]:
        before = upstream_requests(stack.proxy)
        status, text, _ = raw(stack.proxy_endpoint, method, path, body)
        assert status == 400 and b"<Code>InvalidArgument</Code>" in text and b"reserved" in text, (path, text)
        assert upstream_requests(stack.proxy) == before
    assert_nothing_plain_at_rest(stack, upstream, needle)


def test_presigned_query_headers_are_hoisted_and_encrypted(stack, upstream, bucket):
    needle = sentinel()
    status, text, _ = raw(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/hoisted?X-Amz-Meta-Colour=red", needle)
    assert status == 200, text
    head = upstream.head_object(Bucket=bucket, Key="attacks/hoisted")
    assert head["Metadata"]["colour"] == "red"
    assert_nothing_plain_at_rest(stack, upstream, needle)


@pytest.mark.parametrize("target", [
    "/{bucket}/a/../../etc/passwd", "/{bucket}/a%00b", "/{bucket}/%zz", "/{bucket}/%C3%28", "/..%2F{bucket}/k",
    "/{bucket}/k?uploadId=a&uploadId=b&partNumber=1",
])
def test_malformed_targets_store_nothing(stack, upstream, bucket, target):
    needle = sentinel()
    before = upstream_requests(stack.proxy)
    status, text, _ = raw(stack.proxy_endpoint, "PUT", target.format(bucket=bucket), needle)
    assert status == 400 and b"<Code>" in text, (target, status, text)
    assert upstream_requests(stack.proxy) == before
    assert_nothing_plain_at_rest(stack, upstream, needle)
    assert os.path.exists(stack.s3_data)


# Found by an independent attacker of this proxy (docs/THREAT-MODEL.md);
# each of these stored plaintext, leaked ciphertext or crossed a scope before.

def test_x_id_cannot_switch_the_operation(stack, upstream, bucket, victim):
    """s3s routes by `x-id`; it must name the operation that was checked."""
    needle = sentinel()
    for method, path, body in [
        ("PUT", f"/{bucket}/attacks/xid?tagging&x-id=PutObject", needle),
        ("PUT", f"/{bucket}/attacks/xid2?tagging&x-id=CopyObject", b""),
        ("PUT", f"/{bucket}/attacks/xid3?tagging&x-id=PutObjectAcl", b""),
        ("GET", f"/{bucket}?location&x-id=ListObjects", None),
        ("GET", f"/{bucket}/{victim[0]}?uploadId=anything&x-id=GetObject", None),
    ]:
        before = upstream_requests(stack.proxy)
        status, text, headers = raw(stack.proxy_endpoint, method, path, body)
        assert status == 400 and b"<Code>InvalidArgument</Code>" in text, (path, status, text[:200])
        assert b"CTS3" not in text and not any(h.lower().startswith("x-amz-meta-cloudtaser") for h in headers)
        assert upstream_requests(stack.proxy) == before, path
    assert_nothing_plain_at_rest(stack, upstream, needle)
    # What the SDKs send still works.
    status, _, _ = raw(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/xid-ok?x-id=PutObject", b"ok")
    assert status == 200


def test_delete_objects_keys_cannot_leave_the_scope(stack, upstream, bucket):
    upstream.create_bucket(Bucket="scope-del-shared")
    upstream.create_bucket(Bucket="scope-del-secret")
    upstream.put_object(Bucket="scope-del-shared", Key="team-b/v.txt", Body=b"team b")
    upstream.put_object(Bucket="scope-del-secret", Key="v.txt", Body=b"secret")
    proc, endpoint, _ = stack.start_proxy("proxy-scope-del", CLOUDTASER_S3PROXY_BUCKETS="scope-del-shared/team-a/,e2e-core")
    try:
        import hashlib  # noqa: PLC0415

        for path, key in (("/scope-del-shared?delete", "team-a/../team-b/v.txt"), ("/e2e-core?delete", "../scope-del-secret/v.txt")):
            doc = f"<Delete><Object><Key>{key}</Key></Object></Delete>".encode()
            md5 = base64.b64encode(hashlib.md5(doc).digest()).decode()
            status, text, _ = raw(endpoint, "POST", path, doc, {"Content-MD5": md5})
            assert status in (400, 403), (key, status, text)
        assert upstream.get_object(Bucket="scope-del-shared", Key="team-b/v.txt")["Body"].read() == b"team b"
        assert upstream.get_object(Bucket="scope-del-secret", Key="v.txt")["Body"].read() == b"secret"
    finally:
        proc.stop()


SCOPED_DELETE_BUCKET = "scope-del-moto"

# DeleteObjects documents naming `team-b/secret` in ways the proxy once did
# not read as a key, and the answer each gets. moto reads its body with
# expat (xmltodict), as AWS and Garage read theirs with standard parsers:
# CDATA, UTF-16 and references are text to them.
SMUGGLED_DELETES = {
    "cdata": (b"<Delete><Object><Key><![CDATA[team-b/secret]]></Key></Object></Delete>", 403),
    "cdata-split": (b"<Delete><Object><Key>team-<![CDATA[b/secret]]></Key></Object></Delete>", 403),
    "utf-16": ("<?xml version=\"1.0\" encoding=\"UTF-16\"?><Delete><Object><Key>team-b/secret</Key></Object></Delete>"
               .encode("utf-16"), 400),
    "utf-16-no-bom": ("<Delete><Object><Key>team-b/secret</Key></Object></Delete>".encode("utf-16-le"), 400),
    "entities": (b"<Delete><Object><Key>team-&#98;&#x2F;secr&#101;t</Key></Object></Delete>", 403),
    # A namespace-aware upstream reads `s3:Key` as Key; moto does not, but
    # the proxy must not leave it unchecked either way.
    "s3-prefix": (b'<Delete xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><Object><s3:Key>team-b/secret</s3:Key>'
                  b"</Object></Delete>", 403),
    "doctype": (b'<!DOCTYPE Delete [<!ENTITY k "team-b/secret">]><Delete><Object><Key>&k;</Key></Object></Delete>', 400),
}


@pytest.fixture(scope="module")
def moto_scoped(stack, moto_stack):
    """A proxy scoped to `scope-del-moto/team-a/` in front of moto."""
    moto_stack.direct.create_bucket(Bucket=SCOPED_DELETE_BUCKET)
    proc, endpoint, _ = stack.start_proxy(
        "proxy-moto-scope-del", CLOUDTASER_S3PROXY_S3_ENDPOINT=moto_stack.endpoint,
        CLOUDTASER_S3PROXY_BUCKETS=f"{SCOPED_DELETE_BUCKET}/team-a/",
    )
    yield endpoint
    proc.stop()


def delete_objects_raw(endpoint: str, doc: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    import hashlib  # noqa: PLC0415

    md5 = base64.b64encode(hashlib.md5(doc).digest()).decode()
    status, text, _ = raw(endpoint, "POST", f"/{SCOPED_DELETE_BUCKET}?delete", doc,
                          {"Content-MD5": md5, "Content-Type": "application/xml", **(headers or {})})
    return status, text


@pytest.mark.parametrize("name", list(SMUGGLED_DELETES))
def test_delete_objects_keys_are_read_as_the_upstream_reads_them(moto_scoped, moto_stack, name):
    """Issue 22: a key in CDATA, UTF-16, references or an S3-prefixed element
    is still a key; the proxy reads it (or refuses the document) and moto
    keeps `team-b/secret`."""
    doc, expected = SMUGGLED_DELETES[name]
    moto_stack.direct.put_object(Bucket=SCOPED_DELETE_BUCKET, Key="team-b/secret", Body=b"team b's")
    status, text = delete_objects_raw(moto_scoped, doc)
    code = b"<Code>AccessDenied</Code>" if expected == 403 else b"<Code>MalformedXML</Code>"
    assert status == expected and code in text, (name, status, text)
    got = moto_stack.direct.get_object(Bucket=SCOPED_DELETE_BUCKET, Key="team-b/secret")["Body"].read()
    assert got == b"team b's", name


def test_delete_objects_upstream_gets_the_proxys_document(moto_scoped, moto_stack):
    """Keys inside the scope are deleted, by boto3 and however the document
    spells them: moto deletes an `s3:Key` it cannot read itself, so what it
    got was the document the proxy rebuilt. A Content-MD5 that does not match
    the client's document is BadDigest, as from S3."""
    scoped = s3_client(moto_scoped, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)
    keys = ["team-a/boto-1", "team-a/boto 2 &<>", "team-a/cdata", "team-a/prefixed", "team-a/digest"]
    for key in keys:
        scoped.put_object(Bucket=SCOPED_DELETE_BUCKET, Key=key, Body=b"mine")
    out = scoped.delete_objects(Bucket=SCOPED_DELETE_BUCKET,
                                Delete={"Objects": [{"Key": k} for k in keys[:2]], "Quiet": False})
    assert sorted(d["Key"] for d in out["Deleted"]) == sorted(keys[:2]), out
    status, text = delete_objects_raw(moto_scoped, b"<Delete><Object><Key><![CDATA[team-a/cdata]]></Key></Object></Delete>")
    assert status == 200 and b"<Key>team-a/cdata</Key>" in text, text
    doc = (b'<s3:Delete xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:Object><s3:Key>team-a/prefixed</s3:Key>'
           b"</s3:Object></s3:Delete>")
    status, text = delete_objects_raw(moto_scoped, doc)
    assert status == 200 and b"<Key>team-a/prefixed</Key>" in text, text
    doc = b"<Delete><Object><Key>team-a/digest</Key></Object></Delete>"
    status, text = delete_objects_raw(moto_scoped, doc, {"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    assert status == 400 and b"<Code>BadDigest</Code>" in text, text
    left = [o["Key"] for o in moto_stack.direct.list_objects_v2(Bucket=SCOPED_DELETE_BUCKET, Prefix="team-a/").get("Contents", [])]
    assert left == ["team-a/digest"], left


def test_copy_source_is_read_as_the_upstream_reads_it(stack, upstream, bucket, victim):
    for source in (f"/{bucket}/{victim[0]}?/../../other/top.txt", f"/{bucket}/x?x=/../../{victim[0]}"):
        before = upstream_requests(stack.proxy)
        status, text, _ = raw(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/copied", b"",
                              {"x-amz-copy-source": source})
        assert status == 400 and b"<Code>InvalidArgument</Code>" in text, (source, text)
        assert upstream_requests(stack.proxy) == before


def test_copying_a_plaintext_object_is_refused(stack, upstream, bucket):
    """A copy of an object without an envelope would store plaintext anew."""
    needle = sentinel()
    upstream.put_object(Bucket=bucket, Key="attacks-legacy/plain.txt", Body=needle)
    proc, endpoint, _ = stack.start_proxy("proxy-plain-copy", CLOUDTASER_S3PROXY_PLAINTEXT_READS=f"{bucket}/attacks/public/")
    try:
        status, text, _ = raw(endpoint, "PUT", f"/{bucket}/attacks/public/copied.txt", b"",
                              {"x-amz-copy-source": f"/{bucket}/attacks-legacy/plain.txt"})
        assert status == 403 and b"migrate" in text, text
        assert "Contents" not in upstream.list_objects_v2(Bucket=bucket, Prefix="attacks/public/")
    finally:
        proc.stop()
        upstream.delete_object(Bucket=bucket, Key="attacks-legacy/plain.txt")


@pytest.mark.parametrize(("header", "value", "op"), [
    ("x-amz-acl", "public-read-write", "PutObjectAcl"),
    ("x-amz-grant-full-control", 'id="someone"', "PutObjectAcl"),
    ("x-amz-object-lock-mode", "COMPLIANCE", "PutObjectRetention"),
    ("x-amz-object-lock-legal-hold", "ON", "PutObjectLegalHold"),
])
def test_write_headers_cannot_do_what_the_policy_refuses(stack, upstream, bucket, header, value, op):
    before = upstream_requests(stack.proxy)
    status, text, _ = raw(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/acl", b"x", {header: value})
    assert status == 403 and op.encode() in text, text
    assert upstream_requests(stack.proxy) == before
    # The SDKs' harmless defaults still pass.
    assert raw(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/acl-ok", b"x", {"x-amz-acl": "private"})[0] == 200


def test_form_bodies_are_refused_everywhere(stack, bucket):
    for path in (f"/{bucket}", f"/{bucket}?delete"):
        status, text, _ = raw(stack.proxy_endpoint, "POST", path, b"--x--",
                              {"Content-Type": "multipart/form-data; boundary=x"})
        assert status == 501 and b"<Code>NotImplemented</Code>" in text, (path, text)


def test_workload_session_tokens_are_not_forwarded(stack):
    from recorder import Recorder  # noqa: PLC0415

    rec = Recorder()
    proc, endpoint, _ = stack.start_proxy("proxy-recorded", CLOUDTASER_S3PROXY_S3_ENDPOINT=rec.endpoint)
    try:
        assert raw(endpoint, "PUT", "/b/k1?x-amz-s3session-token=query-token", b"x")[0] == 200
        assert raw(endpoint, "PUT", "/b/k2", b"x",
                   {"x-amz-s3session-token": "header-token", "x-amz-security-token": "sts-token"})[0] == 200
        puts = [r for r in rec.requests if r["method"] == "PUT"]
        assert len(puts) == 2, "the writes did not reach the recording upstream"
        for r in puts:
            assert "x-amz-s3session-token" not in r["headers"] and "query-token" not in r["path"]
            assert r["headers"].get("x-amz-security-token") != "sts-token"
            assert "header-token" not in str(r["headers"])
    finally:
        proc.stop()
        rec.close()


def test_health_port_survives_idle_connections(stack):
    """The health port is on the pod network: idle connections must not starve the kubelet's probes."""
    u = urllib.parse.urlparse(stack.health_endpoint)
    held = [socket.create_connection((u.hostname, u.port), timeout=5) for _ in range(24)]
    try:
        ok = 0
        for _ in range(10):
            try:
                with urllib.request.urlopen(f"{stack.health_endpoint}/healthz", timeout=1) as r:
                    ok += r.status == 200
            except OSError:
                pass
            time.sleep(0.2)
        assert ok == 10, f"{ok} of 10 probes answered within 1 s"
    finally:
        for s in held:
            s.close()


def test_a_control_body_that_never_arrives_times_out(stack, bucket):
    proc, endpoint, _ = stack.start_proxy("proxy-body-timeout", CLOUDTASER_S3PROXY_BODY_TIMEOUT_SECS="2")
    try:
        u = urllib.parse.urlparse(endpoint)
        s = socket.create_connection((u.hostname, u.port), timeout=10)
        s.sendall(f"POST /{bucket}?delete HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
        started = time.monotonic()
        answer = s.recv(4096)
        s.close()
        assert 1.5 < time.monotonic() - started < 8
        assert answer.startswith(b"HTTP/1.1 400") and b"RequestTimeout" in answer, answer[:300]
    finally:
        proc.stop()


def _read_response(s: socket.socket, buf: bytes) -> tuple[int, bytes, bytes]:
    """One response from a raw socket: its status, its body and what was read after it."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:length], rest[length:]


def test_an_answer_before_100_continue_keeps_the_connection_in_step(stack, bucket):
    """A handler that fails before reading the body (here: an upload id no
    proxy issued) must leave the connection in step with a client that sent
    `Expect: 100-continue`. botocore keeps such a connection without sending
    the body when the answer comes first. Once, the e2e suite saw the
    AbortMultipartUpload after such a refused UploadPart arrive as `ELETE`:
    the server was still reading the old body. The proxy now reads small
    bodies before it answers an error, so hyper sends `100 Continue` first
    and the body comes. The race itself does not reproduce on cue; this test
    holds the property: the next request on the connection is read whole, or
    the connection is closed. The client behaves as botocore does."""
    u = urllib.parse.urlparse(stack.proxy_endpoint)
    s = socket.create_connection((u.hostname, u.port), timeout=15)
    try:
        target = f"/{bucket}/continue?partNumber=1&uploadId=1~foreign"
        s.sendall(f"PUT {target} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: 1\r\n"
                  "Expect: 100-continue\r\n\r\n".encode())
        status, body, rest = _read_response(s, b"")
        if status == 100:
            s.sendall(b"x")
            status, body, rest = _read_response(s, rest)
        assert status == 404 and b"<Code>NoSuchUpload</Code>" in body, (status, body)
        abort = f"/{bucket}/continue?uploadId=1~foreign"
        s.sendall(f"DELETE {abort} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: 0\r\n\r\n".encode())
        try:
            status, body, _ = _read_response(s, rest)
        except ConnectionError:
            return  # the server closed the connection instead: also in step
        # AbortMultipartUpload, recognised and forwarded: the upstream's answer
        # to an id it never issued (s3s-fs: 400), not the proxy's 501.
        assert b"NotImplemented" not in body and b"ELETE" not in body, (status, body)
        assert status in (204, 400, 404), (status, body)
    finally:
        s.close()

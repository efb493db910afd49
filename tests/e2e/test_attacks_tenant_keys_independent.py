"""Independent attacks on keys per tenant (issue 28), written without reading
test_tenant_keys.py first. The attacker is a hostile process in the pod
speaking S3 to the proxy, or someone holding the upstream's credentials who
rewrites stored objects and metadata. Real OpenBao (through a relay that
only records what reaches it, headers included), real s3s-fs (through a
relay that records what the proxy forwards), a policy token without root and
without `create`, as docs/OPERATIONS.md prescribes.

Tests marked HOLE in their docstring demonstrate a broken claim: they fail
on purpose until the proxy is fixed."""

from __future__ import annotations

import http.client
import http.server
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError

import attack_helpers
import local_http
import stack as stack_mod
from conftest import s3_client
from hostile_upstream import Forged, HostileUpstream

BUCKET = "t28-independent"
ERASED_TEXT = (
    "The Transit key that wraps this object's data key no longer exists (erased); the object cannot be "
    "decrypted and nothing can be written under that key."
)
KMS_HEADERS = (
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
)
POLICY = attack_helpers.PROXY_POLICY


class VaultRelay:
    """Forwards every call to the real OpenBao, all headers included, and
    records method, path and lower-cased headers of each."""

    def __init__(self, target: str):
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        target_url = urllib.parse.urlsplit(target)
        relay = self
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    relay.calls.append((self.command, self.path, headers))
                conn = http.client.HTTPConnection(target_url.hostname, target_url.port, timeout=30)
                fwd = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
                conn.request(self.command, self.path, body=body, headers=fwd)
                r = conn.getresponse()
                out = r.read()
                self.send_response(r.status)
                self.send_header("Content-Type", r.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _handle

            def log_message(self, *args):
                pass

        self.server, self.addr = local_http.serve(Handler)

    def transit_calls(self) -> list[tuple[str, str, dict[str, str]]]:
        return [c for c in self.calls if "/transit/" in c[1]]

    def close(self):
        self.server.shutdown()


class Env:
    def __init__(self, stack, upstream):
        self.stack, self.upstream, self.vault = stack, upstream, stack.vault
        self.vault.ok("POST", "sys/policy/t28-independent", {"policy": POLICY})
        self.token = self.vault.ok("POST", "auth/token/create", {"policies": ["t28-independent"], "ttl": "4h"})[
            "auth"
        ]["client_token"]
        self.relay = VaultRelay(self.vault.addr)
        self.hostile = HostileUpstream(stack.s3_endpoint)
        self.procs = []

    def key(self, tag: str) -> str:
        name = f"t28i-{tag}-{uuid.uuid4().hex[:8]}"
        self.vault.ok("POST", f"transit/keys/{name}", {"type": "aes256-gcm96"})
        return name

    def erase(self, name: str) -> None:
        self.vault.ok("POST", f"transit/keys/{name}/config", {"deletion_allowed": True})
        self.vault.ok("DELETE", f"transit/keys/{name}")

    def proxy(self, name: str, **env: str):
        settings = {
            "VAULT_ADDR": self.relay.addr,
            "VAULT_TOKEN": self.token,
            "CLOUDTASER_S3PROXY_S3_ENDPOINT": self.hostile.endpoint,
            **env,
        }
        proc, endpoint, health = self.stack.start_proxy(f"t28i-{name}", **settings)
        self.procs.append(proc)
        client = s3_client(endpoint, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)
        return client, endpoint, health

    def transit_key_at_rest(self, key: str) -> str:
        return self.upstream.head_object(Bucket=BUCKET, Key=key)["Metadata"]["cloudtaser-transit-key"]

    def stored(self, key: str) -> bool:
        try:
            self.upstream.head_object(Bucket=BUCKET, Key=key)
            return True
        except ClientError:
            return False

    def relabel(self, key: str, **changes: str) -> None:
        """As someone with the upstream's credentials: rewrite metadata in place."""
        head = self.upstream.head_object(Bucket=BUCKET, Key=key)
        meta = dict(head["Metadata"])
        meta.update(changes)
        self.upstream.copy_object(
            Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key}, Metadata=meta,
            MetadataDirective="REPLACE",
        )

    def close(self):
        for p in self.procs:
            p.stop()
        self.relay.close()
        self.hostile.close()


@pytest.fixture(scope="module")
def env(stack, upstream):
    try:
        upstream.create_bucket(Bucket=BUCKET)
    except ClientError:
        pass
    e = Env(stack, upstream)
    yield e
    e.close()


def error_of(call) -> tuple[int, str, str]:
    try:
        call()
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"], e.response["Error"].get(
            "Message", ""
        )
    raise AssertionError("the call succeeded")


def add_headers(client, event: str, headers: list[tuple[str, str]]):
    def hook(request, **_):
        for k, v in headers:
            request.headers[k] = v

    client.meta.events.register(f"before-sign.s3.{event}", hook)
    return hook


def raw(endpoint: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> tuple[int, dict, bytes]:
    u = urllib.parse.urlsplit(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", f"{u.hostname}:{u.port}")
    for k, v in headers:
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    conn.putheader("Authorization", "AWS4-HMAC-SHA256 Credential=workload-dummy-key/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00")
    conn.endheaders(body)
    r = conn.getresponse()
    out = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, hdrs, out


def kms_forwarded(hostile, since: int) -> list[tuple[str, str, dict]]:
    out = []
    for s in hostile.seen[since:]:
        names = [h for h in s.headers if h in KMS_HEADERS]
        sse = s.headers.get("x-amz-server-side-encryption", "")
        if names or sse.startswith("aws:kms"):
            out.append((s.method, s.path, {h: s.headers[h] for h in names}))
    return out


# ---------------------------------------------------------------- claim 1


def test_odd_keys_copies_and_cross_prefix_parts_are_wrapped_by_their_rule(env):
    """Held if green: longest prefix decides, for literal dots, double
    slashes, percent-encoded paths, copies and multipart uploads whose parts
    are copied from another tenant's prefix."""
    ka, kb, kd = env.key("a"), env.key("b"), env.key("d")
    client, endpoint, _ = env.proxy(
        "route", CLOUDTASER_S3PROXY_TRANSIT_KEY=kd,
        CLOUDTASER_S3PROXY_KEY_RULES=f"{BUCKET}/ra/={ka},{BUCKET}/ra/deep/={kb}",
    )
    cases = {"ra/x": ka, "ra/deep/y": kb, "ra//z": ka, "rab/x": kd, "ra/dé jà/%2F": ka,
             "ra/deeper": ka, "x/ra/deep/y": kd}
    wrong = {}
    for key, want in cases.items():
        try:
            client.put_object(Bucket=BUCKET, Key=key, Body=b"v:" + key.encode())
            got = env.transit_key_at_rest(key)
            assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"v:" + key.encode()
        except ClientError as e:
            got = e.response["Error"]["Code"]
        if got != want:
            wrong[key] = (got, want)
    assert wrong == {}
    # Dot segments (which a path-normalising upstream would move to another tenant) are refused.
    status, _, _ = error_of(lambda: client.put_object(Bucket=BUCKET, Key="ra/../deep/x", Body=b"dots"))
    assert status == 400 and not env.stored("ra/../deep/x")
    # A percent-encoded path names the decoded key, and is routed by it.
    status, _, body = raw(endpoint, "PUT", f"/{BUCKET}/%72a/%64eep/enc", [], b"encoded")
    assert status == 200, body
    assert env.transit_key_at_rest("ra/deep/enc") == kb
    # A copy out of one tenant into another: the destination's rule.
    client.copy_object(Bucket=BUCKET, Key="ra/deep/copied", CopySource={"Bucket": BUCKET, "Key": "ra/x"})
    assert env.transit_key_at_rest("ra/deep/copied") == kb
    client.copy_object(Bucket=BUCKET, Key="elsewhere/copied", CopySource={"Bucket": BUCKET, "Key": "ra/deep/y"})
    assert env.transit_key_at_rest("elsewhere/copied") == kd
    # A multipart upload in `ra/` whose parts are copied from `ra/deep/` and from the default.
    big = b"B" * (5 * 1024 * 1024 + 7)
    client.put_object(Bucket=BUCKET, Key="ra/deep/big", Body=big)
    up = client.create_multipart_upload(Bucket=BUCKET, Key="ra/mp")["UploadId"]
    p1 = client.upload_part_copy(Bucket=BUCKET, Key="ra/mp", UploadId=up, PartNumber=1,
                                 CopySource={"Bucket": BUCKET, "Key": "ra/deep/big"})["CopyPartResult"]["ETag"]
    p2 = client.upload_part_copy(Bucket=BUCKET, Key="ra/mp", UploadId=up, PartNumber=2,
                                 CopySource={"Bucket": BUCKET, "Key": "rab/x"})["CopyPartResult"]["ETag"]
    client.complete_multipart_upload(Bucket=BUCKET, Key="ra/mp", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": p1}, {"PartNumber": 2, "ETag": p2}]})
    assert env.transit_key_at_rest("ra/mp") == ka
    assert client.get_object(Bucket=BUCKET, Key="ra/mp")["Body"].read() == big + b"v:rab/x"
    # At rest the wrapped key opens under the rule's key and no other.
    wrapped = env.upstream.head_object(Bucket=BUCKET, Key="ra/mp")["Metadata"]["cloudtaser-key"]
    assert env.vault.api("POST", f"transit/decrypt/{ka}", {"ciphertext": wrapped})[0] == 200
    assert env.vault.api("POST", f"transit/decrypt/{kb}", {"ciphertext": wrapped})[0] != 200


def test_sse_header_shapes_select_only_allowed_keys_and_nothing_kms_goes_upstream(env):
    """Held if green: with an allow-list, SSE-KMS fields in any shape pick
    only allow-listed keys and are never forwarded on PUT, Create or Copy."""
    ka, kc, kd = env.key("sa"), env.key("sc"), env.key("sd")
    client, endpoint, _ = env.proxy(
        "sse", CLOUDTASER_S3PROXY_TRANSIT_KEY=kd, CLOUDTASER_S3PROXY_KMS_KEY_IDS=f"alias/t-a={ka},{kc}",
    )
    since = len(env.hostile.seen)
    client.put_object(Bucket=BUCKET, Key="sse/a", Body=b"a", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="alias/t-a", SSEKMSEncryptionContext="eyJ0IjoiYSJ9", BucketKeyEnabled=True)
    assert env.transit_key_at_rest("sse/a") == ka
    client.put_object(Bucket=BUCKET, Key="sse/dsse", Body=b"c", ServerSideEncryption="aws:kms:dsse", SSEKMSKeyId=kc)
    assert env.transit_key_at_rest("sse/dsse") == kc
    client.put_object(Bucket=BUCKET, Key="sse/none", Body=b"n", ServerSideEncryption="aws:kms")
    assert env.transit_key_at_rest("sse/none") == kd
    # Duplicated, oddly cased: whichever value the proxy reads must be on the list.
    status, _, body = raw(endpoint, "PUT", f"/{BUCKET}/sse/dup", [
        ("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id", "alias/t-a"),
        ("x-amz-server-side-encryption-aws-kms-key-id", "arn:aws:kms:eu-west-1:1:key/other"),
        ("X-AMZ-SERVER-SIDE-ENCRYPTION", "aws:kms")], b"dup")
    # Duplicated SSE fields are refused outright (400), or the first value is on the list.
    assert status in (200, 400, 403), body
    if status == 200:
        assert env.transit_key_at_rest("sse/dup") == ka
    status, _, body = raw(endpoint, "PUT", f"/{BUCKET}/sse/dup2", [
        ("x-amz-server-side-encryption-aws-kms-key-id", "arn:aws:kms:eu-west-1:1:key/other"),
        ("x-amz-server-side-encryption-aws-kms-key-id", "alias/t-a")], b"dup")
    assert status in (400, 403) and not env.stored("sse/dup2"), body
    # Empty id: refused, not the default.
    status, _, body = raw(endpoint, "PUT", f"/{BUCKET}/sse/empty", [
        ("x-amz-server-side-encryption", "aws:kms"), ("x-amz-server-side-encryption-aws-kms-key-id", "")], b"e")
    assert status == 403 and not env.stored("sse/empty"), body
    # A copy with an allow-listed id and with SSE-C alongside SSE-KMS.
    client.copy_object(Bucket=BUCKET, Key="sse/copy", CopySource={"Bucket": BUCKET, "Key": "sse/none"},
                       ServerSideEncryption="aws:kms", SSEKMSKeyId=kc)
    assert env.transit_key_at_rest("sse/copy") == kc
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}
    try:
        client.put_object(Bucket=BUCKET, Key="sse/ssec", Body=b"s", SSEKMSKeyId="alias/t-a", **ssec)
        assert env.upstream.head_object(Bucket=BUCKET, Key="sse/ssec", **ssec)["Metadata"][
            "cloudtaser-transit-key"] == ka
    except ClientError:
        assert not env.stored("sse/ssec")
    up = client.create_multipart_upload(Bucket=BUCKET, Key="sse/mp", ServerSideEncryption="aws:kms",
                                        SSEKMSKeyId="alias/t-a")["UploadId"]
    etag = client.upload_part(Bucket=BUCKET, Key="sse/mp", UploadId=up, PartNumber=1, Body=b"p")["ETag"]
    client.complete_multipart_upload(Bucket=BUCKET, Key="sse/mp", UploadId=up,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert env.transit_key_at_rest("sse/mp") == ka
    assert kms_forwarded(env.hostile, since) == []


def test_hole_sse_kms_headers_on_upload_part_and_complete_are_forwarded_upstream(env):
    """HOLE (claim 1): UploadPart and CompleteMultipartUpload do not go
    through `write_key`, so SSE-KMS fields a workload adds there reach the
    upstream although the allow-list makes them the proxy's."""
    ka = env.key("up")
    client, _, _ = env.proxy("sse-parts", CLOUDTASER_S3PROXY_KMS_KEY_IDS=f"alias/t-up={ka}")
    up = client.create_multipart_upload(Bucket=BUCKET, Key="ssep/mp", ServerSideEncryption="aws:kms",
                                        SSEKMSKeyId="alias/t-up")["UploadId"]
    since = len(env.hostile.seen)
    extra = [("x-amz-server-side-encryption", "aws:kms"),
             ("x-amz-server-side-encryption-aws-kms-key-id", "arn:aws:kms:eu-west-1:1:key/provider-secret"),
             ("x-amz-server-side-encryption-context", "eyJ0IjoiYSJ9")]
    add_headers(client, "UploadPart", extra)
    add_headers(client, "CompleteMultipartUpload", extra)
    try:
        etag = client.upload_part(Bucket=BUCKET, Key="ssep/mp", UploadId=up, PartNumber=1, Body=b"p")["ETag"]
        client.complete_multipart_upload(Bucket=BUCKET, Key="ssep/mp", UploadId=up,
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    except ClientError:
        pass
    assert kms_forwarded(env.hostile, since) == [], "SSE-KMS fields forwarded upstream"


# ---------------------------------------------------------------- claim 2


def test_off_list_ids_are_refused_before_vault_and_upstream_on_put_and_create(env):
    """Held if green: PutObject and CreateMultipartUpload with an id off the
    list, or a Vault path as the id, get 403 with no Vault and no upstream call."""
    ka = env.key("ok")
    client, endpoint, _ = env.proxy("offlist", CLOUDTASER_S3PROXY_KMS_KEY_IDS=f"alias/ok={ka}",
                                    CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
    time.sleep(0.5)
    bad_ids = ["alias/nope", ka.upper(), f"transit/{ka}", f"../keys/{ka}", f"transit/keys/{ka}", "alias/ok/", "ALIAS/OK",
               f"{ka}", "vault-transit:" + ka]
    for bad in bad_ids:
        vault_before, up_before = len(env.relay.calls), len(env.hostile.seen)
        for op in ("put", "create"):
            if op == "put":
                call = lambda: client.put_object(Bucket=BUCKET, Key="off/x", Body=b"x", ServerSideEncryption="aws:kms",  # noqa: E731
                                                 SSEKMSKeyId=bad)
            else:
                call = lambda: client.create_multipart_upload(Bucket=BUCKET, Key="off/m",  # noqa: E731
                                                              ServerSideEncryption="aws:kms", SSEKMSKeyId=bad)
            if bad == ka:
                continue  # only listed as alias/ok: a bare key name is not an id here
            try:
                status, code, _ = error_of(call)
            except AssertionError:
                status, code = 200, f"accepted, stored under {env.transit_key_at_rest('off/x') if op == 'put' else '?'}"
            assert (status, code) == (403, "KMS.AccessDeniedException"), (op, bad)
        assert env.relay.calls[vault_before:] == [], bad
        assert env.hostile.seen[up_before:] == [], bad
    # A bare key name that is only a rule target is not an id either.
    vault_before, up_before = len(env.relay.calls), len(env.hostile.seen)
    status, code, _ = error_of(lambda: client.put_object(Bucket=BUCKET, Key="off/y", Body=b"y", SSEKMSKeyId=ka))
    assert (status, code) == (403, "KMS.AccessDeniedException")
    assert env.relay.calls[vault_before:] == [] and env.hostile.seen[up_before:] == []
    assert not env.stored("off/x") and not env.stored("off/y")


def test_hole_off_list_id_on_copy_reaches_the_upstream_before_the_403(env):
    """HOLE (claim 2, docs: "403 before any Vault or upstream call"): a
    CopyObject naming an id off the list is examined upstream (HEAD of the
    source) before `write_key` refuses it."""
    ka = env.key("cp")
    client, _, _ = env.proxy("offlist-copy", CLOUDTASER_S3PROXY_KMS_KEY_IDS=f"alias/cp={ka}")
    client.put_object(Bucket=BUCKET, Key="offc/src", Body=b"src")
    up_before, vault_before = len(env.hostile.seen), len(env.relay.transit_calls())
    status, code, _ = error_of(lambda: client.copy_object(
        Bucket=BUCKET, Key="offc/dst", CopySource={"Bucket": BUCKET, "Key": "offc/src"},
        ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/not-listed"))
    assert (status, code) == (403, "KMS.AccessDeniedException")
    assert not env.stored("offc/dst")
    assert len(env.relay.transit_calls()) == vault_before
    assert [(s.method, s.path) for s in env.hostile.seen[up_before:]] == [], "upstream called before the 403"


# ---------------------------------------------------------------- claim 3


def test_relabelled_and_foreign_envelopes_are_refused(env):
    """Held if green: an envelope naming an unconfigured key or a Vault path
    gets no Vault call; relabelling to another configured key is refused."""
    ka, kb = env.key("la"), env.key("lb")
    client, _, _ = env.proxy("relabel", CLOUDTASER_S3PROXY_KEY_RULES=f"{BUCKET}/la/={ka},{BUCKET}/lb/={kb}",
                             CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
    for key in ("la/1", "la/2", "la/3"):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"secret " + key.encode())
    # Relabelled to a configured key (the MAC covers it): refused.
    env.relabel("la/1", **{"cloudtaser-transit-key": kb})
    status, _, _ = error_of(lambda: client.get_object(Bucket=BUCKET, Key="la/1")["Body"].read())
    assert status >= 400
    # Relabelled and rewrapped under kb by someone who may use kb (the data key
    # is not known to them, so they can only rewrap a key of their own):
    # the MAC made under the real data key does not verify.
    other = env.vault.ok("POST", f"transit/datakey/plaintext/{kb}", {})["data"]["ciphertext"]
    env.relabel("la/2", **{"cloudtaser-transit-key": kb, "cloudtaser-key": other})
    status, _, _ = error_of(lambda: client.get_object(Bucket=BUCKET, Key="la/2")["Body"].read())
    assert status >= 400
    # Unconfigured key names and paths: refused with no Vault call.
    for name in ("t28i-not-configured", f"../keys/{ka}", f"{ka}/../{ka}", "cloudtaser-e2e"):
        env.relabel("la/3", **{"cloudtaser-transit-key": name})
        before = len(env.relay.transit_calls())
        status, _, _ = error_of(lambda: client.get_object(Bucket=BUCKET, Key="la/3")["Body"].read())
        assert status >= 400, name
        assert env.relay.transit_calls()[before:] == [] or name == "cloudtaser-e2e", name


# ---------------------------------------------------------------- claims 4 and 5


def test_copy_to_another_tenant_outlives_the_source_key_and_dies_with_its_own(env):
    """Held if green: claim 4, checked through a proxy with a cold cache."""
    ka, kb = env.key("ca"), env.key("cb")
    rules = f"{BUCKET}/ca/={ka},{BUCKET}/cb/={kb}"
    client, _, _ = env.proxy("copy-w", CLOUDTASER_S3PROXY_KEY_RULES=rules)
    client.put_object(Bucket=BUCKET, Key="ca/src", Body=b"tenant a data")
    client.copy_object(Bucket=BUCKET, Key="cb/copy", CopySource={"Bucket": BUCKET, "Key": "ca/src"})
    assert env.transit_key_at_rest("cb/copy") == kb
    env.erase(ka)
    cold, _, _ = env.proxy("copy-r1", CLOUDTASER_S3PROXY_KEY_RULES=rules)
    assert cold.get_object(Bucket=BUCKET, Key="cb/copy")["Body"].read() == b"tenant a data"
    status, _, message = error_of(lambda: cold.get_object(Bucket=BUCKET, Key="ca/src")["Body"].read())
    assert (status, message) == (403, ERASED_TEXT)
    env.erase(kb)
    cold2, _, _ = env.proxy("copy-r2", CLOUDTASER_S3PROXY_KEY_RULES=rules)
    status, _, message = error_of(lambda: cold2.get_object(Bucket=BUCKET, Key="cb/copy")["Body"].read())
    assert (status, message) == (403, ERASED_TEXT)


def test_erasure_reaches_cache_pool_and_open_uploads_within_the_bound(env):
    """Held if green: claim 5 for a routed writing key with a pool, a warm
    cache and an upload opened before the erasure; other tenants untouched."""
    ke, ko = env.key("e"), env.key("o")
    client, _, _ = env.proxy(
        "erase", CLOUDTASER_S3PROXY_KEY_RULES=f"{BUCKET}/te/={ke},{BUCKET}/to/={ko}",
        CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS="1", CLOUDTASER_S3PROXY_KEY_CACHE_TTL_SECS="600",
        CLOUDTASER_S3PROXY_KEY_POOL_SIZE="8",
    )
    time.sleep(1.0)
    client.put_object(Bucket=BUCKET, Key="te/a", Body=b"erase me")
    client.put_object(Bucket=BUCKET, Key="to/a", Body=b"keep me")
    assert client.get_object(Bucket=BUCKET, Key="te/a")["Body"].read() == b"erase me"
    up = client.create_multipart_upload(Bucket=BUCKET, Key="te/mp")["UploadId"]
    e1 = client.upload_part(Bucket=BUCKET, Key="te/mp", UploadId=up, PartNumber=1, Body=b"part one")["ETag"]
    env.erase(ke)
    erased_at = time.monotonic()
    while True:
        try:
            client.get_object(Bucket=BUCKET, Key="te/a")["Body"].read()
        except ClientError as e:
            assert e.response["Error"]["Message"] == ERASED_TEXT, e.response["Error"]
            break
        assert time.monotonic() - erased_at < 3.0, "a read of an erased key's object succeeded past the bound"
        time.sleep(0.1)
    for _ in range(3):
        status, _, message = error_of(lambda: client.get_object(Bucket=BUCKET, Key="te/a")["Body"].read())
        assert (status, message) == (403, ERASED_TEXT)
        assert "encryption key not found" not in message and "vault" not in message.lower()
    status, _, message = error_of(lambda: client.put_object(Bucket=BUCKET, Key="te/new", Body=b"new"))
    assert (status, message) == (403, ERASED_TEXT)
    assert not env.stored("te/new")
    # The upload opened before the erasure: no part and no Complete acknowledged.
    status, _, _ = error_of(lambda: client.upload_part(Bucket=BUCKET, Key="te/mp", UploadId=up, PartNumber=2,
                                                       Body=b"part two"))
    assert status in (403, 404)
    status, _, _ = error_of(lambda: client.complete_multipart_upload(
        Bucket=BUCKET, Key="te/mp", UploadId=up, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]}))
    assert status in (403, 404)
    assert not env.stored("te/mp")
    # Copies out of the erased tenant are refused too (no laundering into a live key).
    status, _, _ = error_of(lambda: client.copy_object(Bucket=BUCKET, Key="to/launder",
                                                      CopySource={"Bucket": BUCKET, "Key": "te/a"}))
    assert status == 403 and not env.stored("to/launder")
    assert client.get_object(Bucket=BUCKET, Key="to/a")["Body"].read() == b"keep me"
    client.put_object(Bucket=BUCKET, Key="to/b", Body=b"still writable")
    assert env.transit_key_at_rest("to/b") == ko


def test_hole_erased_read_only_key_is_served_from_cache_past_the_bound(env):
    """HOLE (claim 5): a key only in CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS
    (the state after step 1 of the erasure procedure) has no version check,
    so its cached data keys keep serving reads for the whole cache TTL."""
    kr = env.key("r")
    writer, _, _ = env.proxy("ro-w", CLOUDTASER_S3PROXY_KEY_RULES=f"{BUCKET}/tr/={kr}")
    writer.put_object(Bucket=BUCKET, Key="tr/a", Body=b"read-only tenant")
    reader, _, _ = env.proxy(
        "ro-r", CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS=kr, CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS="1",
        CLOUDTASER_S3PROXY_KEY_CACHE_TTL_SECS="600",
    )
    assert reader.get_object(Bucket=BUCKET, Key="tr/a")["Body"].read() == b"read-only tenant"
    env.erase(kr)
    time.sleep(3.5)  # 1 s check + two Vault round trips, generously
    try:
        body = reader.get_object(Bucket=BUCKET, Key="tr/a")["Body"].read()
    except ClientError as e:
        assert e.response["Error"]["Message"] == ERASED_TEXT
        return
    raise AssertionError(f"read {body!r} under a key erased 3.5 s ago (served from the cache)")


# ---------------------------------------------------------------- claim 6


def test_audit_headers_are_the_proxys_own_and_match_the_response(env):
    """Held if green: every Transit call of a request carries the proxy's id
    (the one in the response) and its reason, whatever the client sent."""
    kw = env.key("au")
    rules = f"{BUCKET}/au/={kw}"
    writer, w_endpoint, _ = env.proxy("audit-w", CLOUDTASER_S3PROXY_KEY_RULES=rules,
                                      CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
    spoof = [("x-cloudtaser-request-id", "CLIENTCHOSEN0001"), ("x-cloudtaser-reason", "rewrap")]
    before = len(env.relay.calls)
    status, headers, body = raw(w_endpoint, "PUT", f"/{BUCKET}/au/obj", spoof, b"audited")
    assert status == 200, body
    rid = headers["x-cloudtaser-request-id"]
    assert re.fullmatch(r"[0-9A-F]{16}", rid), rid
    calls = [c for c in env.relay.calls[before:] if f"/transit/datakey/plaintext/{kw}" in c[1]]
    assert len(calls) == 1, env.relay.calls[before:]
    assert calls[0][2].get("x-cloudtaser-request-id") == rid
    assert calls[0][2].get("x-cloudtaser-reason") == "write"
    reader, r_endpoint, _ = env.proxy("audit-r", CLOUDTASER_S3PROXY_KEY_RULES=rules,
                                      CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
    before = len(env.relay.calls)
    status, headers, body = raw(r_endpoint, "GET", f"/{BUCKET}/au/obj", spoof)
    assert (status, body) == (200, b"audited")
    rid = headers["x-cloudtaser-request-id"]
    # Other proxies' background calls interleave: this request's are the ones on its key, not the pool's.
    calls = [c for c in env.relay.calls[before:] if c[1].endswith(kw) and c[2].get("x-cloudtaser-reason") != "pool"]
    assert [c[1] for c in calls] == [f"/v1/transit/decrypt/{kw}"], calls
    assert calls[0][2].get("x-cloudtaser-request-id") == rid != "CLIENTCHOSEN0001"
    assert calls[0][2].get("x-cloudtaser-reason") == "read"
    # A copy into the same tenant: its Transit calls carry the copy's id, as a write.
    before = len(env.relay.calls)
    status, headers, body = raw(r_endpoint, "PUT", f"/{BUCKET}/au/copy",
                                spoof + [("x-amz-copy-source", f"/{BUCKET}/au/obj")])
    assert status == 200, body
    for c in [c for c in env.relay.calls[before:] if c[1].endswith(kw) and c[2].get("x-cloudtaser-reason") != "pool"]:
        assert c[2].get("x-cloudtaser-request-id") == headers["x-cloudtaser-request-id"], c
        assert c[2].get("x-cloudtaser-reason") in ("write", "read"), c
    # Every Transit call ever made carries both headers, none with the client's values.
    for method, path, h in env.relay.transit_calls():
        assert h.get("x-cloudtaser-request-id") and h.get("x-cloudtaser-reason"), (method, path)
        assert "CLIENTCHOSEN" not in h["x-cloudtaser-request-id"] and h["x-cloudtaser-reason"] != "rewrap" or \
            path.startswith("/v1/transit/rewrap/"), (path, h)


# ---------------------------------------------------------------- claim 7


def run_rewrap(env, *args: str, **settings: str) -> subprocess.CompletedProcess:
    proc_env = env.stack.proxy_env(VAULT_ADDR=env.relay.addr, VAULT_TOKEN=env.token,
                                   CLOUDTASER_S3PROXY_S3_ENDPOINT=env.hostile.endpoint, **settings)
    return subprocess.run([stack_mod.proxy_binary(), "rewrap", "--bucket", BUCKET, "--quiet", "--assume-quiesced",
                           *args], env=proc_env, capture_output=True, text=True, timeout=120)


def test_rewrap_to_key_does_not_launder_tampered_or_relabelled_envelopes(env):
    """Held if green: `rewrap --to-key` leaves a tampered or relabelled
    object as it was (no valid envelope under the new key), and moves an
    honest one."""
    ka, kb = env.key("wa"), env.key("wb")
    settings = {"CLOUDTASER_S3PROXY_KEY_RULES": f"{BUCKET}/rw/={ka}", "CLOUDTASER_S3PROXY_TRANSIT_READ_KEYS": kb}
    client, _, _ = env.proxy("rewrap", **settings)
    for key in ("rw/honest", "rw/size", "rw/label", "rw/swap", "rw/swap-src"):
        client.put_object(Bucket=BUCKET, Key=key, Body=b"body of " + key.encode())
    env.relabel("rw/size", **{"cloudtaser-size": "3"})
    other = env.vault.ok("POST", f"transit/datakey/plaintext/{kb}", {})["data"]["ciphertext"]
    env.relabel("rw/label", **{"cloudtaser-transit-key": kb, "cloudtaser-key": other})
    # An envelope moved onto another object (same key, another name).
    src = env.upstream.head_object(Bucket=BUCKET, Key="rw/swap-src")["Metadata"]
    env.relabel("rw/swap", **{k: v for k, v in src.items() if k.startswith("cloudtaser-")})
    before = {k: env.upstream.head_object(Bucket=BUCKET, Key=k)["Metadata"] for k in ("rw/size", "rw/label", "rw/swap")}
    done = run_rewrap(env, "--prefix", "rw/", "--to-key", kb, **settings)
    assert env.transit_key_at_rest("rw/honest") == kb, done.stdout + done.stderr
    assert done.returncode != 0, "three objects failed and the run says nothing"
    for key, meta in before.items():
        assert env.upstream.head_object(Bucket=BUCKET, Key=key)["Metadata"] == meta, key
    fresh, _, _ = env.proxy("rewrap-r", **settings)
    assert fresh.get_object(Bucket=BUCKET, Key="rw/honest")["Body"].read() == b"body of rw/honest"
    for key in before:
        status, _, _ = error_of(lambda: fresh.get_object(Bucket=BUCKET, Key=key)["Body"].read())  # noqa: B023
        assert status >= 400, key


# ---------------------------------------------------------------- claim 8


def test_metric_key_labels_come_only_from_configuration(env):
    """Held if green: hostile ids, envelope key names and erased keys create
    no `key` series beyond the configured names."""
    ka = env.key("ma")
    client, endpoint, health = env.proxy("metrics", CLOUDTASER_S3PROXY_KEY_RULES=f"{BUCKET}/ma/={ka}",
                                         CLOUDTASER_S3PROXY_KMS_KEY_IDS=f"alias/m={ka}")
    client.put_object(Bucket=BUCKET, Key="ma/x", Body=b"x")
    for bad in ("alias/evil-series", "t28i-evil-series", "../x"):
        error_of(lambda: client.put_object(Bucket=BUCKET, Key="ma/y", Body=b"y", SSEKMSKeyId=bad))  # noqa: B023
    for name in ("t28i-evil-series-2", "cloudtaser-e2e-x"):
        env.relabel("ma/x", **{"cloudtaser-transit-key": name})
        error_of(lambda: client.get_object(Bucket=BUCKET, Key="ma/x")["Body"].read())
    text = urllib.request.urlopen(f"{health}/metrics", timeout=10).read().decode()
    # key="" is the series of calls that name no Transit key (token lookup, login).
    unnamed = [line for line in text.splitlines() if 'key=""' in line]
    assert all(re.search(r'operation="(lookup|login|lookup-self|token)', line) for line in unnamed), unnamed
    labels = set(re.findall(r'[{,]key="([^"]+)"', text))
    assert labels, "no key label at all: the test would prove nothing"
    assert labels <= {ka, stack_mod.TRANSIT_KEY}, labels


def test_hole_copy_carries_the_sources_provider_sse_kms_fields_upstream(env):
    """HOLE (claim 1): with the COPY directive, CopyObject re-sends the
    source HEAD's `x-amz-server-side-encryption*` answer fields (as on AWS
    for a bucket with default SSE-KMS) upstream, although the allow-list
    makes SSE-KMS fields the proxy's and `write_key` stripped the workload's."""
    ka = env.key("cs")
    client, _, _ = env.proxy("copy-sse", CLOUDTASER_S3PROXY_KMS_KEY_IDS=f"alias/cs={ka}")
    client.put_object(Bucket=BUCKET, Key="csse/src", Body=b"src")
    real = env.upstream.head_object(Bucket=BUCKET, Key="csse/src")["ResponseMetadata"]["HTTPHeaders"]
    answered = [(k, v) for k, v in real.items() if k not in ("connection", "transfer-encoding", "date", "server")]
    answered += [("x-amz-server-side-encryption", "aws:kms"),
                 ("x-amz-server-side-encryption-aws-kms-key-id", "arn:aws:kms:eu-west-1:1:key/provider-default")]
    once = []

    def rule(method, path, headers):
        if method == "HEAD" and path.endswith("/csse/src") and not once:
            once.append(1)
            return Forged(200, answered)
        return None

    env.hostile.forge(rule)
    since = len(env.hostile.seen)
    try:
        client.copy_object(Bucket=BUCKET, Key="csse/dst", CopySource={"Bucket": BUCKET, "Key": "csse/src"},
                           ServerSideEncryption="aws:kms", SSEKMSKeyId="alias/cs")
    except ClientError:
        pass
    finally:
        env.hostile.rules.remove(rule)
    assert once, "the source was never examined"
    assert kms_forwarded(env.hostile, since) == [], "the provider's SSE-KMS fields were forwarded on the copy"

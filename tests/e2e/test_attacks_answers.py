"""Someone who controls the upstream's answers (a hostile endpoint, or a
relay in front of it) against the real stack: OpenBao, s3s-fs behind the
hostile relay (hostile_upstream.py), and the proxy. Each test forges an
answer the proxy did not ask for and checks what reaches the workload:
never the forged bytes, never ciphertext or envelope metadata, and an
S3-shaped error with the right status. The request-side attacks on the
same rule (forward only what was checked) are at the end."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess

import pytest

import stack as stack_mod
from attack_helpers import body_of
from conftest import s3_client
from hostile_upstream import Forged, HostileUpstream
from test_attacks import raw
from test_failures import scrape

BUCKET = "e2e-core"
FORGED = b"FORGED-BY-THE-UPSTREAM-" * 50


def integrity_failures(health: str) -> float:
    return scrape(health).get(("cloudtaser_s3proxy_integrity_failures_total", ()), 0.0)


@pytest.fixture(scope="module")
def hostile(stack, bucket):
    relay = HostileUpstream(stack.s3_endpoint)
    proc, endpoint, health = stack.start_proxy("proxy-hostile-upstream", CLOUDTASER_S3PROXY_S3_ENDPOINT=relay.endpoint)
    yield relay, proc, endpoint, health
    proc.stop()
    relay.close()


@pytest.fixture()
def relay(hostile):
    hostile[0].reset()
    yield hostile[0]
    hostile[0].reset()


def envelope_headers(upstream, key: str) -> list[tuple[str, str]]:
    """The stored object's own envelope and ETag: a forged answer that
    carries them looks like the object to anything that checks headers only."""
    head = upstream.head_object(Bucket=BUCKET, Key=key)
    out = [(f"x-amz-meta-{k}", v) for k, v in head["Metadata"].items()]
    return [*out, ("ETag", head["ETag"])]


def object_path(key: str) -> str:
    return f"/{BUCKET}/{key}"


def whole_get_of(key: str):
    """Matches the proxy's whole-object GET of `key` (no Range header)."""
    return lambda method, path, headers: method == "GET" and path.split("?")[0] == object_path(key) \
        and "range" not in headers


@pytest.mark.parametrize("status", [206, 203, 201, 200])
def test_a_whole_object_read_answered_out_of_turn_serves_nothing(stack, upstream, hostile, relay, status):
    """Found by the review: a whole-object GET answered 206 (or 203, 201)
    passed the upstream's body to the workload as the object, unverified.
    The 200 case forges a body that is not the object's ciphertext."""
    _, _, endpoint, health = hostile
    key = f"answers/whole-{status}"
    plaintext = body_of(3000, key)
    s3_client(endpoint, "w", "w").put_object(Bucket=BUCKET, Key=key, Body=plaintext)
    headers = envelope_headers(upstream, key)
    if status == 206:
        headers.append(("Content-Range", f"bytes 0-{len(FORGED) - 1}/{len(FORGED)}"))
    relay.forge(lambda m, p, h: Forged(status, headers, FORGED) if whole_get_of(key)(m, p, h) else None)
    before = integrity_failures(health)
    got_status, body, got_headers = raw(endpoint, "GET", object_path(key))
    assert relay.forged >= 1
    assert FORGED[:23] not in body and b"CTS3" not in body
    assert not any(k.lower().startswith("x-amz-meta-cloudtaser") for k in got_headers)
    if status == 200:
        # The answer the proxy asked for, with a body that is not the
        # object's stream: its length alone is refused before a byte.
        assert got_status == 500, (got_status, body[:200])
    else:
        assert got_status == 502 and b"<Code>BadGateway</Code>" in body, (got_status, body[:200])
        assert integrity_failures(health) == before + 1


def test_scan_verify_does_not_count_a_forged_answer_as_verified(stack, upstream, hostile, relay):
    _, _, endpoint, _ = hostile
    key = "answers-scan/victim"
    s3_client(endpoint, "w", "w").put_object(Bucket=BUCKET, Key=key, Body=body_of(2000, key))
    headers = envelope_headers(upstream, key) + [("Content-Range", f"bytes 0-{len(FORGED) - 1}/{len(FORGED)}")]
    relay.forge(lambda m, p, h: Forged(206, headers, FORGED) if whole_get_of(key)(m, p, h) else None)
    env = stack.proxy_env(CLOUDTASER_S3PROXY_S3_ENDPOINT=relay.endpoint)
    r = subprocess.run([stack_mod.proxy_binary(), "scan", "--bucket", BUCKET, "--prefix", "answers-scan/", "--json",
                        "--verify"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["unreadable"] == 1 and report["encrypted_single"] == 0, report


def test_upload_part_copy_does_not_encrypt_forged_bytes(stack, upstream, hostile, relay):
    """UploadPartCopy reads its source through the read path: a forged
    answer there would become an authentic part of a new object."""
    _, _, endpoint, _ = hostile
    c = s3_client(endpoint, "w", "w")
    source = "answers/copy-source"
    c.put_object(Bucket=BUCKET, Key=source, Body=body_of(4000, source))
    headers = envelope_headers(upstream, source)
    relay.forge(lambda m, p, h: Forged(203, headers, FORGED) if whole_get_of(source)(m, p, h) else None)
    uid = c.create_multipart_upload(Bucket=BUCKET, Key="answers/copy-target")["UploadId"]
    try:
        status, body, _ = raw(endpoint, "PUT", f"/{BUCKET}/answers/copy-target?partNumber=1&uploadId={uid}", b"",
                              {"x-amz-copy-source": f"/{BUCKET}/{source}"})
        assert status == 502 and b"BadGateway" in body, (status, body)
        assert c.list_parts(Bucket=BUCKET, Key="answers/copy-target", UploadId=uid).get("Parts", []) == []
    finally:
        c.abort_multipart_upload(Bucket=BUCKET, Key="answers/copy-target", UploadId=uid)


def test_upstream_errors_are_rebuilt_without_ciphertext_or_envelope(stack, upstream, hostile, relay):
    """An error whose body is the object's ciphertext and whose headers are
    its envelope: the workload gets the status and an S3 error document of
    the upstream's fields, and nothing else."""
    _, _, endpoint, _ = hostile
    key = "answers/error-victim"
    s3_client(endpoint, "w", "w").put_object(Bucket=BUCKET, Key=key, Body=body_of(5000, key))
    ciphertext = upstream.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    headers = envelope_headers(upstream, key) + [("Content-Range", f"bytes */{len(ciphertext)}")]
    doc = b"<Error><Code>NoSuchKey</Code><Message>gone</Message><Key>" + key.encode() + b"</Key></Error>"
    for forged_body in (ciphertext, doc + ciphertext, doc.replace(b"gone", b"CTS3" + ciphertext[4:40].hex().encode())):
        relay.reset()
        relay.forge(lambda m, p, h, b=forged_body: Forged(404, headers, b) if whole_get_of(key)(m, p, h) else None)
        status, body, got = raw(endpoint, "GET", object_path(key))
        assert status == 404
        assert b"CTS3" not in body and ciphertext[52:80] not in body
        assert b"<Error>" in body and b"<Code>" in body
        assert not any(k.lower().startswith("x-amz-meta-") for k in got)
        assert "Content-Range" not in got
    relay.reset()
    relay.forge(lambda m, p, h: Forged(404, headers, doc) if whole_get_of(key)(m, p, h) else None)
    status, body, _ = raw(endpoint, "GET", object_path(key))
    assert status == 404 and b"<Code>NoSuchKey</Code><Message>gone</Message>" in body, body


@pytest.mark.parametrize(("method", "status"), [("HEAD", 203), ("HEAD", 206), ("PUT", 201), ("PUT", 206)])
def test_object_heads_and_writes_answered_out_of_turn_are_bad_gateway(stack, upstream, hostile, relay, method,
                                                                      status):
    _, _, endpoint, _ = hostile
    key = f"answers/{method.lower()}-{status}"
    s3_client(endpoint, "w", "w").put_object(Bucket=BUCKET, Key=key, Body=b"x" * 100)
    headers = envelope_headers(upstream, key) + [("Content-Length", "0")]

    def rule(m, p, h):
        if m == method and p.split("?")[0] == object_path(key):
            return Forged(status, headers, b"")
        return None

    relay.forge(rule)
    got, body, _ = raw(endpoint, method, object_path(key), b"new" if method == "PUT" else None)
    assert got == 502, (got, body)


def test_forwarded_operations_answered_out_of_turn_are_bad_gateway(stack, hostile, relay):
    _, _, endpoint, _ = hostile
    key = "answers/tagged"
    c = s3_client(endpoint, "w", "w")
    c.put_object(Bucket=BUCKET, Key=key, Body=b"t")
    doc = b"<Tagging><TagSet/></Tagging>"
    relay.forge(lambda m, p, h: Forged(206, [("Content-Range", f"bytes 0-{len(doc) - 1}/99")], doc)
                if "tagging" in p else None)
    status, body, _ = raw(endpoint, "GET", f"{object_path(key)}?tagging")
    assert status == 502 and b"TagSet" not in body, (status, body)


def test_write_answers_carry_no_envelope_and_no_object_bytes(stack, upstream, hostile, relay):
    """Found by the independent attack: a PutObject or UploadPart answered
    200 with another object's envelope headers (its wrapped key) and its
    stored ciphertext as the body reached the workload as sent. A write's
    answer is rebuilt: S3's write headers, no body."""
    _, _, endpoint, _ = hostile
    c = s3_client(endpoint, "w", "w")
    c.put_object(Bucket=BUCKET, Key="answers/victim", Body=body_of(600, "victim"))
    stolen = envelope_headers(upstream, "answers/victim")
    ciphertext = upstream.get_object(Bucket=BUCKET, Key="answers/victim")["Body"].read()
    relay.forge(lambda m, p, h: Forged(200, [*stolen, ("x-amz-version-id", "v-forged")], ciphertext)
                if m == "PUT" and "answers/written" in p else None)
    status, body, headers = raw(endpoint, "PUT", object_path("answers/written"), body=b"x" * 100)
    assert status == 200, (status, body[:200])
    assert body == b"", body[:64]
    leaked = [k for k in headers if k.lower().startswith("x-amz-meta-")]
    assert not leaked, leaked
    assert headers.get("x-amz-version-id") == "v-forged", "S3's write headers still reach the workload"
    up = c.create_multipart_upload(Bucket=BUCKET, Key="answers/written-mp")["UploadId"]
    status, body, headers = raw(endpoint, "PUT", f"{object_path('answers/written-mp')}?partNumber=1&uploadId={up}",
                                body=b"y" * 100)
    assert status == 200 and body == b"", (status, body[:64])
    assert not [k for k in headers if k.lower().startswith("x-amz-meta-")]


@pytest.mark.parametrize("prefix", [b"\n", b"  ", b"<Tagging><TagSet/></Tagging>"])
def test_control_answers_carrying_object_bytes_anywhere_are_bad_gateway(stack, upstream, hostile, relay, prefix):
    """Found by the independent attack: only a body that began with CTS3 was
    refused, so a newline (or a document) in front of another object's
    ciphertext reached the workload. Control answers are text documents."""
    _, _, endpoint, _ = hostile
    c = s3_client(endpoint, "w", "w")
    c.put_object(Bucket=BUCKET, Key="answers/tag-victim", Body=body_of(600, "tag-victim"))
    ciphertext = upstream.get_object(Bucket=BUCKET, Key="answers/tag-victim")["Body"].read()
    relay.forge(lambda m, p, h: Forged(200, [], prefix + ciphertext) if "tagging" in p else None)
    status, body, _ = raw(endpoint, "GET", f"{object_path('answers/tag-victim')}?tagging")
    assert status == 502 and b"CTS3" not in body, (status, body[:200])


def test_a_ranged_read_answered_with_other_bytes_is_refused(stack, upstream, hostile, relay):
    """The covering read must come back with exactly the range asked for:
    another offset's ciphertext (which would fail authentication anyway) is
    refused before a byte is served."""
    _, _, endpoint, _ = hostile
    key = "answers/ranged"
    plaintext = body_of(300_000, key)
    c = s3_client(endpoint, "w", "w")
    c.put_object(Bucket=BUCKET, Key=key, Body=plaintext)
    ciphertext = upstream.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    headers = envelope_headers(upstream, key)

    def rule(m, p, h):
        rng = h.get("range", "")
        if m == "GET" and p.split("?")[0] == object_path(key) and rng and rng != "bytes=0-51":
            first, last = (int(x) for x in rng.removeprefix("bytes=").split("-"))
            a, b = first + 1000, min(last + 1000, len(ciphertext) - 1)
            shifted = ciphertext[a:b + 1]
            return Forged(206, [*headers, ("Content-Range", f"bytes {a}-{b}/{len(ciphertext)}")], shifted)
        return None

    relay.forge(rule)
    status, body, _ = raw(endpoint, "GET", object_path(key), headers={"Range": "bytes=70000-70100"})
    assert status == 502 and b"BadGateway" in body, (status, body[:200])
    relay.reset()
    assert c.get_object(Bucket=BUCKET, Key=key, Range="bytes=70000-70100")["Body"].read() == plaintext[70000:70101]


def test_a_copy_whose_source_check_fails_is_refused_and_not_forwarded(stack, hostile, relay):
    """The copy goes upstream only after its source answered 200 to the
    proxy's examination; otherwise the workload gets that status and
    nothing is copied."""
    _, _, endpoint, _ = hostile
    c = s3_client(endpoint, "w", "w")
    c.put_object(Bucket=BUCKET, Key="answers/copy-src", Body=b"source")
    relay.forge(lambda m, p, h: Forged(500, [], b"") if m == "HEAD" and p.endswith("answers/copy-src") else None)
    status, body, _ = raw(endpoint, "PUT", f"/{BUCKET}/answers/copy-dst", b"",
                          {"x-amz-copy-source": f"/{BUCKET}/answers/copy-src", "x-amz-request-payer": "requester"})
    assert status == 500 and b"<Code>InternalError</Code>" in body, (status, body)
    heads = [s for s in relay.seen if s.method == "HEAD"]
    assert heads and heads[-1].headers.get("x-amz-request-payer") == "requester"
    assert not [s for s in relay.seen if s.method == "PUT" and "x-amz-copy-source" in s.headers]
    relay.reset()
    status, body, _ = raw(endpoint, "PUT", f"/{BUCKET}/answers/copy-dst", b"",
                          {"x-amz-copy-source": f"/{BUCKET}/answers/no-such-source"})
    assert status == 404 and b"<Code>NoSuchKey</Code>" in body, (status, body)
    assert not [s for s in relay.seen if s.method == "PUT"]


def test_the_copy_forwarded_is_the_source_examined(stack, hostile, relay):
    """The upstream gets `x-amz-copy-source` rebuilt from what was parsed
    and examined, percent-encoded, pinned to the examined ETag."""
    _, _, endpoint, _ = hostile
    c = s3_client(endpoint, "w", "w")
    key = "answers/src with spaces+plus&amp;é"
    c.put_object(Bucket=BUCKET, Key=key, Body=b"copied")
    c.copy_object(Bucket=BUCKET, Key="answers/copied", CopySource={"Bucket": BUCKET, "Key": key})
    puts = [s for s in relay.seen if s.method == "PUT" and "x-amz-copy-source" in s.headers]
    assert puts[-1].headers["x-amz-copy-source"] == \
        f"/{BUCKET}/answers/src%20with%20spaces%2Bplus%26amp%3B%C3%A9"
    assert puts[-1].headers["x-amz-copy-source-if-match"]
    assert c.get_object(Bucket=BUCKET, Key="answers/copied")["Body"].read() == b"copied"
    for odd in ("#x", " x", "\\x"):
        status, body, _ = raw(endpoint, "PUT", f"/{BUCKET}/answers/copied-odd", b"",
                              {"x-amz-copy-source": f"/{BUCKET}/answers/copied{odd}"})
        assert status == 400 and b"<Code>InvalidArgument</Code>" in body, (odd, status, body)


def test_a_fragment_in_the_copy_source_cannot_copy_plaintext_on_moto(stack, moto_stack):
    """Found by the review: `/bucket/plain.csv#x` was checked as a key that
    does not exist, the check's 404 let the copy through unchecked, and
    moto (reading `#x` as a URL fragment) copied `plain.csv`, which then
    read back in clear from a PLAINTEXT_READS prefix."""
    bucket = "attack-copy-fragment"
    moto_stack.direct.create_bucket(Bucket=bucket)
    moto_stack.direct.put_object(Bucket=bucket, Key="public/plain.csv", Body=b"name,iban\nalice,DE89")
    proc, endpoint, _ = stack.start_proxy("proxy-moto-plain", CLOUDTASER_S3PROXY_S3_ENDPOINT=moto_stack.endpoint,
                                          CLOUDTASER_S3PROXY_PLAINTEXT_READS=f"{bucket}/public/")
    try:
        for source in (f"/{bucket}/public/plain.csv#x", f"/{bucket}/public/plain.csv%23x"):
            status, body, _ = raw(endpoint, "PUT", f"/{bucket}/public/copy.csv", b"", {"x-amz-copy-source": source})
            assert status in (400, 404), (source, status, body)
        listed = moto_stack.direct.list_objects_v2(Bucket=bucket).get("Contents", [])
        assert [o["Key"] for o in listed] == ["public/plain.csv"]
    finally:
        proc.stop()


def test_connection_cannot_remove_the_envelope(stack, upstream, bucket):
    """Found by the review: `Connection: close, x-amz-meta-cloudtaser-key,
    x-amz-meta-cloudtaser-salt` removed the envelope the proxy had added,
    and the object was stored without its wrapped key (lost)."""
    key = "attacks/connection-envelope"
    plaintext = body_of(1000, key)
    status, body, _ = raw(stack.proxy_endpoint, "PUT", f"/{bucket}/{key}", plaintext, {
        "Connection": "close, x-amz-meta-cloudtaser-key, x-amz-meta-cloudtaser-salt, x-amz-meta-cloudtaser-size"})
    assert status == 200, body
    meta = upstream.head_object(Bucket=bucket, Key=key)["Metadata"]
    assert {"cloudtaser-key", "cloudtaser-salt", "cloudtaser-size"} <= set(meta), meta
    client = s3_client(stack.proxy_endpoint, "w", "w")
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == plaintext
    # Naming a field the request carries is refused, not obeyed.
    md5 = base64.b64encode(hashlib.md5(b"abc").digest()).decode()
    for named, extra in (("content-md5", {"Content-MD5": md5}), ("x-amz-meta-owner", {"x-amz-meta-owner": "a"})):
        status, body, _ = raw(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/connection-{named}", b"abc",
                              {"Connection": f"keep-alive, {named}", **extra})
        assert status == 400 and b"Connection" in body, (named, status, body)
        assert "Contents" not in upstream.list_objects_v2(Bucket=bucket, Prefix=f"attacks/connection-{named}")


def test_plaintext_reads_never_pass_off_a_stripped_envelope(stack, upstream, bucket):
    """Someone with the upstream's credentials strips an encrypted object's
    envelope inside a PLAINTEXT_READS prefix: the reader must not get the
    ciphertext as the object's content."""
    key = "answers-plain/stripped"
    client = s3_client(stack.proxy_endpoint, "w", "w")
    client.put_object(Bucket=bucket, Key=key, Body=body_of(90_000, key))
    ciphertext = upstream.get_object(Bucket=bucket, Key=key)["Body"].read()
    upstream.put_object(Bucket=bucket, Key=key, Body=ciphertext)
    proc, endpoint, _ = stack.start_proxy("proxy-plain-stripped",
                                          CLOUDTASER_S3PROXY_PLAINTEXT_READS=f"{bucket}/answers-plain/")
    try:
        for headers in ({}, {"Range": "bytes=100-200"}, {"Range": "bytes=0-10"}):
            status, body, _ = raw(endpoint, "GET", f"/{bucket}/{key}", headers=headers)
            assert status == 500 and b"CTS3" not in body and ciphertext[100:150] not in body, (headers, status)
        upstream.put_object(Bucket=bucket, Key="answers-plain/legacy.txt", Body=b"written before the proxy")
        assert raw(endpoint, "GET", f"/{bucket}/answers-plain/legacy.txt")[1] == b"written before the proxy"
        got = raw(endpoint, "GET", f"/{bucket}/answers-plain/legacy.txt", headers={"Range": "bytes=8-13"})
        assert got[:2] == (206, b"before")
    finally:
        proc.stop()


def send_with_repeats(endpoint: str, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> tuple[int, bytes]:
    import http.client  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415

    u = urllib.parse.urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.putrequest(method, target)
        for k, v in [*headers, ("Content-Length", str(len(body)))]:
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_repeated_fields_are_refused_not_read_two_ways(stack, upstream, bucket):
    """The proxy reads a field's first value; an upstream may read the last
    or both joined. `x-amz-metadata-directive: COPY` then `REPLACE` would
    have the proxy keep the envelope (COPY) and the upstream replace it."""
    client = s3_client(stack.proxy_endpoint, "w", "w")
    client.put_object(Bucket=bucket, Key="attacks/directive-src", Body=b"source")
    source = ("x-amz-copy-source", f"/{bucket}/attacks/directive-src")
    for repeated in (
        [("x-amz-metadata-directive", "COPY"), ("x-amz-metadata-directive", "REPLACE")],
        [source, ("x-amz-copy-source", f"/{bucket}/attacks/other")],
    ):
        status, body = send_with_repeats(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/directive-dst",
                                         [source, *repeated] if repeated[0] != source else repeated)
        assert status == 400 and b"may be sent only once" in body, (repeated, status, body)
    status, body = send_with_repeats(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/directive-dst",
                                     [source, ("x-amz-metadata-directive", "REPLACE,COPY")])
    assert status == 400 and b"metadata directive" in body, (status, body)
    assert "Contents" not in upstream.list_objects_v2(Bucket=bucket, Prefix="attacks/directive-dst")
    # One directive, in any case, is sent upstream as parsed: REPLACE keeps the envelope.
    status, _ = send_with_repeats(stack.proxy_endpoint, "PUT", f"/{bucket}/attacks/directive-dst",
                                  [source, ("x-amz-metadata-directive", "replace"), ("x-amz-meta-new", "1")])
    assert status == 200
    assert client.get_object(Bucket=bucket, Key="attacks/directive-dst")["Body"].read() == b"source"

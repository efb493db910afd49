"""Attacks on the real stack.

Two attackers:

* **Storage side**: someone holding the upstream's credentials (the
  `upstream` workload), who can read and rewrite the stored ciphertext and
  its metadata. Whatever they do, the workload must never receive a byte
  that was not verified: a read ends with an S3 error, or a 2xx body that
  is cut short after a prefix of the true plaintext.
* **Hostile process in the pod**: it talks to the proxy over raw sockets
  with malformed requests. Each gets an S3-shaped error, the proxy stays
  up, and nothing is ever stored in plaintext or outside the bucket.

Reads through the proxy use a raw HTTP client (attack_helpers.request), so
the tests see every byte the proxy sent, including a body cut short.
"""

from __future__ import annotations

import base64
import secrets
import time

import botocore.exceptions
import pytest

import envelope
from attack_helpers import (
    HDR,
    SEALED,
    SEG,
    TAG,
    MiB,
    HttpResult,
    all_keys,
    assert_bucket_all_ciphertext,
    body_of,
    ct_len,
    exists_upstream,
    flip,
    new_files,
    quote_key,
    request,
    build_request,
    segments,
    send_raw,
    snapshot,
    stored,
)
from conftest import s3_client

PART = 5 * MiB
REST_BUCKET = "e2e-attack-rest"
POD_BUCKET = "e2e-attack-pod"
OTHER_TRANSIT_KEY = "cloudtaser-e2e-attack-other"

# What the proxy answers when stored ciphertext or its envelope does not verify.
CORRUPT = {"InternalError"}
# ... and when the wrapped data key itself is refused by the key service.
KEY_REFUSED = {"KMS.AccessDeniedException", "AccessDenied"}


def ensure_bucket(upstream, name: str) -> str:
    """Created directly upstream: the proxy does not manage buckets."""
    try:
        upstream.create_bucket(Bucket=name)
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return name


@pytest.fixture(scope="module")
def rest_bucket(upstream):
    return ensure_bucket(upstream, REST_BUCKET)


@pytest.fixture(scope="module")
def pod_bucket(upstream):
    return ensure_bucket(upstream, POD_BUCKET)


@pytest.fixture(scope="module")
def workload(stack):
    """boto3 through the stack's proxy, with dummy credentials and a
    connection pool of its own (see put_through)."""
    return s3_client(stack.proxy_endpoint, "w", "w")


@pytest.fixture(scope="module")
def cold_proxy(stack):
    """A proxy without a key cache: every read unwraps its key at Vault,
    as a freshly started pod would. (The stack's proxy caches the keys of
    objects it wrote, by wrapped key, so it need not ask Vault at all.)"""
    proc, endpoint, _ = stack.start_proxy("proxy-attack-cold", CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0")
    yield endpoint
    proc.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def put_through(endpoint: str, bucket: str, key: str, data: bytes, writer=None) -> None:
    """A single PUT through a proxy: with boto3 (aws-chunked, CRC32 trailer)
    when there is a body. Empty bodies go raw: boto3 sends them with
    `Expect: 100-continue`, and its next request on that connection then
    stalls against any hyper server (the proxy and s3s-fs alike)."""
    if data and writer is not None:
        writer.put_object(Bucket=bucket, Key=key, Body=data)
        return
    res = request(endpoint, "PUT", f"/{bucket}/{quote_key(key)}", [], data)
    assert res.status == 200, (res.status, res.body[:300])


# --- what reaches the client --------------------------------------------------


def get(endpoint: str, bucket: str, key: str, rng: tuple[int, int] | None = None, query: str = "") -> HttpResult:
    headers = [("Range", f"bytes={rng[0]}-{rng[1]}")] if rng else []
    return request(endpoint, "GET", f"/{bucket}/{quote_key(key)}{query}", headers)


def head(endpoint: str, bucket: str, key: str) -> HttpResult:
    return request(endpoint, "HEAD", f"/{bucket}/{quote_key(key)}")


def assert_refused(res: HttpResult, truth: bytes, what: str, codes=CORRUPT, statuses=(500,),
                   limit: int | None = None) -> None:
    """The read did not deliver a complete body: an S3 error, or a 2xx whose
    body was cut short after a prefix of the true plaintext. `limit`: how
    many of those bytes could have been verified at all (the plaintext
    before the first damaged segment): a tag flip leaves the plaintext
    intact, so only this bound tells a proxy that waits for the tag from
    one that does not."""
    if res.status >= 400:
        assert res.status in statuses, f"{what}: status {res.status} {res.code} {res.message}"
        assert res.is_s3_error(), f"{what}: error {res.status} without an S3 error document: {res.body[:200]!r}"
        assert res.code in codes, f"{what}: error code {res.code} ({res.message}), expected one of {codes}"
        return
    assert res.status in (200, 206), f"{what}: unexpected status {res.status}"
    assert res.body == truth[: len(res.body)], f"{what}: bytes that are not the stored plaintext reached the client"
    assert not res.complete, f"{what}: a tampered object was read to a clean end ({len(res.body)} bytes)"
    assert len(res.body) < len(truth), f"{what}: the whole plaintext was released"
    if limit is not None:
        assert len(res.body) <= limit, f"{what}: {len(res.body)} bytes released, only {limit} could be verified"


def assert_head_refused(res: HttpResult, what: str, statuses=(500,)) -> None:
    assert res.status in statuses, f"{what}: HEAD answered {res.status}"


def assert_served(res: HttpResult, truth: bytes, what: str) -> None:
    assert res.status in (200, 206), f"{what}: {res.status} {res.code} {res.message}"
    assert res.complete and res.body == truth, f"{what}: not exactly the stored plaintext"


# --- single-PUT objects: the stored body tampered -----------------------------

SIZES = {"0B": 0, "1B": 1, "seg-1": SEG - 1, "seg": SEG, "seg+1": SEG + 1, "3seg+5": 3 * SEG + 5, "1MiB+7": MiB + 7}


def seg_plain_len(size: int, i: int) -> int:
    return min(SEG, size - i * SEG) if size else 0


def tamper(kind: str, size: int, raw: bytes) -> tuple[bytes, set[int] | None, int]:
    """The tampered body, the segments whose reads must fail (None: all, the
    header or the length is wrong), and the first segment that cannot verify."""
    n = segments(size)
    if kind == "header-magic":
        return flip(raw, 0), None, 0
    if kind == "header-part-number":
        return flip(raw, 11), None, 0
    if kind == "header-length":
        return flip(raw, 19), None, 0
    if kind == "header-salt":
        return flip(raw, 40, 0x80), None, 0
    if kind == "segment-ciphertext":
        k = n // 2
        return flip(raw, HDR + k * SEALED + seg_plain_len(size, k) // 2), {k}, k
    if kind == "segment-tag":
        return flip(raw, HDR + seg_plain_len(size, 0) + TAG - 1), {0}, 0
    if kind == "last-segment":
        return flip(raw, HDR + (n - 1) * SEALED), {n - 1}, n - 1
    if kind == "truncate-at-boundary":
        return raw[: HDR + (n - 1) * SEALED], None, n - 1
    if kind == "truncate-one-byte":
        return raw[:-1], None, n - 1
    if kind == "truncate-inside-header":
        return raw[:30], None, 0
    if kind == "append-one-byte":
        return raw + b"\x00", None, n
    if kind == "append-last-segment-again":
        return raw + raw[HDR + (n - 1) * SEALED :], None, n
    raise AssertionError(kind)


KINDS = ["header-magic", "header-part-number", "header-length", "header-salt", "segment-ciphertext", "segment-tag",
         "last-segment", "truncate-at-boundary", "truncate-one-byte", "truncate-inside-header", "append-one-byte",
         "append-last-segment-again"]


def tamper_cases():
    for sid, size in SIZES.items():
        for kind in KINDS:
            if kind == "segment-ciphertext" and size == 0:
                continue  # no ciphertext, only a tag
            yield pytest.param(size, kind, id=f"{sid}-{kind}")


def ranges_of(size: int) -> list[tuple[int, int]]:
    """A range in the first, a middle and the last segment."""
    if size == 0:
        return []
    n = segments(size)
    mid = (n // 2) * SEG
    out = [(0, min(9, size - 1)), (mid + min(3, size - 1 - mid), min(mid + 12, size - 1)), (max(0, size - 5), size - 1)]
    return list(dict.fromkeys(out))


def check_at_rest(stack, raw: bytes, meta: dict, data: bytes, bucket: str, key: str) -> bytes:
    """What the proxy stored: a format-3 envelope that the independent reader
    verifies (MAC over the name, size and salt; the stream header against
    it; every segment), with no plaintext in it. Returns the data key."""
    assert raw[:4] == b"CTS3" and raw[4] == 3, "a format-3 stream header"
    assert len(raw) == ct_len(len(data))
    assert meta["cloudtaser-format"] == "3"
    assert meta["cloudtaser-binding"] == "key"
    assert meta["cloudtaser-key"].startswith("vault:v")
    assert meta["cloudtaser-size"] == str(len(data))
    assert meta["cloudtaser-salt"] == raw[20:52].hex()
    assert len(meta["cloudtaser-mac"]) == 64
    if len(data) >= 16:
        assert data[:16] not in raw
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    assert envelope.verify_v3(dek, meta, bucket, key, raw) == data
    return dek


def assert_spec_reader_rejects(dek: bytes, blob: bytes, meta: dict, bucket: str, key: str) -> None:
    """The tampered object really is invalid: docs/FORMAT.md's format-3 reader refuses it."""
    with pytest.raises(Exception):  # noqa: B017, PT011 - InvalidTag, a FormatError, a short header
        envelope.verify_v3(dek, meta, bucket, key, blob)


def reseal_single(dek: bytes, meta: dict, bucket: str, key: str, body: bytes, salt: bytes) -> tuple[bytes, dict]:
    """`body` as a format-3 single PUT under `dek` with `salt`, with the MAC a
    writer holding the data key would compute for `key` (so only what the
    test changes on purpose is wrong)."""
    mac = envelope.envelope_mac(dek, binding=meta["cloudtaser-binding"], bucket=bucket, key=key,
                                transit_key=meta["cloudtaser-transit-key"], size=len(body), salt=salt)
    out = dict(meta, **{"cloudtaser-salt": salt.hex(), "cloudtaser-size": str(len(body)), "cloudtaser-mac": mac.hex()})
    return envelope.encrypt(dek, salt, 0, body, version=3), out


@pytest.mark.parametrize(("size", "kind"), list(tamper_cases()))
def test_tampered_single_put_body(stack, workload, upstream, rest_bucket, size, kind):
    key = unique(f"body/{size}/{kind}")
    data = body_of(size, key)
    put_through(stack.proxy_endpoint, rest_bucket, key, data, workload)
    raw, meta = stored(upstream, rest_bucket, key)
    dek = check_at_rest(stack, raw, meta, data, rest_bucket, key)

    bad, touched, first_bad = tamper(kind, size, raw)
    assert bad != raw
    assert_spec_reader_rejects(dek, bad, meta, rest_bucket, key)
    upstream.put_object(Bucket=rest_bucket, Key=key, Body=bad, Metadata=meta)
    assert stored(upstream, rest_bucket, key) == (bad, meta), "the attacker's rewrite is what is stored"

    ep = stack.proxy_endpoint
    assert_refused(get(ep, rest_bucket, key), data, f"GET {kind}", limit=first_bad * SEG)
    for a, b in ranges_of(size):
        hit = touched is None or any(a // SEG <= s <= b // SEG for s in touched)
        res = get(ep, rest_bucket, key, (a, b))
        if hit:
            assert_refused(res, data[a : b + 1], f"GET bytes={a}-{b} ({kind})", limit=max(0, first_bad * SEG - a))
        else:
            # Segments the attacker did not touch still read, exactly.
            assert_served(res, data[a : b + 1], f"GET bytes={a}-{b} away from the {kind}")


# --- single-PUT objects: bodies and metadata moved between objects -----------


def put_pair(endpoint, workload, upstream, bucket, size_a, size_b, shared_key=False, vault=None):
    """Two objects written by one proxy. With `shared_key`, both are then
    re-encrypted under one data key (each with its own salt), as a writer
    that reuses keys would store them: the proxy itself gives every object
    its own key, but a reader must not rely on that."""
    ka, kb = unique("pair/a"), unique("pair/b")
    a, b = body_of(size_a, ka), body_of(size_b, kb)
    put_through(endpoint, bucket, ka, a, workload)
    put_through(endpoint, bucket, kb, b, workload)
    ra, ma = stored(upstream, bucket, ka)
    rb, mb = stored(upstream, bucket, kb)
    if shared_key:
        dek = envelope.unwrap(vault, ma["cloudtaser-transit-key"], ma["cloudtaser-key"])
        body, meta = reseal_single(dek, dict(mb, **{"cloudtaser-key": ma["cloudtaser-key"]}), bucket, kb, b,
                                   secrets.token_bytes(32))
        upstream.put_object(Bucket=bucket, Key=kb, Body=body, Metadata=meta)
        rb, mb = stored(upstream, bucket, kb)
        assert get(endpoint, bucket, kb).body == b, "the re-encrypted object reads"
    return (ka, a, ra, ma), (kb, b, rb, mb)


SWAP_SIZES = [pytest.param(3 * SEG + 5, 3 * SEG + 5, id="same-size"), pytest.param(1000, 3 * SEG + 5, id="other-size"),
              pytest.param(0, 0, id="both-empty")]


@pytest.mark.parametrize("shared_key", [False, True], ids=["own-keys", "shared-data-key"])
@pytest.mark.parametrize(("size_a", "size_b"), SWAP_SIZES)
def test_body_moved_from_another_object(stack, workload, upstream, rest_bucket, cold_proxy, size_a, size_b,
                                        shared_key):
    endpoint, writer = stack.proxy_endpoint, workload
    (ka, a, ra, ma), (_, b, rb, mb) = put_pair(endpoint, writer, upstream, rest_bucket, size_a, size_b, shared_key,
                                               stack.vault)
    assert ra[:4] == rb[:4] == b"CTS3" and ra != rb
    assert (ma["cloudtaser-key"] == mb["cloudtaser-key"]) == shared_key
    # B's body under A's key, with A's metadata.
    upstream.put_object(Bucket=rest_bucket, Key=ka, Body=rb, Metadata=ma)
    assert stored(upstream, rest_bucket, ka) == (rb, ma)
    for ep in (endpoint, cold_proxy):
        assert_refused(get(ep, rest_bucket, ka), a, "GET of a moved body", limit=0)
        if size_a:
            assert_refused(get(ep, rest_bucket, ka, (0, size_a - 1)), a, "ranged GET of a moved body", limit=0)


@pytest.mark.parametrize("shared_key", [False, True], ids=["own-keys", "shared-data-key"])
@pytest.mark.parametrize(("size_a", "size_b"), SWAP_SIZES)
def test_metadata_moved_from_another_object(stack, workload, upstream, rest_bucket, cold_proxy, size_a, size_b,
                                            shared_key):
    endpoint, writer = stack.proxy_endpoint, workload
    (ka, a, ra, ma), (_, b, rb, mb) = put_pair(endpoint, writer, upstream, rest_bucket, size_a, size_b, shared_key,
                                               stack.vault)
    # A's body with B's metadata, through CopyObject as the attacker would.
    upstream.copy_object(Bucket=rest_bucket, Key=ka, CopySource={"Bucket": rest_bucket, "Key": ka},
                         MetadataDirective="REPLACE", Metadata=mb)
    assert stored(upstream, rest_bucket, ka) == (ra, mb)
    for ep in (endpoint, cold_proxy):
        res = get(ep, rest_bucket, ka)
        assert_refused(res, a, "GET with another object's metadata", limit=0)
        assert_refused(res, b, "GET with another object's metadata (never B's bytes either)", limit=0)


def test_whole_object_replayed_onto_another_key_is_refused(stack, workload, upstream, rest_bucket, cold_proxy):
    """Format 3 binds the envelope to the object key (binding `key`, the
    default): B's body AND metadata copied over A by the store's credentials
    are refused by GET, ranged GET and HEAD, never served as A. The
    documented limit of that binding: the same object replayed under the
    same key in another bucket (a replica) still reads, as itself."""
    (ka, a, ra, ma), (kb, b, rb, mb) = put_pair(stack.proxy_endpoint, workload, upstream, rest_bucket,
                                                3 * SEG + 5, 2 * SEG + 9)
    assert ma["cloudtaser-binding"] == mb["cloudtaser-binding"] == "key"
    upstream.copy_object(Bucket=rest_bucket, Key=ka, CopySource={"Bucket": rest_bucket, "Key": kb})
    assert stored(upstream, rest_bucket, ka) == (rb, mb)
    for ep in (stack.proxy_endpoint, cold_proxy):
        for res in (get(ep, rest_bucket, ka), get(ep, rest_bucket, ka, (0, 9))):
            assert_refused(res, b, "replayed object (B's bytes)", limit=0)
            assert_refused(res, a, "replayed object (A's bytes)", limit=0)
            assert res.status >= 400
        assert_head_refused(head(ep, rest_bucket, ka), "HEAD of a replayed object")
    replica = ensure_bucket(upstream, "e2e-attack-rest-replica")
    upstream.copy_object(Bucket=replica, Key=kb, CopySource={"Bucket": rest_bucket, "Key": kb})
    assert_served(get(cold_proxy, replica, kb), b, "the same key in another bucket (binding `key`)")


def test_body_swap_under_a_shared_key_without_the_salt_fails(stack, workload, upstream, rest_bucket, cold_proxy):
    """The salt is mandatory for single PUTs: with it deleted, a same-length
    body moved between two objects that share a data key would otherwise
    decrypt cleanly, as the other object."""
    endpoint, writer = stack.proxy_endpoint, workload
    (ka, a, ra, ma), (_, b, rb, mb) = put_pair(endpoint, writer, upstream, rest_bucket, 3 * SEG + 5, 3 * SEG + 5, True,
                                               stack.vault)
    no_salt = {k: v for k, v in ma.items() if k != "cloudtaser-salt"}
    upstream.put_object(Bucket=rest_bucket, Key=ka, Body=rb, Metadata=no_salt)
    assert stored(upstream, rest_bucket, ka) == (rb, no_salt) and rb[:4] == b"CTS3"
    for ep in (endpoint, cold_proxy):
        res = get(ep, rest_bucket, ka)
        assert res.body[:16] != b[:16] or res.status >= 400, "the other object's plaintext was served under this key"
        assert_refused(res, a, "GET of a moved body with the salt deleted")


# --- single-PUT objects: envelope metadata deleted or altered -----------------

META_SIZE = 3 * SEG + 5


def other_salt(meta):
    return secrets.token_hex(32)


def change_char(text: str, i: int) -> str:
    return text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]


# (field, mutation id, new value or None to delete, HEAD must fail too)
META_CASES = [
    ("cloudtaser-format", "deleted", None, True),
    ("cloudtaser-format", "2", "2", True),
    ("cloudtaser-format", "not-a-number", "x", True),
    ("cloudtaser-key", "deleted", None, True),
    ("cloudtaser-key", "one-char-changed", lambda m: change_char(m["cloudtaser-key"], -3), True),
    ("cloudtaser-key", "version-changed", lambda m: m["cloudtaser-key"].replace("vault:v1:", "vault:v2:", 1), True),
    ("cloudtaser-key", "not-wrapped", "plaintext-key", True),
    ("cloudtaser-transit-key", "deleted", None, True),
    ("cloudtaser-transit-key", "empty", "", True),
    ("cloudtaser-size", "deleted", None, True),
    ("cloudtaser-size", "plus-one", lambda m: str(int(m["cloudtaser-size"]) + 1), True),
    ("cloudtaser-size", "minus-one", lambda m: str(int(m["cloudtaser-size"]) - 1), True),
    ("cloudtaser-size", "zero", "0", True),
    ("cloudtaser-size", "not-a-number", "abc", True),
    ("cloudtaser-size", "overflow", "18446744073709551616", True),
    ("cloudtaser-layout", "added-multipart", "multipart", True),
    ("cloudtaser-layout", "added-single", "single", True),
    ("cloudtaser-salt", "deleted", None, True),  # the salt is mandatory for single PUTs
    ("cloudtaser-salt", "another-salt", other_salt, True),
    ("cloudtaser-salt", "not-hex", "zz" * 32, True),
    ("cloudtaser-salt", "short", lambda m: m["cloudtaser-salt"][:-2], True),
    # Format 3's own fields: the MAC and the binding it was made under.
    ("cloudtaser-mac", "deleted", None, True),
    ("cloudtaser-mac", "one-char-changed", lambda m: change_char(m["cloudtaser-mac"], 10), True),
    ("cloudtaser-mac", "short", lambda m: m["cloudtaser-mac"][:-2], True),
    ("cloudtaser-binding", "deleted", None, True),
    ("cloudtaser-binding", "none", "none", True),
    ("cloudtaser-binding", "bucket-key", "bucket-key", True),
    ("cloudtaser-binding", "unknown", "path", True),
]


def apply_meta(meta: dict, field: str, value) -> dict:
    out = dict(meta)
    if value is None:
        out.pop(field, None)
    else:
        out[field] = value(meta) if callable(value) else value
    return out


@pytest.mark.parametrize(("field", "mutation", "value", "head_fails"),
                         [pytest.param(*c, id=f"{c[0][11:]}-{c[1]}") for c in META_CASES])
def test_envelope_metadata_deleted_or_altered(stack, workload, upstream, rest_bucket, cold_proxy, field, mutation,
                                             value, head_fails):
    key = unique(f"meta/{field}/{mutation}")
    data = body_of(META_SIZE, key)
    workload.put_object(Bucket=rest_bucket, Key=key, Body=data)
    raw, meta = stored(upstream, rest_bucket, key)
    check_at_rest(stack, raw, meta, data, rest_bucket, key)
    changed = apply_meta(meta, field, value)
    assert changed != meta
    upstream.put_object(Bucket=rest_bucket, Key=key, Body=raw, Metadata=changed)
    assert stored(upstream, rest_bucket, key)[1] == changed
    for ep in (stack.proxy_endpoint, cold_proxy):
        assert_refused(get(ep, rest_bucket, key), data, f"GET, {field} {mutation}",
                       codes=CORRUPT | KEY_REFUSED, statuses=(403, 500), limit=0)
        assert_refused(get(ep, rest_bucket, key, (SEG + 1, SEG + 20)), data[SEG + 1 : SEG + 21],
                       f"ranged GET, {field} {mutation}", codes=CORRUPT | KEY_REFUSED, statuses=(403, 500), limit=0)
        if head_fails:
            # A format-3 HEAD unwraps the data key and checks the MAC first.
            assert_head_refused(head(ep, rest_bucket, key), f"HEAD, {field} {mutation}", statuses=(403, 500))


def test_envelope_stripped_is_not_served_as_plaintext(stack, workload, upstream, rest_bucket, cold_proxy):
    key = unique("meta/stripped")
    data = body_of(META_SIZE, key)
    workload.put_object(Bucket=rest_bucket, Key=key, Body=data, Metadata={"owner": "team-a"})
    raw, meta = stored(upstream, rest_bucket, key)
    check_at_rest(stack, raw, meta, data, rest_bucket, key)
    upstream.put_object(Bucket=rest_bucket, Key=key, Body=raw, Metadata={"owner": "team-a"})
    for ep in (stack.proxy_endpoint, cold_proxy):
        res = get(ep, rest_bucket, key)
        assert (res.status, res.code) == (403, "AccessDenied"), (res.status, res.body[:300])
        assert raw[:64] not in res.body
        res = get(ep, rest_bucket, key, (0, 99))
        assert (res.status, res.code) == (403, "AccessDenied"), (res.status, res.body[:300])


def vault_error_texts(stack, transit_key: str, wrapped: str) -> list[str]:
    """What Vault itself answers for this transit key name, to make sure none of it reaches the workload."""
    texts = []
    for path in (f"transit/decrypt/{transit_key}", f"transit/keys/{transit_key}"):
        try:
            _, body = stack.vault.api("POST" if "decrypt" in path else "GET", path, {"ciphertext": wrapped}
                                      if "decrypt" in path else None)
        except Exception:  # noqa: BLE001 - a name Vault's router cannot even take
            continue
        texts += [e for e in body.get("errors", []) if isinstance(e, str) and len(e) > 3]
    return texts


@pytest.mark.parametrize("transit_key", ["other-key", OTHER_TRANSIT_KEY, "../keys/x", "..", "%2e%2e",
                                         "cloudtaser-e2e/../other", "cloudtaser-e2e?x=1",
                                         "cloudtaser-e2e#x"])
def test_transit_key_renamed_fails_without_vault_text(stack, workload, upstream, rest_bucket, cold_proxy, transit_key):
    status, body = stack.vault.api("POST", f"transit/keys/{OTHER_TRANSIT_KEY}", {"type": "aes256-gcm96"})
    assert status in (200, 204), body
    key = unique("meta/transit-key")
    data = body_of(META_SIZE, key)
    workload.put_object(Bucket=rest_bucket, Key=key, Body=data)
    raw, meta = stored(upstream, rest_bucket, key)
    check_at_rest(stack, raw, meta, data, rest_bucket, key)
    upstream.put_object(Bucket=rest_bucket, Key=key, Body=raw, Metadata={**meta, "cloudtaser-transit-key": transit_key})
    vault_texts = vault_error_texts(stack, transit_key, meta["cloudtaser-key"])
    # The cold proxy has to unwrap at Vault; the stack's proxy still caches the key it wrote.
    for ep in (cold_proxy, stack.proxy_endpoint):
        for res in (get(ep, rest_bucket, key), get(ep, rest_bucket, key, (0, 9))):
            assert_refused(res, data, f"transit key {transit_key!r}", codes=CORRUPT | KEY_REFUSED,
                           statuses=(403, 500), limit=0)
            assert res.status >= 400
            text = res.body.decode(errors="replace")
            leaked = [t for t in vault_texts if t in text]
            assert not leaked, f"Vault's own error text reached the workload: {leaked} in {res.message!r}"
            assert "Vault answered" not in text, f"Vault's answer reached the workload: {res.message!r}"


# --- multipart objects: parts rearranged at rest ------------------------------

MP_LAST = 1000


@pytest.fixture(scope="module")
def mp_object(stack, workload, upstream, rest_bucket):
    """A three-part object written through the proxy: its data, stored parts and metadata."""
    key = unique("mp/original")
    data = body_of(2 * PART + MP_LAST, key)
    uid = workload.create_multipart_upload(Bucket=rest_bucket, Key=key)["UploadId"]
    etags = []
    for n, off in enumerate(range(0, len(data), PART), start=1):
        etags.append(workload.upload_part(Bucket=rest_bucket, Key=key, UploadId=uid, PartNumber=n,
                                        Body=data[off : off + PART])["ETag"])
    workload.complete_multipart_upload(Bucket=rest_bucket, Key=key, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    raw, meta = stored(upstream, rest_bucket, key)
    # Format 3: sealed with its part table, the stream headers' digest and the MAC.
    assert meta["cloudtaser-format"] == "3" and meta["cloudtaser-layout"] == "multipart"
    assert meta["cloudtaser-size"] == str(len(data)) and "cloudtaser-manifest" not in meta
    assert len(meta["cloudtaser-streams"]) == 64 and len(meta["cloudtaser-mac"]) == 64
    cp = ct_len(PART)
    parts = [raw[0:cp], raw[cp : 2 * cp], raw[2 * cp :]]
    assert len(parts[2]) == ct_len(MP_LAST)
    for n, p in enumerate(parts, start=1):
        assert p[:4] == b"CTS3" and int.from_bytes(p[8:12], "big") == n
    # Each part is a stream the independent reader decrypts with the upload's key.
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    for n, p in enumerate(parts):
        assert envelope.decrypt(dek, p) == data[n * PART : (n + 1) * PART]
    # The independent reader's table, digest and MAC, from FORMAT.md, are the
    # stored ones; the parts are format-3 streams.
    table = [(1, PART), (2, PART), (3, MP_LAST)]
    assert envelope.parse_parts(meta["cloudtaser-parts"]) == table
    assert envelope.streams_digest([p[:HDR] for p in parts]).hex() == meta["cloudtaser-streams"]
    assert envelope.streams(raw) == [(3, n, size) for n, size in table]
    assert envelope.verify_v3(dek, meta, rest_bucket, key, raw) == data
    return data, parts, meta


def dek_of(stack, meta: dict) -> bytes:
    return envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])


def rebind(stack, meta: dict, bucket: str, key: str) -> dict:
    """A multipart envelope with its MAC made for `key`, as the proxy's own
    CopyObject rebinds one (the data key, table and streams digest are
    unchanged). The attacks below store rearranged bodies under fresh keys
    with the envelope rebound to each, so the reader's refusal comes from the
    body against the table and digest, not merely from the name."""
    dek = dek_of(stack, meta)
    mac = envelope.envelope_mac(dek, binding=meta["cloudtaser-binding"], bucket=bucket, key=key,
                                transit_key=meta["cloudtaser-transit-key"], size=int(meta["cloudtaser-size"]),
                                table=envelope.parse_parts(meta["cloudtaser-parts"]),
                                streams=bytes.fromhex(meta["cloudtaser-streams"]))
    return dict(meta, **{"cloudtaser-mac": mac.hex()})


def rebuild_multipart(upstream, bucket, key, parts: list[bytes], meta: dict) -> None:
    """The attacker's own multipart upload of stored part bytes, with the envelope metadata."""
    uid = upstream.create_multipart_upload(Bucket=bucket, Key=key, Metadata=meta)["UploadId"]
    done = []
    for n, body in enumerate(parts, start=1):
        etag = upstream.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=body)["ETag"]
        done.append({"PartNumber": n, "ETag": etag})
    upstream.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": done})
    raw, got = stored(upstream, bucket, key)
    assert raw == b"".join(parts) and got == meta, "the rebuilt object is what is stored"


def mp_ranges() -> dict[str, tuple[int, int]]:
    """A range inside each part of the three-part object."""
    return {"part1": (10, 20), "part2": (PART + SEG + 3, PART + SEG + 40), "part3": (2 * PART + 1, 2 * PART + 50)}


@pytest.mark.parametrize(("order", "must_fail", "intact"), [
    pytest.param([2, 1, 3], ["part1", "part2"], 0, id="reordered"),
    pytest.param([1, 3], ["part2"], PART, id="middle-part-dropped"),
    pytest.param([1, 1, 2, 3], ["part2", "part3"], PART, id="first-part-duplicated"),
    pytest.param([1, 2, 2, 3], ["part3"], 2 * PART, id="middle-part-duplicated"),
])
def test_multipart_parts_rearranged(stack, upstream, rest_bucket, mp_object, order, must_fail, intact):
    """`intact`: plaintext bytes before the first stream out of place."""
    data, parts, meta = mp_object
    key = unique("mp/rearranged")
    bound = rebind(stack, meta, rest_bucket, key)
    rebuild_multipart(upstream, rest_bucket, key, [parts[n - 1] for n in order], bound)
    assert_spec_reader_rejects(dek_of(stack, meta), b"".join(parts[n - 1] for n in order), bound, rest_bucket, key)
    ep = stack.proxy_endpoint
    assert_refused(get(ep, rest_bucket, key), data, f"GET, parts {order}", limit=intact)
    for name, (a, b) in mp_ranges().items():
        res = get(ep, rest_bucket, key, (a, b))
        if name in must_fail:
            assert_refused(res, data[a : b + 1], f"GET {name} range, parts {order}", statuses=(416, 500),
                           codes=CORRUPT | {"InvalidRange"}, limit=0)
        elif res.status < 400:
            assert_served(res, data[a : b + 1], f"GET {name} range, parts {order}")
    res = get(ep, rest_bucket, key, query="?partNumber=2")
    # A changed part count changes the stored length the sealed table fixes.
    if "part2" in must_fail or len(order) != 3:
        assert_refused(res, data[PART : 2 * PART], f"GET partNumber=2, parts {order}",
                       statuses=(416, 500), codes=CORRUPT | {"InvalidPartNumber"}, limit=0)
    else:
        assert_served(res, data[PART : 2 * PART], f"GET partNumber=2, parts {order}")


def test_multipart_part_spliced_from_another_upload(stack, workload, upstream, rest_bucket, mp_object):
    data, parts, meta = mp_object
    other = unique("mp/other")
    other_data = body_of(2 * PART, other)
    uid = workload.create_multipart_upload(Bucket=rest_bucket, Key=other)["UploadId"]
    etags = [workload.upload_part(Bucket=rest_bucket, Key=other, UploadId=uid, PartNumber=n,
                                Body=other_data[(n - 1) * PART : n * PART])["ETag"] for n in (1, 2)]
    workload.complete_multipart_upload(Bucket=rest_bucket, Key=other, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2), etags)]})
    other_raw, other_meta = stored(upstream, rest_bucket, other)
    assert other_meta["cloudtaser-key"] != meta["cloudtaser-key"]
    key = unique("mp/spliced")
    bound = rebind(stack, meta, rest_bucket, key)
    spliced = [parts[0], other_raw[ct_len(PART) :], parts[2]]
    # The other upload's part 2 has the same header shape (version 3, part 2,
    # 5 MiB) but its own salt and data key.
    assert envelope.streams(spliced[1]) == [(3, 2, PART)]
    rebuild_multipart(upstream, rest_bucket, key, spliced, bound)
    assert_spec_reader_rejects(dek_of(stack, meta), b"".join(spliced), bound, rest_bucket, key)
    ep = stack.proxy_endpoint
    assert_refused(get(ep, rest_bucket, key), data, "GET, part 2 from another upload", limit=PART)
    a, b = mp_ranges()["part2"]
    assert_refused(get(ep, rest_bucket, key, (a, b)), data[a : b + 1], "GET part 2 range, spliced", limit=0)
    assert_refused(get(ep, rest_bucket, key, (a, b)), other_data[a - PART : b - PART + 1], "never the other's bytes")


@pytest.mark.parametrize("cut", [
    pytest.param(lambda p: p[0] + p[1][: HDR + 3 * SEALED], id="inside-part-2-at-a-segment-boundary"),
    pytest.param(lambda p: p[0] + p[1][: HDR + 3 * SEALED + 100], id="inside-part-2-off-a-boundary"),
    pytest.param(lambda p: p[0] + p[1] + p[2][:-1], id="last-byte"),
    pytest.param(lambda p: p[0] + p[1] + p[2][: HDR + 8], id="inside-the-last-stream"),
    pytest.param(lambda p: p[0] + p[1] + p[2] + b"\x00" * 16, id="appended"),
    pytest.param(lambda p: p[0] + p[1] + p[2] + p[2], id="last-part-appended-again"),
])
def test_multipart_cut_or_extended_inside_a_part(stack, upstream, rest_bucket, mp_object, cut):
    """The sealed part table fixes the stored length: a body cut or extended
    anywhere no longer matches it, so HEAD and every read, even of a range
    before the damage, are refused before a byte is served."""
    data, parts, meta = mp_object
    key = unique("mp/cut")
    body = cut(parts)
    bound = rebind(stack, meta, rest_bucket, key)
    upstream.put_object(Bucket=rest_bucket, Key=key, Body=body, Metadata=bound)
    assert stored(upstream, rest_bucket, key) == (body, bound)
    assert_spec_reader_rejects(dek_of(stack, meta), body, bound, rest_bucket, key)
    ep = stack.proxy_endpoint
    assert_refused(get(ep, rest_bucket, key), data, "GET", limit=0)
    assert_head_refused(head(ep, rest_bucket, key), "HEAD")
    for name, (a, b) in mp_ranges().items():
        assert_refused(get(ep, rest_bucket, key, (a, b)), data[a : b + 1], f"GET {name} range", limit=0)


@pytest.mark.parametrize("keep", [1, 2], ids=["first-part", "first-two-parts"])
@pytest.mark.parametrize("how", ["single-put", "multipart-upload"])
def test_multipart_truncated_to_whole_parts(stack, upstream, rest_bucket, mp_object, keep, how):
    data, parts, meta = mp_object
    key = unique(f"mp/truncated-{how}-{keep}")
    bound = rebind(stack, meta, rest_bucket, key)
    body = b"".join(parts[:keep])
    if how == "single-put":
        upstream.put_object(Bucket=rest_bucket, Key=key, Body=body, Metadata=bound)
        assert stored(upstream, rest_bucket, key) == (body, bound)
    else:
        rebuild_multipart(upstream, rest_bucket, key, parts[:keep], bound)
    assert_spec_reader_rejects(dek_of(stack, meta), body, bound, rest_bucket, key)
    ep = stack.proxy_endpoint
    # The MAC seals the part table: no read of any shape serves a byte,
    # and HEAD does not report the shorter size.
    assert_refused(get(ep, rest_bucket, key), data, f"GET of the first {keep} part(s) only", limit=0)
    assert_head_refused(head(ep, rest_bucket, key), f"HEAD of the first {keep} part(s) only")
    for name, (a, b) in mp_ranges().items():
        assert_refused(get(ep, rest_bucket, key, (a, b)), data[a : b + 1], f"GET {name} range, truncated", limit=0)


def test_cached_layout_never_reads_another_objects_bytes(stack, workload, upstream, rest_bucket, mp_object):
    """From the independent attacker's report: a ranged read remembers the
    object's checked layout, and s3s-fs ignores If-Match, so the object can
    be replaced between reads (part 2 spliced from another upload, stored
    length unchanged). Every later read checks that the ETag and envelope it
    gets are the ones the layout was checked under, and learns it again if
    not. Under the original envelope the spliced part fails; under the other
    upload's envelope, still bound to the other key, nothing is served (format
    3 binds the key); under that envelope rebound to this key (what the
    proxy's CopyObject would write) only that upload's own authentic bytes can
    come back, and the whole object is refused."""
    data, parts, meta = mp_object
    other = unique("mp/cache-other")
    other_data = body_of(2 * PART + MP_LAST, other)
    uid = workload.create_multipart_upload(Bucket=rest_bucket, Key=other)["UploadId"]
    etags = [workload.upload_part(Bucket=rest_bucket, Key=other, UploadId=uid, PartNumber=n,
                                  Body=other_data[(n - 1) * PART : n * PART])["ETag"] for n in (1, 2, 3)]
    workload.complete_multipart_upload(Bucket=rest_bucket, Key=other, UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in zip((1, 2, 3), etags)]})
    other_raw, other_meta = stored(upstream, rest_bucket, other)
    cp = ct_len(PART)
    spliced = parts[0] + other_raw[cp : 2 * cp] + parts[2]
    ep = stack.proxy_endpoint
    a, b = mp_ranges()["part2"]
    for which, name in (("own", "its own envelope"), ("other", "the other upload's envelope, bound to its key"),
                        ("other-rebound", "the other upload's envelope, rebound to this key")):
        key = unique("mp/cache-target")
        rebuild_multipart(upstream, rest_bucket, key, parts, rebind(stack, meta, rest_bucket, key))
        assert_served(get(ep, rest_bucket, key, (a, b)), data[a : b + 1], "the first ranged read (layout remembered)")
        envelope_of = {"own": rebind(stack, meta, rest_bucket, key), "other": other_meta,
                       "other-rebound": rebind(stack, other_meta, rest_bucket, key)}[which]
        upstream.put_object(Bucket=rest_bucket, Key=key, Body=spliced, Metadata=envelope_of)
        intact = PART if which == "own" else 0  # part 1 is the original's own, under its own key
        assert_refused(get(ep, rest_bucket, key), data, f"whole GET, spliced, {name}", limit=intact)
        for what, res in [("range", get(ep, rest_bucket, key, (a, b))),
                          ("partNumber=2", get(ep, rest_bucket, key, query="?partNumber=2"))]:
            if which != "other-rebound":
                assert_refused(res, data[a : b + 1], f"{what}, spliced, {name}", limit=0)
                assert res.status >= 400, f"{what}, spliced, {name}: {res}"
            elif res.status < 400:
                want = other_data[a : b + 1] if what == "range" else other_data[PART : 2 * PART]
                assert_served(res, want, f"{what}, spliced, {name}: only the other upload's own bytes")


@pytest.mark.parametrize("label", ["1", "2"])
def test_relabelled_format_3_part_gets_no_size_from_head(stack, upstream, rest_bucket, mp_object, label):
    """Found by the independent attacker (on format 2): the first part of a
    multipart object relabelled as format 1 read 200 with the short size on
    HEAD. A format-1 or format-2 label on a version-3 stream is refused
    everywhere."""
    data, parts, meta = mp_object
    key = unique(f"mp/relabel-head-{label}")
    keep = {k: v for k, v in meta.items() if k in ("cloudtaser-key", "cloudtaser-transit-key")}
    upstream.put_object(Bucket=rest_bucket, Key=key, Body=parts[0],
                        Metadata={**keep, "cloudtaser-format": label, "cloudtaser-layout": "multipart"})
    ep = stack.proxy_endpoint
    assert_head_refused(head(ep, rest_bucket, key), "HEAD of a relabelled part")
    assert_head_refused(request(ep, "HEAD", f"/{rest_bucket}/{quote_key(key)}?partNumber=1"), "HEAD ?partNumber=1")
    assert_refused(get(ep, rest_bucket, key), data, "GET of a relabelled part", limit=0)
    assert get(ep, rest_bucket, key).status >= 400


# --- the hostile workload: malformed requests over raw sockets ----------------


def assert_alive(stack, workload, bucket: str) -> None:
    assert stack.proxy.popen.poll() is None, "the proxy exited"
    key = unique("alive")
    workload.put_object(Bucket=bucket, Key=key, Body=b"still serving")
    assert_served(get(stack.proxy_endpoint, bucket, key), b"still serving", "a normal GET after the attack")
    workload.delete_object(Bucket=bucket, Key=key)


@pytest.fixture()
def hostile(stack, workload, upstream, pod_bucket):
    """Runs after each hostile case: the proxy still serves, the pod's bucket
    holds only envelopes, and nothing new appeared outside the bucket. The
    test appends what it sent as plaintext to the yielded list."""
    data_root = stack.s3_data
    before = snapshot(stack.workdir)
    sent: list[bytes] = []
    yield sent
    problems = []
    for p in new_files(before, stack.workdir):
        rel = p.relative_to(stack.workdir)
        if p.is_dir() or (p.suffix == ".log" and p.parent == stack.workdir):
            continue
        try:
            content = p.read_bytes()
        except FileNotFoundError:
            # s3s-fs's temporary file for an upload the proxy aborted, removed
            # between the listing and the read: nothing is left at rest.
            if p.parent == data_root and p.name.startswith(".tmp."):
                continue
            raise
        problems += [f"{rel} holds plaintext that was sent" for blob in sent if len(blob) >= 8 and blob in content]
        if (data_root / pod_bucket) in p.parents:
            if content[:4] != b"CTS3":
                problems.append(f"{rel} stored without the CTS3 magic: {content[:16]!r}")
        elif not (p.parent == data_root and p.name.startswith(".")):  # s3s-fs's own sidecars
            problems.append(f"{rel} was created outside the bucket")
    assert not problems, problems
    assert_bucket_all_ciphertext(upstream, pod_bucket, *sent)
    assert_alive(stack, workload, pod_bucket)


CHUNKED = [("Content-Encoding", "aws-chunked"), ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")]
PAYLOAD = b"hello world, from a hostile process in the pod"
BIG = body_of(200 * 1024, "big-chunk")  # several segments: sealed and sent upstream before the fault


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


END = b"0\r\n\r\n"

# (id, framed body, x-amz-decoded-content-length, extra headers, status, codes)
CHUNKED_CASES = [
    ("bad-hex-size", b"zz\r\n" + PAYLOAD + b"\r\n" + END, len(PAYLOAD), [], 400, {"IncompleteBody"}),
    ("negative-size", b"-5\r\nhello\r\n" + END, 5, [], 400, {"IncompleteBody"}),
    ("size-overflows-u64", b"10000000000000000\r\nhello\r\n" + END, 5, [], 400, {"IncompleteBody"}),
    ("size-line-without-crlf", b"5hello\r\n" + END, 5, [], 400, {"IncompleteBody"}),
    ("data-without-crlf", b"5\r\nhello" + END, 5, [], 400, {"IncompleteBody"}),
    ("chunk-longer-than-its-size", b"5\r\n" + PAYLOAD + b"\r\n" + END, len(PAYLOAD), [], 400, {"IncompleteBody"}),
    ("chunks-longer-than-decoded-length", chunk(PAYLOAD) + END, 5, [], 400, {"IncompleteBody"}),
    ("chunks-shorter-than-decoded-length", chunk(PAYLOAD) + END, len(PAYLOAD) + 1, [], 400, {"IncompleteBody"}),
    ("truncated-final-chunk", chunk(PAYLOAD[:5]) + b"20\r\n" + PAYLOAD[5:15], len(PAYLOAD), [], 400,
     {"IncompleteBody"}),
    ("no-final-chunk", chunk(PAYLOAD), len(PAYLOAD), [], 400, {"IncompleteBody"}),
    ("final-chunk-without-blank-line", chunk(PAYLOAD) + b"0\r\n", len(PAYLOAD), [], 400, {"IncompleteBody"}),
    ("huge-declared-chunk", b"ffffffffffffffff\r\n" + PAYLOAD, len(PAYLOAD), [], 400, {"IncompleteBody"}),
    ("size-line-too-long", b"1" * 5000, 5, [], 400, {"IncompleteBody"}),
    ("trailer-without-colon", chunk(PAYLOAD) + b"0\r\nnot a trailer\r\n\r\n", len(PAYLOAD), [], 400,
     {"MalformedTrailerError"}),
    ("trailer-checksum-not-base64", chunk(PAYLOAD) + b"0\r\nx-amz-checksum-crc32:!!not base64!!\r\n\r\n",
     len(PAYLOAD), [("x-amz-trailer", "x-amz-checksum-crc32")], 400, {"InvalidRequest"}),
    ("trailer-checksum-wrong", chunk(PAYLOAD) + b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", len(PAYLOAD),
     [("x-amz-trailer", "x-amz-checksum-crc32")], 400, {"BadDigest"}),
    ("declared-trailer-missing", chunk(PAYLOAD) + END, len(PAYLOAD), [("x-amz-trailer", "x-amz-checksum-crc32")],
     400, {"InvalidRequest"}),
    ("bytes-after-final-chunk", chunk(PAYLOAD) + END + b"EXTRA", len(PAYLOAD), [], 400, {"IncompleteBody"}),
    ("decoded-length-not-a-number", chunk(PAYLOAD) + END, "abc", [], 400, {"InvalidArgument"}),
    ("decoded-length-missing", chunk(PAYLOAD) + END, None, [], 411, {"MissingContentLength"}),
    # Several segments are sealed and streamed upstream before these faults.
    ("bad-chunk-after-200KiB", chunk(BIG) + b"zz\r\n" + END, len(BIG) + 5, [], 400, {"IncompleteBody"}),
    ("wrong-trailer-checksum-after-200KiB", chunk(BIG) + b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", len(BIG),
     [("x-amz-trailer", "x-amz-checksum-crc32")], 400, {"BadDigest"}),
    ("decoded-length-short-by-one-after-200KiB", chunk(BIG) + END, len(BIG) + 1, [], 400, {"IncompleteBody"}),
]


@pytest.mark.parametrize(("framed", "decoded", "extra", "status", "codes"),
                         [pytest.param(*c[1:], id=c[0]) for c in CHUNKED_CASES])
def test_malformed_aws_chunked_body(stack, upstream, pod_bucket, hostile, framed, decoded, extra, status, codes):
    key = unique("chunked")
    hostile += [PAYLOAD, BIG[:4096]]
    headers = CHUNKED + ([("x-amz-decoded-content-length", str(decoded))] if decoded is not None else []) + extra
    res = request(stack.proxy_endpoint, "PUT", f"/{pod_bucket}/{key}", headers, framed)
    assert res.status == status and res.is_s3_error() and res.code in codes, (res.status, res.body[:300])
    assert not exists_upstream(upstream, pod_bucket, key), "a malformed upload was stored"


def wait_until_settled(upstream, bucket, key, seconds: float) -> bool:
    """Whether the key exists, after giving an aborted upload time to land."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if exists_upstream(upstream, bucket, key):
            return True
        time.sleep(0.1)
    return exists_upstream(upstream, bucket, key)


@pytest.mark.parametrize(("declared", "sent_len", "close", "chunked"), [
    pytest.param(100, 3, "half", False, id="3-of-100-bytes-half-close"),
    pytest.param(MiB, 300 * 1024, "half", False, id="300KiB-of-1MiB-half-close"),
    pytest.param(MiB, 300 * 1024, "reset", False, id="300KiB-of-1MiB-reset"),
    pytest.param(MiB, 300 * 1024, "half", True, id="aws-chunked-cut-short-half-close"),
    pytest.param(MiB, 300 * 1024, "reset", True, id="aws-chunked-cut-short-reset"),
])
def test_body_shorter_than_content_length(stack, upstream, pod_bucket, hostile, declared, sent_len, close, chunked):
    key = unique("short")
    data = body_of(declared, key)
    hostile += [data[:4096]]
    if chunked:
        full = chunk(data) + END
        headers = CHUNKED + [("x-amz-decoded-content-length", str(declared)), ("Content-Length", str(len(full)))]
        body = full[:sent_len]
    else:
        headers = [("Content-Length", str(declared))]
        body = data[:sent_len]
    raw = build_request("PUT", f"/{pod_bucket}/{key}", headers, body)
    res = send_raw(stack.proxy_endpoint, raw, half_close=close == "half", abort_after_send=close == "reset")
    if close == "half":
        assert res is not None, "no answer to a client that stopped sending"
        assert res.status == 400 and res.code == "IncompleteBody" and res.is_s3_error(), (res.status, res.body[:300])
    # After a reset nothing answers, so give the aborted upstream upload time to land.
    settle = 0.6 if close == "reset" else 0.1
    assert not wait_until_settled(upstream, pod_bucket, key, settle), "a cut-short upload was stored"


@pytest.mark.parametrize(("method", "query", "headers"), [
    pytest.param("PUT", "", [("X-Amz-Meta-Cloudtaser-Key", "vault:v1:forged")], id="put-key-header"),
    pytest.param("PUT", "", [("x-amz-meta-cloudtaser-salt", "00" * 32)], id="put-salt-header"),
    pytest.param("PUT", "", [("x-amz-meta-CLOUDTASER-size", "1")], id="put-size-header-mixed-case"),
    pytest.param("PUT", "?X-Amz-Meta-Cloudtaser-Size=1", [], id="put-size-in-the-query"),
    pytest.param("POST", "?uploads", [("x-amz-meta-cloudtaser-layout", "multipart")], id="create-upload-layout"),
    pytest.param("PUT", "", [("x-amz-copy-source", "/{bucket}/{source}"), ("x-amz-metadata-directive", "REPLACE"),
                             ("x-amz-meta-cloudtaser-transit-key", "other-key")], id="copy-replace-transit-key"),
])
def test_workload_cannot_write_envelope_metadata(stack, workload, upstream, pod_bucket, hostile, method, query, headers):
    """The envelope's names are the proxy's: a workload that sets them, in
    any case, as a header or in the query, is refused and nothing is written."""
    source = unique("source")
    workload.put_object(Bucket=pod_bucket, Key=source, Body=PAYLOAD)
    key = unique("forged")
    hostile += [PAYLOAD]
    headers = [(k, v.format(bucket=pod_bucket, source=source)) for k, v in headers]
    body = PAYLOAD if method == "PUT" and not any(k == "x-amz-copy-source" for k, _ in headers) else b""
    res = request(stack.proxy_endpoint, method, f"/{pod_bucket}/{key}{query}", headers, body)
    assert (res.status, res.code) == (400, "InvalidArgument") and res.is_s3_error(), res
    assert not exists_upstream(upstream, pod_bucket, key)
    # s3s-fs lists no uploads; its sidecar files name the key (URL-safe base64).
    b64 = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
    assert not list(stack.s3_data.glob(f"*object-{b64}*")), "an upload was started with forged envelope metadata"
    workload.delete_object(Bucket=pod_bucket, Key=source)


def test_one_64KiB_header(stack, upstream, pod_bucket, hostile):
    key = unique("big-header")
    hostile += [PAYLOAD]
    res = request(stack.proxy_endpoint, "PUT", f"/{pod_bucket}/{key}", [("X-Junk", "a" * 65536)], PAYLOAD)
    # S3 itself refuses request headers over 8 KiB (400); hyper's own limit answers 431.
    assert res.status in (400, 431), f"a 64 KiB header was accepted and forwarded: {res}"
    if res.status == 400:
        assert res.is_s3_error(), res.body[:300]
    assert not exists_upstream(upstream, pod_bucket, key)


def test_500_headers(stack, upstream, pod_bucket, hostile):
    key = unique("many-headers")
    hostile += [PAYLOAD]
    res = request(stack.proxy_endpoint, "PUT", f"/{pod_bucket}/{key}", [(f"X-H{i}", "v") for i in range(500)], PAYLOAD)
    assert res.status in (400, 431), f"500 headers were accepted: {res.status}"
    if res.status == 400:
        assert res.is_s3_error(), res.body[:300]
    assert not exists_upstream(upstream, pod_bucket, key)


@pytest.mark.parametrize(("method", "suffix", "query"), [
    pytest.param("PUT", "%C3%28", "", id="path-invalid-utf8-put"),
    pytest.param("GET", "%C3%28", "", id="path-invalid-utf8-get"),
    pytest.param("HEAD", "%C3%28", "", id="path-invalid-utf8-head"),
    pytest.param("PUT", "%zz", "", id="path-%zz-put"),
    pytest.param("GET", "%zz", "", id="path-%zz-get"),
    pytest.param("PUT", "%", "", id="path-lone-%"),
    pytest.param("PUT", "%4", "", id="path-half-escape"),
    pytest.param("PUT", "", "?x=%C3%28", id="query-value-invalid-utf8"),
    pytest.param("PUT", "", "?%C3%28=1", id="query-name-invalid-utf8"),
    pytest.param("PUT", "", "?x=%zz", id="query-value-%zz"),
    pytest.param("PUT", "", "?%zz", id="query-name-%zz"),
    pytest.param("GET", "", "?partNumber=%C3%28", id="query-part-number-invalid-utf8"),
    pytest.param("GET", "", "?partNumber=%zz", id="query-part-number-%zz"),
])
def test_invalid_percent_encoding(stack, upstream, pod_bucket, hostile, method, suffix, query):
    key = unique("pct")
    hostile += [PAYLOAD]
    res = request(stack.proxy_endpoint, method, f"/{pod_bucket}/{key}{suffix}{query}", [],
                  PAYLOAD if method == "PUT" else b"")
    assert res.status == 400, res
    if method != "HEAD":
        assert res.is_s3_error() and res.code == "InvalidArgument", res
    assert not any(k.startswith(key) for k in all_keys(upstream, pod_bucket)), "stored despite the refusal"


# Keys the proxy refuses: NUL bytes, `.` and `..` segments.
BAD_KEYS = [
    pytest.param("{m}/../x", id="dotdot-inside"),
    pytest.param("../{m}", id="dotdot-first"),
    pytest.param("../../../{m}", id="dotdot-escaping-the-data-root"),
    pytest.param("{m}/..", id="dotdot-last"),
    pytest.param("..", id="dotdot-only"),
    pytest.param("{m}/./x", id="dot-segment"),
    pytest.param(".", id="dot-only"),
    pytest.param("{m}%2F..%2F..%2Fx", id="encoded-slashes"),
    pytest.param("%2e%2e/%2E%2E/{m}", id="encoded-dots"),
    pytest.param("{m}%00x", id="nul-inside"),
    pytest.param("%00", id="nul-only"),
    pytest.param("{m}/x%00/../y", id="nul-and-dotdot"),
]


def marker() -> str:
    return unique("escape")


@pytest.mark.parametrize("method", ["PUT", "GET", "HEAD", "POST-uploads"])
@pytest.mark.parametrize("raw_key", BAD_KEYS)
def test_key_with_dot_segments_or_nul(stack, upstream, pod_bucket, hostile, raw_key, method):
    m = marker()
    path = f"/{pod_bucket}/" + raw_key.format(m=m)
    hostile += [PAYLOAD]
    if method == "PUT":
        res = request(stack.proxy_endpoint, "PUT", path, [], PAYLOAD)
    elif method == "POST-uploads":
        res = request(stack.proxy_endpoint, "POST", path + "?uploads", [], b"")
    else:
        res = request(stack.proxy_endpoint, method, path)
    problems = []
    # Nothing named after the marker anywhere outside the bucket: not in the
    # stack's directory, nor next to it.
    for root in (stack.workdir.parent, stack.workdir):
        for p in root.glob(f"*{m}*"):
            problems.append(f"{p} created outside the bucket")
    for p in stack.s3_data.rglob(f"*{m}*"):
        if (stack.s3_data / pod_bucket) not in p.parents:
            problems.append(f"{p} created outside the bucket")
    if res.status != 400 or (method != "HEAD" and res.code != "InvalidArgument"):
        problems.append(f"{method} {path}: answered {res.status} {res.code} {res.message!r}, not 400 InvalidArgument")
    assert not problems, problems


@pytest.mark.parametrize("bucket", [
    pytest.param("bad%20bucket", id="space"),
    pytest.param("b%00x", id="nul"),
    pytest.param("%C3%A9t%C3%A9", id="non-ascii"),
    pytest.param("b%5Cx", id="backslash"),
    pytest.param("b*x", id="star"),
    pytest.param("b%3Fx", id="question-mark"),
])
@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_bucket_name_outside_the_allowed_characters(stack, hostile, bucket, method):
    hostile += [PAYLOAD]
    m = marker()
    res = request(stack.proxy_endpoint, method, f"/{bucket}/{m}", [], PAYLOAD if method == "PUT" else b"")
    assert res.status == 400 and res.code in ("InvalidArgument", "InvalidBucketName"), (res.status, res.body[:300])
    assert res.is_s3_error()
    assert not list(stack.workdir.rglob(f"*{m}*")), "stored despite the bucket name"


@pytest.mark.parametrize("bucket", ["%2e%2e", "..", "%2E"])
def test_bucket_named_dot_or_dotdot(stack, hostile, bucket):
    """`.` and `..` are inside the allowed characters; the upstream refuses them."""
    m = marker()
    hostile += [PAYLOAD]
    res = request(stack.proxy_endpoint, "PUT", f"/{bucket}/{m}", [], PAYLOAD)
    assert res.status == 400 and res.is_s3_error() and res.code in ("InvalidArgument", "InvalidBucketName"), (
        res.status, res.body[:300])
    assert not list(stack.workdir.parent.glob(f"*{m}*")) and not list(stack.workdir.rglob(f"*{m}*"))

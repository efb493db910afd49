"""An independent attacker's tests of format 3 (docs/FORMAT.md, "Format 3:
the authenticated envelope"), beyond test_attacks_format3.py.

Attackers: (a) someone holding the store's credentials (boto3 straight to
s3s-fs, `upstream`), and (b) a hostile process in the pod (boto3 or raw
HTTP to the proxy).

Tests named `test_FINDING_*` reproduce a hole found in the claims: they
FAIL on the code they were written against and should pass once it is
fixed. The other tests lock in claims that held."""

from __future__ import annotations

import os
import subprocess
import unicodedata

import botocore.exceptions
import pytest

import envelope
import stack as stack_mod
from attack_helpers import SEG, MiB, body_of, ct_len, quote_key, request, stored
from test_attacks_at_rest import ensure_bucket, get, head, put_through, unique
from test_attacks_format3 import upstream_requests, workload  # noqa: F401 (a fixture)

BUCKET = "e2e-format3-independent"
PART = 5 * MiB


@pytest.fixture(scope="module")
def bkt(upstream):
    return ensure_bucket(upstream, BUCKET)


def tool(stack, *args, check: int | None = 0, **env):
    r = subprocess.run([stack_mod.proxy_binary(), *args], env=stack.proxy_env(**env), capture_output=True,
                       text=True, timeout=300)
    if check is not None:
        assert r.returncode == check, r.stdout + r.stderr
    return r


def refused(res, truth: bytes, what: str) -> None:
    """No complete answer, and none of the plaintext it must not serve."""
    assert res.status >= 400 or not res.complete, f"{what}: served ({res.status})"
    if res.status >= 400 and res.body:
        assert res.is_s3_error(), f"{what}: {res.status} without an S3 error document"
    if len(truth) >= 16:
        assert truth[:16] not in res.body, f"{what}: plaintext released"


def served(res, truth: bytes, what: str) -> None:
    assert res.status in (200, 206), f"{what}: {res.status} {res.code} {res.message}"
    assert res.complete and res.body == truth, f"{what}: not exactly the plaintext"


def put_single(workload, stack, upstream, key: str, data: bytes) -> dict:
    put_through(stack.proxy_endpoint, BUCKET, key, data, workload)
    meta = stored(upstream, BUCKET, key)[1]
    assert meta["cloudtaser-format"] == "3", meta
    return meta


def put_multipart(workload, key: str, data: bytes, part: int = PART) -> None:
    uid = workload.create_multipart_upload(Bucket=BUCKET, Key=key, Metadata={"who": "owner"})["UploadId"]
    parts = []
    for n, off in enumerate(range(0, len(data), part), start=1):
        etag = workload.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n,
                                    Body=data[off : off + part])["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
    workload.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})


def replace_metadata(upstream, key: str, meta: dict) -> None:
    """Attacker (a): the same body under other metadata."""
    upstream.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key}, Metadata=meta,
                         MetadataDirective="REPLACE")


def legacy_single(stack, workload, upstream, key: str, data: bytes) -> None:
    """A format-1 single-PUT object, as proxies before format 3 wrote it
    (version-1 stream, salt and size, no MAC), under a data key Vault
    wrapped for this proxy: built with the independent writer."""
    donor_key = unique("f3i/donor")
    put_through(stack.proxy_endpoint, BUCKET, donor_key, b"d" * 10, workload)
    donor = stored(upstream, BUCKET, donor_key)[1]
    dek = envelope.unwrap(stack.vault, donor["cloudtaser-transit-key"], donor["cloudtaser-key"])
    salt = os.urandom(32)
    body = envelope.encrypt(dek, salt, 0, data, version=1)
    meta = {"cloudtaser-format": "1", "cloudtaser-key": donor["cloudtaser-key"],
            "cloudtaser-transit-key": donor["cloudtaser-transit-key"], "cloudtaser-size": str(len(data)),
            "cloudtaser-salt": salt.hex()}
    upstream.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=meta)


def split_id(upload_id: str) -> tuple[str, str, str, str]:
    """(transit, wrapped, tag, upstream id) of a `ctu3.` id (base64url fields)."""
    assert upload_id.startswith("ctu3."), upload_id
    transit, wrapped, tag, upstream = upload_id[5:].split(".", 3)
    return transit, wrapped, tag, upstream


# --- FINDINGS -----------------------------------------------------------------


def test_decrypt_tool_recovers_format_3_objects_and_checks_their_envelope(stack, workload, upstream, bkt, tmp_path):
    """Was FINDING 3 (the recovery path refused every format-3 object).
    `decrypt --mac --object-key` verifies the envelope MAC over the file's
    salt or part table and stream headers; without `--mac` a format-3
    stream is refused, and under another name nothing is written."""
    key = unique("f3i/recover")
    data = body_of(70_000, key)
    meta = put_single(workload, stack, upstream, key, data)
    raw = tmp_path / "download.bin"
    raw.write_bytes(stored(upstream, BUCKET, key)[0])
    out = tmp_path / "plain.bin"
    base = ["decrypt", "--in", str(raw), "--out", str(out), "--wrapped-key", meta["cloudtaser-key"],
            "--key-name", meta["cloudtaser-transit-key"], "--salt", meta["cloudtaser-salt"],
            "--size", meta["cloudtaser-size"]]
    assert tool(stack, *base, check=None).returncode != 0, "a format-3 stream needs its MAC"
    assert not out.exists()
    r = tool(stack, *base, "--mac", meta["cloudtaser-mac"], "--object-key", key + "x", check=None)
    assert r.returncode != 0 and not out.exists(), "verified under another name"
    tool(stack, *base, "--mac", meta["cloudtaser-mac"], "--object-key", key)
    assert out.read_bytes() == data
    # A multipart object: the table and headers come from the file.
    mkey = unique("f3i/recover-mp")
    mdata = body_of(PART + 1000, mkey)
    put_multipart(workload, mkey, mdata)
    mraw, mmeta = stored(upstream, BUCKET, mkey)
    raw.write_bytes(mraw)
    out.unlink()
    mbase = ["decrypt", "--in", str(raw), "--out", str(out), "--wrapped-key", mmeta["cloudtaser-key"],
             "--key-name", mmeta["cloudtaser-transit-key"], "--mac", mmeta["cloudtaser-mac"], "--object-key", mkey]
    tool(stack, *mbase)
    assert out.read_bytes() == mdata
    raw.write_bytes(mraw[: ct_len(PART)])
    out.unlink()
    assert tool(stack, *mbase, check=None).returncode != 0 and not out.exists(), "a file cut to its first part"


def test_a_legacy_object_copied_onto_a_format_3_key_is_refused_once_legacy_formats_are(stack, workload, upstream, bkt):
    """Was FINDING 2. Formats 1 and 2 bind no name: with the default
    `CLOUDTASER_S3PROXY_LEGACY_FORMATS=read` (buckets written before
    format 3) an old object copied over a format-3 key reads as that key
    (docs/THREAT-MODEL.md says so); with `refuse` it is refused (403) and
    format-3 objects read as before."""
    victim, old = unique("f3i/victim"), unique("f3i/legacy")
    mine = body_of(3 * SEG + 1, victim)
    put_single(workload, stack, upstream, victim, mine)
    theirs = body_of(3 * SEG + 1, old)
    legacy_single(stack, workload, upstream, old, theirs)
    upstream.copy_object(Bucket=BUCKET, Key=victim, CopySource={"Bucket": BUCKET, "Key": old})
    served(get(stack.proxy_endpoint, BUCKET, victim), theirs, "the documented limit under `read`")
    proc, strict, _ = stack.start_proxy("proxy-legacy-refused", CLOUDTASER_S3PROXY_LEGACY_FORMATS="refuse")
    try:
        for res in (get(strict, BUCKET, victim), get(strict, BUCKET, victim, (0, 9)), head(strict, BUCKET, victim)):
            assert res.status == 403, res
        fresh = unique("f3i/fresh")
        put_single(workload, stack, upstream, fresh, mine)
        served(get(strict, BUCKET, fresh), mine, "a format-3 object under `refuse`")
        status, _ = raw_copy(strict, victim, unique("f3i/legacy-copy"))
        assert status == 403, "a legacy source is not copied under `refuse`"
    finally:
        proc.stop()


def raw_copy(endpoint: str, src: str, dst: str) -> tuple[int, bytes]:
    res = request(endpoint, "PUT", f"/{BUCKET}/{quote_key(dst)}", [("x-amz-copy-source", f"/{BUCKET}/{quote_key(src)}")])
    return res.status, res.body


def rebuild_as_pending(upstream, src: str, dst: str, part_lens: list[int], mac: str | None = None) -> None:
    """Attacker (a): `src`'s streams, part for part (UploadPartCopy keeps
    the `-N` ETag `seal` checks), completed at `dst` under the envelope of
    a format-3 upload that was never sealed (with `mac`, a genuine pending
    MAC the attacker captured for another name)."""
    meta = upstream.head_object(Bucket=BUCKET, Key=src)["Metadata"]
    pending = {k: meta[k] for k in ("cloudtaser-key", "cloudtaser-transit-key", "cloudtaser-binding")}
    pending.update({"cloudtaser-format": "3", "cloudtaser-layout": "multipart-pending"})
    if mac:
        pending["cloudtaser-mac"] = mac
    uid = upstream.create_multipart_upload(Bucket=BUCKET, Key=dst, Metadata=pending)["UploadId"]
    parts, start = [], 0
    for n, plain in enumerate(part_lens, start=1):
        end = start + ct_len(plain)
        etag = upstream.upload_part_copy(Bucket=BUCKET, Key=dst, UploadId=uid, PartNumber=n,
                                         CopySource={"Bucket": BUCKET, "Key": src},
                                         CopySourceRange=f"bytes={start}-{end - 1}")["CopyPartResult"]["ETag"]
        parts.append({"PartNumber": n, "ETag": etag})
        start = end
    upstream.complete_multipart_upload(Bucket=BUCKET, Key=dst, UploadId=uid, MultipartUpload={"Parts": parts})


def test_seal_refuses_a_multipart_object_moved_to_another_key(stack, workload, upstream, bkt):
    """Was FINDING 1. A format-3 pending envelope carries a MAC bound to its
    name, which every seal verifies first: A's streams rebuilt at B under
    A's envelope (with no MAC, or with A's genuine pending MAC) are not made
    authentic at B, and B is never served A's content."""
    src, dst = unique("f3i/seal-src"), unique("f3i/seal-dst")
    data = body_of(PART + 1000, src)
    put_multipart(workload, src, data)
    meta = upstream.head_object(Bucket=BUCKET, Key=src)["Metadata"]
    dek = envelope.unwrap(stack.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])
    captured = envelope.envelope_mac(dek, binding=meta["cloudtaser-binding"], bucket=BUCKET, key=src,
                                     transit_key=meta["cloudtaser-transit-key"], size=0, pending=True).hex()
    for mac in (None, captured):
        put_single(workload, stack, upstream, dst, b"what B really holds" * 100)
        rebuild_as_pending(upstream, src, dst, [PART, 1000], mac)
        assert get(stack.proxy_endpoint, BUCKET, dst).status in (500, 503)
        r = tool(stack, "seal", "--bucket", BUCKET, "--key", dst, "--quiet", check=None)
        assert r.returncode != 0, f"seal sealed a moved object ({r.stdout.strip()})"
        refused(get(stack.proxy_endpoint, BUCKET, dst), data, "A's streams under B's key after seal")
        assert "cloudtaser-streams" not in upstream.head_object(Bucket=BUCKET, Key=dst)["Metadata"]


def test_a_ctu3_id_respelled_ctu1_is_refused(stack, workload, upstream, bkt):
    """Was FINDING 4. A `ctu3.` id with its tag dropped is a `ctu1.` id,
    which binds nothing: refused (404) unless
    `CLOUDTASER_S3PROXY_LEGACY_UPLOAD_IDS=accept`, under any key, and the
    object at the key is untouched."""
    key, other = unique("f3i/ctu1"), unique("f3i/ctu1-other")
    before = body_of(1000, key)
    put_single(workload, stack, upstream, key, before)
    uid = workload.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    transit, wrapped, _, upstream_id = split_id(uid)
    legacy_id = f"ctu1.{transit}.{wrapped}.{upstream_id}"
    for k in (other, key):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            workload.upload_part(Bucket=BUCKET, Key=k, UploadId=legacy_id, PartNumber=1, Body=b"x" * 100)
        assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        workload.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=legacy_id,
                                           MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})
    assert e.value.response["Error"]["Code"] == "NoSuchUpload"
    served(get(stack.proxy_endpoint, BUCKET, key), before, "the object at the key")
    workload.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid)


# --- claims that held -----------------------------------------------------------


def test_envelope_field_spellings_and_edits_are_refused(stack, workload, upstream, bkt):
    """Every covered field edited, respelled or contradicted (binding
    names, format labels, extra multipart fields on a single PUT, a MAC cut
    short): HEAD and GET refuse, HEAD answers no size. Uppercase hex is the
    same MAC and is accepted."""
    key = unique("f3i/fields")
    data = body_of(SEG + 9, key)
    meta = put_single(workload, stack, upstream, key, data)
    ep = stack.proxy_endpoint
    edits = {
        "binding KEY": {"cloudtaser-binding": "KEY"},
        "binding none": {"cloudtaser-binding": "none"},
        "binding bucket-key": {"cloudtaser-binding": "bucket-key"},
        "format 1 with a MAC": {"cloudtaser-format": "1"},
        "format 2": {"cloudtaser-format": "2"},
        "format 4": {"cloudtaser-format": "4"},
        "size + 1": {"cloudtaser-size": str(len(data) + 1)},
        "mac cut": {"cloudtaser-mac": meta["cloudtaser-mac"][:62]},
        "mac of another name": {"cloudtaser-mac": "00" * 32},
        "a part table on a single PUT": {"cloudtaser-parts": f"1:{len(data)}"},
        "a streams digest on a single PUT": {"cloudtaser-streams": "11" * 32},
        "pending": {"cloudtaser-layout": "multipart-pending"},
    }
    for what, edit in edits.items():
        replace_metadata(upstream, key, {**meta, **edit})
        h = head(ep, BUCKET, key)
        assert h.status >= 400 and h.headers.get("content-length") != str(len(data)), (what, h)
        refused(get(ep, BUCKET, key), data, what)
        refused(get(ep, BUCKET, key, (0, 99)), data, f"{what}, ranged")
    replace_metadata(upstream, key, {**meta, "cloudtaser-mac": meta["cloudtaser-mac"].upper()})
    served(get(ep, BUCKET, key), data, "the same MAC in upper case")
    replace_metadata(upstream, key, meta)
    served(get(ep, BUCKET, key), data, "the original envelope")


def test_multipart_envelope_edits_are_refused_by_every_read(stack, workload, upstream, bkt):
    """A format-3 multipart object: another split of the same total, other
    part numbers, another streams digest, the table dropped, or relabelled
    format 2 (no manifest can be made without the data key): HEAD, whole,
    range, partNumber all refuse."""
    key = unique("f3i/mp-fields")
    data = body_of(PART + 1000, key)
    put_multipart(workload, key, data)
    raw, meta = stored(upstream, BUCKET, key)
    assert meta["cloudtaser-parts"] == f"1:{PART},2:1000" and "cloudtaser-streams" in meta
    ep = stack.proxy_endpoint
    without_table = {k: v for k, v in meta.items() if k != "cloudtaser-parts"}
    edits = {
        "split moved": {**meta, "cloudtaser-parts": f"1:{PART - SEG},2:{SEG + 1000}"},
        "part numbers": {**meta, "cloudtaser-parts": f"1:{PART},3:1000"},
        "streams digest": {**meta, "cloudtaser-streams": "ab" * 32},
        "table dropped": without_table,
        "format 2 label": {**{k: v for k, v in meta.items() if k not in ("cloudtaser-mac", "cloudtaser-binding",
                                                                           "cloudtaser-streams")},
                           "cloudtaser-format": "2", "cloudtaser-manifest": meta["cloudtaser-streams"]},
    }
    for what, m in edits.items():
        replace_metadata(upstream, key, m)
        assert head(ep, BUCKET, key).status >= 400, what
        refused(get(ep, BUCKET, key), data, what)
        refused(get(ep, BUCKET, key, (PART + 1, PART + 50)), data[PART + 1 :], f"{what}, range in part 2")
        refused(get(ep, BUCKET, key, query="?partNumber=2"), data[PART:], f"{what}, partNumber=2")
    replace_metadata(upstream, key, meta)
    served(get(ep, BUCKET, key), data, "the original envelope")


def test_the_mac_binds_the_decoded_key_not_its_spelling(stack, workload, upstream, bkt):
    """Keys with UTF-8, spaces, `+` and `%`: any percent-spelling of the same
    key reads (the MAC binds the key the upstream stores, decoded once);
    the same object copied by attacker (a) onto the NFD spelling, or onto
    the key its `%41` would decode to, is refused."""
    key = unique("f3i/ünï cödé+%41")
    key = unicodedata.normalize("NFC", key)
    data = body_of(1234, key)
    put_single(workload, stack, upstream, key, data)
    ep = stack.proxy_endpoint
    served(get(ep, BUCKET, key), data, "the key as written")
    every_byte = "".join(f"%{b:02X}" for b in key.encode())
    served(request(ep, "GET", f"/{BUCKET}/{every_byte}"), data, "every byte percent-encoded")
    lower = quote_key(key).replace("%C3%BC", "%c3%bc")
    served(request(ep, "GET", f"/{BUCKET}/{lower}"), data, "lower-case percent-encoding")
    for alias in (unicodedata.normalize("NFD", key), key.replace("%41", "A"), key.replace(" ", "+")):
        assert alias != key
        upstream.copy_object(Bucket=BUCKET, Key=alias, CopySource={"Bucket": BUCKET, "Key": key})
        refused(get(ep, BUCKET, alias), data, f"copied onto {alias!r}")
        assert head(ep, BUCKET, alias).status >= 400, alias


def test_copies_through_the_proxy_rebind_and_never_launder(stack, workload, upstream, bkt):
    """Multipart source copied (re-bound, no body byte moved, reads); a
    self-copy with COPY keeps user metadata and reads; REPLACE naming a
    reserved field is 400 and writes nothing; a moved multipart source, and
    a moved source named with its versionId query, are not copied and the
    destination is untouched."""
    src, dst = unique("f3i/cp-src"), unique("f3i/cp-dst")
    data = body_of(PART + 77, src)
    put_multipart(workload, src, data)
    raw_src, meta_src = stored(upstream, BUCKET, src)
    workload.copy_object(Bucket=BUCKET, Key=dst, CopySource={"Bucket": BUCKET, "Key": src})
    raw_dst, meta_dst = stored(upstream, BUCKET, dst)
    assert raw_dst == raw_src and meta_dst["cloudtaser-mac"] != meta_src["cloudtaser-mac"]
    assert meta_dst["cloudtaser-streams"] == meta_src["cloudtaser-streams"] and meta_dst["who"] == "owner"
    served(get(stack.proxy_endpoint, BUCKET, dst), data, "the copy")
    served(get(stack.proxy_endpoint, BUCKET, dst, (PART - 3, PART + 3)), data[PART - 3 : PART + 4], "copy, ranged")
    # Onto itself (COPY): still reads, user metadata kept.
    workload.copy_object(Bucket=BUCKET, Key=dst, CopySource={"Bucket": BUCKET, "Key": dst},
                         MetadataDirective="COPY")
    assert stored(upstream, BUCKET, dst)[1]["who"] == "owner"
    served(get(stack.proxy_endpoint, BUCKET, dst), data, "the self-copy")
    # REPLACE with a reserved field: refused before anything is sent.
    res = request(stack.proxy_endpoint, "PUT", f"/{BUCKET}/{quote_key(unique('f3i/cp-reserved'))}",
                  [("x-amz-copy-source", f"/{BUCKET}/{quote_key(src)}"), ("x-amz-metadata-directive", "REPLACE"),
                   ("x-amz-meta-cloudtaser-mac", meta_src["cloudtaser-mac"])])
    assert res.status == 400 and res.code == "InvalidArgument", res
    # A multipart source moved by attacker (a) is not copied on.
    moved, target = unique("f3i/cp-moved"), unique("f3i/cp-target")
    upstream.copy_object(Bucket=BUCKET, Key=moved, CopySource={"Bucket": BUCKET, "Key": src})
    put_single(workload, stack, upstream, target, b"target stays" * 10)
    before = stored(upstream, BUCKET, target)
    for source in (f"/{BUCKET}/{quote_key(moved)}", f"/{BUCKET}/{quote_key(moved)}?versionId=null"):
        res = request(stack.proxy_endpoint, "PUT", f"/{BUCKET}/{quote_key(target)}",
                      [("x-amz-copy-source", source)])
        assert res.status >= 400, (source, res)
        assert stored(upstream, BUCKET, target) == before, "the destination was written"


def test_upload_part_copy_and_part_reads_of_a_moved_object_are_refused(stack, workload, upstream, bkt):
    """UploadPartCopy from a source moved by attacker (a) uploads nothing;
    HEAD and GET `?partNumber` of it refuse; an empty object moved onto
    another empty object's key is refused too (its MAC still binds)."""
    src, moved, dst = unique("f3i/upc-src"), unique("f3i/upc-moved"), unique("f3i/upc-dst")
    data = body_of(2 * SEG + 5, src)
    put_single(workload, stack, upstream, src, data)
    upstream.copy_object(Bucket=BUCKET, Key=moved, CopySource={"Bucket": BUCKET, "Key": src})
    ep = stack.proxy_endpoint
    for query in ("?partNumber=1",):
        refused(get(ep, BUCKET, moved, query=query), data, "GET partNumber of a moved object")
        assert request(ep, "HEAD", f"/{BUCKET}/{quote_key(moved)}{query}").status >= 400
    uid = workload.create_multipart_upload(Bucket=BUCKET, Key=dst)["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError):
        workload.upload_part_copy(Bucket=BUCKET, Key=dst, UploadId=uid, PartNumber=1,
                                  CopySource={"Bucket": BUCKET, "Key": moved})
    with pytest.raises(botocore.exceptions.ClientError):
        workload.upload_part_copy(Bucket=BUCKET, Key=dst, UploadId=uid, PartNumber=1,
                                  CopySource={"Bucket": BUCKET, "Key": moved}, CopySourceRange="bytes=0-9")
    assert not upstream.list_parts(Bucket=BUCKET, Key=dst, UploadId=split_id(uid)[3]).get("Parts")
    # From the real source it works, and the part reads back.
    workload.upload_part_copy(Bucket=BUCKET, Key=dst, UploadId=uid, PartNumber=1,
                              CopySource={"Bucket": BUCKET, "Key": src})
    workload.abort_multipart_upload(Bucket=BUCKET, Key=dst, UploadId=uid)
    e1, e2 = unique("f3i/empty-a"), unique("f3i/empty-b")
    for k in (e1, e2):
        put_through(ep, BUCKET, k, b"")
        assert stored(upstream, BUCKET, k)[1]["cloudtaser-format"] == "3"
    upstream.copy_object(Bucket=BUCKET, Key=e1, CopySource={"Bucket": BUCKET, "Key": e2})
    assert get(ep, BUCKET, e1).status >= 400 and head(ep, BUCKET, e1).status >= 400
    assert get(ep, BUCKET, e2).status == 200 and head(ep, BUCKET, e2).headers.get("content-length") == "0"


def test_legacy_single_put_head_checks_the_stream_header(stack, workload, upstream, bkt):
    """Claim 3: a format-1 single object's HEAD reads its stream header
    (2 upstream requests) and refuses a relabelled size or salt, and a
    format-3 body relabelled format 1 even with a matching size."""
    key = unique("f3i/legacy-head")
    data = body_of(SEG + 3, key)
    legacy_single(stack, workload, upstream, key, data)
    ep = stack.proxy_endpoint
    before = upstream_requests(stack)
    h = head(ep, BUCKET, key)
    assert h.status == 200 and h.headers["content-length"] == str(len(data))
    assert upstream_requests(stack) - before == 2
    meta = stored(upstream, BUCKET, key)[1]
    for what, edit in (("size", {"cloudtaser-size": str(len(data) - 1)}), ("salt", {"cloudtaser-salt": "00" * 32})):
        replace_metadata(upstream, key, {**meta, **edit})
        assert head(ep, BUCKET, key).status >= 400, what
        refused(get(ep, BUCKET, key), data, what)
    f3 = unique("f3i/relabel")
    f3data = body_of(SEG + 3, f3)
    m3 = put_single(workload, stack, upstream, f3, f3data)
    legacy = {k: v for k, v in m3.items() if k not in ("cloudtaser-mac", "cloudtaser-binding")}
    replace_metadata(upstream, f3, {**legacy, "cloudtaser-format": "1"})
    assert head(ep, BUCKET, f3).status >= 400
    refused(get(ep, BUCKET, f3, (0, 9)), f3data, "format-3 body as format 1, ranged")


def test_rewrap_keeps_format_3_readable_and_launders_nothing(stack, upstream, bkt):
    """`rewrap` moves a format-3 object to a new wrapped key without the
    data key: the MAC (which does not cover the wrapped key) still
    verifies, and a moved object it rewraps stays refused (rewrap writes no
    MAC). On a Transit key of its own, so the rotation leaks nowhere."""
    from conftest import s3_client  # noqa: PLC0415

    name = "f3i-rewrap"
    stack.vault.ok("POST", f"transit/keys/{name}", {})
    proc, endpoint, _ = stack.start_proxy("proxy-f3i-rewrap", CLOUDTASER_S3PROXY_TRANSIT_KEY=name,
                                          CLOUDTASER_S3PROXY_KEY_CACHE_SIZE="0", CLOUDTASER_S3PROXY_KEY_POOL_SIZE="0")
    try:
        client = s3_client(endpoint, "w", "w")
        ok, moved = unique("f3i/rw-ok"), unique("f3i/rw-moved")
        data = body_of(SEG + 11, ok)
        client.put_object(Bucket=BUCKET, Key=ok, Body=data)
        meta = stored(upstream, BUCKET, ok)[1]
        assert meta["cloudtaser-format"] == "3" and meta["cloudtaser-key"].startswith("vault:v1:")
        upstream.copy_object(Bucket=BUCKET, Key=moved, CopySource={"Bucket": BUCKET, "Key": ok})
        stack.vault.ok("POST", f"transit/keys/{name}/rotate", {})
        tool(stack, "rewrap", "--bucket", BUCKET, "--prefix", "f3i/rw-", "--quiet", "--assume-quiesced",
             CLOUDTASER_S3PROXY_TRANSIT_KEY=name, CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS="1")
        new = stored(upstream, BUCKET, ok)[1]
        assert new["cloudtaser-key"].startswith("vault:v2:") and new["cloudtaser-mac"] == meta["cloudtaser-mac"]
        assert stored(upstream, BUCKET, moved)[1]["cloudtaser-key"].startswith("vault:v2:")
        served(get(endpoint, BUCKET, ok), data, "after rewrap")
        refused(get(endpoint, BUCKET, moved), data, "a moved object after rewrap")
    finally:
        proc.stop()


def test_a_range_inside_a_later_part_costs_at_most_three_upstream_requests(stack, workload, upstream, bkt):
    """Was FINDING 5 (FORMAT.md claimed two). A range that starts past the
    first segment of any part but the first needs that part's header: cold,
    the probe (bytes=0-51, metadata and first header), the part's header,
    the covering segments: 3, and 2 once the layout is cached; a range at a
    part's first segment reads the header with the segments (FORMAT.md,
    "Bounded reads")."""
    key = unique("f3i/range-cost")
    data = body_of(2 * PART + 1000, key)
    put_multipart(workload, key, data)
    ep = stack.proxy_endpoint
    costs = {}
    for what, (a, b) in (("part 2, segment 0 (cold)", (PART + 10, PART + 20)),
                         ("part 2, segment 3 (warm)", (PART + 3 * SEG + 10, PART + 3 * SEG + 20))):
        before = upstream_requests(stack)
        served(get(ep, BUCKET, key, (a, b)), data[a : b + 1], what)
        costs[what] = upstream_requests(stack) - before
    other = unique("f3i/range-cost-cold")
    put_multipart(workload, other, data)
    a = PART + 3 * SEG + 10
    before = upstream_requests(stack)
    served(get(ep, BUCKET, other, (a, a + 10)), data[a : a + 11], "part 2, segment 3 (cold)")
    costs["part 2, segment 3 (cold)"] = upstream_requests(stack) - before
    assert costs["part 2, segment 0 (cold)"] == 2, costs
    assert costs["part 2, segment 3 (warm)"] == 2 and costs["part 2, segment 3 (cold)"] == 3, costs


def test_versioned_sources_and_attributes_verify_under_their_name_on_moto(moto_stack):
    """On moto (versions, GetObjectAttributes): an older version of the same
    key still reads (rollback is not detected, as documented) and copies
    through the proxy by `versionId`, re-bound to the destination; another
    key's object copied over by attacker (a) is refused by GET, HEAD and
    GetObjectAttributes (no size), and as a copy source by versionId."""
    c, direct = moto_stack.client, moto_stack.direct
    bucket = f"f3i-{unique('v')}"
    direct.create_bucket(Bucket=bucket)
    direct.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    key, other, dst = "k/object", "k/other", "k/copy"
    first, second, theirs = body_of(SEG + 1, "v1"), body_of(SEG + 2, "v2"), body_of(SEG + 3, "other")
    v1 = c.put_object(Bucket=bucket, Key=key, Body=first)["VersionId"]
    c.put_object(Bucket=bucket, Key=key, Body=second)
    c.put_object(Bucket=bucket, Key=other, Body=theirs)
    assert c.get_object(Bucket=bucket, Key=key, VersionId=v1)["Body"].read() == first
    c.copy_object(Bucket=bucket, Key=dst, CopySource={"Bucket": bucket, "Key": key, "VersionId": v1})
    assert c.get_object(Bucket=bucket, Key=dst)["Body"].read() == first
    attrs = c.get_object_attributes(Bucket=bucket, Key=dst, ObjectAttributes=["ObjectSize"])
    assert attrs["ObjectSize"] == len(first)
    moved = direct.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": other})["VersionId"]
    for call in (lambda: c.get_object(Bucket=bucket, Key=key)["Body"].read(),
                 lambda: c.head_object(Bucket=bucket, Key=key),
                 lambda: c.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["ObjectSize"]),
                 lambda: c.get_object(Bucket=bucket, Key=key, VersionId=moved, Range="bytes=0-9"),
                 lambda: c.copy_object(Bucket=bucket, Key="k/laundered",
                                       CopySource={"Bucket": bucket, "Key": key, "VersionId": moved})):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 500, e.value.response
    with pytest.raises(botocore.exceptions.ClientError):
        direct.head_object(Bucket=bucket, Key="k/laundered")

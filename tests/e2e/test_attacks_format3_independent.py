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
from test_failures import scrape

BUCKET = "e2e-format3-independent"
PART = 5 * MiB


@pytest.fixture(scope="module")
def bkt(upstream):
    return ensure_bucket(upstream, BUCKET)


@pytest.fixture(scope="module")
def workload(stack):
    from conftest import s3_client  # noqa: PLC0415

    return s3_client(stack.proxy_endpoint, "w", "w")


def tool(stack, *args, check: int | None = 0, **env):
    r = subprocess.run([stack_mod.proxy_binary(), *args], env=stack.proxy_env(**env), capture_output=True,
                       text=True, timeout=300)
    if check is not None:
        assert r.returncode == check, r.stdout + r.stderr
    return r


def upstream_requests(stack) -> float:
    return sum(v for (name, _), v in scrape(stack.health_endpoint).items()
               if name == "cloudtaser_s3proxy_upstream_requests_total")


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


def test_FINDING_decrypt_tool_cannot_recover_any_format_3_object(stack, workload, upstream, bkt, tmp_path):
    """FINDING (availability of the documented recovery path). `decrypt`,
    the tool that recovers an object "without the proxy or the bucket",
    refuses every format-3 stream ("stream version 3 is not allowed"):
    commands/decrypt.rs builds `Opener::single_stream` with no
    `require_version(3)`, and has no flag for the envelope MAC or the
    format-3 part table. Every object written since format 3 is
    unrecoverable with it (test_key_lifecycle.py's decrypt test fails too)."""
    key = unique("f3i/recover")
    data = body_of(70_000, key)
    meta = put_single(workload, stack, upstream, key, data)
    raw = tmp_path / "download.bin"
    raw.write_bytes(stored(upstream, BUCKET, key)[0])
    out = tmp_path / "plain.bin"
    r = tool(stack, "decrypt", "--in", str(raw), "--out", str(out), "--wrapped-key", meta["cloudtaser-key"],
             "--key-name", meta["cloudtaser-transit-key"], "--salt", meta["cloudtaser-salt"],
             "--size", meta["cloudtaser-size"], check=None)
    assert r.returncode == 0, f"decrypt refused a format-3 object: {r.stderr.strip().splitlines()[-1:]}"
    assert out.read_bytes() == data


def test_FINDING_a_legacy_object_copied_onto_a_format_3_key_is_served_as_that_key(stack, workload, upstream, bkt):
    """FINDING (claim 2 has a downgrade). Formats 1 and 2 stay readable and
    bind no name, so attacker (a) copies any object written before format 3
    (body and metadata) over a format-3 object, and the proxy serves the old
    object's content under the victim's key: the "whole object copied onto
    another key is refused" guarantee holds only while no format-1/2 object
    exists in a bucket the proxy reads. request/stored.rs `stored_layout`
    accepts `envelope.auth == None` under any name; no setting refuses
    unbound single-PUT (or format-2) objects (FORMAT1_MULTIPART covers only
    format-1 multipart)."""
    victim, old = unique("f3i/victim"), unique("f3i/legacy")
    mine = body_of(3 * SEG + 1, victim)
    put_single(workload, stack, upstream, victim, mine)
    theirs = body_of(3 * SEG + 1, old)
    legacy_single(stack, workload, upstream, old, theirs)
    served(get(stack.proxy_endpoint, BUCKET, old), theirs, "the legacy object under its own key")
    upstream.copy_object(Bucket=BUCKET, Key=victim, CopySource={"Bucket": BUCKET, "Key": old})
    res = get(stack.proxy_endpoint, BUCKET, victim)
    refused(res, theirs, "a format-1 object copied over a format-3 key")


def rebuild_as_pending(upstream, src: str, dst: str, part_lens: list[int]) -> None:
    """Attacker (a): `src`'s streams, part for part (UploadPartCopy keeps
    the `-N` ETag `seal` checks), completed at `dst` under the envelope of
    a format-3 upload that was never sealed."""
    meta = upstream.head_object(Bucket=BUCKET, Key=src)["Metadata"]
    pending = {k: meta[k] for k in ("cloudtaser-key", "cloudtaser-transit-key", "cloudtaser-binding")}
    pending.update({"cloudtaser-format": "3", "cloudtaser-layout": "multipart-pending"})
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


def test_FINDING_seal_binds_a_moved_multipart_object_to_its_new_key(stack, workload, upstream, bkt):
    """FINDING (claim 2 laundered by the operator's tool). A format-3
    `multipart-pending` object carries no MAC, so nothing ties its streams to
    its key. Attacker (a) rebuilds object A's streams at key B (UploadPartCopy,
    so the ETag's part count matches) and marks B pending. A reader of B gets
    503 "run cloudtaser-s3proxy seal --key B"; the operator does, and `seal`
    (commands/seal.rs `seal_one` -> request/seal.rs `seal_completed`) checks
    part count, headers and every segment (all A's, all authentic) and writes
    a MAC for B: B now reads as A's content. The same holds for a retried
    Complete (`finish_interrupted`). A pending envelope needs its own
    name-bound tag (written at CreateMultipartUpload, e.g. the upload-id tag
    over bucket/key/upstream id), checked before sealing."""
    src, dst = unique("f3i/seal-src"), unique("f3i/seal-dst")
    data = body_of(PART + 1000, src)
    put_multipart(workload, src, data)
    put_single(workload, stack, upstream, dst, b"what B really holds" * 100)
    rebuild_as_pending(upstream, src, dst, [PART, 1000])
    res = get(stack.proxy_endpoint, BUCKET, dst)
    assert res.status == 503, res
    r = tool(stack, "seal", "--bucket", BUCKET, "--key", dst, "--quiet", check=None)
    res = get(stack.proxy_endpoint, BUCKET, dst)
    refused(res, data, f"A's streams sealed under B's key (seal exit {r.returncode}: {r.stdout.strip()})")


def test_FINDING_a_ctu3_id_respelled_ctu1_escapes_its_binding_and_completes_upstream(stack, workload, upstream, bkt):
    """FINDING (claims 4 and 5 bypassed by the legacy spelling; low
    severity). A `ctu3.` id with its tag dropped is a valid `ctu1.` id:
    request/multipart.rs `checked_upload` skips every binding check for it.
    (1) An upload id issued for key A uploads parts under key B. (2) The
    parts it writes are version-2 streams, which the format-3 upload cannot
    seal: Complete checks the table only for `ctu3` (`version == VERSION_3`)
    and nothing checks the parts' versions before the upstream completes,
    so the object that was at the key is replaced by a `multipart-pending`
    object no reader and no `seal` will ever accept. A `ctu1.` id should be
    refused for an upload whose pending envelope is format 3 (or ctu1 be
    accepted only under a setting, for the upgrade window)."""
    key, other = unique("f3i/ctu1"), unique("f3i/ctu1-other")
    before = body_of(1000, key)
    put_single(workload, stack, upstream, key, before)
    uid = workload.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    transit, wrapped, _, upstream_id = split_id(uid)
    legacy_id = f"ctu1.{transit}.{wrapped}.{upstream_id}"
    moved = None
    try:
        workload.upload_part(Bucket=BUCKET, Key=other, UploadId=legacy_id, PartNumber=1, Body=b"x" * 100)
        moved = "an upload id issued for one key uploaded a part under another"
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "NoSuchUpload"
    etag = workload.upload_part(Bucket=BUCKET, Key=key, UploadId=legacy_id, PartNumber=1, Body=b"y" * 100)["ETag"]
    try:
        workload.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                           MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    except botocore.exceptions.ClientError:
        pass
    after = get(stack.proxy_endpoint, BUCKET, key)
    lost = None if after.status == 200 and after.body == before else f"the object at the key now answers {after}"
    problems = [p for p in (moved, lost) if p]
    assert not problems, "; ".join(problems)


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


def test_FINDING_a_range_inside_a_later_part_costs_three_upstream_requests(stack, workload, upstream, bkt):
    """FINDING (claim 5, "range <= 2", and FORMAT.md "one once the layout is
    cached"; performance, not security). A range that starts past the first
    segment of any part but the first needs that part's header: cold, the
    proxy sends the probe (bytes=0-51, for the metadata and first header),
    then the part's header, then the covering segments (request/object.rs
    `get_range` + `read_covering`): 3 requests, and 2 once cached. The
    format-3 table is in the metadata, so the probe could take the metadata
    alone and the part's header could be read with the covering segments."""
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
    assert costs["part 2, segment 0 (cold)"] <= 2, costs
    assert costs["part 2, segment 3 (warm)"] <= 1 and costs["part 2, segment 3 (cold)"] <= 2, costs


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

"""`migrate --upgrade`: objects written before format 3 (formats 1 and 2, not
bound to their names) are rewritten as format 3 through the proxy's verified
read path, pinned to the ETag they were examined at; tampered ones are not
made authentic. Afterwards `CLOUDTASER_S3PROXY_LEGACY_FORMATS=refuse` can be
set, which closes the downgrade a legacy object copied over a format-3 key
would otherwise be (docs/THREAT-MODEL.md)."""

from __future__ import annotations

import os

import envelope
from attack_helpers import MiB, body_of, stored
from test_attacks_at_rest import ensure_bucket, get, put_through, unique
from test_attacks_format3_independent import served, tool

BUCKET = "e2e-upgrade"
PART = 5 * MiB


def legacy_objects(stack, client, upstream) -> dict[str, bytes]:
    """A format-1 single PUT and a format-1 multipart object, built with the
    independent writer under a data key Vault wrapped for the proxy, and a
    format-1 single PUT whose body was tampered with."""
    donor_key = unique("donor")
    put_through(stack.proxy_endpoint, BUCKET, donor_key, b"d" * 10, client)
    donor = stored(upstream, BUCKET, donor_key)[1]
    dek = envelope.unwrap(stack.vault, donor["cloudtaser-transit-key"], donor["cloudtaser-key"])
    wrapped = {"cloudtaser-key": donor["cloudtaser-key"], "cloudtaser-transit-key": donor["cloudtaser-transit-key"]}
    out = {}
    for name, size, tamper in (("legacy/single", 3 * 65536 + 7, False), ("legacy/tampered", 70_000, True)):
        data = body_of(size, name)
        salt = os.urandom(32)
        body = bytearray(envelope.encrypt(dek, salt, 0, data, version=1))
        if tamper:
            body[-1] ^= 1
        meta = dict(wrapped, **{"cloudtaser-format": "1", "cloudtaser-size": str(size), "cloudtaser-salt": salt.hex()})
        upstream.put_object(Bucket=BUCKET, Key=name, Body=bytes(body), Metadata=dict(meta, owner="team-a"),
                            ContentType="text/csv")
        out[name] = data
    data = body_of(2 * PART + 999, "legacy/multipart")
    chunks = [data[i : i + PART] for i in range(0, len(data), PART)]
    meta = dict(wrapped, **{"cloudtaser-format": "1", "cloudtaser-layout": "multipart"})
    uid = upstream.create_multipart_upload(Bucket=BUCKET, Key="legacy/multipart", Metadata=meta)["UploadId"]
    parts = [{"PartNumber": n, "ETag": upstream.upload_part(
        Bucket=BUCKET, Key="legacy/multipart", UploadId=uid, PartNumber=n,
        Body=envelope.encrypt(dek, os.urandom(32), n, c))["ETag"]} for n, c in enumerate(chunks, start=1)]
    upstream.complete_multipart_upload(Bucket=BUCKET, Key="legacy/multipart", UploadId=uid,
                                       MultipartUpload={"Parts": parts})
    out["legacy/multipart"] = data
    return out


def test_migrate_upgrade_rewrites_legacy_objects_as_format_3(stack, client, upstream):
    ensure_bucket(upstream, BUCKET)
    objects = legacy_objects(stack, client, upstream)
    ep = stack.proxy_endpoint
    for name in ("legacy/single", "legacy/multipart"):
        served(get(ep, BUCKET, name), objects[name], f"{name} before the upgrade")
    r = tool(stack, "migrate", "--bucket", BUCKET, "--prefix", "legacy/", "--upgrade", "--part-size-mib", "5",
             "--quiet", "--assume-quiesced", check=None)
    # The tampered object is not made authentic: its read fails, so it is
    # reported and left as it was, and the command exits non-zero.
    assert r.returncode != 0, r.stdout + r.stderr
    assert "upgraded to format 3: 2" in r.stdout, r.stdout
    assert stored(upstream, BUCKET, "legacy/tampered")[1]["cloudtaser-format"] == "1"
    for name in ("legacy/single", "legacy/multipart"):
        raw, meta = stored(upstream, BUCKET, name)
        assert meta["cloudtaser-format"] == "3" and len(meta["cloudtaser-mac"]) == 64, meta
        assert raw[4] == 3, "version-3 streams"
        served(get(ep, BUCKET, name), objects[name], f"{name} after the upgrade")
    assert upstream.head_object(Bucket=BUCKET, Key="legacy/single")["ContentType"] == "text/csv"
    assert stored(upstream, BUCKET, "legacy/single")[1]["owner"] == "team-a"
    assert stored(upstream, BUCKET, "legacy/multipart")[1]["cloudtaser-layout"] == "multipart"
    # Once upgraded, a proxy that refuses legacy formats reads them.
    proc, strict, _ = stack.start_proxy("proxy-upgraded", CLOUDTASER_S3PROXY_LEGACY_FORMATS="refuse")
    try:
        served(get(strict, BUCKET, "legacy/single"), objects["legacy/single"], "an upgraded object under `refuse`")
        assert get(strict, BUCKET, "legacy/tampered").status == 403
    finally:
        proc.stop()
    # A rerun has nothing left to upgrade but the tampered object.
    r = tool(stack, "migrate", "--bucket", BUCKET, "--prefix", "legacy/", "--upgrade", "--quiet",
             "--assume-quiesced", check=None)
    assert "upgraded to format 3: 0" in r.stdout, r.stdout

"""Independent attacks on bucket keys (issue 29), written without reading
test_bucket_keys.py first. The attacker holds the upstream's credentials
(rewrites stored bytes and metadata) or is a hostile process in the pod
speaking S3 to the proxy; real OpenBao, real s3s-fs, the real proxy binary.

Tests named test_hole_* demonstrate a broken claim: they fail on purpose
until the proxy is fixed. Every other test fails if a claim that held breaks."""

from __future__ import annotations

import base64
import re
import subprocess
import time
import urllib.request
import uuid

import pytest
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag

import attack_helpers
import envelope
import stack as stack_mod
from attack_helpers import body_of
from conftest import s3_client

BUCKET = "t29-independent"
SIZE = 70_001  # two segments, a distinctive length
BK_ON = {"CLOUDTASER_S3PROXY_BUCKET_KEYS": "on"}
POLICY = attack_helpers.PROXY_POLICY


class Env:
    def __init__(self, stack, upstream):
        self.stack, self.upstream, self.vault = stack, upstream, stack.vault
        self.procs = []
        self.vault.ok("POST", "sys/policy/t29-independent", {"policy": POLICY})
        self.token = self.vault.ok("POST", "auth/token/create", {"policies": ["t29-independent"], "ttl": "4h"})[
            "auth"]["client_token"]
        try:
            upstream.create_bucket(Bucket=BUCKET)
        except ClientError:
            pass

    def key(self, tag: str) -> str:
        name = f"t29i-{tag}-{uuid.uuid4().hex[:8]}"
        self.vault.ok("POST", f"transit/keys/{name}", {"type": "aes256-gcm96"})
        return name

    def erase(self, name: str) -> None:
        self.vault.ok("POST", f"transit/keys/{name}/config", {"deletion_allowed": True})
        self.vault.ok("DELETE", f"transit/keys/{name}")

    def rotate(self, name: str) -> None:
        self.vault.ok("POST", f"transit/keys/{name}/rotate")

    def proxy(self, name: str, **env: str):
        proc, endpoint, health = self.stack.start_proxy(f"t29i-{name}-{uuid.uuid4().hex[:6]}", **env)
        self.procs.append(proc)
        client = s3_client(endpoint, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)
        return client, proc, health

    def meta(self, key: str) -> dict[str, str]:
        return self.upstream.head_object(Bucket=BUCKET, Key=key)["Metadata"]

    def stored(self, key: str) -> tuple[bytes, dict[str, str]]:
        got = self.upstream.get_object(Bucket=BUCKET, Key=key)
        return got["Body"].read(), got["Metadata"]

    def plant(self, key: str, body: bytes, meta: dict[str, str]) -> None:
        self.upstream.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=meta)

    def exists(self, key: str) -> bool:
        try:
            self.upstream.head_object(Bucket=BUCKET, Key=key)
            return True
        except ClientError as e:
            if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                return False
            raise

    def tool(self, args: list[str], **env: str) -> subprocess.CompletedProcess:
        settings = self.stack.proxy_env(**env)
        return subprocess.run([stack_mod.proxy_binary(), *args], env=settings, capture_output=True, text=True,
                              timeout=120, cwd=self.stack.workdir)

    def close(self):
        for p in self.procs:
            p.stop()


@pytest.fixture(scope="module")
def env(stack, upstream):
    e = Env(stack, upstream)
    yield e
    e.close()


def decrypt_calls(health: str) -> float:
    text = urllib.request.urlopen(f"{health}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("cloudtaser_s3proxy_vault_calls_total{") and 'operation="decrypt"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def bucket_key_of(env: Env, meta: dict[str, str]) -> bytes:
    return envelope.unwrap(env.vault, meta["cloudtaser-transit-key"], meta["cloudtaser-key"])


def assert_refused(env: Env, client, key: str, plaintext: bytes) -> None:
    """Every read path refuses `key`: HEAD, GET, ranged GET, partNumber GET,
    GetObjectAttributes and CopyObject as a source; no plaintext byte and
    no plaintext size in any answer."""
    size = str(len(plaintext))
    try:
        head = client.head_object(Bucket=BUCKET, Key=key)
        raise AssertionError(f"HEAD {key} answered {head['ContentLength']} bytes")
    except ClientError as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status >= 400, (key, status)
        headers = e.response["ResponseMetadata"]["HTTPHeaders"]
        assert headers.get("content-length", "0") != size, (key, headers)
        # Timestamps and random request ids carry arbitrary digits; every
        # other header is compared token by token so a short size such as
        # "33" cannot match the clock.
        noise = {"date", "x-amz-request-id", "x-amz-id-2", "x-cloudtaser-request-id"}
        leaked = [
            (name, v)
            for name, v in headers.items()
            if name.lower() not in noise and size in re.findall(r"\d+", v)
        ]
        assert not leaked, (key, leaked)
    reads = [
        ("GET", lambda: client.get_object(Bucket=BUCKET, Key=key)),
        ("ranged GET", lambda: client.get_object(Bucket=BUCKET, Key=key, Range="bytes=1-70000")),
        ("tail GET", lambda: client.get_object(Bucket=BUCKET, Key=key, Range="bytes=-10")),
        ("partNumber GET", lambda: client.get_object(Bucket=BUCKET, Key=key, PartNumber=1)),
    ]
    for what, read in reads:
        try:
            got = read()
            body = got["Body"].read()
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] >= 400
            assert size not in str(e.response.get("Error", {})), (key, what, e.response)
            continue
        except Exception:  # noqa: BLE001 - a stream cut short also refuses
            continue
        raise AssertionError(f"{what} {key} served {len(body)} bytes (plaintext: {body in plaintext})")
    try:
        attrs = client.get_object_attributes(Bucket=BUCKET, Key=key, ObjectAttributes=["ObjectSize", "ETag"])
        assert str(attrs.get("ObjectSize")) != size, (key, attrs)
        raise AssertionError(f"GetObjectAttributes {key} answered {attrs}")
    except ClientError as e:
        assert size not in str(e.response.get("Error", {}))
    dest = f"copies/{uuid.uuid4().hex[:8]}"
    try:
        client.copy_object(Bucket=BUCKET, Key=dest, CopySource={"Bucket": BUCKET, "Key": key})
        copied = True
    except ClientError:
        copied = False
    stored = env.exists(dest)
    assert not copied and not stored, f"CopyObject from the refused {key}: answered ok={copied}, stored={stored}"


def put_window(client, prefix: str, n: int, size: int = SIZE) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        key = f"{prefix}{i}"
        out[key] = body_of(size, f"{prefix}{i}")
        client.put_object(Bucket=BUCKET, Key=key, Body=out[key])
    return out


# --- claim 4 (and SECURITY.md "crypto-shredding unchanged"): HOLES ---------


def test_hole_cross_key_copy_exports_the_whole_window_to_the_destination_key(env):
    """HOLE: CopyObject to a prefix routed to another Transit key wraps the
    *bucket key* under the destination key, so whoever may decrypt with the
    destination key (tenant B) derives every other object of tenant A's
    window, and erasing A no longer shreds objects that were never copied."""
    ka, kb = env.key("xa"), env.key("xb")
    rules = f"{BUCKET}/xa/={ka},{BUCKET}/xb/={kb}"
    client, _, _ = env.proxy("xcopy", CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    objs = put_window(client, "xa/o", 3)
    metas = {k: env.meta(k) for k in objs}
    assert len({m["cloudtaser-key"] for m in metas.values()}) == 1, "setup: one window"
    client.copy_object(Bucket=BUCKET, Key="xb/copy", CopySource={"Bucket": BUCKET, "Key": "xa/o0"})
    copy_meta = env.meta("xb/copy")
    assert copy_meta["cloudtaser-transit-key"] == kb
    env.erase(ka)
    # Tenant B's Transit key alone (never A's, which is gone) ...
    under_b = envelope.unwrap(env.vault, kb, copy_meta["cloudtaser-key"])
    body, meta = env.stored("xa/o2")  # ... and an object of A that was never copied
    dek = envelope.object_key(under_b, bytes.fromhex(meta["cloudtaser-key-salt"]))
    try:
        recovered = envelope.decrypt(dek, body)
    except (InvalidTag, envelope.FormatError):
        return
    if recovered == objs["xa/o2"]:
        raise AssertionError("xa/o2 (never copied, its Transit key erased) decrypts with tenant B's key "
                             "via the copied bucket key (a Transit decrypt permission on B is all it takes)")


def test_hole_rewrap_to_key_of_one_object_exports_its_window(env):
    """HOLE: `rewrap --to-key` of one object moves the window's bucket key,
    not the object's data key: the target key then opens its siblings."""
    ka, kb = env.key("ra"), env.key("rb")
    rules = f"{BUCKET}/ra/={ka},{BUCKET}/rb/={kb}"
    client, _, _ = env.proxy("rwmove", CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    objs = put_window(client, "ra/w-", 2)
    moved = env.tool(["rewrap", "--bucket", BUCKET, "--prefix", "ra/w-0", "--to-key", kb, "--quiet",
                      "--assume-quiesced"], CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    assert moved.returncode == 0, moved.stderr
    m0 = env.meta("ra/w-0")
    assert m0["cloudtaser-transit-key"] == kb
    assert client.get_object(Bucket=BUCKET, Key="ra/w-0")["Body"].read() == objs["ra/w-0"]
    env.erase(ka)
    under_b = envelope.unwrap(env.vault, kb, m0["cloudtaser-key"])
    body, meta = env.stored("ra/w-1")
    dek = envelope.object_key(under_b, bytes.fromhex(meta["cloudtaser-key-salt"]))
    try:
        recovered = envelope.decrypt(dek, body)
    except (InvalidTag, envelope.FormatError):
        return
    if recovered == objs["ra/w-1"]:
        raise AssertionError("ra/w-1 (not moved, its key erased) decrypts with the --to-key key")


# --- claim 1: tampered envelopes ------------------------------------------


def test_tampered_bucket_key_envelopes_are_refused_on_every_read_path(env):
    """Held if green: each tamper is planted over the victim's own name (so
    the name binding alone cannot be what refuses it), read by a cold proxy."""
    kb = env.key("other")
    rules = f"{BUCKET}/ok/={kb}"
    writer, _, _ = env.proxy("tw", CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    other_window, _, _ = env.proxy("tw2", **BK_ON)
    plain_writer, _, _ = env.proxy("tplain")
    names = ["moved-src", "salt-swap", "salt-gone", "salt-case", "window-swap", "key-swap", "fmt1-salt",
             "fmt2", "mac-swap", "plain-dek-as-bk", "binding-none", "size"]
    objs = {n: body_of(SIZE, n) for n in names}
    for n, b in objs.items():
        writer.put_object(Bucket=BUCKET, Key=f"tm/{n}", Body=b)
    writer.put_object(Bucket=BUCKET, Key="tm/sibling", Body=b"sibling")
    writer.put_object(Bucket=BUCKET, Key="ok/x", Body=b"other transit key")
    other_window.put_object(Bucket=BUCKET, Key="tm/other-window", Body=b"other window")
    plain_writer.put_object(Bucket=BUCKET, Key="tm/plain", Body=b"no bucket key")
    victim_plain = body_of(SIZE, "plain-salt")
    plain_writer.put_object(Bucket=BUCKET, Key="tm/plain-salt", Body=victim_plain)
    sib = env.meta("tm/sibling")
    assert sib["cloudtaser-key"] == env.meta("tm/moved-src")["cloudtaser-key"], "setup: one window"
    assert env.meta("tm/other-window")["cloudtaser-key"] != sib["cloudtaser-key"]
    assert "cloudtaser-key-salt" not in env.meta("tm/plain")

    def tamper(name: str, edit) -> None:
        body, meta = env.stored(f"tm/{name}")
        edit(meta)
        env.plant(f"tm/{name}", body, meta)

    body, meta = env.stored("tm/moved-src")
    env.plant("tm/moved-dst", body, meta)
    tamper("salt-swap", lambda m: m.update({"cloudtaser-key-salt": sib["cloudtaser-key-salt"]}))
    tamper("salt-gone", lambda m: m.pop("cloudtaser-key-salt"))
    flipped = lambda s: s[:-1] + ("0" if s[-1] != "0" else "1")  # noqa: E731
    tamper("salt-case", lambda m: m.update({"cloudtaser-key-salt": flipped(m["cloudtaser-key-salt"])}))
    tamper("window-swap", lambda m: m.update({"cloudtaser-key": env.meta("tm/other-window")["cloudtaser-key"]}))
    okx = env.meta("ok/x")
    tamper("key-swap", lambda m: m.update({"cloudtaser-key": okx["cloudtaser-key"],
                                           "cloudtaser-transit-key": okx["cloudtaser-transit-key"]}))

    def fmt1(m, keep_salt):
        m["cloudtaser-format"] = "1"
        for f in ("cloudtaser-binding", "cloudtaser-mac") + (() if keep_salt else ("cloudtaser-key-salt",)):
            m.pop(f, None)

    tamper("fmt1-salt", lambda m: fmt1(m, True))
    tamper("fmt2", lambda m: m.update({"cloudtaser-format": "2"}))
    tamper("mac-swap", lambda m: m.update({"cloudtaser-mac": sib["cloudtaser-mac"]}))
    tamper("plain-dek-as-bk", lambda m: m.update({"cloudtaser-key": env.meta("tm/plain")["cloudtaser-key"]}))
    tamper("binding-none", lambda m: m.update({"cloudtaser-binding": "none"}))
    tamper("size", lambda m: m.update({"cloudtaser-size": str(SIZE - 1)}))
    body, meta = env.stored("tm/plain-salt")
    meta["cloudtaser-key-salt"] = sib["cloudtaser-key-salt"]
    env.plant("tm/plain-salt", body, meta)

    reader, _, _ = env.proxy("treader", CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    # Sanity: untampered objects read, so refusals below are the tampering's.
    assert reader.get_object(Bucket=BUCKET, Key="tm/sibling")["Body"].read() == b"sibling"
    assert reader.get_object(Bucket=BUCKET, Key="tm/moved-src")["Body"].read() == objs["moved-src"]
    cases = [("tm/moved-dst", objs["moved-src"])] + [(f"tm/{n}", objs[n]) for n in names[1:]]
    failed = []
    for key, plaintext in cases + [("tm/plain-salt", victim_plain)]:
        try:
            assert_refused(env, reader, key, plaintext)
        except AssertionError as e:
            failed.append(f"{key}: {str(e).splitlines()[0][:160]}")
    assert not failed, "\n".join(failed)


def test_key_salt_planted_on_a_multipart_object_is_refused(env):
    """Held if green: claim 5's reader half."""
    client, _, _ = env.proxy("mpsalt", **BK_ON)
    client.put_object(Bucket=BUCKET, Key="mps/single", Body=b"x")
    parts = [body_of(5 * 1024 * 1024, "mp1"), body_of(1000, "mp2")]
    up = client.create_multipart_upload(Bucket=BUCKET, Key="mps/mp")
    etags = [client.upload_part(Bucket=BUCKET, Key="mps/mp", UploadId=up["UploadId"], PartNumber=i + 1,
                                Body=p)["ETag"] for i, p in enumerate(parts)]
    client.complete_multipart_upload(Bucket=BUCKET, Key="mps/mp", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    whole = b"".join(parts)
    assert client.get_object(Bucket=BUCKET, Key="mps/mp")["Body"].read() == whole
    body, meta = env.stored("mps/mp")
    assert "cloudtaser-key-salt" not in meta
    meta["cloudtaser-key-salt"] = env.meta("mps/single")["cloudtaser-key-salt"]
    env.plant("mps/mp", body, meta)
    reader, _, _ = env.proxy("mpsalt-r", **BK_ON)
    assert_refused(env, reader, "mps/mp", whole)


# --- claim 2: a derived key forges no sibling ------------------------------


def test_one_derived_data_key_does_not_forge_a_sibling_with_its_own_salt(env):
    """Held if green: with object A's derived key an attacker tries to make
    the proxy accept chosen content for sibling B under B's key salt, with
    no key salt, and under A's key used as if it were the bucket key."""
    client, _, _ = env.proxy("forge", **BK_ON)
    client.put_object(Bucket=BUCKET, Key="fg/a", Body=b"object a")
    genuine_b = body_of(SIZE, "fg-b")
    client.put_object(Bucket=BUCKET, Key="fg/b", Body=genuine_b)
    ma, mb = env.meta("fg/a"), env.meta("fg/b")
    assert ma["cloudtaser-key"] == mb["cloudtaser-key"]
    dek_a = envelope.object_key(bucket_key_of(env, ma), bytes.fromhex(ma["cloudtaser-key-salt"]))
    forged = b"forged by someone holding only object a's data key"
    salt = bytes(range(32))
    attempts = {
        # B's own key salt, everything made under A's key (as if it were B's).
        "own-salt": (dek_a, bytes.fromhex(mb["cloudtaser-key-salt"])),
        # A's key treated as the bucket key, B's salt: derive from it.
        "a-as-bk": (envelope.object_key(dek_a, bytes.fromhex(mb["cloudtaser-key-salt"])),
                    bytes.fromhex(mb["cloudtaser-key-salt"])),
        # No key salt: the unwrapped bucket key would be the data key.
        "no-salt": (dek_a, None),
    }
    reader, _, _ = env.proxy("forge-r", **BK_ON)
    for what, (key, key_salt) in attempts.items():
        blob = envelope.encrypt(key, salt, 0, forged, version=3)
        meta = dict(mb)
        meta["cloudtaser-salt"] = salt.hex()
        meta["cloudtaser-size"] = str(len(forged))
        meta.pop("cloudtaser-key-salt", None)
        if key_salt is not None:
            meta["cloudtaser-key-salt"] = key_salt.hex()
        meta["cloudtaser-mac"] = envelope.envelope_mac(
            key, binding=mb["cloudtaser-binding"], bucket=BUCKET, key="fg/b", transit_key=mb["cloudtaser-transit-key"],
            size=len(forged), salt=salt, key_salt=key_salt).hex()
        env.plant("fg/b", blob, meta)
        assert_refused(env, reader, "fg/b", forged)
        try:
            got = reader.get_object(Bucket=BUCKET, Key="fg/b")["Body"].read()
            raise AssertionError(f"{what}: served {got!r}")
        except ClientError:
            pass


# --- claim 3: windows -------------------------------------------------------


def test_windows_end_at_count_time_and_rotation(env):
    """Held if green."""
    k = env.key("win")
    rules = f"{BUCKET}/wn/={k}"
    client, _, _ = env.proxy("wcount", CLOUDTASER_S3PROXY_KEY_RULES=rules,
                             CLOUDTASER_S3PROXY_BUCKET_KEY_MAX_OBJECTS="3", **BK_ON)
    for i in range(7):
        client.put_object(Bucket=BUCKET, Key=f"wn/c{i}", Body=b"c%d" % i)
    wrapped = [env.meta(f"wn/c{i}")["cloudtaser-key"] for i in range(7)]
    assert wrapped[0] == wrapped[1] == wrapped[2] != wrapped[3]
    assert wrapped[3] == wrapped[4] == wrapped[5] != wrapped[6]
    assert len(set(wrapped)) == 3
    salts = {env.meta(f"wn/c{i}")["cloudtaser-key-salt"] for i in range(7)}
    assert len(salts) == 7, "key salts repeat"
    # Concurrent writers never push a window past its count.
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=f"wn/p{i}", Body=b"p"), range(48)))
    per_window: dict[str, int] = {}
    for i in range(48):
        w = env.meta(f"wn/p{i}")["cloudtaser-key"]
        per_window[w] = per_window.get(w, 0) + 1
    assert max(per_window.values()) <= 3, per_window

    timed, _, _ = env.proxy("wtime", CLOUDTASER_S3PROXY_KEY_RULES=rules,
                            CLOUDTASER_S3PROXY_BUCKET_KEY_WINDOW_SECS="2",
                            CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS="1", **BK_ON)
    timed.put_object(Bucket=BUCKET, Key="wn/t0", Body=b"t0")
    timed.put_object(Bucket=BUCKET, Key="wn/t1", Body=b"t1")
    time.sleep(2.5)
    timed.put_object(Bucket=BUCKET, Key="wn/t2", Body=b"t2")
    t = [env.meta(f"wn/t{i}")["cloudtaser-key"] for i in range(3)]
    assert t[0] == t[1] != t[2]

    rot, _, _ = env.proxy("wrot", CLOUDTASER_S3PROXY_KEY_RULES=rules, CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS="1",
                          **BK_ON)
    rot.put_object(Bucket=BUCKET, Key="wn/r0", Body=b"r0")
    v_before = env.meta("wn/r0")["cloudtaser-key"].split(":")[1]
    env.rotate(k)
    time.sleep(3.5)
    rot.put_object(Bucket=BUCKET, Key="wn/r1", Body=b"r1")
    r1 = env.meta("wn/r1")["cloudtaser-key"]
    assert r1.split(":")[1] != v_before, "a window outlived the rotation by more than the version check"
    for key, want in (("wn/r0", b"r0"), ("wn/r1", b"r1"), ("wn/t2", b"t2"), ("wn/c6", b"c6")):
        assert rot.get_object(Bucket=BUCKET, Key=key)["Body"].read() == want


def late_acks_after_erasure(env: Env, prefix: str, **settings: str) -> list[str]:
    """Erases a fresh key while a proxy (policy token, 1 s version check)
    writes to it every 0.2 s; returns the writes acknowledged more than 3 s
    after the erasure (docs/OPERATIONS.md's bound: the check plus two round
    trips; the tenant-keys tests allow 3 s)."""
    k = env.key("erase")
    client, _, _ = env.proxy("erase", CLOUDTASER_S3PROXY_KEY_RULES=f"{BUCKET}/{prefix}={k}",
                             CLOUDTASER_S3PROXY_KEY_VERSION_CHECK_SECS="1", VAULT_TOKEN=env.token, **settings)
    client.put_object(Bucket=BUCKET, Key=f"{prefix}before", Body=b"before")
    env.erase(k)
    erased_at = time.monotonic()
    late = []
    i = 0
    while time.monotonic() - erased_at < 6.0:
        key = f"{prefix}after{i}"
        try:
            client.put_object(Bucket=BUCKET, Key=key, Body=b"after")
            if time.monotonic() - erased_at > 3.0:
                late.append(key)
        except ClientError as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 403
            assert not env.exists(key), f"{key} stored though refused"
        i += 1
        time.sleep(0.2)
    return late


def test_no_write_is_acknowledged_under_an_erased_keys_bucket_key_past_the_bound(env):
    """Held if green: erasure ends the window within the documented bound,
    as it ends the pool's keys without bucket keys (the control)."""
    assert late_acks_after_erasure(env, "er0/") == [], "control (bucket keys off)"
    late = late_acks_after_erasure(env, "er1/", **BK_ON)
    assert not late, f"acknowledged under an erased key's bucket key past the bound: {late[:3]}... ({len(late)})"


def test_downgraded_bucket_key_object_copies_nothing_readable(env):
    """A format-3 bucket-key object relabelled as format 1 (MAC, binding and
    key salt removed). Held if green: no read path serves it, and even where
    CopyObject accepts it as a legacy source the copy reads as nothing.
    With CLOUDTASER_S3PROXY_LEGACY_FORMATS=refuse the copy itself must fail."""
    client, _, _ = env.proxy("down", **BK_ON)
    plaintext = body_of(SIZE, "down")
    client.put_object(Bucket=BUCKET, Key="dn/v", Body=plaintext)
    body, meta = env.stored("dn/v")
    meta["cloudtaser-format"] = "1"
    for f in ("cloudtaser-binding", "cloudtaser-mac", "cloudtaser-key-salt"):
        meta.pop(f)
    env.plant("dn/v", body, meta)
    strict, _, _ = env.proxy("down-strict", CLOUDTASER_S3PROXY_LEGACY_FORMATS="refuse", **BK_ON)
    assert_refused(env, strict, "dn/v", plaintext)
    reader, _, _ = env.proxy("down-r", **BK_ON)
    for what, read in (("GET", lambda: reader.get_object(Bucket=BUCKET, Key="dn/v")),
                       ("HEAD", lambda: reader.head_object(Bucket=BUCKET, Key="dn/v"))):
        with pytest.raises(ClientError):
            read()
    try:
        reader.copy_object(Bucket=BUCKET, Key="dn/copy", CopySource={"Bucket": BUCKET, "Key": "dn/v"})
    except ClientError:
        return
    for read in (lambda: reader.get_object(Bucket=BUCKET, Key="dn/copy")["Body"].read(),
                 lambda: reader.get_object(Bucket=BUCKET, Key="dn/copy", Range="bytes=0-9")["Body"].read(),
                 lambda: reader.head_object(Bucket=BUCKET, Key="dn/copy")):
        with pytest.raises(ClientError):
            read()


# --- claim 5: multipart never derives ----------------------------------------


def test_multipart_and_part_copies_never_carry_a_key_salt(env):
    """Held if green."""
    client, _, _ = env.proxy("mp", **BK_ON)
    src = body_of(SIZE, "mp-src")
    client.put_object(Bucket=BUCKET, Key="mp/src", Body=src)
    window = env.meta("mp/src")["cloudtaser-key"]
    up = client.create_multipart_upload(Bucket=BUCKET, Key="mp/dst")
    fields = up["UploadId"].split(".")
    assert fields[0] == "ctu3"
    wrapped_in_id = base64.urlsafe_b64decode(fields[2] + "=" * (-len(fields[2]) % 4)).decode()
    assert wrapped_in_id != window, "the upload was handed the window's bucket key"
    p1 = body_of(5 * 1024 * 1024, "mp-p1")
    e1 = client.upload_part(Bucket=BUCKET, Key="mp/dst", UploadId=up["UploadId"], PartNumber=1, Body=p1)["ETag"]
    e2 = client.upload_part_copy(Bucket=BUCKET, Key="mp/dst", UploadId=up["UploadId"], PartNumber=2,
                                 CopySource={"Bucket": BUCKET, "Key": "mp/src"})["CopyPartResult"]["ETag"]
    client.complete_multipart_upload(Bucket=BUCKET, Key="mp/dst", UploadId=up["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    meta = env.meta("mp/dst")
    assert "cloudtaser-key-salt" not in meta
    assert meta["cloudtaser-key"] != window
    assert client.get_object(Bucket=BUCKET, Key="mp/dst")["Body"].read() == p1 + src
    # The window goes on after the upload; the upload's key is its own.
    client.put_object(Bucket=BUCKET, Key="mp/after", Body=b"after")
    assert env.meta("mp/after")["cloudtaser-key"] == window
    body, stored = env.stored("mp/dst")
    dek = envelope.unwrap(env.vault, stored["cloudtaser-transit-key"], stored["cloudtaser-key"])
    assert envelope.verify_v3(dek, stored, BUCKET, "mp/dst", body) == p1 + src


# --- claim 4: copies and tools ----------------------------------------------


def test_copies_and_tools_keep_bucket_key_objects_verified_and_launder_nothing(env):
    """Held if green: same-key and cross-key CopyObject, version rewrap and
    the decrypt tool keep objects readable and verifiable by the independent
    reader; a tampered one is neither copied nor rewrapped into validity."""
    ka, kb = env.key("ta"), env.key("tb")
    rules = f"{BUCKET}/ta/={ka},{BUCKET}/tb/={kb}"
    client, _, _ = env.proxy("tools", CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    objs = put_window(client, "ta/o", 3)
    client.copy_object(Bucket=BUCKET, Key="ta/same", CopySource={"Bucket": BUCKET, "Key": "ta/o0"})
    client.copy_object(Bucket=BUCKET, Key="tb/cross", CopySource={"Bucket": BUCKET, "Key": "ta/o0"})
    for key in ("ta/same", "tb/cross"):
        body, meta = env.stored(key)
        # A same-key copy keeps the window's key; a copy to another Transit
        # key carries its own data key, never the source window's.
        assert ("cloudtaser-key-salt" in meta) == (key == "ta/same")
        assert envelope.verify_v3(bucket_key_of(env, meta), meta, BUCKET, key, body) == objs["ta/o0"]
        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == objs["ta/o0"]
    # Tamper ta/o1 (another object's key salt) then try to launder it.
    sib = env.meta("ta/o2")
    body, meta = env.stored("ta/o1")
    meta["cloudtaser-key-salt"] = sib["cloudtaser-key-salt"]
    env.plant("ta/o1", body, meta)
    with pytest.raises(ClientError):
        client.copy_object(Bucket=BUCKET, Key="ta/laundered", CopySource={"Bucket": BUCKET, "Key": "ta/o1"})
    env.rotate(ka)
    out = env.tool(["rewrap", "--bucket", BUCKET, "--prefix", "ta/", "--quiet", "--assume-quiesced"],
                   CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    moved = env.tool(["rewrap", "--bucket", BUCKET, "--prefix", "ta/o1", "--to-key", kb, "--quiet",
                      "--assume-quiesced"], CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    assert moved.returncode != 0 or env.meta("ta/o1")["cloudtaser-transit-key"] == ka, moved.stdout
    reader, _, _ = env.proxy("tools-r", CLOUDTASER_S3PROXY_KEY_RULES=rules, **BK_ON)
    assert_refused(env, reader, "ta/o1", objs["ta/o1"])
    for key in ("ta/o0", "ta/o2", "ta/same"):
        body, meta = env.stored(key)
        assert meta["cloudtaser-key"].startswith("vault:v2:"), (key, out.stdout, out.stderr)
        assert envelope.verify_v3(bucket_key_of(env, meta), meta, BUCKET, key, body) == objs[
            "ta/o0" if key == "ta/same" else key]
        assert reader.get_object(Bucket=BUCKET, Key=key)["Body"].read() == objs["ta/o0" if key == "ta/same" else key]
    # decrypt --key-salt: the right salt recovers, a sibling's salt does not.
    body, meta = env.stored("ta/o2")
    src = env.stack.workdir / "t29i-o2.bin"
    src.write_bytes(body)
    for salt, good in ((meta["cloudtaser-key-salt"], True), (env.meta("ta/o0")["cloudtaser-key-salt"], False)):
        dst = env.stack.workdir / f"t29i-o2-{good}.out"
        args = ["decrypt", "--in", str(src), "--out", str(dst), "--wrapped-key", meta["cloudtaser-key"],
                "--key-name", ka, "--salt", meta["cloudtaser-salt"], "--size", meta["cloudtaser-size"],
                "--mac", meta["cloudtaser-mac"], "--binding", meta["cloudtaser-binding"], "--bucket", BUCKET,
                "--object-key", "ta/o2", "--key-salt", salt]
        res = env.tool(args, CLOUDTASER_S3PROXY_KEY_RULES=rules)
        if good:
            assert res.returncode == 0, res.stderr
            assert dst.read_bytes() == objs["ta/o2"]
        else:
            assert res.returncode != 0
            assert not dst.exists() or dst.read_bytes() != objs["ta/o2"]


def test_the_workload_cannot_choose_a_key_salt_and_replace_copies_keep_it(env):
    """Held if green: a hostile process in the pod sends cloudtaser-key-salt
    on PutObject, CreateMultipartUpload and CopyObject REPLACE (refused,
    nothing stored); a REPLACE copy of a bucket-key object keeps its salt."""
    client, _, _ = env.proxy("hostile", **BK_ON)
    client.put_object(Bucket=BUCKET, Key="hs/src", Body=b"source")
    salt = env.meta("hs/src")["cloudtaser-key-salt"]
    for spelling in ("cloudtaser-key-salt", "Cloudtaser-Key-Salt"):
        with pytest.raises(ClientError):
            client.put_object(Bucket=BUCKET, Key="hs/put", Body=b"x", Metadata={spelling: salt})
        with pytest.raises(ClientError):
            client.create_multipart_upload(Bucket=BUCKET, Key="hs/mp", Metadata={spelling: salt})
        with pytest.raises(ClientError):
            client.copy_object(Bucket=BUCKET, Key="hs/cp", CopySource={"Bucket": BUCKET, "Key": "hs/src"},
                               MetadataDirective="REPLACE", Metadata={spelling: "0" * 64})
    assert not env.exists("hs/put") and not env.exists("hs/cp")
    client.copy_object(Bucket=BUCKET, Key="hs/replaced", CopySource={"Bucket": BUCKET, "Key": "hs/src"},
                       MetadataDirective="REPLACE", Metadata={"user": "value"})
    got = client.get_object(Bucket=BUCKET, Key="hs/replaced")
    assert got["Body"].read() == b"source" and got["Metadata"] == {"user": "value"}
    body, meta = env.stored("hs/replaced")
    assert meta["cloudtaser-key-salt"] == salt
    assert envelope.verify_v3(bucket_key_of(env, meta), meta, BUCKET, "hs/replaced", body) == b"source"


def test_migrate_upgrade_derives_new_objects_and_launders_no_tampered_one(env):
    """Held if green: `migrate --upgrade` (bucket keys on) brings a plaintext
    and a genuine format-1 object to verified format 3, leaves a
    bucket-key object readable, and leaves a tampered one refused."""
    k = stack_mod.TRANSIT_KEY
    client, _, _ = env.proxy("mig", **BK_ON)
    env.upstream.put_object(Bucket=BUCKET, Key="mg/plain", Body=b"plain before the proxy")
    made = env.vault.ok("POST", f"transit/datakey/plaintext/{k}")["data"]
    dek = base64.b64decode(made["plaintext"])
    salt = bytes(range(100, 132))
    old = b"a genuine format-1 object"
    env.plant("mg/old", envelope.encrypt(dek, salt, 0, old, version=1), {
        "cloudtaser-format": "1", "cloudtaser-key": made["ciphertext"], "cloudtaser-transit-key": k,
        "cloudtaser-size": str(len(old)), "cloudtaser-salt": salt.hex()})
    assert client.get_object(Bucket=BUCKET, Key="mg/old")["Body"].read() == old, "setup: format 1 reads"
    client.put_object(Bucket=BUCKET, Key="mg/bk", Body=b"bucket key object")
    client.put_object(Bucket=BUCKET, Key="mg/bad", Body=b"tampered object")
    body, meta = env.stored("mg/bad")
    meta["cloudtaser-key-salt"] = env.meta("mg/bk")["cloudtaser-key-salt"]
    env.plant("mg/bad", body, meta)
    res = env.tool(["migrate", "--bucket", BUCKET, "--prefix", "mg/", "--upgrade", "--quiet", "--assume-quiesced"],
                   **BK_ON)
    for key, want in (("mg/plain", b"plain before the proxy"), ("mg/old", old), ("mg/bk", b"bucket key object")):
        body, meta = env.stored(key)
        assert meta.get("cloudtaser-format") == "3", (key, meta, res.stdout, res.stderr)
        # (The tools' own writes do not derive from bucket keys: not required.)
        assert envelope.verify_v3(bucket_key_of(env, meta), meta, BUCKET, key, body) == want
        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == want
    assert "cloudtaser-key-salt" in env.meta("mg/bk")
    reader, _, _ = env.proxy("mig-r", **BK_ON)
    assert_refused(env, reader, "mg/bad", b"tampered object")


# --- claim 6: one decrypt per window, no key in the logs ---------------------


def test_one_decrypt_per_window_per_cold_reader_and_no_key_in_logs(env):
    """Held if green."""
    k = env.key("cnt")
    rules = f"{BUCKET}/cn/={k}"
    debug = {"CLOUDTASER_S3PROXY_LOG": "debug", "CLOUDTASER_S3PROXY_KEY_RULES": rules, **BK_ON}
    writer, wproc, _ = env.proxy("cnt-w", **debug)
    objs = put_window(writer, "cn/o", 40, size=2000)
    metas = {key: env.meta(key) for key in objs}
    assert len({m["cloudtaser-key"] for m in metas.values()}) == 1
    reader, rproc, health = env.proxy("cnt-r", **debug)
    before = decrypt_calls(health)
    for key, want in objs.items():
        assert reader.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(want)
        assert reader.get_object(Bucket=BUCKET, Key=key)["Body"].read() == want
        assert reader.get_object(Bucket=BUCKET, Key=key, Range="bytes=5-9")["Body"].read() == want[5:10]
    assert decrypt_calls(health) - before == 1
    bk = bucket_key_of(env, next(iter(metas.values())))
    secrets = [bk] + [envelope.object_key(bk, bytes.fromhex(m["cloudtaser-key-salt"])) for m in metas.values()]
    logs = wproc.log_text() + rproc.log_text()
    assert "DEBUG" in logs or "debug" in logs.lower()
    for s in secrets:
        for spelling in (s.hex(), s.hex().upper(), base64.b64encode(s).decode(), base64.urlsafe_b64encode(s).decode()
                         .rstrip("="), base64.b64encode(s).decode().rstrip("=")):
            assert spelling not in logs, "a bucket key or derived data key is in a log line"
        assert not re.search(r"\[(\d{1,3}, ){31}\d{1,3}\]", logs), "a 32-byte array is in a log line"

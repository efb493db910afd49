"""Recipe: the AWS CLI's `s3 sync` both ways and `s3 cp --recursive` with
many small files (and one multipart file), through the proxy, against
Garage. sync decides what to transfer from the sizes and times a listing
shows, so the listing must report plaintext sizes: a ciphertext size would
make every sync upload everything again. A multi-GB `cp` up and down runs
with the proxy's resident memory sampled throughout: it must stay bounded
and not grow with the file's size. docs/recipes/aws-cli.md is the
recipe."""

from __future__ import annotations

import filecmp
import hashlib
import secrets
import shutil
import threading
import time
from pathlib import Path

from attack_helpers import MiB, body_of
from recipes import assert_all_ciphertext, run, start_garage_proxy, workload_env

SMALL_FILES = 300


def aws(endpoint: str, work: Path, *args: str, timeout: float = 600) -> str:
    # Run in the directory holding the local trees, named relatively ("src"):
    # the CLI prints local paths relative to its working directory.
    return run([shutil.which("aws") or "aws", "--endpoint-url", endpoint, "s3", *args, "--no-progress"],
               env=workload_env(), cwd=work, timeout=timeout)


def transferred(out: str, verb: str) -> set[str]:
    return {line.split(" to ", 1)[0].split(" ", 1)[1] for line in out.splitlines() if line.startswith(f"{verb}: ")}


def same_tree(a: Path, b: Path) -> None:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def test_aws_cli_sync_both_ways_and_recursive_copy_of_many_files(garage_stack, tmp_path):
    bucket = f"recipe-awscli-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    endpoint = garage_stack.proxy_endpoint
    marker = f"CLOUDTASER-PLAINTEXT-{secrets.token_hex(8)}".encode()
    src = tmp_path / "src"
    for i in range(SMALL_FILES):
        d = src / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(marker + b" small file %d " % i + body_of(i * 37, f"cli-{i}"))
    (src / "empty").write_bytes(b"")
    # Above the CLI's 8 MiB multipart threshold.
    (src / "big.bin").write_bytes(marker + body_of(17 * MiB + 3, "cli-big"))

    out = aws(endpoint, tmp_path, "sync", "src", f"s3://{bucket}/sync")
    assert len(transferred(out, "upload")) == SMALL_FILES + 2, out[-2000:]
    # A second sync finds nothing to do: the listing's sizes are the plaintext ones.
    assert transferred(aws(endpoint, tmp_path, "sync", "src", f"s3://{bucket}/sync"), "upload") == set()

    # Change one file (new size), add one, delete one: exactly those move.
    changed, added, removed = src / "d1" / "f1.txt", src / "d2" / "new.txt", src / "d3" / "f3.txt"
    time.sleep(1.1)
    changed.write_bytes(marker + b" changed")
    added.write_bytes(marker + b" added")
    removed.unlink()
    out = aws(endpoint, tmp_path, "sync", "--delete", "src", f"s3://{bucket}/sync")
    assert transferred(out, "upload") == {"src/d1/f1.txt", "src/d2/new.txt"}, out
    assert transferred(out, "delete") == {f"s3://{bucket}/sync/d3/f3.txt"}, out

    # Down: the bucket into an empty directory, then nothing more to fetch.
    back = tmp_path / "back"
    aws(endpoint, tmp_path, "sync", f"s3://{bucket}/sync", "back")
    same_tree(src, back)
    assert transferred(aws(endpoint, tmp_path, "sync", f"s3://{bucket}/sync", "back"), "download") == set()

    # cp --recursive up to another prefix and down again.
    aws(endpoint, tmp_path, "cp", "--recursive", "src", f"s3://{bucket}/cp")
    copied = tmp_path / "copied"
    aws(endpoint, tmp_path, "cp", "--recursive", f"s3://{bucket}/cp", "copied")
    same_tree(src, copied)

    keys = assert_all_ciphertext(garage_stack.direct, bucket, marker)
    assert len(keys) == 2 * (SMALL_FILES + 2), len(keys)


GiB = 1 << 30
# The bound the recipe states for the proxy's resident memory while the CLI
# moves a file of any size (10 parts of 8 MiB in flight each way).
RSS_BOUND_MIB = 200
# How much more the 2 GiB copy may peak than the 256 MiB one: allocator
# noise, never a buffer that scales with the object.
GROWTH_SLACK_MIB = 32


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class RssSampler:
    """Samples a process's VmRSS every 20 ms while a transfer runs; the
    peak of the samples is the transfer's (VmHWM would carry an earlier
    transfer's peak over)."""

    def __init__(self, pid: int):
        self.pid, self.samples, self.stop = pid, [rss_mib(pid)], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.samples.append(rss_mib(self.pid))

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def peak(self) -> float:
        return max(self.samples)


def sparse_file(path: Path, size: int, marker: bytes) -> None:
    """A sparse file of `size` bytes with a marker and 1 MiB of
    non-repeating bytes every 256 MiB: cheap to create and to read, and
    still a body whose every region the check can tell apart."""
    with open(path, "wb") as f:
        f.truncate(size)
        for i, offset in enumerate(range(0, size, 256 * MiB)):
            f.seek(offset + 4096 * i)
            f.write(marker + body_of(MiB, f"sparse-{i}"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def assert_streamed_ciphertext(direct, bucket: str, key: str, marker: bytes, plaintext_size: int) -> None:
    """The stored object, read in chunks (it is too large to hold): an
    envelope with a wrapped key in the multipart format, larger than the
    plaintext by the stream overhead, and no marker, even across chunks."""
    got = direct.get_object(Bucket=bucket, Key=key)
    meta = got["Metadata"]
    assert meta.get("cloudtaser-key", "").startswith("vault:v") and meta.get("cloudtaser-format") == "3", meta
    assert meta.get("cloudtaser-layout") == "multipart", meta
    assert got["ContentLength"] > plaintext_size
    body, carry, first = got["Body"], b"", True
    while chunk := body.read(8 * MiB):
        if first:
            assert chunk[:4] == b"CTS3", chunk[:16]
            first = False
        window = carry + chunk
        assert marker not in window, f"{key!r} holds the plaintext marker"
        carry = window[-len(marker):]


SIZES = (256 * MiB, 2 * GiB)


def test_aws_cli_multi_gb_copy_keeps_the_proxy_memory_bounded(stack, garage_stack, tmp_path):
    """`aws s3 cp` of a 256 MiB and a 2 GiB file up and down through a
    proxy of its own (so its memory is this test's alone), the proxy's
    VmRSS sampled during each copy: every peak stays under RSS_BOUND_MIB and
    the 2 GiB copies peak no higher than the 256 MiB ones plus
    GROWTH_SLACK_MIB. The bytes come back with the same sha256."""
    bucket = f"recipe-awscli-big-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    proxy, endpoint = start_garage_proxy(stack, garage_stack.endpoint, "proxy-awscli-memory")
    marker = f"CLOUDTASER-PLAINTEXT-{secrets.token_hex(8)}".encode()
    peaks: dict[str, float] = {}
    try:
        for size in SIZES:
            name = f"{size // MiB}MiB"
            src, back = tmp_path / f"{name}.bin", tmp_path / f"{name}.back"
            sparse_file(src, size, marker)
            with RssSampler(proxy.popen.pid) as up:
                aws(endpoint, tmp_path, "cp", src.name, f"s3://{bucket}/{name}.bin", timeout=1800)
            with RssSampler(proxy.popen.pid) as down:
                aws(endpoint, tmp_path, "cp", f"s3://{bucket}/{name}.bin", back.name, timeout=1800)
            assert back.stat().st_size == size
            assert sha256_of(back) == sha256_of(src), name
            assert_streamed_ciphertext(garage_stack.direct, bucket, f"{name}.bin", marker, size)
            peaks[f"{name} up"], peaks[f"{name} down"] = up.peak, down.peak
            src.unlink()
            back.unlink()
        # Printed for docs/recipes/aws-cli.md (pytest -s shows it).
        print(f"proxy peak VmRSS (MiB): {peaks}")
        assert all(p < RSS_BOUND_MIB for p in peaks.values()), peaks
        small, large = (f"{s // MiB}MiB" for s in SIZES)
        for way in ("up", "down"):
            assert peaks[f"{large} {way}"] <= peaks[f"{small} {way}"] + GROWTH_SLACK_MIB, peaks
    finally:
        proxy.stop()

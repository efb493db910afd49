"""Recipe: the AWS CLI's `s3 sync` both ways and `s3 cp --recursive` with
many small files (and one multipart file), through the proxy, against
Garage. sync decides what to transfer from the sizes and times a listing
shows, so the listing must report plaintext sizes: a ciphertext size would
make every sync upload everything again. docs/recipes/aws-cli.md is the
recipe."""

from __future__ import annotations

import filecmp
import secrets
import shutil
import time
from pathlib import Path

from attack_helpers import MiB, body_of
from recipes import assert_all_ciphertext, run, workload_env

SMALL_FILES = 300


def aws(endpoint: str, work: Path, *args: str) -> str:
    # Run in the directory holding the local trees, named relatively ("src"):
    # the CLI prints local paths relative to its working directory.
    return run([shutil.which("aws") or "aws", "--endpoint-url", endpoint, "s3", *args, "--no-progress"],
               env=workload_env(), cwd=work, timeout=600)


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

"""Recipe: duplicity (Debian) with its boto3 backend and --no-encryption
(the proxy encrypts), through the proxy, against Garage: a full backup in
several volumes (each a multipart upload), an incremental one, verify with
--compare-data, and a restore compared byte for byte. docs/recipes/duplicity.md
is the recipe."""

from __future__ import annotations

import filecmp
import secrets
import shutil

import pytest

from attack_helpers import MiB, body_of, stored
from recipes import assert_all_ciphertext, run, workload_env


def test_duplicity_full_incremental_verify_and_restore(garage_stack, tmp_path):
    binary = shutil.which("duplicity")
    if not binary:
        pytest.fail("duplicity is not installed: run scripts/install-deps.sh")
    bucket = f"recipe-duplicity-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    marker = f"CLOUDTASER-PLAINTEXT-{secrets.token_hex(8)}".encode()
    url = f"boto3+s3://{bucket}/dup"
    # --no-compression so a marker in a volume would show at rest; volumes
    # of 8 MB uploaded in 5 MiB parts (boto3 upload_file, threshold = part size).
    common = ["--no-encryption", "--no-compression", "--s3-endpoint-url", garage_stack.proxy_endpoint,
              "--s3-region-name", "us-east-1", "--volsize", "8", "--s3-multipart-chunk-size", "5",
              "--archive-dir", str(tmp_path / "cache"), "--name", "recipe", "--num-retries", "1"]
    env = workload_env()

    def duplicity(*args: str) -> str:
        return run([binary, *args, *common], env=env, timeout=600)

    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    for i in range(40):
        (src / "etc" / f"conf{i}").write_bytes(marker + b" setting %d\n" % i)
    (src / "db.bin").write_bytes(marker + body_of(20 * MiB + 5, "dup-db"))
    duplicity("full", str(src), url)

    (src / "etc" / "conf3").write_bytes(marker + b" changed setting\n")
    (src / "etc" / "conf7").unlink()
    (src / "new.bin").write_bytes(marker + body_of(300_000, "dup-new"))
    duplicity("incremental", str(src), url)
    status = duplicity("collection-status", url)
    assert "Full" in status and "Incremental" in status, status

    # verify reads every volume back through the proxy and compares it with the source.
    out = duplicity("verify", "--compare-data", url, str(src))
    assert "0 differences found" in out, out

    dst = tmp_path / "restored"
    duplicity("restore", url, str(dst))
    cmp = filecmp.dircmp(src, dst)
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files), (cmp.left_only, cmp.right_only, cmp.diff_files)
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
    for rel in files:
        assert filecmp.cmp(src / rel, dst / rel, shallow=False), rel

    keys = assert_all_ciphertext(garage_stack.direct, bucket, marker, b"conf3")
    assert sum(".vol" in k for k in keys) >= 3, keys
    layouts = [stored(garage_stack.direct, bucket, k)[1].get("cloudtaser-layout") for k in keys]
    assert "multipart" in layouts, layouts

"""Recipe: DVC with its S3 remote (dvc-s3, which drives s3fs/aiobotocore),
through the proxy, against Garage (real multipart rules: s3fs uploads files
above its 50 MiB block size in parts).

A repository tracks a small file and a large one, pushes them, a fresh git
clone pulls them back byte for byte, and `dvc gc -c` removes from the
remote what the workspace no longer uses. What is stored is read back with
the proxy's upstream credentials: every object is an envelope and no
marker appears at rest. docs/recipes/dvc.md is the recipe."""

from __future__ import annotations

import filecmp
import secrets

from attack_helpers import MiB, body_of, stored
from recipes import assert_all_ciphertext, run, tool, workload_env


def git(*args: str, cwd) -> str:
    return run(["git", "-c", "user.name=recipe", "-c", "user.email=recipe@example.invalid",
                "-c", "init.defaultBranch=main", *args], cwd=cwd)


def test_dvc_push_pull_into_a_fresh_clone_and_gc(garage_stack, tmp_path):
    bucket = f"recipe-dvc-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    env = workload_env(DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(tmp_path / "site-cache"))
    dvc = tool("dvc")
    marker = f"CLOUDTASER-PLAINTEXT-{secrets.token_hex(8)}".encode()

    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    run([dvc, "init", "-q"], env=env, cwd=repo)
    # The remote as a user sets it: the endpoint is the proxy's; the keys are
    # the workload's (the proxy signs with its own).
    run([dvc, "remote", "add", "-d", "ct", f"s3://{bucket}/dvc"], env=env, cwd=repo)
    run([dvc, "remote", "modify", "ct", "endpointurl", garage_stack.proxy_endpoint], env=env, cwd=repo)
    run([dvc, "remote", "modify", "ct", "region", "us-east-1"], env=env, cwd=repo)

    data = repo / "data"
    data.mkdir()
    (data / "labels.csv").write_bytes(b"id,label\n" + b"".join(b"%d,%s\n" % (i, marker) for i in range(200)))
    # s3fs uploads a file in one PUT below twice its 50 MiB part size
    # (s3fs/core.py, _put_file): this one goes in three parts.
    (data / "model.bin").write_bytes(marker + body_of(100 * MiB + 4099, "dvc-model"))
    (repo / "old.bin").write_bytes(marker + b" a version gc will remove " + body_of(70_000, "dvc-old"))
    run([dvc, "add", "-q", "data", "old.bin"], env=env, cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "data", cwd=repo)
    out = run([dvc, "push"], env=env, cwd=repo, timeout=600)
    assert "4 files pushed" in out, out
    # dvc status -c compares the cache with the remote's listing.
    assert "Cache and remote 'ct' are in sync" in run([dvc, "status", "-c"], env=env, cwd=repo)

    # A fresh clone (no cache) pulls everything back byte for byte.
    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    out = run([dvc, "pull"], env=env, cwd=clone, timeout=600)
    assert "4 files added" in out or "files fetched" in out, out
    for rel in ("data/labels.csv", "data/model.bin", "old.bin"):
        assert filecmp.cmp(repo / rel, clone / rel, shallow=False), rel

    keys_before = set(assert_all_ciphertext(garage_stack.direct, bucket, marker))
    layouts = [stored(garage_stack.direct, bucket, k)[1].get("cloudtaser-layout") for k in keys_before]
    assert layouts.count("multipart") == 1, layouts

    # Stop tracking old.bin; gc -c removes its object from the remote and
    # keeps everything the workspace still uses.
    run([dvc, "remove", "-q", "old.bin.dvc"], env=env, cwd=repo)
    (repo / "old.bin").unlink()
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "drop old.bin", cwd=repo)
    run([dvc, "gc", "-w", "-c", "-f"], env=env, cwd=repo)
    keys_after = set(assert_all_ciphertext(garage_stack.direct, bucket, marker))
    assert len(keys_before - keys_after) == 1 and keys_after < keys_before, (keys_before, keys_after)
    assert "Cache and remote 'ct' are in sync" in run([dvc, "status", "-c"], env=env, cwd=repo)
    fresh = tmp_path / "fresh"
    git("clone", "-q", str(repo), str(fresh), cwd=tmp_path)
    run([dvc, "pull"], env=env, cwd=fresh, timeout=600)
    assert filecmp.cmp(repo / "data" / "model.bin", fresh / "data" / "model.bin", shallow=False)
    assert not (fresh / "old.bin").exists()

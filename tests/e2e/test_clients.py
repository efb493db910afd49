"""The client matrix: every major S3 client, driven through the proxy with
its own integrity checks on, checked byte for byte. boto3 and the AWS CLI
are covered in test_core.py and test_multipart.py."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import urllib.parse
from pathlib import Path

import pytest

import stack as stack_mod
from test_core import MiB, body_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clients_bucket(upstream):
    upstream.create_bucket(Bucket="e2e-clients")
    return "e2e-clients"


def run(args, env=None, cwd=None, timeout=300) -> str:
    r = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def make_tree(root: Path) -> Path:
    (root / "nested").mkdir(parents=True)
    (root / "small.txt").write_bytes(b"hello from a client\n")
    (root / "empty.bin").write_bytes(b"")
    (root / "nested" / "multi.bin").write_bytes(body_of(12 * MiB + 5, 50))
    return root


def rclone_env(stack) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({
        "RCLONE_CONFIG_CT_TYPE": "s3",
        "RCLONE_CONFIG_CT_PROVIDER": "Other",
        "RCLONE_CONFIG_CT_ENDPOINT": stack.proxy_endpoint,
        "RCLONE_CONFIG_CT_ACCESS_KEY_ID": "rclone-workload",
        "RCLONE_CONFIG_CT_SECRET_ACCESS_KEY": "rclone-dummy",
        "RCLONE_CONFIG_CT_REGION": "us-east-1",
        "RCLONE_CONFIG_CT_FORCE_PATH_STYLE": "true",
        "RCLONE_CONFIG": "/dev/null",
    })
    return env


def test_rclone_copy_check_lsf(stack, clients_bucket, tmp_path):
    src = make_tree(tmp_path / "src")
    env = rclone_env(stack)
    flags = ["--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--retries", "1"]
    run(["rclone", "copy", str(src), f"ct:{clients_bucket}/rclone", *flags], env)
    # Not -R: s3s-fs treats the empty delimiter rclone sends for recursion as a real one.
    listing = run(["rclone", "lsf", "--format", "ps", f"ct:{clients_bucket}/rclone"], env)
    sizes = dict(line.rsplit(";", 1) for line in listing.splitlines() if line)
    assert sizes["small.txt"] == "20" and sizes["empty.bin"] == "0"
    # check compares sizes (and hashes where both sides have one): a
    # ciphertext size or a ciphertext MD5 would show as a difference.
    run(["rclone", "check", str(src), f"ct:{clients_bucket}/rclone", "--one-way", "--exclude", "nested/**"], env)
    run(["rclone", "copy", f"ct:{clients_bucket}/rclone", str(tmp_path / "back"), "--retries", "1"], env)
    assert not filecmp.dircmp(src, tmp_path / "back").diff_files
    assert filecmp.cmp(src / "nested" / "multi.bin", tmp_path / "back" / "nested" / "multi.bin", shallow=False)


def test_s3cmd_put_get_ls_del(stack, clients_bucket, tmp_path):
    host = urllib.parse.urlparse(stack.proxy_endpoint).netloc
    cfg = tmp_path / "s3cfg"
    cfg.write_text(
        "[default]\n"
        f"access_key = s3cmd-workload\nsecret_key = s3cmd-dummy\nhost_base = {host}\nhost_bucket = {host}\n"
        "use_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n"
    )
    s3cmd = ["s3cmd", "-c", str(cfg), "--no-progress"]
    big = tmp_path / "big.bin"
    big.write_bytes(body_of(11 * MiB + 3, 51))
    small = tmp_path / "small.txt"
    small.write_bytes(b"s3cmd says hi")
    run([*s3cmd, "put", str(small), f"s3://{clients_bucket}/s3cmd/small.txt"])
    run([*s3cmd, "put", "--multipart-chunk-size-mb=5", str(big), f"s3://{clients_bucket}/s3cmd/big.bin"])
    listing = run([*s3cmd, "ls", f"s3://{clients_bucket}/s3cmd/"])
    assert f" {small.stat().st_size} " in listing
    for name, path in (("small.txt", small), ("big.bin", big)):
        out = tmp_path / f"{name}.out"
        run([*s3cmd, "get", "--force", f"s3://{clients_bucket}/s3cmd/{name}", str(out)])
        assert filecmp.cmp(path, out, shallow=False), name
    run([*s3cmd, "del", f"s3://{clients_bucket}/s3cmd/small.txt"])
    assert "small.txt" not in run([*s3cmd, "ls", f"s3://{clients_bucket}/s3cmd/"])


def test_aws_sdk_js_stream_bodies_and_lib_storage(stack, clients_bucket):
    js = ROOT / "tests" / "clients" / "js"
    out = run(["node", "roundtrip.mjs", stack.proxy_endpoint, clients_bucket, str(12 * MiB + 7)], cwd=js)
    assert json.loads(out.strip().splitlines()[-1]) == {
        "stream_put": True, "multipart": True, "head_size": True, "list_size": True,
    }


def test_aws_sdk_rust(stack, clients_bucket):
    binary = os.environ.get("CLOUDTASER_SDK_ROUNDTRIP_BIN", str(ROOT / "target" / "debug" / "sdk-roundtrip"))
    out = run([binary, stack.proxy_endpoint, clients_bucket])
    assert json.loads(out.strip().splitlines()[-1]) == {"rust_sdk": True}


def test_workload_credentials_never_reach_the_upstream(stack):
    """s3s-fs accepts only the proxy's key; every client above used another."""
    log = (stack.workdir / "s3s-fs.log").read_text(errors="replace")
    for dummy in ("rclone-workload", "s3cmd-workload", "js-workload", "rust-workload", stack_mod.WORKLOAD_ACCESS_KEY):
        assert dummy not in log

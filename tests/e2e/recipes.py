"""Shared by the workload recipes (tests/e2e/test_recipe_*.py): where the
recipe tools are installed, how to run them, and the at-rest check."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import stack as stack_mod
from attack_helpers import all_keys, stored

# The recipe tools live in their own virtualenv, built on Debian's python3 by
# scripts/install-deps.sh: outside /root, so PostgreSQL's own (non-root)
# user can run barman-cloud-wal-archive as its archive_command, and apart
# from the test environment, so the tools' dependency pins (aiobotocore's
# botocore range, mlflow's) never move the test suite's boto3.
RECIPES_VENV = Path(os.environ.get("CLOUDTASER_RECIPES_VENV", "/opt/cloudtaser-recipes"))


def tool(name: str) -> str:
    path = RECIPES_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {RECIPES_VENV}: run scripts/install-deps.sh")
    return str(path)


def workload_env(**extra: str) -> dict:
    """The tools' environment: dummy workload credentials (the proxy strips
    the workload's signature and signs with its own), nothing of the
    machine's AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "DVC_"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": stack_mod.WORKLOAD_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": stack_mod.WORKLOAD_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    env.update(extra)
    return env


def run(args: list[str], env: dict | None = None, cwd: Path | str | None = None, timeout: float = 300,
        user: str | None = None) -> str:
    if user:
        # runuser keeps the environment (no -l) and drops to the user.
        args = ["runuser", "-u", user, "--", *args]
    r = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


def assert_all_ciphertext(direct, bucket: str, *plaintexts: bytes, prefix: str = "") -> list[str]:
    """Lists the bucket with the proxy's upstream credentials and checks
    every object: the CTS3 magic, a wrapped data key, the envelope format,
    and none of `plaintexts` in the stored bytes. Returns the keys."""
    keys = [k for k in all_keys(direct, bucket) if k.startswith(prefix)]
    assert keys, f"nothing stored under {bucket}/{prefix}"
    for key in keys:
        raw, meta = stored(direct, bucket, key)
        assert raw[:4] == b"CTS3", f"{key!r} is stored without the CTS3 magic: {raw[:32]!r}"
        assert meta.get("cloudtaser-key", "").startswith("vault:v"), f"{key!r} has no wrapped data key: {meta}"
        # Everything the proxy writes is format 3: version-3 streams, an
        # envelope MAC under a binding, never a pending (unsealed) object.
        assert meta.get("cloudtaser-format") == "3", f"{key!r} is not a format-3 envelope: {meta}"
        assert raw[4] == 3, f"{key!r} starts with a version-{raw[4]} stream"
        assert meta.get("cloudtaser-binding") in ("key", "bucket-key", "none"), f"{key!r} has no binding: {meta}"
        assert re.fullmatch(r"[0-9a-f]{64}", meta.get("cloudtaser-mac", "")), f"{key!r} has no envelope MAC: {meta}"
        assert meta.get("cloudtaser-layout") in (None, "multipart"), f"{key!r} is not sealed: {meta}"
        for p in plaintexts:
            assert p not in raw, f"{key!r} holds plaintext {p[:40]!r}"
    return keys


def garage_keys() -> dict:
    """The proxy's upstream credentials for Garage (bench/garage.py, which
    the garage_stack fixture has put on sys.path)."""
    import garage  # noqa: PLC0415 - bench/garage.py

    return {"AWS_ACCESS_KEY_ID": garage.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": garage.SECRET_KEY}


def start_garage_proxy(stack, garage_endpoint: str, name: str, port: int | None = None,
                       health: int | None = None) -> tuple[stack_mod.Process, str]:
    """A proxy replica in front of Garage with the session's settings (same
    OpenBao, Transit key and upstream credentials as every other replica),
    on `port` if given: a replica restarted on its old address is what a
    workload whose pod restarts sees. Returns it and its S3 endpoint."""
    port, health = port or stack_mod.free_port(), health or stack_mod.free_port()
    env = stack.proxy_env(
        CLOUDTASER_S3PROXY_S3_ENDPOINT=garage_endpoint,
        CLOUDTASER_S3PROXY_LISTEN=f"127.0.0.1:{port}",
        CLOUDTASER_S3PROXY_HEALTH_LISTEN=f"127.0.0.1:{health}",
        **garage_keys(),
    )
    proc = stack.start_process(name, [stack_mod.proxy_binary()], env)
    stack_mod.wait_until_serving(proc, name, f"http://127.0.0.1:{health}/healthz")
    return proc, f"http://127.0.0.1:{port}"

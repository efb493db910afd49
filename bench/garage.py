"""Garage as the benchmark's real upstream: one node, LMDB metadata (with
SQLite, 32 concurrent PUTs get 503 "database is locked"), data in the work
directory, and one key allowed to create buckets. The binary comes from
`cargo install garage`; `scripts/bench.sh garage` installs it once into
~/.cache/cloudtaser/garage."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402

GARAGE = Path(os.environ.get("GARAGE_BIN", Path.home() / ".cache" / "cloudtaser" / "garage" / "bin" / "garage"))
ACCESS_KEY = "GK" + "0123456789abcdef01234567"
SECRET_KEY = "0123456789abcdef" * 4
# Garage compresses data blocks with zstd (level 1 by default). The bench
# client's body is a regular pattern that compresses to almost nothing, while
# through the proxy Garage only ever sees ciphertext, so with compression on,
# direct and proxied PUTs are not the same work for Garage. GARAGE_COMPRESSION
# = "none" makes them so; the default stays Garage's.
COMPRESSION = os.environ.get("GARAGE_COMPRESSION", "1")


@dataclass
class Garage:
    endpoint: str
    process: stack_mod.Process


def start(work: Path, s: stack_mod.Stack) -> Garage:
    root = work / "garage"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    s3_port, rpc_port, admin_port = stack_mod.free_port(), stack_mod.free_port(), stack_mod.free_port()
    config = root / "garage.toml"
    compression = COMPRESSION if COMPRESSION.lstrip("-").isdigit() else f'"{COMPRESSION}"'
    config.write_text(f"""
metadata_dir = "{root}/meta"
data_dir = "{root}/data"
db_engine = "lmdb"
compression_level = {compression}
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secrets.token_hex(32)}"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:{s3_port}"

[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
""")
    process = s.start_process("garage", [str(GARAGE), "-c", str(config), "server"], {**os.environ, "RUST_LOG": "warn"})

    def cli(*args: str) -> str:
        out = subprocess.run([str(GARAGE), "-c", str(config), *args], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"garage {' '.join(args)}: {out.stderr}")
        return out.stdout

    def node_id() -> str | None:
        try:
            match = re.search(r"^([0-9a-f]{16})\s", cli("status"), re.MULTILINE)
        except RuntimeError:
            return None
        return match.group(1) if match else None

    stack_mod.wait_for(lambda: node_id() is not None, "garage")
    cli("layout", "assign", "-z", "dc1", "-c", "10G", node_id() or "")
    cli("layout", "apply", "--version", "1")
    cli("key", "import", "--yes", "-n", "bench", ACCESS_KEY, SECRET_KEY)
    cli("key", "allow", "--create-bucket", "bench")
    return Garage(f"http://127.0.0.1:{s3_port}", process)

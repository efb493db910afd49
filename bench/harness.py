"""The stack the benchmark scripts share: OpenBao, an empty Stack around it,
and the in-memory upstream built in `bin_dir`."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402


def vault_stack(work: Path, bin_dir: Path) -> stack_mod.Stack:
    """OpenBao started; the upstream endpoint is still to be set. Proxies
    started on the stack run `bin_dir`'s build."""
    work.mkdir(parents=True, exist_ok=True)
    vault = stack_mod.start_vault(work)
    s = stack_mod.Stack(workdir=work, vault=vault, s3_endpoint="", s3_data=work)
    s.processes.append(vault.process)
    os.environ["CLOUDTASER_PROXY_BIN"] = str(bin_dir / "cloudtaser-s3proxy")
    return s


def start_memory_upstream(s: stack_mod.Stack, bin_dir: Path, name: str = "s3-memory") -> None:
    port = stack_mod.free_port()
    s.s3_endpoint = f"http://127.0.0.1:{port}"
    s.start_process(name, [str(bin_dir / "s3-memory"), str(port)])
    stack_mod.wait_for(lambda: urllib.request.urlopen(f"{s.s3_endpoint}/__served", timeout=1).status == 200, name)

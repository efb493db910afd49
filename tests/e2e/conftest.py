"""One stack (OpenBao + s3s-fs + proxy) for the whole session; tests that
break things start their own components."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).parent))
import stack as stack_mod  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    s = stack_mod.start_stack()
    yield s
    stack_mod.cleanup(s)


def s3_client(endpoint: str, access_key: str, secret_key: str, **config):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"}, **config),
    )


@pytest.fixture(scope="session")
def client(stack):
    """The workload's view: boto3 through the proxy, with dummy credentials."""
    return s3_client(stack.proxy_endpoint, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY)


@pytest.fixture(scope="session")
def upstream(stack):
    """Direct to s3s-fs with the proxy's credentials: what is really stored."""
    return s3_client(stack.s3_endpoint, stack_mod.UPSTREAM_ACCESS_KEY, stack_mod.UPSTREAM_SECRET_KEY)


@pytest.fixture(scope="session")
def bucket(upstream):
    # Buckets are the platform's: the proxy refuses CreateBucket by default.
    name = "e2e-core"
    upstream.create_bucket(Bucket=name)
    return name


@dataclass
class MotoStack:
    """moto's S3 as the upstream (it has versioning, object lock, tags and
    GetObjectAttributes) behind two proxies sharing the session's OpenBao:
    one with the default operations, one that may also set retention and
    legal holds."""

    endpoint: str
    proxy_endpoint: str
    lock_proxy_endpoint: str
    direct: object
    client: object
    lock_client: object


LOCK_OPERATIONS = "default,PutObjectRetention,PutObjectLegalHold"


@pytest.fixture(scope="session")
def moto_stack(stack):
    moto, endpoint = stack_mod.start_moto(stack)
    proxy, proxy_endpoint, _ = stack.start_proxy("proxy-moto", CLOUDTASER_S3PROXY_S3_ENDPOINT=endpoint)
    lock, lock_endpoint, _ = stack.start_proxy(
        "proxy-moto-lock", CLOUDTASER_S3PROXY_S3_ENDPOINT=endpoint, CLOUDTASER_S3PROXY_ALLOWED_OPERATIONS=LOCK_OPERATIONS
    )
    yield MotoStack(
        endpoint=endpoint,
        proxy_endpoint=proxy_endpoint,
        lock_proxy_endpoint=lock_endpoint,
        direct=s3_client(endpoint, stack_mod.UPSTREAM_ACCESS_KEY, stack_mod.UPSTREAM_SECRET_KEY),
        client=s3_client(proxy_endpoint, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY),
        lock_client=s3_client(lock_endpoint, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY),
    )
    for p in (lock, proxy, moto):
        p.stop()


@dataclass
class GarageStack:
    """Garage as the upstream, behind its own proxy: it evaluates S3's
    conditional reads and enforces multipart rules (ETags, part-number
    gaps) that s3s-fs does not, so conformance is checked against both."""

    endpoint: str
    proxy_endpoint: str
    direct: object
    client: object


@pytest.fixture(scope="session")
def garage_stack(stack):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import garage  # noqa: PLC0415 - bench/garage.py, shared with the benchmark

    if not garage.GARAGE.exists():
        pytest.fail(f"Garage is not installed at {garage.GARAGE}: run scripts/install-deps.sh")
    g = garage.start(stack.workdir, stack)
    proxy, proxy_endpoint, _ = stack.start_proxy(
        "proxy-garage", CLOUDTASER_S3PROXY_S3_ENDPOINT=g.endpoint,
        AWS_ACCESS_KEY_ID=garage.ACCESS_KEY, AWS_SECRET_ACCESS_KEY=garage.SECRET_KEY,
    )
    yield GarageStack(
        endpoint=g.endpoint,
        proxy_endpoint=proxy_endpoint,
        direct=s3_client(g.endpoint, garage.ACCESS_KEY, garage.SECRET_KEY),
        client=s3_client(proxy_endpoint, stack_mod.WORKLOAD_ACCESS_KEY, stack_mod.WORKLOAD_SECRET_KEY),
    )
    proxy.stop()
    g.process.stop()

"""One stack (OpenBao + s3s-fs + proxy) for the whole session; tests that
break things start their own components."""

from __future__ import annotations

import sys
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

#!/usr/bin/env bash
# Brings up OpenBao and an S3 upstream on loopback, starts the proxy, and
# round-trips a file through it with the AWS CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --release -p cloudtaser-s3proxy
CLOUDTASER_PROXY_BIN="$PWD/target/release/cloudtaser-s3proxy" exec python3 scripts/demo.py

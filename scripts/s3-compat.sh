#!/usr/bin/env bash
# The S3 compatibility suite, direct and through the proxy, with both pass counts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked -p cloudtaser-s3proxy
exec python3 tests/compat/run.py "$@"

#!/usr/bin/env bash
# The throughput benchmark (bench/run.py): direct vs through the proxy, medians
# of REPS (default 3) interleaved runs, against an in-memory S3 upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --release -p cloudtaser-s3proxy -p cloudtaser-bench
exec python3 bench/run.py

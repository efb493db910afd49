#!/usr/bin/env bash
# Peak RSS of the release proxy streaming a 2 GiB PUT and GET (SIZE=bytes to change).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked --release -p cloudtaser-s3proxy
CLOUDTASER_PROXY_BIN="$PWD/target/release/cloudtaser-s3proxy" exec python3 bench/stream_memory.py

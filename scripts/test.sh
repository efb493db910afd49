#!/usr/bin/env bash
# Every test: unit and integration tests (cargo), then the end-to-end suite
# through real clients against real OpenBao and s3s-fs (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked -p cloudtaser-s3proxy -p cloudtaser-tests --bins
cargo test --workspace --locked
python3 -m pytest tests/e2e -q -p no:cacheprovider

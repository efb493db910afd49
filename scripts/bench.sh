#!/usr/bin/env bash
# The throughput benchmark (bench/run.py): direct vs through the proxy, medians
# of REPS (default 3) interleaved runs.
#   scripts/bench.sh          in-memory upstream, plus Vault calls and the webhook
#   scripts/bench.sh garage   Garage as the upstream (installed once, ~18 min)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
upstream="${1:-memory}"
if [ "$upstream" = garage ]; then
    garage_root="$HOME/.cache/cloudtaser/garage"
    if [ ! -x "$garage_root/bin/garage" ]; then
        cargo install garage --version 2.5.0 --locked --root "$garage_root"
    fi
fi
cargo build --locked --release -p cloudtaser-s3proxy -p cloudtaser-bench
BENCH_UPSTREAM="$upstream" exec python3 bench/run.py

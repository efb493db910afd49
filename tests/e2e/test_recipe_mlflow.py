"""Recipe: MLflow's S3 artifact store (MLFLOW_S3_ENDPOINT_URL), through the
proxy, against Garage (real multipart rules: boto3's upload_file sends
files above 8 MiB in parts, and download_file reads them back with
parallel ranged GETs).

A run logs a small artifact, a directory and a large model file; the
artifacts are listed (sizes are the plaintext ones) and downloaded into a
fresh directory byte for byte. What is stored is read back with the proxy's
upstream credentials: every object is an envelope and no marker appears at
rest. docs/recipes/mlflow.md is the recipe."""

from __future__ import annotations

import filecmp
import json
import secrets
import textwrap

from attack_helpers import MiB, body_of, stored
from recipes import assert_all_ciphertext, run, tool, workload_env

# Run by the tools' own python (mlflow-skinny lives in the recipes venv),
# as a user's training script would call MLflow.
SCRIPT = textwrap.dedent("""
    import json, os, sys
    import mlflow
    from mlflow.tracking import MlflowClient

    src, dst, bucket = sys.argv[1:4]
    mlflow.set_tracking_uri("file:" + os.path.join(dst, "mlruns"))
    exp = mlflow.create_experiment("recipe", artifact_location=f"s3://{bucket}/mlflow")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_param("recipe", "cloudtaser")
        mlflow.log_artifact(os.path.join(src, "notes.txt"))
        mlflow.log_artifact(os.path.join(src, "model.bin"), artifact_path="model")
        mlflow.log_artifacts(os.path.join(src, "plots"), artifact_path="plots")
    client = MlflowClient()
    listing = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id)}
    listing.update({a.path: a.file_size for a in client.list_artifacts(run.info.run_id, "model")})
    listing.update({a.path: a.file_size for a in client.list_artifacts(run.info.run_id, "plots")})
    out = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=os.path.join(dst, "download"))
    print(json.dumps({"listing": listing, "download": out, "run_id": run.info.run_id}))
""")


def test_mlflow_logs_lists_and_downloads_artifacts(garage_stack, tmp_path):
    bucket = f"recipe-mlflow-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    marker = f"CLOUDTASER-PLAINTEXT-{secrets.token_hex(8)}".encode()
    src = tmp_path / "src"
    (src / "plots").mkdir(parents=True)
    (src / "notes.txt").write_bytes(b"training notes " + marker)
    # Above boto3's 8 MiB multipart threshold: three 8 MiB parts and a rest.
    (src / "model.bin").write_bytes(marker + body_of(26 * MiB + 7, "mlflow-model"))
    for i in range(5):
        (src / "plots" / f"loss-{i}.csv").write_bytes(b"step,loss\n%d,0.%d\n%s\n" % (i, i, marker))
    env = workload_env(MLFLOW_S3_ENDPOINT_URL=garage_stack.proxy_endpoint, MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE="path",
                       # The tracking store is not what is under test: a local file store
                       # needs no database (mlflow-skinny has no SQLAlchemy).
                       MLFLOW_ALLOW_FILE_STORE="true")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    out = json.loads(run([tool("python"), str(script), str(src), str(tmp_path), bucket], env=env,
                         cwd=tmp_path).strip().splitlines()[-1])

    # The listing shows plaintext sizes, as MLflow's UI would.
    assert out["listing"] == {
        "notes.txt": (src / "notes.txt").stat().st_size,
        "model": None,
        "plots": None,
        "model/model.bin": (src / "model.bin").stat().st_size,
        **{f"plots/loss-{i}.csv": (src / "plots" / f"loss-{i}.csv").stat().st_size for i in range(5)},
    }, out["listing"]
    down = tmp_path / "download"
    assert filecmp.cmp(src / "notes.txt", down / "notes.txt", shallow=False)
    assert filecmp.cmp(src / "model.bin", down / "model" / "model.bin", shallow=False)
    assert not filecmp.dircmp(src / "plots", down / "plots").diff_files
    assert sorted(p.name for p in (down / "plots").iterdir()) == [f"loss-{i}.csv" for i in range(5)]

    keys = assert_all_ciphertext(garage_stack.direct, bucket, marker)
    assert len(keys) == 7, keys
    model = [k for k in keys if k.endswith("/model/model.bin")]
    assert len(model) == 1 and stored(garage_stack.direct, bucket, model[0])[1].get("cloudtaser-layout") == "multipart"

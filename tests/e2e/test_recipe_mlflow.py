"""Recipe: MLflow's S3 artifact store (MLFLOW_S3_ENDPOINT_URL), through the
proxy, against Garage (real multipart rules: boto3's upload_file sends
files above 8 MiB in parts, and download_file reads them back with
parallel ranged GETs).

A run logs a small artifact, a directory and a large model file; the
artifacts are listed (sizes are the plaintext ones) and downloaded into a
fresh directory byte for byte. What is stored is read back with the proxy's
upstream credentials: every object is an envelope and no marker appears at
rest.

The second test runs the tracking server in its proxied artifact mode
(`mlflow server --artifacts-destination s3://…`): the server is the S3
client, with MLFLOW_S3_ENDPOINT_URL at the proxy, and the training script
knows only the server's URL (`mlflow-artifacts:` URIs, no S3 settings, no
AWS credentials). Artifacts go through the server (which uploads large ones
in parts), and, with MLflow's proxy multipart options on, through presigned
UploadPart and ranged GET URLs the server signs for the proxy's address.
docs/recipes/mlflow.md is the recipe."""

from __future__ import annotations

import filecmp
import json
import os
import secrets
import textwrap
import urllib.request

import envelope
import stack as stack_mod
from attack_helpers import MiB, body_of, stored
from recipes import assert_all_ciphertext, run, tool, workload_env

# Run by the tools' own python (mlflow lives in the recipes venv),
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
                       # needs no database.
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


# The training script of the proxied mode: it talks to the tracking server
# only. Phase one uses MLflow's defaults (every artifact PUT to the server,
# every download streamed from it); phase two turns on the proxy multipart
# options, under which the client asks the server for presigned UploadPart
# URLs and uploads the parts itself, and downloads by presigned ranged GETs.
SERVER_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import mlflow
    from mlflow.tracking import MlflowClient

    src, dst, server = sys.argv[1:4]
    mlflow.set_tracking_uri(server)
    exp = mlflow.create_experiment("proxied")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifact(os.path.join(src, "notes.txt"))
        mlflow.log_artifact(os.path.join(src, "model.bin"), artifact_path="model")
        mlflow.log_artifacts(os.path.join(src, "plots"), artifact_path="plots")
        os.environ.update(MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="true",
                          MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE=str(5 << 20),
                          MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE=str(5 << 20))
        mlflow.log_artifact(os.path.join(src, "weights.bin"), artifact_path="presigned")
    client = MlflowClient()
    listing = {}
    for path in (None, "model", "plots", "presigned"):
        listing.update({a.path: a.file_size for a in client.list_artifacts(run.info.run_id, path)})
    out = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=os.path.join(dst, "download"))
    os.environ.update(MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD="true",
                      MLFLOW_MULTIPART_DOWNLOAD_MINIMUM_FILE_SIZE=str(5 << 20),
                      MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE=str(5 << 20))
    ranged = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model",
                                                 dst_path=os.path.join(dst, "ranged"))
    print(json.dumps({"listing": listing, "artifact_uri": run.info.artifact_uri, "download": out,
                      "ranged": ranged, "experiment": exp}))
""")


def test_mlflow_tracking_server_proxied_artifacts_through_the_proxy(garage_stack, stack, tmp_path):
    bucket = f"recipe-mlflow-srv-{secrets.token_hex(3)}"
    garage_stack.direct.create_bucket(Bucket=bucket)
    marker = f"CLOUDTASER-PLAINTEXT-{secrets.token_hex(8)}".encode()
    src = tmp_path / "src"
    (src / "plots").mkdir(parents=True)
    (src / "notes.txt").write_bytes(b"server notes " + marker)
    # Through the server: above boto3's 8 MiB threshold, so the server's
    # upload_file sends three parts.
    (src / "model.bin").write_bytes(marker + body_of(22 * MiB + 5, "mlflow-server-model"))
    # Through presigned UploadPart URLs: three 5 MiB parts and a rest.
    (src / "weights.bin").write_bytes(marker + body_of(16 * MiB + 9, "mlflow-server-weights"))
    for i in range(3):
        (src / "plots" / f"acc-{i}.csv").write_bytes(b"step,acc\n%d,0.%d\n%s\n" % (i, i, marker))

    # The server: the S3 client of the proxied mode, beside its proxy.
    port = stack_mod.free_port()
    server_url = f"http://127.0.0.1:{port}"
    server_env = workload_env(MLFLOW_S3_ENDPOINT_URL=garage_stack.proxy_endpoint,
                              MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE="path")
    server = stack.start_process("mlflow-server", [
        tool("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{bucket}/artifacts",
    ], server_env)
    try:
        # A cold start migrates the SQLite store: allow a minute.
        stack_mod.wait_for(lambda: server.popen.poll() is None and
                           urllib.request.urlopen(f"{server_url}/health", timeout=2).status == 200,
                           "mlflow server", timeout=90)
        # The client has no S3 endpoint and no AWS credentials at all.
        client_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
        script = tmp_path / "train.py"
        script.write_text(SERVER_SCRIPT)
        out = json.loads(run([tool("python"), str(script), str(src), str(tmp_path), server_url], env=client_env,
                             cwd=tmp_path).strip().splitlines()[-1])
    finally:
        server.stop()
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out["artifact_uri"]

    sizes = {p: (src / p).stat().st_size for p in ("notes.txt", "model.bin", "weights.bin")}
    assert out["listing"] == {
        "notes.txt": sizes["notes.txt"], "model": None, "plots": None, "presigned": None,
        "model/model.bin": sizes["model.bin"], "presigned/weights.bin": sizes["weights.bin"],
        **{f"plots/acc-{i}.csv": (src / "plots" / f"acc-{i}.csv").stat().st_size for i in range(3)},
    }, out["listing"]
    down = tmp_path / "download"
    assert filecmp.cmp(src / "notes.txt", down / "notes.txt", shallow=False)
    assert filecmp.cmp(src / "model.bin", down / "model" / "model.bin", shallow=False)
    assert filecmp.cmp(src / "weights.bin", down / "presigned" / "weights.bin", shallow=False)
    assert not filecmp.dircmp(src / "plots", down / "plots").diff_files
    assert filecmp.cmp(src / "model.bin", tmp_path / "ranged" / "model" / "model.bin", shallow=False)

    keys = assert_all_ciphertext(garage_stack.direct, bucket, marker)
    assert len(keys) == 6, keys
    # The server's upload_file sent the model in 8 MiB parts; the client sent
    # the weights itself in the 5 MiB parts of the presigned URLs.
    for name, part in (("model/model.bin", 8 * MiB), ("presigned/weights.bin", 5 * MiB)):
        key = next(k for k in keys if k.endswith("/artifacts/" + name))
        meta = stored(garage_stack.direct, bucket, key)[1]
        assert meta.get("cloudtaser-layout") == "multipart", key
        size = (src / name.split("/")[1]).stat().st_size
        assert envelope.parse_parts(meta["cloudtaser-parts"]) == [
            (n, min(part, size - (n - 1) * part)) for n in range(1, -(-size // part) + 1)], meta["cloudtaser-parts"]

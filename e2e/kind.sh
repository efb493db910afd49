#!/usr/bin/env bash
# Cluster end-to-end test, for machines with Docker and kind (CI here has
# neither, so this is not part of scripts/test.sh).
#
# 1. builds both images and loads them into a kind cluster;
# 2. installs the chart with tls.mode=helm (no cert-manager needed);
# 3. runs OpenBao (dev) and MinIO in the cluster;
# 4. applies an S3ProxyConfig, runs an AWS CLI Job through the injected proxy;
# 5. checks the stored object is ciphertext (CTS3 header) and the Job completed.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-cloudtaser-e2e}
for tool in docker kind kubectl helm; do command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }; done

docker build -f Dockerfile.proxy -t cloudtaser/s3proxy:e2e .
docker build -f Dockerfile.operator -t cloudtaser/operator:e2e .
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
kind load docker-image --name "$CLUSTER" cloudtaser/s3proxy:e2e cloudtaser/operator:e2e

helm upgrade --install cloudtaser charts/cloudtaser-operator -n cloudtaser --create-namespace --wait \
  --set image.repository=cloudtaser/operator --set image.tag=e2e --set image.pullPolicy=Never \
  --set proxy.image=cloudtaser/s3proxy:e2e --set tls.mode=helm

kubectl apply -f e2e/manifests/backends.yaml
kubectl -n e2e wait --for=condition=Available deploy/openbao deploy/minio --timeout=180s
kubectl -n e2e exec deploy/openbao -- sh -c 'BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN=root bao secrets enable transit && BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN=root bao write -f transit/keys/e2e'
kubectl apply -f e2e/manifests/workload.yaml
kubectl -n e2e wait --for=condition=Complete job/aws-cli-roundtrip --timeout=300s
kubectl -n e2e get pod -l job-name=aws-cli-roundtrip -o jsonpath='{.items[0].spec.initContainers[0].name}' | grep -qx cloudtaser-s3proxy
kubectl -n e2e logs job/aws-cli-roundtrip -c app | tee /dev/stderr | grep -q "ROUNDTRIP OK"
kubectl -n e2e logs job/aws-cli-roundtrip -c app | grep -q "AT REST CTS3"
echo "kind e2e passed"

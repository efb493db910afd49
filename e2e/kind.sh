#!/usr/bin/env bash
# Cluster end-to-end test, for machines with Docker and kind (CI here has
# neither, so this is not part of scripts/test.sh).
#
# 1. builds both images and loads them into a kind cluster;
# 2. installs the chart with tls.mode=helm (no cert-manager needed);
# 3. runs OpenBao (dev) and MinIO in the cluster;
# 4. applies an S3ProxyConfig, runs an AWS CLI Job through the injected proxy;
# 5. checks the stored object is ciphertext (CTS3 header) and the Job completed;
# 6. token files (docs/OPERATOR.md): a Job with Vault Kubernetes auth, the app
#    at UID 1000 and no fsGroup, must complete;
# 7. namespaces: a pod naming another namespace's config is denied;
# 8. classic sidecars: a Job is denied (upgrading the release with
#    proxy.nativeSidecar=false), and init containers keep their endpoint;
# 9. `cloudtaser-operator inject`: its output applies and the Job completes;
# 10. with istioctl installed: an Istio-meshed Deployment round-trips, its
#     proxy running as Istio's bypass UID with 8191 excluded from capture.
# Written without a cluster to run it on: it has not been run.
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

# 6. Token files: Vault Kubernetes auth with different UIDs and no fsGroup.
kubectl -n e2e exec deploy/openbao -- sh -c 'export BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN=root
  bao auth enable kubernetes
  bao write auth/kubernetes/config kubernetes_host=https://kubernetes.default.svc
  printf "path \"transit/*\" { capabilities = [\"create\", \"update\", \"read\"] }\n" | bao policy write e2e -
  bao write auth/kubernetes/role/orders bound_service_account_names=orders bound_service_account_namespaces=e2e policies=e2e audience=vault ttl=1h'
kubectl apply -f e2e/manifests/k8s-auth.yaml
kubectl -n e2e wait --for=condition=Complete job/k8s-auth-different-uids --timeout=300s
kubectl -n e2e logs job/k8s-auth-different-uids -c app | grep -q "K8S AUTH OK"
kubectl -n e2e get pod -l job-name=k8s-auth-different-uids -o jsonpath='{.items[0].spec.volumes[?(@.name=="cloudtaser-vault-token")].projected.defaultMode}' | grep -qx 420

# 7. Namespaces: another namespace's config is denied with a message.
if out=$(kubectl apply -f e2e/manifests/other-namespace.yaml 2>&1); then
  echo "a pod using another namespace's config was admitted" >&2; exit 1
fi
grep -q "can only use an S3ProxyConfig of its own namespace" <<<"$out"

# 9. Offline inject, into a namespace that opts out of the webhook.
docker run --rm -i -v "$PWD/e2e/manifests:/m:ro" --entrypoint /cloudtaser-operator cloudtaser/operator:e2e \
  inject --config /m/offline-config.yaml -f - < e2e/manifests/offline.yaml > /tmp/cloudtaser-offline.yaml
grep -q cloudtaser-s3proxy /tmp/cloudtaser-offline.yaml
kubectl apply -f /tmp/cloudtaser-offline.yaml
kubectl -n e2e-offline wait --for=condition=Complete job/offline-injected --timeout=300s

# 8. Classic sidecars: Jobs are denied.
helm upgrade cloudtaser charts/cloudtaser-operator -n cloudtaser --reuse-values --wait --set proxy.nativeSidecar=false
kubectl -n e2e delete job aws-cli-roundtrip --wait
# The Job is created; the Job controller's pod creation is denied (FailedCreate).
kubectl apply -f e2e/manifests/workload.yaml
denied=""
for _ in $(seq 60); do
  if kubectl -n e2e get events --field-selector involvedObject.name=aws-cli-roundtrip,reason=FailedCreate \
      -o jsonpath='{.items[*].message}' | grep -q "would never complete"; then denied=yes; break; fi
  sleep 2
done
[ -n "$denied" ] || { echo "a classic-mode Job pod was admitted" >&2; exit 1; }
kubectl -n e2e delete job aws-cli-roundtrip --wait
helm upgrade cloudtaser charts/cloudtaser-operator -n cloudtaser --reuse-values --wait --set proxy.nativeSidecar=true
# 10. Service mesh (docs/OPERATOR.md, "Service meshes"), only where istioctl
# is installed: Istio is not on the registries this project installs from.
if command -v istioctl >/dev/null; then
  istioctl install -y --set profile=minimal
  kubectl apply -f e2e/manifests/meshed.yaml
  kubectl -n e2e-mesh rollout status deploy/meshed-roundtrip --timeout=300s
  pod=$(kubectl -n e2e-mesh get pod -l app=meshed-roundtrip -o jsonpath='{.items[0].metadata.name}')
  kubectl -n e2e-mesh get pod "$pod" -o jsonpath='{.spec.initContainers[?(@.name=="cloudtaser-s3proxy")].securityContext.runAsUser}' | grep -qx 1337
  kubectl -n e2e-mesh get pod "$pod" -o jsonpath='{.metadata.annotations.traffic\.sidecar\.istio\.io/excludeInboundPorts}' | grep -q 8191
  for _ in $(seq 60); do kubectl -n e2e-mesh logs "$pod" -c app | grep -q "MESHED ROUNDTRIP OK" && break; sleep 2; done
  kubectl -n e2e-mesh logs "$pod" -c app | grep -q "MESHED ROUNDTRIP OK"
else
  echo "istioctl not installed: skipping the meshed case" >&2
fi
echo "kind e2e passed"

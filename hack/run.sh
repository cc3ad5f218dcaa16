#!/usr/bin/env bash
# `make run`: a local control plane (or your cluster), a simulated edge fleet, the CRDs and the operator.
# CLUSTER=local (default) | existing (your current kubeconfig context, or KUBE_CONTEXT=name) | kind
# SITES=3 NODES_PER_SITE=2 GPU_EVERY=3 DRY_RUN=0. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CLUSTER="${CLUSTER:-local}"
BIN="$(bash hack/build-binaries.sh)"
export PATH="$BIN:$PATH"
pids=()
started_cluster=0
cleanup() {
  trap - INT TERM EXIT
  echo; echo "[run] stopping..." >&2
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ $started_cluster == 1 ]]; then python hack/devcluster.py stop; fi
  echo "[run] stopped" >&2
}
trap cleanup INT TERM EXIT

case "$CLUSTER" in
  local)
    python hack/devcluster.py stop  # reap what a killed run left (its run dir records every PID)
    export KUBECONFIG="$(python hack/devcluster.py start)"
    started_cluster=1
    if [[ "${REAL_NODES:-2}" -gt 0 ]]; then
      # Real kubelets + containerd in their own network namespaces (root), Prometheus finding their pods.
      python hack/realnodes.py start --nodes "${REAL_NODES:-2}"
      PROMETHEUS_URL="${PROMETHEUS_URL:-$(python hack/realprom.py start "${PROM_PORT:-9090}")}"
      WEBHOOK_PORT="${WEBHOOK_PORT:-9443}"
    fi ;;
  existing)
    if [[ -n "${KUBE_CONTEXT:-}" ]]; then kubectl config use-context "$KUBE_CONTEXT" >/dev/null; fi
    kubectl cluster-info >/dev/null
    echo "[run] using existing cluster: $(kubectl config current-context)" >&2
    # kwok simulates the edge nodes on your cluster too (only nodes annotated kwok.x-k8s.io/node=fake).
    kwok --kubeconfig="${KUBECONFIG:-$HOME/.kube/config}" --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake >/tmp/edgeweave-kwok.log 2>&1 &
    pids+=($!) ;;
  kind)
    command -v kind >/dev/null || { echo "CLUSTER=kind needs the kind binary and a Docker engine" >&2; exit 2; }
    kind get clusters | grep -qx edgeweave || kind create cluster --name edgeweave
    kubectl config use-context kind-edgeweave >/dev/null
    kwok --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
      >/tmp/edgeweave-kwok.log 2>&1 &
    pids+=($!) ;;
  *) echo "unknown CLUSTER=$CLUSTER (local, existing, kind)" >&2; exit 2 ;;
esac

kubectl apply -f crds/ >/dev/null
kubectl wait --for condition=established crd --all --timeout=60s >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: kopf.dev/v1
kind: ClusterKopfPeering
metadata: {name: edgeweave}
YAML
edgeweave fleet --sites "${SITES:-3}" --nodes-per-site "${NODES_PER_SITE:-2}" --gpu-every "${GPU_EVERY:-3}"
args=(operator --probe-port "${PROBE_PORT:-8080}" --probe-host 127.0.0.1)
[[ "${DRY_RUN:-0}" == 1 ]] && args+=(--dry-run)
[[ -n "${PROMETHEUS_URL:-}" ]] && args+=(--prometheus-url "$PROMETHEUS_URL")
# Both webhooks on, as in a chart install: steering of moved pods and semantic admission (WEBHOOKS=0: off).
# The API server reaches them on loopback; the certificate is generated once under .run/webhook and kept.
if [[ "${WEBHOOKS:-1}" == 1 && "${CLUSTER:-local}" == local ]]; then
  args+=(--webhook-port "${WEBHOOK_PORT:-9443}" --admission-config validate.edgeweave.io)
elif [[ -n "${WEBHOOK_PORT:-}" ]]; then
  args+=(--webhook-port "$WEBHOOK_PORT")
fi
if [[ $started_cluster == 1 && "${REAL_NODES:-2}" -gt 0 ]]; then
  # The demo on the real nodes: a TCP client/server pair, split at first, that the operator co-locates,
  # and a GpuJob whose slices run the CPU runtime in the edgeweave image (built here, cached by content:
  # minutes the first time, instant after).
  gpujob=()
  if [[ "${DEMO_GPUJOB:-1}" == 1 ]]; then
    echo "[run] building/reusing the edgeweave image (hack/images.py)..." >&2
    img="$(python hack/images.py build edgeweave | awk '{print $2}')"
    python hack/realnodes.py import "$img"
    # This cluster's edgeweave image: admission always admits the operator's own image for slice pods.
    export EDGEWEAVE_IMAGE="$(python -c 'import sys; sys.path.insert(0, "hack"); import demo; print(demo.EDGEWEAVE_IMAGE)')"
    gpujob=(--gpujob)
  fi
  python hack/demo.py manifests edgeweave-demo "${gpujob[@]}" | kubectl apply -f - >/dev/null
fi
edgeweave "${args[@]}" &
pids+=($!)
cat >&2 <<MSG

[run] edgeweave is running. In another shell:
  export KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config} PATH=$BIN:\$PATH
  kubectl get edgesites
  kubectl apply -f examples/
  curl -s localhost:${PROBE_PORT:-8080}/metrics | grep edgeweave_
Ctrl-C stops everything started here.

MSG
wait "${pids[-1]}"

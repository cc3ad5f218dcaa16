#!/usr/bin/env bash
# Builds (or reuses) the Go-built binaries the local cluster needs and prints the bin dir.
# Cache lives outside the clone, keyed by version, so CI and later sessions reuse it.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.33.13}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
HELM_VERSION="${HELM_VERSION:-v3.18.6}"
CACHE_ROOT="${EDGEWEAVE_CACHE:-$HOME/.cache/edgeweave}"
BIN_DIR="$CACHE_ROOT/bin/k8s-$K8S_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export CGO_ENABLED=0

log() { echo "[build-binaries] $*" >&2; }

mkdir -p "$BIN_DIR"

staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
  kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)

build_k8s() {
  local need=()
  # kubelet and kube-proxy run the real nodes (hack/realnodes.py).
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    [[ -x "$BIN_DIR/$b" ]] || need+=("$b")
  done
  [[ ${#need[@]} -eq 0 ]] && return 0
  log "building ${need[*]} from k8s.io/kubernetes@$K8S_VERSION (cold build: tens of minutes on 2 cores)"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local stag="v0.${K8S_VERSION#v1.}"
  local mod="$CACHE_ROOT/src/k8sbin-$K8S_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    if [[ ! -f .resolved ]]; then
      rm -f go.mod go.sum
      go mod init local/k8sbin >/dev/null 2>&1
      for s in "${staging[@]}"; do go mod edit "-replace=k8s.io/$s=k8s.io/$s@$stag"; done
      cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
      go get "k8s.io/kubernetes@$K8S_VERSION" >&2
      go mod tidy >&2
      touch .resolved
    fi
    local pkg="k8s.io/component-base/version"
    local ld="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
    ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    for b in "${need[@]}"; do
      local path="k8s.io/kubernetes/cmd/$b"
      log "go build $path"
      go build -trimpath -ldflags "$ld" -o "$BIN_DIR/$b.tmp" "$path" >&2
      mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
    done
  )
}

build_gobin() {
  local name="$1" pkg="$2"
  [[ -x "$BIN_DIR/$name" ]] && return 0
  log "go install $pkg"
  GOBIN="$BIN_DIR" go install -trimpath -ldflags "-s -w" "$pkg" >&2
}

build_gobin kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
build_gobin helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
build_k8s
echo "$BIN_DIR"

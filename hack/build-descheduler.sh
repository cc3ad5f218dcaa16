#!/usr/bin/env bash
# Builds (or reuses) the real descheduler (sigs.k8s.io/descheduler) and prints its bin dir.
# It carries a replace directive (kube-openapi), so `go install pkg@version` refuses it: build it
# through a wrapper module that copies the replace. The version ldflag matters: without it its
# server-version check cannot parse the minor version. Cache outside the clone, keyed by version.
set -euo pipefail

DESCHEDULER_VERSION="${DESCHEDULER_VERSION:-v0.36.0}"
CACHE_ROOT="${EDGEWEAVE_CACHE:-$HOME/.cache/edgeweave}"
BIN_DIR="$CACHE_ROOT/bin/descheduler-$DESCHEDULER_VERSION"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export CGO_ENABLED=0

log() { echo "[build-descheduler] $*" >&2; }

if [[ -x "$BIN_DIR/descheduler" ]]; then
  echo "$BIN_DIR"
  exit 0
fi
mkdir -p "$BIN_DIR"
mod="$CACHE_ROOT/src/descheduler-$DESCHEDULER_VERSION"
mkdir -p "$mod"
cd "$mod"
if [[ ! -f .resolved ]]; then
  log "resolving sigs.k8s.io/descheduler@$DESCHEDULER_VERSION through a wrapper module"
  rm -f go.mod go.sum
  go mod init local/deschedulerbin >/dev/null 2>&1
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/descheduler/cmd/descheduler"
GO
  go get "sigs.k8s.io/descheduler@$DESCHEDULER_VERSION" >&2
  # copy the upstream replace directives (kube-openapi) into the wrapper
  upstream="$(go env GOMODCACHE)/sigs.k8s.io/descheduler@$DESCHEDULER_VERSION/go.mod"
  while read -r old new ver; do
    go mod edit "-replace=$old=$new@$ver"
  done < <(awk '/^replace[[:space:]]*\(/{b=1;next} b&&/^\)/{b=0} b&&/=>/{print $1, $3, $4} /^replace [^(]/{print $2, $4, $5}' "$upstream")
  go mod tidy >&2
  touch .resolved
fi
log "go build sigs.k8s.io/descheduler/cmd/descheduler"
go build -trimpath -ldflags "-s -w -X sigs.k8s.io/descheduler/pkg/version.version=$DESCHEDULER_VERSION" \
  -o "$BIN_DIR/descheduler.tmp" sigs.k8s.io/descheduler/cmd/descheduler >&2
mv "$BIN_DIR/descheduler.tmp" "$BIN_DIR/descheduler"
echo "$BIN_DIR"

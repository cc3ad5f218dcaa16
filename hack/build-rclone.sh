#!/usr/bin/env bash
# Builds rclone (the S3-compatible server the memory store's tests and bench run: `rclone serve s3`)
# from the Go module proxy into ~/.cache/edgeweave/bin/rclone-<ver>/ and prints that directory.
# Warm: returns at once. Cold: a few minutes on 2 cores (run under nice).
set -euo pipefail
RCLONE_VERSION="${RCLONE_VERSION:-v1.76.0}"
DIR="${EDGEWEAVE_CACHE:-$HOME/.cache/edgeweave}/bin/rclone-${RCLONE_VERSION}"
if [[ -x "$DIR/rclone" ]]; then
  echo "$DIR"
  exit 0
fi
command -v go >/dev/null || { echo "build-rclone: go is needed (hack/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$DIR.tmp"
GOBIN="$DIR.tmp" CGO_ENABLED=0 GOFLAGS=-trimpath nice -n 10 go install "github.com/rclone/rclone@${RCLONE_VERSION}" >&2
rm -rf "$DIR"
mv "$DIR.tmp" "$DIR"
echo "$DIR"

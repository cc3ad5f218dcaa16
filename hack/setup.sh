#!/usr/bin/env bash
# Everything a fresh machine needs: Debian packages, the Python venv, the Go-built Kubernetes binaries.
# Warm runs take seconds: apt is skipped when installed, pip reuses ~/.cache/pip, binaries are cached
# under ~/.cache/edgeweave keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
bash hack/install-deps.sh
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  # constraints.txt pins every package to what CI tested (make lock rewrites it).
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  touch "$stamp"
fi
bash hack/build-binaries.sh >/dev/null
# memory: the S3 server of the baseline-store tests (rclone serve s3) and CRIU 4.1.1 for the bench
bash hack/build-rclone.sh >/dev/null
bash hack/fetch-criu.sh >/dev/null || echo "[setup] CRIU not fetched: bench-memory will omit the CRIU peer" >&2
echo "[setup] ready in $(( $(date +%s) - t0 ))s" >&2

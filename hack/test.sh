#!/usr/bin/env bash
# The whole suite: lint, CRD drift, unit, integration (real control plane + Prometheus), e2e (netns, eBPF).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
t0=$(date +%s)
echo "== lint"
ruff check operator tests bench hack
lint-imports
echo "== CRDs match the models"
edgeweave crds --check --out crds --chart charts/edgeweave/crds
echo "== pytest"
set +e
python -m pytest -ra -p no:cacheprovider "${@:-tests}"
rc=$?
set -e
echo "[test] finished in $(( $(date +%s) - t0 ))s with rc=$rc" >&2
exit $rc

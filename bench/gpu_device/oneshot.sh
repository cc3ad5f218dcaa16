#!/usr/bin/env bash
# One shot on a GPU machine: set up Python, get CuPy, run the CUDA tests and bench-gpu-device, each
# under a timeout, with everything they print kept under $OUT (default ./gpu-run). Meant for the
# device machine a session may be lent: run it from the repository root with a timeout that leaves
# room for a rerun, e.g. `timeout 540 bash bench/gpu_device/oneshot.sh`.
#
# Python packages: the venv at .venv if it is there and works; else a new one (system site packages
# visible) that installs the project and CuPy from a wheelhouse directory if one was carried
# ($WHEELS, default ./wheelhouse), else from the registry, if the machine can reach it.
# NO_INSTALL=1 installs nothing (a dry run of the flow on a machine without a GPU).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu-run}"
WHEELS="${WHEELS:-$PWD/wheelhouse}"
TEST_TIMEOUT="${TEST_TIMEOUT:-180}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-240}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/oneshot.log") 2>&1
echo "[oneshot] $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode --format=csv || echo "[oneshot] no nvidia-smi"
nvcc_v=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\)\..*/\1/p' | head -1)
cupy_pkg="cupy-cuda${nvcc_v:-12}x"

py=""
for cand in .venv/bin/python python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import numpy, pydantic, yaml, edgeweave' 2>/dev/null; then
    py="$cand"; break
  fi
done
if [ -z "$py" ]; then
  base=$(command -v python3.11 || command -v python3)
  "$base" -m venv --system-site-packages /tmp/ew-gpu-venv
  py=/tmp/ew-gpu-venv/bin/python
  pipargs=(-q)
  [ -d "$WHEELS" ] && pipargs+=(--no-index --find-links "$WHEELS")
  "$py" -m pip install "${pipargs[@]}" -e . || "$py" -m pip install -q --no-deps -e .
fi
if [ -n "${NO_INSTALL:-}" ]; then
  echo "[oneshot] NO_INSTALL set: using what is installed"
elif ! "$py" -c 'import cupy' 2>/dev/null; then
  pipargs=(-q)
  [ -d "$WHEELS" ] && pipargs+=(--no-index --find-links "$WHEELS")
  "$py" -m pip install "${pipargs[@]}" "$cupy_pkg" || echo "[oneshot] could not install $cupy_pkg"
fi
"$py" -c 'import cupy; print("[oneshot] cupy", cupy.__version__, "devices", cupy.cuda.runtime.getDeviceCount())' \
  || echo "[oneshot] CuPy unusable: the tests will skip and the bench will say so"

echo "[oneshot] tests/gpu"
timeout "$TEST_TIMEOUT" "$py" -m pytest -q -rs -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/tests-gpu.log"
echo "[oneshot] tests/gpu rc=${PIPESTATUS[0]}"
echo "[oneshot] bench-gpu-device"
timeout "$BENCH_TIMEOUT" "$py" bench/gpu_device/run.py --rounds "${ROUNDS:-5}" 2>&1 | tee "$OUT/bench-gpu-device.log"
echo "[oneshot] bench rc=${PIPESTATUS[0]}"
tail -1 "$OUT/bench-gpu-device.log" > "$OUT/bench-gpu-device.json"
echo "[oneshot] done $(date -u +%FT%TZ)"

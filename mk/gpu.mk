# GPU kernel slicing: node dispatcher benchmark (real processes, CPU), device benchmark (needs CUDA +
# CuPy), GPU tests.
.PHONY: bench-gpu-sched bench-gpu-device bench-gpu-device-oneshot test-gpu-unit test-gpu-device test-gpu-dispatcher

## bench-gpu-sched: the slice dispatcher as real processes (policy order, dynamic sizes, exactly-once
## after kills, grant latency) + the simulator row against a prioritised GPU; last line is JSON
bench-gpu-sched:
	$(PY) bench/gpu_sched/run.py

## bench-gpu-device: long kernel sliced vs whole, high-priority stream, processes, MPS, on a real GPU
bench-gpu-device:
	$(PY) bench/gpu_device/run.py

## bench-gpu-device-oneshot: on a GPU machine: Python + CuPy, tests/gpu, bench-gpu-device (timeouts)
bench-gpu-device-oneshot:
	timeout 540 bash bench/gpu_device/oneshot.sh

## test-gpu-dispatcher: the node dispatcher as real processes (CPU runtime, no cluster)
test-gpu-dispatcher:
	$(PY) -m pytest -q -rs tests/integration/test_gpu_dispatcher.py tests/unit/gpu/test_gpu_dispatcher_parts.py

test-gpu-unit:
	$(PY) -m pytest -q tests/unit/gpu

## test-gpu-device: the CUDA-only tests (skipped, with the reason, without a GPU)
test-gpu-device:
	$(PY) -m pytest -q -rs tests/gpu

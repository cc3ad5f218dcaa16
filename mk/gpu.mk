# GPU kernel slicing: simulation benchmark (CPU), device benchmark (needs CUDA + CuPy), GPU tests.
.PHONY: bench-gpu-sched bench-gpu-device test-gpu-unit test-gpu-device

## bench-gpu-sched: policies x (whole, sliced) on the same simulated arrivals; last line is JSON
bench-gpu-sched:
	$(PY) bench/gpu_sched/run.py

## bench-gpu-device: long kernel sliced vs whole with a stream of short kernels on a real GPU
bench-gpu-device:
	$(PY) bench/gpu_device/run.py

test-gpu-unit:
	$(PY) -m pytest -q tests/unit/gpu

## test-gpu-device: the CUDA-only tests (skipped, with the reason, without a GPU)
test-gpu-device:
	$(PY) -m pytest -q -rs tests/gpu

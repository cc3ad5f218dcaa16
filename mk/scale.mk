# Fleet scale: the operator against a real control plane with a large kwok fleet (issue 16)
.PHONY: bench-scale

## bench-scale: 2,000 kwok devices, 20,000 pods, 500 WorkloadGroups, real Prometheus; operator RSS, CPU, API requests/s by verb, plan latency; last line is JSON (BENCH_SCALE_ARGS="--sites 20 --pods 2000 --groups 50" for a smaller run)
bench-scale:
	$(PY) bench/scale/run.py $(BENCH_SCALE_ARGS)

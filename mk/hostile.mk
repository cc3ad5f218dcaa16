# Hostile and careless tenants (semantic admission, bounded reconcile, tenancy).
.PHONY: bench-hostile test-hostile

HOSTILE_OUT ?= bench/out/hostile

## bench-hostile: real control plane + kwok + Prometheus + operator with admission on: the bad-input corpus,
## a flood of 1,000 bad objects and a GpuJob of 2^31 slices; last line is one JSON object (bad_inputs,
## rejected_or_conditioned, harmful_actions, operator_restarts, operator_rss_peak_mib, good_objects_served,
## and the schema-only baseline) (~3 min)
bench-hostile:
	$(PY) bench/hostile/run.py --out-dir $(HOSTILE_OUT) $(BENCH_HOSTILE_ARGS)

## test-hostile: unit tests of admission checks, PromQL scoping and backoff, then the bad-input and tenancy suites
test-hostile:
	$(PY) -m pytest -q tests/unit/admission tests/unit/telemetry
	$(PY) -m pytest -q tests/integration/test_bad_inputs.py tests/integration/test_tenancy.py

# Dirty-data recovery of remote memory (edgeweave.memory).
.PHONY: bench-memory test-memory

## bench-memory: 1 GiB region, 0.1/1/10/50 % dirty, 1 Gbit/s tc-shaped netns link, vs full copy (root)
bench-memory:
	$(PY) bench/memory/bench_memory.py

## test-memory: unit + netns e2e tests of edgeweave.memory (root for e2e)
test-memory:
	$(PY) -m pytest -q tests/unit/memory tests/e2e/memory

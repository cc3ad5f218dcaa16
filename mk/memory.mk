# Dirty-data recovery of remote memory (edgeweave.memory).
.PHONY: bench-memory test-memory memory-deps test-realnode-memory

## memory-deps: rclone (the S3 store of tests and bench) and CRIU 4.1.1 (the bench's peer), cached
memory-deps:
	bash hack/build-rclone.sh >/dev/null
	bash hack/fetch-criu.sh >/dev/null

## bench-memory: 1 GiB region, 1 % dirty, every link 1 Gbit/s tbf, S3 store in its own netns;
## pre-staged / cold / lazy / full copy / CRIU 4.1.1, then kills under load, mid-snapshot, host failure (root)
bench-memory: memory-deps
	$(PY) bench/memory/bench_memory.py

## test-memory: unit + netns e2e tests of edgeweave.memory (root for e2e)
test-memory:
	$(PY) -m pytest -q tests/unit/memory tests/e2e/memory

## test-realnode-memory: only the real-node memory tests (also in `make test`): after the operator's move and after a SIGKILL (its ReplicaSet's replacement), and the bare SIGKILL scenario (root)
test-realnode-memory:
	$(PY) -m pytest -q -rs tests/realnode/test_memory_operator_realnode.py tests/realnode/test_memory_realnode.py

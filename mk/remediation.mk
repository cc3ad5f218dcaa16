# Context-breach remediation (edgeweave.placement.context / breach / remediate).
.PHONY: bench-remediation bench-remediation-peers bench-remediation-combine bench-remediation-cluster bench-remediation-sim test-remediation

REMEDIATION_OUT ?= bench/out/remediation

## bench-remediation: edgeweave against the stock paths (alerting rule -> Alertmanager -> NoExecute taint; node
## label + descheduler; NotReady), one 500-device kwok fleet, REMEDIATION_ROUNDS injections on it (reset in
## between), then a SIGKILL half-way through a grace period (restart_grace_error_s). One cluster tuned for failover
## for every path (hack/devcluster.py KWOK_TUNED_OPTIONS, KCM_TUNED_FLAGS; --no-tuned: stock flags). Last line: one JSON object,
## median and 95% interval of each path's per-round p50/p95 (~1.5 min setup + ~1.5 min per round at 500 devices)
REMEDIATION_ROUNDS ?= 3
bench-remediation: bench-remediation-peers

bench-remediation-peers:
	$(PY) bench/remediation/peers.py --out $(REMEDIATION_OUT)/peers.json --rounds $(REMEDIATION_ROUNDS) \
		$(BENCH_REMEDIATION_PEERS_ARGS)

## bench-remediation-combine: one line over several runs' JSON (REMEDIATION_RUNS="a.json b.json"): every round of
## every run, median and 95% interval per path
bench-remediation-combine:
	$(PY) bench/remediation/peers.py --out $(REMEDIATION_OUT)/combined.json --combine $(REMEDIATION_RUNS)

## bench-remediation-cluster: edgeweave alone against Kubernetes alone (which never reads a battery), 500 kwok
## devices; detection and breach-to-Running latency (~4 min)
bench-remediation-cluster:
	$(PY) bench/remediation/cluster.py --out $(REMEDIATION_OUT)/cluster.json $(BENCH_REMEDIATION_CLUSTER_ARGS)

## bench-remediation-sim: the 500-device simulation of the pure logic (add CLUSTER_RESULT=FILE to merge an earlier
## real-cluster run)
bench-remediation-sim:
	$(PY) bench/remediation/run.py $(if $(CLUSTER_RESULT),--cluster-result $(CLUSTER_RESULT)) $(BENCH_REMEDIATION_ARGS)

## test-remediation: unit tests of context resolution, breach tracking, persistence and remediation planning
test-remediation:
	$(PY) -m pytest -q tests/unit/placement/test_context_resolve.py tests/unit/placement/test_breach_tracker.py \
		tests/unit/placement/test_breach_persistence.py tests/unit/placement/test_remediate_plan.py \
		tests/unit/placement/test_remediate_targets.py tests/unit/placement/test_remediation_sim.py

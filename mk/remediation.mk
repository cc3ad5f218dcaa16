# Context-breach remediation (edgeweave.placement.context / breach / remediate).
.PHONY: bench-remediation bench-remediation-cluster bench-remediation-sim test-remediation

REMEDIATION_OUT ?= bench/out/remediation

## bench-remediation-cluster: real control plane + 500 kwok devices + Prometheus + operator: battery drop on
## many devices at once; detection and breach-to-Running latency vs Kubernetes' taint-based eviction (~4 min)
bench-remediation-cluster:
	$(PY) bench/remediation/cluster.py --out $(REMEDIATION_OUT)/cluster.json $(BENCH_REMEDIATION_CLUSTER_ARGS)

## bench-remediation: the real-cluster part, then the 500-device simulation; last line is one JSON object whose
## headline keys (breach_to_running_p95_s, left_on_breaching_devices, baseline_*) are the real cluster's
bench-remediation: bench-remediation-cluster
	$(PY) bench/remediation/run.py --cluster-result $(REMEDIATION_OUT)/cluster.json $(BENCH_REMEDIATION_ARGS)

## bench-remediation-sim: the simulation alone (add CLUSTER_RESULT=FILE to merge an earlier real-cluster run)
bench-remediation-sim:
	$(PY) bench/remediation/run.py $(if $(CLUSTER_RESULT),--cluster-result $(CLUSTER_RESULT)) $(BENCH_REMEDIATION_ARGS)

## test-remediation: unit tests of context resolution, breach tracking and remediation planning
test-remediation:
	$(PY) -m pytest -q tests/unit/placement/test_context_resolve.py tests/unit/placement/test_breach_tracker.py \
		tests/unit/placement/test_remediate_plan.py tests/unit/placement/test_remediation_sim.py

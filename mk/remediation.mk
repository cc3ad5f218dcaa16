# Context-breach remediation (edgeweave.placement.context / breach / remediate).
.PHONY: bench-remediation test-remediation

## bench-remediation: 500-device simulated fleet, context changes on many devices at once, vs Kubernetes
## taint-based eviction alone; last line is JSON (add CLUSTER_RESULT=FILE to merge real-cluster figures)
bench-remediation:
	$(PY) bench/remediation/run.py $(if $(CLUSTER_RESULT),--cluster-result $(CLUSTER_RESULT))

## test-remediation: unit tests of context resolution, breach tracking and remediation planning
test-remediation:
	$(PY) -m pytest -q tests/unit/placement/test_context_resolve.py tests/unit/placement/test_breach_tracker.py \
		tests/unit/placement/test_remediate_plan.py tests/unit/placement/test_remediation_sim.py

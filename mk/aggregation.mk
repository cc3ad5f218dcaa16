# aggregation / defragmentation planner: tests and the benchmark (real cluster, then simulation)
.PHONY: bench-aggregation bench-aggregation-cluster test-aggregation

test-aggregation:
	$(PY) -m pytest -q tests/unit/placement/test_graph_aggregation.py tests/unit/placement/test_aggregate_planner.py tests/unit/placement/test_aggregate_sim.py

## bench-aggregation-cluster: on a real control plane + kwok + Prometheus, seconds from a dependency appearing to the pair together
bench-aggregation-cluster:
	$(PY) bench/aggregation/cluster.py --out bench/out/aggregation/cluster.json $(BENCH_AGGREGATION_CLUSTER_ARGS)

## bench-aggregation: real-cluster part, then planner vs no action / LowNodeUtilization / random on 50, 500, 1000-device fleets; last line is JSON
bench-aggregation: bench-aggregation-cluster
	$(PY) bench/aggregation/run.py --cluster-result bench/out/aggregation/cluster.json $(BENCH_AGGREGATION_ARGS)

# aggregation / defragmentation planner: tests and the simulation benchmark
.PHONY: bench-aggregation test-aggregation

test-aggregation:
	$(PY) -m pytest -q tests/unit/placement/test_graph_aggregation.py tests/unit/placement/test_aggregate_planner.py tests/unit/placement/test_aggregate_sim.py

## bench-aggregation: planner vs no action / LowNodeUtilization / random on 50, 500, 1000-device fleets; last line is JSON
bench-aggregation:
	$(PY) bench/aggregation/run.py $(BENCH_AGGREGATION_ARGS)

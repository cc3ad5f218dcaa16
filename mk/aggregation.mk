# aggregation / defragmentation planner: tests and the benchmark (real cluster, real peers, then simulation)
.PHONY: bench-aggregation bench-aggregation-cluster bench-aggregation-peers bench-aggregation-plan test-aggregation

test-aggregation:
	$(PY) -m pytest -q tests/unit/placement/test_graph_aggregation.py tests/unit/placement/test_aggregate_planner.py tests/unit/placement/test_aggregate_sim.py tests/unit/placement/test_spread_and_solver.py

## bench-aggregation-cluster: on a real control plane + kwok + Prometheus, seconds from a dependency appearing to the pair together
bench-aggregation-cluster:
	$(PY) bench/aggregation/cluster.py --out bench/out/aggregation/cluster.json $(BENCH_AGGREGATION_CLUSTER_ARGS)

## bench-aggregation-peers: 10 runs x 2 scenarios (drift: calls that begin after placement, the headline; static: all declared as podAffinity), one shared start placement each: stock kube-scheduler (podAffinity), + descheduler v0.36.0 (two configs), edgeweave (two spread settings), same churn, at once (~70 min)
bench-aggregation-peers:
	bash hack/build-descheduler.sh >/dev/null
	$(PY) bench/aggregation/peers.py --out bench/out/aggregation/peers.json $(BENCH_AGGREGATION_PEERS_ARGS)

## bench-aggregation: real-cluster part, real peers, then planner vs optimum / baselines on generated fleets; last line is JSON
bench-aggregation: bench-aggregation-cluster bench-aggregation-peers
	$(PY) bench/aggregation/run.py --cluster-result bench/out/aggregation/cluster.json --peers-result bench/out/aggregation/peers.json $(BENCH_AGGREGATION_ARGS)

## bench-aggregation-plan: plan time only, 1,000 devices / 10,000 pods, 12 plans each way (first interval, uncapped), wall and CPU medians with 95% intervals; about a minute
bench-aggregation-plan:
	$(PY) bench/aggregation/plan.py --out bench/out/aggregation/plan.json $(BENCH_AGGREGATION_PLAN_ARGS)

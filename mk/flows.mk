# flows: eBPF datapath build, benchmark
.PHONY: bpf bench-flows flows-train test-flows

## bpf: compile operator/edgeweave/agent/bpf/*.bpf.c (object next to the source, gitignored)
bpf:
	$(PY) -m edgeweave.agent.build

## flows-train: retrain the elephant/mouse classifier and rewrite flows/model.json
flows-train:
	$(PY) -m edgeweave.cli flows-train

test-flows: bpf
	$(PY) -m pytest -q tests/unit/flows tests/e2e/flows

## bench-flows: agent vs hash multipath in netns (root); last line is JSON
bench-flows: bpf
	$(PY) bench/flows/bench_flows.py

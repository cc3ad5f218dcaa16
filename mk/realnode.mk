# real nodes (containerd + runc + kubelet + kube-proxy in network namespaces), images built from this repo
.PHONY: images test-realnode bench-realnode

## images: the OCI archives the real nodes import (pause, demo), cached under ~/.cache/edgeweave/images
images:
	@python3 hack/images.py build

## test-realnode: the real-node suite (root; starts what it needs)
test-realnode:
	$(PY) -m pytest -q tests/realnode

## bench-realnode: node Ready time, dependency -> co-located (DryRun baseline), 2-replica move, uplink down -> serving (host agents), GpuJob output, memory restored after the operator's move and after a SIGKILL; last line is JSON
bench-realnode:
	$(PY) bench/realnode/run.py $(BENCH_REALNODE_ARGS)

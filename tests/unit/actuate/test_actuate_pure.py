from __future__ import annotations

from edgeweave.actuate.ratelimit import SlidingWindow
from edgeweave.actuate.steering import SteeringTable, affinity_patch
from edgeweave.agent.site import site_for_node
from edgeweave.api.base import parse_rfc3339
from edgeweave.api.workloadgroup import MemoryRecovery
from edgeweave.memory.podpatch import INIT_NAME, recovery_patch, recovery_report
from edgeweave.placement.inventory import pod_info
from edgeweave.placement.states import device_states, workload_states
from edgeweave.telemetry.prometheus import QueryResult, Sample, edges_from_results


def test_sliding_window_limits_per_key_and_recovers() -> None:
    w = SlidingWindow()
    assert [w.try_acquire("g", 2, 10, now=t) for t in (0, 1, 2)] == [True, True, False]
    assert w.try_acquire("other", 2, 10, now=2)
    assert w.try_acquire("g", 2, 10, now=10.5)
    assert w.remaining("g", 2, 10, now=10.6) == 0


def test_affinity_patch_keeps_other_affinity() -> None:
    existing = {"podAntiAffinity": {"x": 1}, "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [1]}}
    out = affinity_patch(existing, "edge-1")
    assert out["podAntiAffinity"] == {"x": 1}
    assert out["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [1]
    term = out["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["values"] == ["edge-1"]
    assert existing["nodeAffinity"] == {"preferredDuringSchedulingIgnoredDuringExecution": [1]}  # not mutated


def test_steering_release_only_by_its_move() -> None:
    t = SteeringTable()
    t.register("ns", "ReplicaSet/a", "n1", "m1")
    t.release("ns", "ReplicaSet/a", "other")
    assert t.lookup("ns", "ReplicaSet/a").to_node == "n1"
    t.release("ns", "ReplicaSet/a", "m1")
    assert t.lookup("ns", "ReplicaSet/a") is None


def test_recovery_patch_merges_with_the_pods_own_volumes() -> None:
    settings = MemoryRecovery(enabled=True, store_claim="base", token_secret="tok")
    spec = {"volumes": [{"name": "kube-api-access-abc", "projected": {}}],
            "initContainers": [{"name": "user-init"}]}
    out = recovery_patch(spec, settings, "ns-cache", "10.0.0.7", "img:1")
    assert [c["name"] for c in out["initContainers"]] == [INIT_NAME, "user-init"]
    names = [v["name"] for v in out["volumes"]]
    assert names[0] == "kube-api-access-abc" and len(names) == len(set(names)) == 5  # store, token, TLS, shm + the pod's own
    assert "--source 10.0.0.7:7470" in out["initContainers"][0]["command"][-1]
    report = {"initContainerStatuses": [{"name": INIT_NAME, "state": {"terminated": {
        "message": 'log line\n{"mode": "baseline+dirty", "epoch": 3, "pages": 12}'}}}]}
    assert recovery_report(report) == {"mode": "baseline+dirty", "epoch": 3, "pages": 12}
    assert recovery_report({"initContainerStatuses": [{"name": INIT_NAME, "state": {"running": {}}}]}) is None


def test_edges_merge_requests_and_bytes_per_pair() -> None:
    trig = QueryResult("t", (Sample({"source_workload": "a", "destination_workload": "b"}, 10.0),
                             Sample({"source_workload": "a", "destination_workload": "a"}, 99.0)), 0)
    data = QueryResult("d", (Sample({"source_workload": "a", "destination_workload": "b"}, 500.0),
                             Sample({"source_workload": "c", "destination_workload": "b"}, 0.5)), 0)
    edges = edges_from_results(trig, data, min_rate=1.0)
    assert [(e.source, e.target, e.requests_per_second, e.bytes_per_second) for e in edges] == [
        ("a", "b", 10.0, 500.0)]


def _pod(name: str, node: str, owner: str | None, labels: dict, ready: bool = True) -> dict:
    meta = {"name": name, "namespace": "ns", "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "o", "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [
        {"resources": {"requests": {"cpu": "500m"}}}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_workload_states_movability_and_cooldown() -> None:
    pods = [pod_info(_pod("a", "n1", "ReplicaSet", {"app": "a"})),
            pod_info(_pod("d", "n1", "DaemonSet", {"app": "d"})),
            pod_info(_pod("b", "n2", None, {"app": "b"}, ready=False))]
    now = parse_rfc3339("2026-01-01T00:10:00Z")
    ws = {w.workload: w for w in workload_states(pods, "app", "ns/g", {"a": "2026-01-01T00:05:00Z"}, 600, now)}
    assert ws["a"].movable and ws["a"].cooling_down
    assert not ws["d"].movable  # DaemonSet pods belong to their node
    assert not ws["b"].movable  # not Ready: moving it would not make it better


def test_device_states_subtract_requests_and_block_tainted() -> None:
    from edgeweave.placement.inventory import device_from_node
    from edgeweave.sim.fleet import FleetShape, node_manifest

    n0, n1 = (node_manifest(FleetShape(), 0, i) for i in range(2))
    for n in (n0, n1):
        n["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    n1["spec"]["taints"] = [{"key": "edgeweave.io/context-breach", "effect": "NoSchedule"}]
    devs = device_states([device_from_node(n0), device_from_node(n1)],
                         {"edge-000-0": [pod_info(_pod("a", "edge-000-0", None, {}))]})
    assert devs[0].cpu_free == 3.5 and devs[0].schedulable and not devs[1].schedulable


def test_site_for_node_by_selector_or_name() -> None:
    sites = [{"metadata": {"name": "b"}, "spec": {"nodeNames": ["n9"]}},
             {"metadata": {"name": "a"}, "spec": {"nodeSelector": {"site": "x"}}}]
    assert site_for_node({"site": "x"}, "n1", sites)["metadata"]["name"] == "a"
    assert site_for_node({}, "n9", sites)["metadata"]["name"] == "b"
    assert site_for_node({}, "n1", sites) is None

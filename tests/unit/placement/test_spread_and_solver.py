"""Availability as a constraint, moves that pay, and the CP-SAT pass against an exact reference."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from edgeweave.api.workloadgroup import AggregationPolicy
from edgeweave.placement.aggregate import plan_aggregation
from edgeweave.placement.graph import DependencyGraph
from edgeweave.placement.inventory import pod_info
from edgeweave.placement.model import DeviceState, Edge, WorkloadState
from edgeweave.placement.spread import HOSTNAME, conflicts, pod_constraints
from edgeweave.placement.states import workload_states

# Loaded by path under a unique name: bench/ is not a package.
_PATH = Path(__file__).resolve().parents[3] / "bench" / "aggregation" / "exact.py"
_spec = importlib.util.spec_from_file_location("edgeweave_bench_aggregation_exact", _PATH)
assert _spec and _spec.loader
_exact = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _exact
_spec.loader.exec_module(_exact)

POLICY = AggregationPolicy()
G = "ns/shop"


def dev(name: str, cpu: float = 4.0) -> DeviceState:
    return DeviceState(name=name, cpu_capacity=cpu, memory_capacity=8e9, cpu_free=cpu, memory_free=8e9)


def pod(key: str, workload: str, node: str, cpu: float = 0.5, spec: dict | None = None, **kw) -> WorkloadState:
    return WorkloadState(key=f"ns/{key}", workload=workload, group=G, node=node, cpu=cpu,
                         labels={"app": workload}, constraints=pod_constraints(spec or {}), **kw)


def with_free(devices: list[DeviceState], ws: list[WorkloadState]) -> list[DeviceState]:
    used: dict[str, float] = {}
    for w in ws:
        used[w.node] = used.get(w.node, 0.0) + w.cpu
    return [d.model_copy(update={"cpu_free": d.cpu_capacity - used.get(d.name, 0.0)}) for d in devices]


def placed(ws: list[WorkloadState], plan) -> dict[str, str]:
    return {**{w.key: w.node for w in ws}, **{m.pod: m.to_node for m in plan.moves}}


ANTI_CACHE = {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
    {"topologyKey": HOSTNAME, "labelSelector": {"matchLabels": {"app": "cache"}}}]}}}


def test_pod_spec_rules_are_read_from_the_api_object() -> None:
    body = {"metadata": {"name": "api-1", "namespace": "ns", "labels": {"app": "api"}},
            "spec": {"nodeName": "d1", "containers": [{"resources": {"requests": {"cpu": "500m"}}}],
                     "affinity": {"podAntiAffinity": {
                         "requiredDuringSchedulingIgnoredDuringExecution": [
                             {"topologyKey": HOSTNAME, "labelSelector": {"matchExpressions": [
                                 {"key": "app", "operator": "In", "values": ["cache"]}]}},
                             {"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchLabels": {"x": "y"}}}],
                         "preferredDuringSchedulingIgnoredDuringExecution": [
                             {"weight": 10, "podAffinityTerm": {"topologyKey": HOSTNAME,
                                                                "labelSelector": {"matchLabels": {"app": "api"}}}}]}},
                     "topologySpreadConstraints": [
                         {"topologyKey": HOSTNAME, "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule",
                          "labelSelector": {"matchLabels": {"app": "api"}}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    info = pod_info(body)
    c = info.constraints
    assert len(c.anti_required) == 1 and len(c.anti_preferred) == 1  # the zone term is not a device rule
    assert c.spread_required[0].max_per_device == 2
    (w,) = workload_states([info], "app", G, {}, 600, 0.0)
    assert w.constraints == c and w.labels == {"app": "api"}
    cache = pod("c", "cache", "d1")
    assert conflicts(w, [cache], respect_preferred=False) is not None
    assert conflicts(cache, [w], respect_preferred=False) is not None  # the scheduler checks both ways
    other = pod("o", "other", "d1")
    assert conflicts(w, [other], respect_preferred=False) is None


def test_two_replica_service_and_its_two_replica_partner_end_as_two_pairs() -> None:
    ws = [pod("api-0", "api", "d1"), pod("api-1", "api", "d2"),
          pod("cache-0", "cache", "d3"), pod("cache-1", "cache", "d4")]
    devs = with_free([dev(f"d{i}") for i in range(1, 5)], ws)
    plan = plan_aggregation(devs, ws, [Edge(source="api", target="cache", bytes_per_second=1e5)], POLICY)
    after = placed(ws, plan)
    # each api replica has a cache replica beside it, and no device holds two replicas of one workload
    pairs = {n: sorted(k.split("/")[1].split("-")[0] for k, v in after.items() if v == n) for n in set(after.values())}
    assert sorted(pairs.values()) == [["api", "cache"], ["api", "cache"]], pairs
    for wl in ("api", "cache"):
        assert len({after[f"ns/{wl}-0"], after[f"ns/{wl}-1"]}) == 2
    assert plan.traffic_after == pytest.approx(0.5e5)  # two of four pod pairs local: the most spread allows
    # with the policy off, the planner may pile them (the user chose so)
    off = POLICY.model_copy(update={"spread": POLICY.spread.model_copy(update={"max_replicas_per_device": 0})})
    piled = plan_aggregation(devs, ws, [Edge(source="api", target="cache", bytes_per_second=1e5)], off)
    assert piled.traffic_after == pytest.approx(0.0)


def test_required_anti_affinity_is_never_overridden_even_for_heavy_traffic() -> None:
    ws = [pod("api-0", "api", "d1", spec=ANTI_CACHE), pod("cache-0", "cache", "d2"), pod("db-0", "db", "d3")]
    devs = with_free([dev("d1"), dev("d2"), dev("d3")], ws)
    edges = [Edge(source="api", target="cache", bytes_per_second=1e7),
             Edge(source="cache", target="db", bytes_per_second=1e3)]
    for kw in ({}, {"solver_work": 0}):
        plan = plan_aggregation(devs, ws, edges, POLICY, **kw)
        after = placed(ws, plan)
        assert after["ns/api-0"] != after["ns/cache-0"]


def test_small_pod_is_moved_to_free_room_when_that_pays() -> None:
    # a and b (1 CPU each, heavy pair) on d1 and d2; both devices full; a small unrelated pod s on d2
    # leaves room for a if it moves to d3. Greedy alone cannot; the plan moves s, then a.
    ws = [pod("a", "a", "d1", cpu=1.0), pod("b", "b", "d2", cpu=1.0), pod("f1", "f1", "d1", cpu=1.0),
          pod("s", "s", "d2", cpu=1.0)]
    devs = with_free([dev("d1", 2.0), dev("d2", 2.0), dev("d3", 1.0)], ws)
    edges = [Edge(source="a", target="b", bytes_per_second=1e5)]
    greedy = plan_aggregation(devs, ws, edges, POLICY, solver_work=0)
    assert greedy.empty
    plan = plan_aggregation(devs, ws, edges, POLICY, max_moves=2)
    moves = [(m.pod, m.to_node) for m in plan.moves]
    # first an unrelated pod makes room on d3, then one of the pair joins the other (either way round)
    assert moves in ([("ns/s", "d3"), ("ns/a", "d2")], [("ns/f1", "d3"), ("ns/b", "d1")])
    assert "make room" in plan.moves[0].reason
    assert plan.traffic_after == 0 and plan.traffic_saved_per_move == pytest.approx(5e4)
    # a move cost above what the pair saves per move: nothing moves
    dear = POLICY.model_copy(update={"move_cost": 6e4})
    assert plan_aggregation(devs, ws, edges, dear, max_moves=2).empty


def test_tail_moves_that_save_less_than_their_cost_are_dropped() -> None:
    # c talks a little to a and a little more to b; moving it next to b saves less than moveCost
    ws = [pod("a", "a", "d1"), pod("b", "b", "d2"), pod("c", "c", "d1")]
    devs = with_free([dev("d1"), dev("d2")], ws)
    edges = [Edge(source="c", target="a", bytes_per_second=1e4), Edge(source="c", target="b", bytes_per_second=2e4)]
    assert not plan_aggregation(devs, ws, edges, POLICY).empty
    # the best move (b next to c) saves 2e4: worth it at a cost of 1.5e4, not at 2.5e4
    assert len(plan_aggregation(devs, ws, edges, POLICY.model_copy(update={"move_cost": 1.5e4})).moves) == 1
    assert plan_aggregation(devs, ws, edges, POLICY.model_copy(update={"move_cost": 2.5e4})).empty


@pytest.mark.parametrize("seed", range(6))
def test_plan_reaches_the_exact_optimum_share_on_small_fleets_under_a_move_cap(seed: int) -> None:
    f = _exact.generate(seed)
    g = DependencyGraph(f.workloads, f.edges)
    before = g.cross_device_traffic()
    ref = _exact.optimum(f, move_cost=POLICY.move_cost)
    # generous wall time: the figure is about the method; the plan time figure is the bench's
    plan = plan_aggregation(f.devices, f.workloads, f.edges, POLICY, max_moves=f.max_moves, solver_seconds=20)
    after = placed(f.workloads, plan)
    assert len(plan.moves) <= f.max_moves
    assert _exact.violations(f, after) == (0, 0)
    assert _exact.violations(f, ref.placement) == (0, 0)
    achievable = before - ref.traffic_after
    assert achievable > 0
    assert (before - g.cross_device_traffic(after)) >= 0.9 * achievable


def test_uncapped_replans_on_a_small_fleet_improve_strictly_and_stop() -> None:
    # one plan is bounded by CP-SAT work; planning again on its result may finish the job, but never
    # undoes it, and soon there is nothing left to move
    f = _exact.generate(3)
    ws, devs = f.workloads, f.devices
    base = {d.name: d.cpu_free + sum(w.cpu for w in ws if w.node == d.name) for d in devs}
    traffic = []
    for _ in range(4):
        plan = plan_aggregation(devs, ws, f.edges, POLICY, solver_seconds=20)
        if plan.empty:
            break
        traffic.append(plan.traffic_after)
        after = placed(ws, plan)
        ws = [w.model_copy(update={"node": after[w.key]}) for w in ws]
        used: dict[str, float] = {}
        for w in ws:
            used[w.node] = used.get(w.node, 0.0) + w.cpu
        devs = [d.model_copy(update={"cpu_free": base[d.name] - used.get(d.name, 0.0)}) for d in devs]
    else:
        pytest.fail("replanning kept finding moves")
    assert all(b < a for a, b in zip(traffic, traffic[1:], strict=False))


@pytest.mark.parametrize("solver_work", [0, 1.0])
def test_a_pods_node_selector_keeps_it_on_devices_that_carry_the_labels(solver_work: float) -> None:
    """api may only run where pool=a; its partner sits on a pool-b device with room. The plan never
    sends api there (its replacement would stay Pending): cache comes to api instead."""
    pool = {"nodeSelector": {"pool": "a"}}
    devices = [dev("a1").model_copy(update={"labels": {"pool": "a"}}),
               dev("b1").model_copy(update={"labels": {"pool": "b"}})]
    ws = [pod("api-0", "api", "a1", spec=pool), pod("cache-0", "cache", "b1")]
    edges = [Edge(source="api", target="cache", bytes_per_second=5e6, group=G)]
    plan = plan_aggregation(with_free(devices, ws), ws, edges, POLICY, solver_work=solver_work)
    assert [(m.pod, m.to_node) for m in plan.moves] == [("ns/cache-0", "a1")]
    # and when cache is the one that cannot leave, nothing moves: no device suits both
    pinned = [ws[0], pod("cache-0", "cache", "b1", spec={"nodeSelector": {"pool": "b"}})]
    plan = plan_aggregation(with_free(devices, pinned), pinned, edges, POLICY, solver_work=solver_work)
    assert plan.empty
    assert "nodeSelector" in plan.skipped[0].reason


def test_node_selector_is_read_from_the_pod_spec() -> None:
    c = pod_constraints({"nodeSelector": {"pool": "a", "zone": "z1"}})
    assert c.node_selector == (("pool", "a"), ("zone", "z1")) and c.empty

"""Remediation targets: headroom, margin over the requirements, spread, and where dependencies run."""

from __future__ import annotations

from collections import Counter

from edgeweave.api.context import SourceKind
from edgeweave.api.workloadgroup import Requirement
from edgeweave.placement.breach import margin, min_margin
from edgeweave.placement.context import MISSING, ContextValue
from edgeweave.placement.graph import DependencyGraph
from edgeweave.placement.model import DeviceState, Edge, WorkloadState
from edgeweave.placement.remediate import (
    margin_scorer,
    plan_remediation,
    requirements_checker,
    spread_hash,
    target_quality,
    target_rank,
)

P = SourceKind.Prometheus
BATTERY = Requirement.model_validate({"element": "BatteryPercent", "operator": "Gte", "value": "40",
                                      "hysteresis": 10})
LATENCY = Requirement.model_validate({"element": "UplinkLatencyMs", "operator": "Lte", "value": "80"})
GiB = 1024.0**3


def _ctx(**values) -> dict[str, ContextValue]:
    return {k.replace("__", "/"): ContextValue(v, 0.0, P) for k, v in values.items()}


def _dev(name: str, cpu_free: float = 4.0) -> DeviceState:
    return DeviceState(name=name, cpu_capacity=4.0, memory_capacity=8 * GiB, cpu_free=cpu_free, memory_free=8 * GiB)


def _w(key: str, node: str, cpu: float = 0.1, group: str = "ns/g", workload: str | None = None) -> WorkloadState:
    return WorkloadState(key=f"ns/{key}", workload=workload or key, group=group, node=node, cpu=cpu)


def _plan(devices, workloads, battery, reqs=None, **kw):
    groups = {w.group for w in workloads}
    reqs = reqs or {g: [BATTERY] for g in groups}
    ctxs = {n: _ctx(BatteryPercent=v) for n, v in battery.items()}
    breached = {n: ["battery low"] for n, v in battery.items() if v < 40}
    return plan_remediation(devices, workloads, breached, requirements_checker(reqs, ctxs),
                            margin=margin_scorer(reqs, ctxs), **kw)


def test_margin_measures_distance_past_the_recovery_bound() -> None:
    assert margin(BATTERY, _ctx(BatteryPercent=30.0)) == 0.0  # breached
    assert margin(BATTERY, _ctx(BatteryPercent=45.0)) == 0.0  # inside the hysteresis band: not even valid
    assert margin(BATTERY, _ctx(BatteryPercent=50.0)) == 0.0  # just at the bound
    assert abs(margin(BATTERY, _ctx(BatteryPercent=60.0)) - 0.25) < 1e-9
    assert margin(BATTERY, _ctx(BatteryPercent=100.0)) == 1.0
    assert margin(BATTERY, _ctx(BatteryPercent=MISSING)) == 0.0
    # Best uplink: the best one's margin.
    assert abs(margin(LATENCY, _ctx(UplinkLatencyMs__mpls=60.0, UplinkLatencyMs__lte=20.0)) - 0.75) < 1e-9
    assert min_margin([BATTERY, LATENCY], _ctx(BatteryPercent=100.0, UplinkLatencyMs__a=76.0)) == 0.05
    assert min_margin([], {}) == 1.0


def test_rank_puts_dependencies_then_spread_then_quality() -> None:
    best = target_rank(10.0, 0, 5, 0, 9)
    assert best < target_rank(0.0, 1, 0, 20, 0)  # traffic to partners beats everything
    assert target_rank(0.0, 1, 5, 0, 9) < target_rank(0.0, 0, 0, 20, 0)  # then declared peers
    assert target_rank(0.0, 0, 0, 0, 9) < target_rank(0.0, 0, 1, 20, 0)  # then fewer replicas there
    assert target_rank(0.0, 0, 0, 20, 9) < target_rank(0.0, 0, 0, 19, 0)  # then margin and headroom
    assert target_quality(1.0, 1.0) == 20 and target_quality(0.0, 0.0) == 0
    assert target_quality(1.0, 0.99) == target_quality(1.0, 1.0)  # within a step: the hash decides


def test_twenty_workloads_from_one_breached_device_spread_over_the_good_ones() -> None:
    devices = [_dev("bad", 2.0)] + [_dev(f"ok-{i}") for i in range(5)]
    ws = [_w(f"app{i:02d}", "bad") for i in range(20)]
    plan = _plan(devices, ws, {"bad": 10.0, **{f"ok-{i}": 100.0 for i in range(5)}})
    assert len(plan.moves) == 20
    per = Counter(m.to_node for m in plan.moves)
    assert len(per) == 5 and max(per.values()) <= 6, per


def test_a_device_barely_past_the_threshold_is_a_poor_target() -> None:
    devices = [_dev("bad"), _dev("thin"), _dev("deep", 3.0)]
    plan = _plan(devices, [_w("x", "bad")], {"bad": 10.0, "thin": 51.0, "deep": 100.0})
    assert [m.to_node for m in plan.moves] == ["deep"]  # less headroom, far more margin


def test_two_groups_planning_on_one_snapshot_do_not_pick_the_same_devices() -> None:
    devices = [_dev("bad")] + [_dev(f"ok-{i}") for i in range(8)]
    battery = {"bad": 10.0, **{f"ok-{i}": 100.0 for i in range(8)}}
    targets = set()
    for g in range(4):  # each group plans alone, on the same devices, as the operator's rounds do
        plan = _plan(devices, [_w(f"g{g}-app", "bad", group=f"ns/g{g}")], battery)
        targets |= {m.to_node for m in plan.moves}
    assert len(targets) >= 3, targets


def test_replicas_of_one_workload_are_spread() -> None:
    devices = [_dev("bad")] + [_dev(f"ok-{i}") for i in range(3)]
    ws = [_w(f"web-{i}", "bad", workload="web") for i in range(3)]
    plan = _plan(devices, ws, {"bad": 10.0, "ok-0": 100.0, "ok-1": 100.0, "ok-2": 100.0})
    assert sorted(m.to_node for m in plan.moves) == ["ok-0", "ok-1", "ok-2"]


def test_moves_toward_the_partner_it_talks_to_and_keeps_a_pair_together() -> None:
    devices = [_dev("bad")] + [_dev(f"ok-{i}") for i in range(4)]
    ws = [_w("api", "bad"), _w("cache", "ok-2", cpu=1.0), _w("front", "bad"), _w("store", "bad")]
    edges = [Edge(source="api", target="cache", bytes_per_second=1e6),
             Edge(source="front", target="store", bytes_per_second=1e6)]
    graph = DependencyGraph(ws, edges)
    co = [frozenset(p for wk in comp for p in graph.members[wk]) for comp in graph.components()]
    plan = _plan(devices, ws, {"bad": 10.0, **{f"ok-{i}": 100.0 for i in range(4)}}, co_dependent=co,
                 graph=graph)
    to = {m.pod: m.to_node for m in plan.moves}
    assert to["ns/api"] == "ok-2"  # toward its partner, although ok-2 has the least headroom
    assert to["ns/front"] == to["ns/store"]  # the pair on the breached device moves as one


def test_spread_hash_is_stable_and_differs_by_workload() -> None:
    assert spread_hash("a", "d1") == spread_hash("a", "d1")
    orders = {tuple(sorted(range(6), key=lambda i, w=w: spread_hash(w, f"d{i}"))) for w in "abcdefgh"}
    assert len(orders) > 1

"""Aggregation and defragmentation on small hand-built fleets: each rule, one case that would catch its breach."""

from __future__ import annotations

import random

import pytest

from edgeweave.api.workloadgroup import AggregationPolicy
from edgeweave.placement.aggregate import plan_aggregation, plan_defragmentation
from edgeweave.placement.graph import cross_device_traffic
from edgeweave.placement.model import DeviceState, Edge, Plan, PlanKind, WorkloadState

G = "ns/shop"
POLICY = AggregationPolicy()


def dev(name: str, cpu: float = 4.0, free: float = 4.0, **kw) -> DeviceState:
    return DeviceState(name=name, cpu_capacity=cpu, memory_capacity=8e9, cpu_free=free, memory_free=8e9, **kw)


def pod(name: str, node: str, cpu: float = 0.5, **kw) -> WorkloadState:
    return WorkloadState(key=f"ns/{name}", workload=name, group=G, node=node, cpu=cpu, **kw)


def edge(a: str, b: str, bps: float) -> Edge:
    return Edge(source=a, target=b, bytes_per_second=bps)


def free_after(devices: list[DeviceState], workloads: list[WorkloadState]) -> list[DeviceState]:
    """Devices whose free capacity is what these pods' requests leave."""
    used: dict[str, float] = {}
    for w in workloads:
        used[w.node] = used.get(w.node, 0.0) + w.cpu
    return [d.model_copy(update={"cpu_free": d.cpu_capacity - used.get(d.name, 0.0)}) for d in devices]


def apply(workloads: list[WorkloadState], plan: Plan) -> list[WorkloadState]:
    to = {m.pod: m.to_node for m in plan.moves}
    return [w.model_copy(update={"node": to[w.key]}) if w.key in to else w for w in workloads]


def test_split_pair_is_joined_with_one_move_and_a_reason() -> None:
    ws = [pod("checkout-api", "d1"), pod("checkout-cache", "d2"), pod("other", "d1")]
    devs = free_after([dev("d1"), dev("d2")], ws)
    plan = plan_aggregation(devs, ws, [edge("checkout-api", "checkout-cache", 1_200_000)], POLICY)
    assert plan.kind is PlanKind.Aggregation
    assert len(plan.moves) == 1
    m = plan.moves[0]
    assert {m.from_node, m.to_node} == {"d1", "d2"}
    assert m.gain == pytest.approx(1_200_000)
    assert plan.traffic_before == pytest.approx(1_200_000) and plan.traffic_after == 0.0
    partner = "checkout-cache" if m.workload == "checkout-api" else "checkout-api"
    assert m.reason == f"co-locate with {partner} on {m.to_node}: removes 1.2 MB/s of cross-device traffic"
    assert "1 move" in plan.summary and "1.2 MB/s" in plan.summary


def test_fewest_moves_gathers_on_the_device_holding_most_of_the_group() -> None:
    ws = [pod("a", "d1"), pod("b", "d1"), pod("c", "d1"), pod("d", "d2")]
    edges = [edge("a", "b", 1e5), edge("b", "c", 1e5), edge("c", "d", 1e4)]
    plan = plan_aggregation(free_after([dev("d1"), dev("d2")], ws), ws, edges, POLICY)
    assert [(m.workload, m.to_node) for m in plan.moves] == [("d", "d1")]


def test_chain_spread_over_three_devices_is_gathered_although_no_single_move_helps() -> None:
    # b sits between a and c: moving any one pod alone leaves as much traffic cross-device as before
    ws = [pod("a", "d1"), pod("b", "d2"), pod("c", "d3")]
    edges = [edge("a", "b", 5e4), edge("b", "c", 5e4)]
    plan = plan_aggregation(free_after([dev("d1"), dev("d2"), dev("d3")], ws), ws, edges, POLICY)
    assert len(plan.moves) == 2 and len({m.to_node for m in plan.moves}) == 1
    assert plan.traffic_after == 0.0


def test_requests_decide_fit_and_skipped_says_what_is_needed() -> None:
    # each device has 0.2 CPU of requests free: neither pod (1.5 CPU) fits beside the other
    ws = [pod("checkout-api", "d1", cpu=1.5), pod("checkout-cache", "d2", cpu=1.5)]
    devs = [dev("d1", cpu=2, free=0.2), dev("d2", cpu=2, free=0.2)]
    plan = plan_aggregation(devs, ws, [edge("checkout-api", "checkout-cache", 1e6)], POLICY)
    assert plan.empty
    assert plan.traffic_after == plan.traffic_before == pytest.approx(1e6)
    assert len(plan.skipped) == 1
    assert plan.skipped[0].workload == "checkout-api+checkout-cache"
    assert plan.skipped[0].reason.startswith("no device can hold checkout-api+checkout-cache (needs 3.0 CPU")


def test_group_moves_to_a_third_device_when_neither_host_has_room() -> None:
    ws = [pod("api", "d1", cpu=1.5), pod("cache", "d2", cpu=1.5)]
    devs = [dev("d1", cpu=2, free=0.2), dev("d2", cpu=2, free=0.2), dev("big", cpu=8, free=8), dev("fit", cpu=4, free=3)]
    plan = plan_aggregation(devs, ws, [edge("api", "cache", 1e6)], POLICY)
    # both go to the tightest device with room for both (best fit keeps the big one free)
    assert sorted((m.workload, m.to_node) for m in plan.moves) == [("api", "fit"), ("cache", "fit")]
    assert plan.traffic_after == 0.0


def test_context_requirements_are_kept() -> None:
    ws = [pod("api", "d1"), pod("cache", "d2")]
    devs = free_after([dev("d1", context={"PowerSource": "Battery"}), dev("d2", context={"PowerSource": "Grid"})], ws)

    def grid_only(w: WorkloadState, d: DeviceState) -> bool:
        return d.context.get("PowerSource") == "Grid"

    plan = plan_aggregation(devs, ws, [edge("api", "cache", 1e6)], POLICY, requirements_ok=grid_only)
    assert [(m.workload, m.to_node) for m in plan.moves] == [("api", "d2")]

    def nowhere(w: WorkloadState, d: DeviceState) -> bool:
        return False

    plan = plan_aggregation(devs, ws, [edge("api", "cache", 1e6)], POLICY, requirements_ok=nowhere)
    assert plan.empty
    assert "context requirements" in plan.skipped[0].reason


@pytest.mark.parametrize("flag", ["movable", "cooling_down"])
def test_pinned_and_cooling_pods_never_move_but_partners_come_to_them(flag: str) -> None:
    value = False if flag == "movable" else True
    ws = [pod("db", "d1", **{flag: value}), pod("api", "d2")]
    devs = free_after([dev("d1"), dev("d2")], ws)
    plan = plan_aggregation(devs, ws, [edge("api", "db", 1e6)], POLICY)
    assert [(m.workload, m.to_node) for m in plan.moves] == [("api", "d1")]
    ws2 = [pod("db", "d1", **{flag: value}), pod("api", "d2", **{flag: value})]
    plan2 = plan_aggregation(devs, ws2, [edge("api", "db", 1e6)], POLICY)
    assert plan2.empty
    assert "cannot share a device" in plan2.skipped[0].reason


def test_gains_below_the_absolute_floor_move_nothing() -> None:
    ws = [pod("api", "d1"), pod("cache", "d2")]
    devs = free_after([dev("d1"), dev("d2")], ws)
    assert plan_aggregation(devs, ws, [edge("api", "cache", 900)], POLICY).empty  # floor is 1024 B/s
    assert not plan_aggregation(devs, ws, [edge("api", "cache", 2000)], POLICY).empty


def test_single_pod_move_needs_the_gain_threshold_of_its_traffic() -> None:
    # hub sits with y on d3 and also talks to x on d2; x and y may not move.
    # Moving hub to d2 saves (x - y); it must reach gain_threshold of hub's whole traffic (x + y).
    def case(x: float, y: float, threshold: float) -> Plan:
        ws = [pod("hub", "d3"), pod("x", "d2", movable=False), pod("y", "d3", movable=False)]
        devs = free_after([dev("d2"), dev("d3")], ws)
        return plan_aggregation(devs, ws, [edge("hub", "x", x), edge("hub", "y", y)],
                                AggregationPolicy(gain_threshold=threshold))
    # 60k vs 40k: moving next to x saves 20k = 20% of 100k
    assert case(60e3, 40e3, 0.25).empty
    moved = case(60e3, 40e3, 0.15)
    assert [(m.workload, m.to_node) for m in moved.moves] == [("hub", "d2")]
    assert moved.moves[0].gain == pytest.approx(20e3)
    assert "below" not in moved.summary and case(60e3, 40e3, 0.25).skipped


def test_move_cap_is_respected_and_repeated_plans_converge() -> None:
    ws, edges = [], []
    for i in range(6):  # six split pairs
        ws += [pod(f"a{i}", "d1", cpu=0.25), pod(f"b{i}", "d2", cpu=0.25)]
        edges.append(edge(f"a{i}", f"b{i}", 1e4 * (i + 1)))
    devs = [dev("d1"), dev("d2"), dev("d3")]
    full = plan_aggregation(free_after(devs, ws), ws, edges, POLICY)
    assert len(full.moves) == 6
    rounds, total = 0, 0
    while True:
        plan = plan_aggregation(free_after(devs, ws), ws, edges, POLICY, max_moves=4)
        assert len(plan.moves) <= 4
        if plan.empty:
            break
        if rounds == 0:  # the most valuable pairs go first
            assert {m.workload[1:] for m in plan.moves} == {"5", "4", "3", "2"}
            assert any("deferred" in s.reason for s in plan.skipped)
        ws = apply(ws, plan)
        total += len(plan.moves)
        rounds += 1
    assert rounds == 2 and total == 6
    assert cross_device_traffic(ws, edges) == 0.0


def test_per_group_cap() -> None:
    ws = [WorkloadState(key=f"{g}/{n}", workload=n, group=g, node=node, cpu=0.1)
          for g in ("ns/g1", "ns/g2") for n, node in (("a", "d1"), ("b", "d2"), ("c", "d3"))]
    edges = [Edge(source="a", target="b", bytes_per_second=1e5), Edge(source="b", target="c", bytes_per_second=1e5)]
    devs = free_after([dev("d1"), dev("d2"), dev("d3")], ws)
    group_of = {w.key: w.group for w in ws}
    # each chain needs two moves to gather; with one per group, each group makes its best single step
    plan = plan_aggregation(devs, ws, edges, POLICY, max_moves_per_group=1)
    assert sorted(group_of[m.pod] for m in plan.moves) == ["ns/g1", "ns/g2"]
    assert all(m.gain > 0 for m in plan.moves)
    assert len(plan_aggregation(devs, ws, edges, POLICY).moves) == 4


def test_same_input_in_any_order_gives_the_same_plan() -> None:
    rng = random.Random(3)
    ws = [pod(f"s{i}", f"d{rng.randrange(5)}", cpu=0.2) for i in range(30)]
    edges = [edge(f"s{i}", f"s{j}", rng.lognormvariate(9, 1.5)) for i in range(30) for j in range(i + 1, 30)
             if rng.random() < 0.1]
    devs = free_after([dev(f"d{i}") for i in range(5)], ws)
    # the CP-SAT pass is deterministic under its work limit; its wall limit (which a loaded machine
    # may hit first) is lifted so the work limit is the one that binds
    plan = plan_aggregation(devs, ws, edges, POLICY, max_moves=7, solver_seconds=30)
    for _ in range(3):
        rng.shuffle(ws)
        rng.shuffle(edges)
        rng.shuffle(devs)
        assert plan_aggregation(devs, ws, edges, POLICY, max_moves=7, solver_seconds=30) == plan


def test_disabled_policy_plans_nothing() -> None:
    ws = [pod("api", "d1"), pod("cache", "d2")]
    plan = plan_aggregation(free_after([dev("d1"), dev("d2")], ws), ws, [edge("api", "cache", 1e6)],
                            AggregationPolicy(enabled=False))
    assert plan.empty and "disabled" in plan.summary


# --- defragmentation -------------------------------------------------------------------------------------

DEFRAG = AggregationPolicy(defragment=True, defragment_below_utilisation=0.3)


def test_light_devices_are_drained_onto_busier_ones_and_freed() -> None:
    ws = [pod("busy1", "d1", cpu=2.0), pod("busy2", "d2", cpu=2.0), pod("lone", "d3", cpu=0.4),
          pod("pair-a", "d4", cpu=0.3), pod("pair-b", "d4", cpu=0.3)]
    edges = [edge("pair-a", "pair-b", 1e6)]
    devs = free_after([dev(f"d{i}") for i in range(1, 5)], ws)
    plan = plan_defragmentation(devs, ws, edges, DEFRAG)
    assert plan.kind is PlanKind.Defragmentation
    assert plan.freed_devices == ("d3", "d4")
    dest = {m.workload: m.to_node for m in plan.moves}
    assert set(dest) == {"lone", "pair-a", "pair-b"}
    assert dest["pair-a"] == dest["pair-b"]  # co-located partners travel together
    assert all(d in ("d1", "d2") for d in dest.values())
    assert plan.traffic_after <= plan.traffic_before
    assert all("to free d" in m.reason for m in plan.moves)
    # and planning again on the result does nothing
    ws2 = apply(ws, plan)
    assert plan_defragmentation(free_after(devs, ws2), ws2, edges, DEFRAG).empty


def test_defragmentation_never_raises_cross_device_traffic() -> None:
    # lone talks to busy1 heavily: it must go next to busy1, not just anywhere with room
    ws = [pod("busy1", "d1", cpu=2.0), pod("busy2", "d2", cpu=2.5), pod("lone", "d3", cpu=0.4)]
    edges = [edge("lone", "busy1", 1e6)]
    devs = free_after([dev("d1"), dev("d2"), dev("d3")], ws)
    plan = plan_defragmentation(devs, ws, edges, DEFRAG)
    assert [(m.workload, m.to_node) for m in plan.moves] == [("lone", "d1")]
    assert plan.traffic_after == 0.0 and "removes 1.0 MB/s" in plan.moves[0].reason


def test_a_device_is_drained_whole_or_not_at_all() -> None:
    ws = [pod("busy", "d1", cpu=2.0), pod("x", "d2", cpu=0.5), pod("stuck", "d2", cpu=0.5, movable=False)]
    devs = free_after([dev("d1"), dev("d2", cpu=8, free=8)], ws)
    plan = plan_defragmentation(devs, ws, [], DEFRAG)
    assert plan.empty
    assert plan.skipped[0].reason == "cannot free d2: stuck is not movable"
    # no busier device has room: nothing moves either
    ws = [pod("busy", "d1", cpu=3.8), pod("x", "d2", cpu=0.5), pod("y", "d2", cpu=0.5)]
    plan = plan_defragmentation(free_after([dev("d1"), dev("d2", cpu=8, free=8)], ws), ws, [], DEFRAG)
    assert plan.empty and "cannot free d2" in plan.skipped[0].reason


def test_two_light_devices_do_not_swap_back_and_forth() -> None:
    ws = [pod("p", "d1", cpu=0.4), pod("q", "d2", cpu=0.4)]
    devs = free_after([dev("d1"), dev("d2")], ws)
    plan = plan_defragmentation(devs, ws, [], DEFRAG)
    assert len(plan.moves) == 1 and len(plan.freed_devices) == 1
    ws2 = apply(ws, plan)
    assert plan_defragmentation(free_after(devs, ws2), ws2, [], DEFRAG).empty


def test_defragmentation_off_by_default() -> None:
    ws = [pod("p", "d1", cpu=0.4), pod("q", "d2", cpu=2.4)]
    plan = plan_defragmentation(free_after([dev("d1"), dev("d2")], ws), ws, [], AggregationPolicy())
    assert plan.empty and "disabled" in plan.summary


def test_without_dependencies_the_plan_is_the_one_on_the_whole_fleet() -> None:
    """No edges: the planner looks only at the devices the workloads are on, and says the same."""
    from edgeweave.placement.aggregate import SOLVER_WORK, _plan_aggregation

    fleet = [dev(f"d{i}") for i in range(300)]
    ws = [pod("a", "d1"), pod("b", "d7"), pod("c", "gone"), pod("d", "d7", cooling_down=True)]
    fast = plan_aggregation(fleet, ws, [], POLICY)
    whole = _plan_aggregation(fleet, ws, [], POLICY, None, 2048.0, None, None, 20, None, SOLVER_WORK)
    assert fast == whole
    assert not fast.moves and fast.skipped == whole.skipped and fast.summary == whole.summary

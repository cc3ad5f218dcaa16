"""Planner properties on generated fleets: feasibility, idempotence, no oscillation, speed, and the baselines."""

from __future__ import annotations

import math
import random

import pytest

from edgeweave.api.workloadgroup import AggregationPolicy
from edgeweave.placement.aggregate import plan_aggregation, plan_defragmentation
from edgeweave.placement.baselines import low_node_utilisation, no_action, random_feasible
from edgeweave.placement.graph import DependencyGraph
from edgeweave.placement.model import Plan
from edgeweave.sim.workloads import FleetSpec, SimFleet, generate_fleet, placement_violations

POLICY = AggregationPolicy()


@pytest.fixture(scope="module")
def fleet() -> SimFleet:
    return generate_fleet(FleetSpec(devices=120, seed=7))


def plan(f: SimFleet, policy: AggregationPolicy = POLICY, **kw) -> Plan:
    return plan_aggregation(f.devices, f.workloads, f.edges, policy, requirements_ok=f.requirements_ok, **kw)


def applied(f: SimFleet, p: Plan, cooling: frozenset[str] = frozenset()) -> SimFleet:
    return f.apply({**f.placement(), **{m.pod: m.to_node for m in p.moves}}, cooling)


def test_generated_fleet_is_microservice_shaped_and_split(fleet: SimFleet) -> None:
    g = DependencyGraph(fleet.workloads, fleet.edges)
    comps = g.components()
    assert len(fleet.workloads) == 1200 and len(comps) > 150
    assert all(len(c) <= 8 for c in comps)
    split = sum(1 for c in comps if len({n for k in c for n in g.counts()[k]}) > 1)
    assert split / len(comps) > 0.8  # a spreading scheduler scatters most apps
    rates = sorted((w for _, _, w in g.pairs()), reverse=True)
    assert sum(rates[: len(rates) // 10]) > 0.4 * sum(rates)  # heavy tail: top 10% edges carry much of it
    assert not placement_violations(fleet, fleet.placement())


def test_plan_is_feasible_and_keeps_every_rule(fleet: SimFleet) -> None:
    rng = random.Random(1)
    cooling = frozenset(w.key for w in fleet.workloads if rng.random() < 0.05)
    f = fleet.apply(fleet.placement(), cooling)
    p = plan(f)
    assert p.traffic_after < 0.1 * p.traffic_before
    assert not placement_violations(f, {**f.placement(), **{m.pod: m.to_node for m in p.moves}})
    assert len({m.pod for m in p.moves}) == len(p.moves)
    assert all(m.reason and m.from_node != m.to_node for m in p.moves)
    assert not any(m.pod in cooling for m in p.moves)
    g = DependencyGraph(f.workloads, f.edges)
    assert p.traffic_after == pytest.approx(g.cross_device_traffic({**f.placement(),
                                                                     **{m.pod: m.to_node for m in p.moves}}))


def greedy(f: SimFleet, policy: AggregationPolicy = POLICY, **kw) -> Plan:
    """The greedy alone: its properties hold exactly. The CP-SAT pass after it is bounded by time, so
    how far it gets in one plan depends on the machine; its own properties are tested below and on
    small fleets (test_spread_and_solver)."""
    return plan(f, policy, solver_work=0, **kw)


def test_planning_again_on_the_result_moves_nothing(fleet: SimFleet) -> None:
    p = greedy(fleet)
    assert not p.empty
    again = applied(fleet, p)
    assert greedy(again).empty
    # also when the moved pods are then cooling down, as the operator marks them
    assert greedy(applied(fleet, p, frozenset(m.pod for m in p.moves))).empty


def test_plans_with_the_solver_improve_strictly_until_nothing_is_left(fleet: SimFleet) -> None:
    f, traffic = fleet, []
    for _ in range(8):
        p = plan(f, solver_seconds=30)
        if p.empty:
            break
        traffic.append(p.traffic_after)
        assert not placement_violations(fleet, {**f.placement(), **{m.pod: m.to_node for m in p.moves}})
        f = applied(f, p)
    else:
        pytest.fail("replanning with the solver kept finding moves")
    assert all(b < a for a, b in zip(traffic, traffic[1:], strict=False))
    assert traffic[-1] <= greedy(fleet).traffic_after


@pytest.mark.parametrize(("replicas_per_device", "left"), [(0, 0.05), (1, 0.10)])
def test_capped_intervals_converge_monotonically_and_stay_converged(fleet: SimFleet, replicas_per_device: int,
                                                                   left: float) -> None:
    # with the default spread policy replicas stay apart, so each pairs with a partner replica
    # instead of all piling onto one device: part of the traffic stays cross-device by design
    policy = POLICY.model_copy(update={"spread": POLICY.spread.model_copy(
        update={"max_replicas_per_device": replicas_per_device})})
    f, moved_at, last = fleet, {}, math.inf
    placement = fleet.placement()
    for r in range(60):
        cooling = frozenset(k for k, at in moved_at.items() if r - at < 10)
        f = fleet.apply(placement, cooling)
        # the greedy's own property (the CP-SAT pass is time-limited, so on a busy machine how much
        # of it a capped interval gets varies; its properties are tested on small fleets)
        p = plan(f, policy, max_moves_per_group=2, solver_work=0)
        assert all(n <= 2 for n in _per_group(f, p).values())
        if p.empty and not cooling:
            break
        if not p.empty:
            assert p.traffic_before <= last + 1e-6
            last = p.traffic_after
        for m in p.moves:
            placement[m.pod] = m.to_node
            moved_at[m.pod] = r
    else:
        pytest.fail("capped planning did not converge")
    start = DependencyGraph(fleet.workloads, fleet.edges).cross_device_traffic()
    assert last <= left * start  # cooldowns and caps change the path, not the outcome's order
    assert plan(fleet.apply(placement), policy, solver_work=0).empty


def _per_group(f: SimFleet, p: Plan) -> dict[str, int]:
    group = {w.key: w.group for w in f.workloads}
    out: dict[str, int] = {}
    for m in p.moves:
        out[group[m.pod]] = out.get(group[m.pod], 0) + 1
    return out


def test_traffic_fluctuations_below_the_threshold_never_undo_or_redo_moves(fleet: SimFleet) -> None:
    first = greedy(fleet)
    settled = applied(fleet, first)
    g = DependencyGraph(settled.workloads, settled.edges)
    touched = {g.wkey_of[m.pod] for m in first.moves}
    touched_groups = {c for c in g.components() if touched & set(c)}
    rng = random.Random(5)
    for _ in range(5):
        wobble = [e.model_copy(update={"bytes_per_second": e.bytes_per_second * rng.uniform(0.9, 1.1),
                                       "requests_per_second": e.requests_per_second * rng.uniform(0.9, 1.1)})
                  for e in settled.edges]
        noisy = SimFleet(devices=settled.devices, workloads=settled.workloads, edges=wobble,
                         requirements=settled.requirements)
        p = greedy(noisy)
        # groups the planner moved are settled with a margin: +-10% noise (half the 20% threshold) moves
        # none of them. Only a group that sat right at a trigger (e.g. 1,000 B/s against a 1,024 B/s
        # floor) may tip over, once, and it then stays gathered.
        # A touched group may still hold a pair within noise of the single-move trigger (moveCost
        # plus its margin): only such a move may appear, never one that noise made out of nothing.
        trigger = max(POLICY.min_gain_bytes_per_second, POLICY.move_cost * (1 + POLICY.gain_threshold))
        for m in p.moves:
            comp = next(c for c in g.components() if g.wkey_of[m.pod] in c)
            assert comp not in touched_groups or m.gain < 1.1 * trigger, m
        assert len(p.moves) <= 3  # of 1,200 pods
        if p.moves:
            again = applied(noisy, p)
            assert greedy(again).empty


def test_noise_on_a_settled_group_moves_nothing() -> None:
    # hub stays with y (pinned); x (pinned elsewhere) pulls less than the threshold. Wobble both by
    # +-15% many times: still below the 20% threshold of hub's traffic, so nothing moves.
    from edgeweave.placement.model import DeviceState, Edge, WorkloadState
    ws = [WorkloadState(key="ns/hub", workload="hub", group="g", node="d1", cpu=0.1),
          WorkloadState(key="ns/y", workload="y", group="g", node="d1", cpu=0.1, movable=False),
          WorkloadState(key="ns/x", workload="x", group="g", node="d2", cpu=0.1, movable=False)]
    devs = [DeviceState(name=n, cpu_capacity=4, memory_capacity=8e9, cpu_free=3.8, memory_free=8e9)
            for n in ("d1", "d2")]
    rng = random.Random(9)
    for _ in range(50):
        edges = [Edge(source="hub", target="y", bytes_per_second=50e3 * rng.uniform(0.85, 1.15)),
                 Edge(source="hub", target="x", bytes_per_second=50e3 * rng.uniform(0.85, 1.15))]
        assert plan_aggregation(devs, ws, edges, POLICY).empty


def test_far_less_cross_device_traffic_than_every_baseline(fleet: SimFleet) -> None:
    g = DependencyGraph(fleet.workloads, fleet.edges)
    ours = plan(fleet).traffic_after
    baselines = {
        "none": no_action(fleet.workloads),
        "lnu": low_node_utilisation(fleet.devices, fleet.workloads, requirements_ok=fleet.requirements_ok),
        "random": random_feasible(fleet.devices, fleet.workloads, seed=3, requirements_ok=fleet.requirements_ok),
    }
    for name, placement in baselines.items():
        assert not placement_violations(fleet, placement), name
        assert ours <= 0.5 * g.cross_device_traffic(placement), name


def test_low_node_utilisation_moves_from_over_to_under_utilised_devices(fleet: SimFleet) -> None:
    placement = low_node_utilisation(fleet.devices, fleet.workloads, requirements_ok=fleet.requirements_ok)
    devices = {d.name: d for d in fleet.devices}
    moved = [w for w in fleet.workloads if placement[w.key] != w.node]
    assert moved  # the fleet has empty new devices and >50% old ones
    for w in moved:  # only overutilised devices lose pods
        assert devices[w.node].cpu_used_fraction > 0.5 or 1 - devices[w.node].memory_free / devices[w.node].memory_capacity > 0.5
    # the scheduler puts each on the least allocated device that fits (other overutilised devices may
    # have become that by shedding pods first): mostly the new, empty ones
    assert sum(1 for w in moved if devices[placement[w.key]].cpu_used_fraction < 0.2) >= 0.5 * len(moved)
    assert low_node_utilisation(fleet.devices, fleet.workloads, requirements_ok=fleet.requirements_ok) == placement


def test_random_feasible_is_seeded() -> None:
    f = generate_fleet(FleetSpec(devices=30, seed=2))
    a = random_feasible(f.devices, f.workloads, seed=1, requirements_ok=f.requirements_ok)
    assert a == random_feasible(f.devices, f.workloads, seed=1, requirements_ok=f.requirements_ok)
    assert a != random_feasible(f.devices, f.workloads, seed=2, requirements_ok=f.requirements_ok)
    assert not placement_violations(f, a)


def test_defragmentation_after_aggregation_frees_devices_without_adding_traffic(fleet: SimFleet) -> None:
    settled = applied(fleet, greedy(fleet))
    d = plan_defragmentation(settled.devices, settled.workloads, settled.edges,
                             AggregationPolicy(defragment=True), requirements_ok=settled.requirements_ok)
    assert d.freed_devices and d.traffic_after <= d.traffic_before + 1e-6
    after = applied(settled, d)
    assert not placement_violations(settled, after.placement())
    on = {w.node for w in after.workloads}
    assert not on & set(d.freed_devices)
    assert plan_defragmentation(after.devices, after.workloads, after.edges, AggregationPolicy(defragment=True),
                                requirements_ok=after.requirements_ok).empty
    assert greedy(after).empty  # packing does not give aggregation anything to undo


@pytest.mark.timeout(360)  # fleet generation alone took >120 s at load 20 on 2 cores; nothing here is timed
def test_plans_a_thousand_devices_and_ten_thousand_pods() -> None:
    # Plan time is a benchmark figure (make bench-aggregation: plan_seconds_1000_devices), not a timed test.
    f = generate_fleet(FleetSpec(devices=1000, seed=11))
    assert len(f.workloads) == 10_000
    p = plan(f, max_moves_per_group=5)
    assert p.traffic_after < 0.2 * p.traffic_before

from __future__ import annotations

import random

from edgeweave.api.context import SourceKind
from edgeweave.api.workloadgroup import ActuationLimits, Requirement
from edgeweave.placement.breach import BreachReason
from edgeweave.placement.context import ContextValue
from edgeweave.placement.model import DeviceState, PlanKind, WorkloadState
from edgeweave.placement.remediate import (
    plan_remediation,
    requirements_checker,
    requirements_describer,
    taint_decisions,
)

BATTERY = Requirement.model_validate({"element": "BatteryPercent", "operator": "Gte", "value": "40",
                                      "hysteresis": 10})
REQS = {"ns/g": [BATTERY]}
GiB = 1024.0**3


def _dev(name: str, cpu_free: float = 4.0, cap: float = 4.0, schedulable: bool = True) -> DeviceState:
    return DeviceState(name=name, cpu_capacity=cap, memory_capacity=8 * GiB, cpu_free=cpu_free,
                       memory_free=8 * GiB, schedulable=schedulable)


def _w(key: str, node: str, cpu: float = 0.5, group: str = "ns/g", **kw) -> WorkloadState:
    return WorkloadState(key=f"ns/{key}", workload=key.split("-")[0], group=group, node=node, cpu=cpu, **kw)


def _ctxs(battery: dict[str, float]) -> dict[str, dict[str, ContextValue]]:
    return {n: {"BatteryPercent": ContextValue(v, 0.0, SourceKind.Prometheus)} for n, v in battery.items()}


def _plan(devices, workloads, battery, breached=None, **kw):
    ok = requirements_checker(REQS, _ctxs(battery))
    breached = breached if breached is not None else {n: ["battery low"] for n, v in battery.items() if v < 40}
    return plan_remediation(devices, workloads, breached, ok, describe=requirements_describer(REQS), **kw)


def test_moves_to_least_loaded_valid_target() -> None:
    devices = [_dev("a"), _dev("b", cpu_free=1.0), _dev("c", cpu_free=3.0), _dev("d", cpu_free=4.0)]
    battery = {"a": 20.0, "b": 90.0, "c": 90.0, "d": 45.0}  # d is inside the hysteresis band: not a target
    plan = _plan(devices, [_w("x-1", "a")], battery)
    assert plan.kind is PlanKind.Remediation
    assert [(m.pod, m.from_node, m.to_node) for m in plan.moves] == [("ns/x-1", "a", "c")]
    assert "battery low" in plan.moves[0].reason


def test_full_targets_mean_skipped_with_reason_and_no_move() -> None:
    devices = [_dev("a"), _dev("b", cpu_free=0.25), _dev("c", cpu_free=4.0)]
    battery = {"a": 20.0, "b": 90.0, "c": 30.0}
    plan = _plan(devices, [_w("x-1", "a")], battery)
    assert plan.moves == () and len(plan.skipped) == 1
    assert plan.skipped[0].reason.startswith("no device satisfies BatteryPercent Gte 40 with 0.5 CPU free")
    plan = _plan(devices, [_w("x-1", "a")], {"a": 20.0, "b": 10.0, "c": 30.0})
    assert plan.moves == () and "no device satisfies BatteryPercent Gte 40;" in plan.skipped[0].reason


def test_co_dependent_workloads_move_together_when_one_target_holds_them() -> None:
    # The pair goes to the least-loaded device that holds both.
    devices = [_dev("a"), _dev("b", cpu_free=1.0), _dev("c", cpu_free=3.9, cap=4.0), _dev("e", cpu_free=0.5)]
    ws = [_w("fe-1", "a"), _w("be-1", "a"), _w("solo-1", "a")]
    battery = {"a": 10.0, "b": 90.0, "c": 90.0, "e": 90.0}
    pair = frozenset({"ns/fe-1", "ns/be-1"})
    plan = _plan(devices, ws, battery, co_dependent=[pair])
    to = {m.pod: m.to_node for m in plan.moves}
    assert to["ns/fe-1"] == to["ns/be-1"] == "c"
    # Shrink c so it holds only one of them: c is still least loaded, but the pair goes together to b.
    devices[2] = _dev("c", cpu_free=0.6, cap=1.0)
    plan = _plan(devices, ws, battery, co_dependent=[pair])
    to = {m.pod: m.to_node for m in plan.moves}
    assert to["ns/fe-1"] == to["ns/be-1"] == "b"
    assert to["ns/solo-1"] in {"c", "e"}
    # Without the co-dependence, the pair is spread by load.
    plan = _plan(devices, ws, battery)
    assert len({m.to_node for m in plan.moves if m.pod in pair}) == 2


def test_prefers_device_hosting_peers() -> None:
    devices = [_dev("a"), _dev("b", cpu_free=1.0), _dev("c", cpu_free=4.0)]
    ws = [_w("fe-1", "a"), _w("be-1", "b")]
    plan = _plan(devices, ws, {"a": 10.0, "b": 90.0, "c": 90.0}, co_dependent=lambda w: frozenset(
        {"ns/fe-1", "ns/be-1"}))
    assert [m.to_node for m in plan.moves] == ["b"]


def test_other_groups_and_satisfied_workloads_stay() -> None:
    devices = [_dev("a"), _dev("b")]
    ws = [_w("x-1", "a"), _w("y-1", "a", group="ns/other")]
    battery = {"a": 10.0, "b": 90.0}
    plan = _plan(devices, ws, battery, breached={"a": [BreachReason("ns/g", "BatteryPercent Gte 40", "low")]})
    assert [m.pod for m in plan.moves] == ["ns/x-1"]
    # A breach reason for another group moves nothing of ns/g.
    plan = _plan(devices, ws, battery, breached={"a": [BreachReason("ns/zzz", "r", "d")]})
    assert plan.moves == ()


def test_unmovable_and_limits_are_skipped() -> None:
    devices = [_dev("a"), _dev("b")]
    ws = [_w("x-1", "a", movable=False), _w("x-2", "a"), _w("x-3", "a"), _w("x-4", "a")]
    plan = _plan(devices, ws, {"a": 10.0, "b": 90.0}, limits=ActuationLimits(max_moves_per_interval=2))
    assert [m.pod for m in plan.moves] == ["ns/x-2", "ns/x-3"]
    reasons = {s.workload: s.reason for s in plan.skipped}
    assert reasons["ns/x-1"].startswith("not movable") and "move limit" in reasons["ns/x-4"]


def test_random_fleets_every_target_satisfies_and_fits_and_plan_is_deterministic() -> None:
    rng = random.Random(11)
    for _ in range(40):
        n = rng.randint(3, 25)
        devices = [_dev(f"d{i}", cpu_free=round(rng.uniform(0, 4), 2), schedulable=rng.random() > 0.1)
                   for i in range(n)]
        battery = {d.name: rng.choice([10.0, 30.0, 45.0, 60.0, 95.0]) for d in devices}
        ws = [_w(f"w{j}-{j}", rng.choice(devices).name, cpu=rng.choice([0.25, 0.5, 1.0]))
              for j in range(rng.randint(1, 40))]
        pairs = [frozenset({ws[i].key, ws[i + 1].key}) for i in range(0, len(ws) - 1, 3)]
        plan = _plan(devices, ws, battery, co_dependent=pairs)
        assert plan == _plan(devices, list(reversed(ws)), battery, co_dependent=pairs)
        ok = requirements_checker(REQS, _ctxs(battery))
        by = {d.name: d for d in devices}
        used = {d.name: 0.0 for d in devices}
        for m in plan.moves:
            w = next(w for w in ws if w.key == m.pod)
            assert battery[m.from_node] < 40 and ok(w, by[m.to_node]) and by[m.to_node].schedulable
            used[m.to_node] += w.cpu
        for name, cpu in used.items():
            assert cpu <= by[name].cpu_free + 1e-9
        moved = {m.pod for m in plan.moves} | {s.workload for s in plan.skipped}
        assert moved == {w.key for w in ws if battery[w.node] < 40}


def test_taint_decisions() -> None:
    assert taint_decisions({"a", "b"}, {"b", "c", "d"}, frozen={"d"}) == (["a"], ["c"])

"""The planner holds off the cyclic garbage collector while it plans (a third of a large plan's time),
and leaves it exactly as it found it, whatever happens inside and however plans overlap."""

from __future__ import annotations

import gc
import threading

import pytest

from edgeweave.api.workloadgroup import AggregationPolicy
from edgeweave.placement import aggregate
from edgeweave.placement.aggregate import plan_aggregation
from edgeweave.placement.model import DeviceState, Edge, WorkloadState


def fleet() -> tuple[list[DeviceState], list[WorkloadState], list[Edge]]:
    devs = [DeviceState(name=n, cpu_capacity=4, memory_capacity=8e9, cpu_free=3, memory_free=8e9) for n in "ab"]
    pods = [WorkloadState(key="ns/api", workload="api", group="ns/g", node="a", cpu=0.5),
            WorkloadState(key="ns/cache", workload="cache", group="ns/g", node="b", cpu=0.5)]
    return devs, pods, [Edge(source="api", target="cache", bytes_per_second=1e6)]


@pytest.fixture(autouse=True)
def _restore_gc():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_plan_leaves_the_collector_as_it_found_it(enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()
    seen: list[bool] = []
    real = aggregate._Planner.gather_pass

    def spy(self):  # noqa: ANN001, ANN202 - records the collector's state mid-plan
        seen.append(gc.isenabled())
        return real(self)

    aggregate._Planner.gather_pass = spy
    try:
        plan = plan_aggregation(*fleet(), AggregationPolicy())
    finally:
        aggregate._Planner.gather_pass = real
    assert len(plan.moves) == 1
    assert seen and not any(seen)
    assert gc.isenabled() is enabled


def test_a_failing_plan_turns_the_collector_back_on() -> None:
    gc.enable()
    devs, pods, edges = fleet()
    with pytest.raises(KeyError):
        # a caller's requirement check that raises half-way through a plan
        plan_aggregation(devs, pods, edges, AggregationPolicy(), requirements_ok=lambda w, d: {}["x"])
    assert gc.isenabled()


def test_overlapping_plans_turn_it_back_on_when_the_last_one_ends() -> None:
    gc.enable()
    inside, release = threading.Event(), threading.Event()

    def slow(w, d) -> bool:  # noqa: ANN001 - a requirement check that waits, so the two plans overlap
        inside.set()
        release.wait(10)
        return True

    devs, pods, edges = fleet()
    t = threading.Thread(target=plan_aggregation, args=(devs, pods, edges, AggregationPolicy()),
                         kwargs={"requirements_ok": slow})
    t.start()
    assert inside.wait(10)
    plan_aggregation(*fleet(), AggregationPolicy())  # starts and ends while the other is still planning
    assert not gc.isenabled()
    release.set()
    t.join(10)
    assert gc.isenabled()

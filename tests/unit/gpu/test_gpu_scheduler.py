"""Schedule policies and the discrete-event simulation of vGPUs."""

from __future__ import annotations

import pytest

from edgeweave.api.gpujob import SchedulingPolicy as P
from edgeweave.gpu.optimiser import GpuLoad
from edgeweave.gpu.scheduler import QueuedJob, build_schedule, run_schedule
from edgeweave.gpu.sim import compare, mixed_workload, offered_load, simulate


def _order(sched) -> list[str]:  # type: ignore[no-untyped-def]
    """Job names in order of their first dispatch."""
    seen: list[str] = []
    for d in sorted(sched.dispatches, key=lambda d: (d.start_ms, d.vgpu)):
        if d.job not in seen:
            seen.append(d.job)
    return seen


def _no_overlap(sched, vgpus: int) -> None:  # type: ignore[no-untyped-def]
    for g in range(vgpus):
        ds = sorted((d for d in sched.dispatches if d.vgpu == g), key=lambda d: d.start_ms)
        for a, b in zip(ds, ds[1:], strict=False):
            assert a.end_ms <= b.start_ms + 1e-9


BLOCKER = QueuedJob("blocker", 0.0, (5.0,), tenant="x")  # holds the vGPU while the others queue
JOBS = [
    BLOCKER,
    QueuedJob("big", 1.0, (10.0, 10.0), tenant="a", priority=0, deadline_ms=100.0),
    QueuedJob("small", 2.0, (1.0,), tenant="a", priority=0, deadline_ms=200.0),
    QueuedJob("vip", 3.0, (4.0,), tenant="b", priority=50),
    QueuedJob("urgent", 4.0, (3.0,), tenant="c", priority=-5, deadline_ms=12.0),
]


@pytest.mark.parametrize("policy,first_after_blocker", [
    (P.Fifo, "big"), (P.ShortestFirst, "small"), (P.Priority, "vip"), (P.Deadline, "urgent"),
])
def test_gpu_policy_picks(policy: P, first_after_blocker: str) -> None:
    sched = build_schedule(JOBS, 1, policy)
    order = _order(sched)
    assert order[0] == "blocker" and order[1] == first_after_blocker
    assert set(sched.finish_ms) == {j.name for j in JOBS}
    assert len(sched.dispatches) == sum(len(j.slices_ms) for j in JOBS)
    _no_overlap(sched, 1)


def test_gpu_policy_fairshare_alternates_tenants() -> None:
    jobs = [QueuedJob(f"a{i}", 0.0, (1.0,), tenant="a") for i in range(4)]
    jobs += [QueuedJob(f"b{i}", 0.5, (1.0,), tenant="b") for i in range(4)]
    tenants = [n[0] for n in _order(build_schedule(jobs, 1, P.FairShare))]
    assert tenants == ["a", "b", "a", "b", "a", "b", "a", "b"]
    assert [n[0] for n in _order(build_schedule(jobs, 1, P.Fifo))] == list("aaaabbbb")


def test_gpu_policy_slices_let_short_jobs_in_and_whole_kernels_do_not() -> None:
    long_sliced = QueuedJob("long", 0.0, (1.0,) * 100)
    long_whole = QueuedJob("long", 0.0, (100.0,))
    short = QueuedJob("short", 10.5, (0.5,))
    sliced = run_schedule([long_sliced, short], 1, P.ShortestFirst)
    whole = run_schedule([long_whole, short], 1, P.ShortestFirst)
    assert sliced.finish_ms["short"] - 10.5 == pytest.approx(1.0)  # waits for the slice in flight
    assert whole.finish_ms["short"] - 10.5 == pytest.approx(90.0)
    # under Fifo the sliced long job still goes first: slicing alone does not reorder
    assert run_schedule([long_sliced, short], 1, P.Fifo).finish_ms["short"] == pytest.approx(100.5)


def test_gpu_schedule_uses_all_vgpus_and_respects_max_parallel() -> None:
    wide = QueuedJob("wide", 0.0, (1.0,) * 8, max_parallel=4)
    narrow = QueuedJob("narrow", 0.0, (1.0,) * 8, max_parallel=1)
    s = build_schedule([wide], 4, P.Fifo)
    assert s.makespan_ms == pytest.approx(2.0) and {d.vgpu for d in s.dispatches} == {0, 1, 2, 3}
    s2 = build_schedule([narrow], 4, P.Fifo)
    assert s2.makespan_ms == pytest.approx(8.0)
    _no_overlap(s, 4)
    with pytest.raises(ValueError):
        build_schedule([wide, wide], 1, P.Fifo)


def test_gpu_sim_same_arrivals_policies_and_slicing() -> None:
    arrivals = mixed_workload(seed=3, duration_ms=4000.0)
    load = GpuLoad.from_samples(offered_load(arrivals) * 100)
    res = compare(arrivals, 1, list(P), load)
    for policy in (P.ShortestFirst, P.Priority, P.FairShare, P.Deadline):
        whole, sliced = res[policy.value]["whole"], res[policy.value]["sliced"]
        assert sliced.short_p99_ms * 5 < whole.short_p99_ms, policy
        assert sliced.short_mean_ms < whole.short_mean_ms
        assert sliced.slices > whole.slices
        overhead = (sliced.long_gpu_ms - whole.long_gpu_ms) / sliced.long_gpu_ms
        assert 0 < overhead <= 0.05
    # Fifo gains nothing from slicing: short jobs still queue behind every slice of a long one
    fifo = res["Fifo"]
    assert fifo["sliced"].short_p99_ms >= fifo["whole"].short_p99_ms * 0.9
    # the simulation is deterministic
    again = simulate(arrivals, 1, P.ShortestFirst, True, load)
    assert again == res["ShortestFirst"]["sliced"]

"""Scheduler: the sub-kernels of all queued GpuJobs -> an execution schedule over vGPUs.

Sub-kernels are non-preemptive; the scheduler decides afresh at every slice boundary, which is what
slicing buys: a short job waits for the slice in flight, not for the whole long kernel. Whenever a
vGPU is free, the policy ranks the jobs that have a sub-kernel ready (arrived, not finished, fewer
slices running than the job's vGPU count) and the first one's next slice is dispatched:

    Fifo           earliest arrival
    ShortestFirst  least remaining work (shortest-remaining-processing-time at slice boundaries)
    Priority       highest spec.priority, then arrival
    FairShare      tenant with least GPU time dispatched so far (per weight), then arrival
    Deadline       earliest absolute deadline (EDF); jobs without one after those with one

`run_schedule` is the discrete-event loop both the planner (estimated durations, all jobs queued)
and the simulation (sim.py: arrivals over time, actual durations) use.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..api.gpujob import SchedulingPolicy


@dataclass(frozen=True, slots=True)
class QueuedJob:
    name: str
    arrival_ms: float
    slices_ms: tuple[float, ...]  # estimated duration of each sub-kernel, launch overhead included
    tenant: str = "default"
    priority: int = 0
    deadline_ms: float | None = None  # absolute
    max_parallel: int = 1  # the job's vGPU count: how many of its slices may run at once
    weight: float = 1.0  # FairShare weight of the tenant
    kind: str = ""  # free label for metrics ("short", "long")

    @property
    def work_ms(self) -> float:
        return sum(self.slices_ms)


@dataclass(frozen=True, slots=True)
class Dispatch:
    job: str
    slice: int
    vgpu: int
    start_ms: float
    end_ms: float


@dataclass(frozen=True)
class Schedule:
    policy: SchedulingPolicy
    dispatches: tuple[Dispatch, ...]
    finish_ms: dict[str, float] = field(default_factory=dict)

    @property
    def makespan_ms(self) -> float:
        return max((d.end_ms for d in self.dispatches), default=0.0)


@dataclass(slots=True)
class _JobState:
    job: QueuedJob
    next_slice: int = 0
    running: int = 0
    remaining_ms: float = 0.0
    done_slices: int = 0


def policy_key(policy: SchedulingPolicy, *, arrival: float, remaining: float, priority: int, share: float,
               deadline: float | None) -> tuple[float, ...]:
    """The rank of a job under `policy` (smaller goes first); the planner, the simulation and the
    node dispatcher (grants.py) all order jobs through this one function."""
    tie = (arrival,)
    if policy is SchedulingPolicy.Fifo:
        return tie
    if policy is SchedulingPolicy.ShortestFirst:
        return (remaining, *tie)
    if policy is SchedulingPolicy.Priority:
        return (-priority, *tie)
    if policy is SchedulingPolicy.FairShare:
        return (share, *tie)
    if policy is SchedulingPolicy.Deadline:
        return (deadline if deadline is not None else math.inf, *tie)
    raise ValueError(f"unknown policy {policy}")


def _rank(policy: SchedulingPolicy, st: _JobState, usage: dict[str, float]) -> tuple[float, ...]:
    j = st.job
    return policy_key(policy, arrival=j.arrival_ms, remaining=st.remaining_ms, priority=j.priority,
                      share=usage.get(j.tenant, 0.0) / j.weight, deadline=j.deadline_ms)


def pick(policy: SchedulingPolicy, ready: Sequence[_JobState], usage: dict[str, float]) -> _JobState:
    """The job whose next slice runs now; ties broken by arrival, then name, so runs are repeatable."""
    return min(ready, key=lambda st: (*_rank(policy, st, usage), st.job.name))


def run_schedule(jobs: Sequence[QueuedJob], vgpus: int, policy: SchedulingPolicy,
                 duration_ms: Callable[[QueuedJob, int], float] | None = None) -> Schedule:
    """Dispatch every slice of `jobs` over `vgpus` vGPUs; durations default to the estimates."""
    if vgpus < 1:
        raise ValueError("need at least one vGPU")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")
    dur = duration_ms or (lambda j, i: j.slices_ms[i])
    states = {j.name: _JobState(j, remaining_ms=j.work_ms) for j in jobs}
    # Events: (time, order, kind, payload). Completions sort before arrivals at the same instant so
    # a freed vGPU sees every job that is there by then.
    events: list[tuple[float, int, int, str, int]] = []
    seq = 0
    for j in jobs:
        if not j.slices_ms:
            raise ValueError(f"job {j.name} has no slices")
        heapq.heappush(events, (j.arrival_ms, 1, seq, j.name, -1))
        seq += 1
    free = list(range(vgpus))
    heapq.heapify(free)
    ready: dict[str, _JobState] = {}
    usage: dict[str, float] = {}
    out: list[Dispatch] = []
    finish: dict[str, float] = {}
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, kind, _, name, vgpu = heapq.heappop(events)
            st = states[name]
            if kind == 1:
                ready[name] = st
            else:
                heapq.heappush(free, vgpu)
                st.running -= 1
                st.done_slices += 1
                if st.done_slices == len(st.job.slices_ms):
                    finish[name] = now
        while free:
            candidates = [s for s in ready.values()
                          if s.next_slice < len(s.job.slices_ms) and s.running < s.job.max_parallel]
            if not candidates:
                break
            st = pick(policy, candidates, usage)
            i = st.next_slice
            d = dur(st.job, i)
            vgpu = heapq.heappop(free)
            out.append(Dispatch(st.job.name, i, vgpu, now, now + d))
            st.next_slice += 1
            st.running += 1
            st.remaining_ms -= st.job.slices_ms[i]
            usage[st.job.tenant] = usage.get(st.job.tenant, 0.0) + d
            if st.next_slice == len(st.job.slices_ms):
                del ready[st.job.name]
            heapq.heappush(events, (now + d, 0, seq, st.job.name, vgpu))
            seq += 1
    return Schedule(policy=policy, dispatches=tuple(out), finish_ms=finish)


def build_schedule(jobs: Sequence[QueuedJob], vgpus: int, policy: SchedulingPolicy) -> Schedule:
    """The planned schedule from estimated slice durations (the operator's view of the queue)."""
    return run_schedule(jobs, vgpus, policy)

"""Discrete-event simulation of vGPUs: the same arrivals under each policy, sliced or whole.

A job arrives with a kernel of B blocks (time per block t_b, launch overhead o). Whole, it is one
sub-kernel of o + B*t_b; sliced, the optimiser picks the slice size and it becomes ceil(B/s)
sub-kernels of o + s*t_b (the last shorter). scheduler.run_schedule dispatches them over the vGPUs;
a vGPU runs one sub-kernel at a time, without preemption, as a GPU runs a launched kernel.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..api.gpujob import SchedulingPolicy
from .grid import slice_ranges
from .optimiser import GpuLoad, OptimiserConfig, SliceProblem, decide
from .scheduler import QueuedJob, run_schedule


@dataclass(frozen=True, slots=True)
class JobArrival:
    name: str
    kind: str  # "short" or "long"
    tenant: str
    arrival_ms: float
    blocks: int
    time_per_block_us: float
    launch_overhead_us: float
    latency_target_ms: float
    priority: int = 0
    deadline_after_ms: float | None = None
    max_parallel: int = 1

    @property
    def work_ms(self) -> float:
        return self.blocks * self.time_per_block_us / 1000.0


def mixed_workload(seed: int = 1, duration_ms: float = 20_000.0, long_every_ms: float = 500.0,
                   long_blocks: int = 20_000, short_rate_per_s: float = 100.0,
                   short_blocks: tuple[int, int] = (20, 200), time_per_block_us: float = 10.0,
                   launch_overhead_us: float = 8.0, latency_target_ms: float = 2.0) -> list[JobArrival]:
    """Long batch kernels (tenant "batch") among a Poisson stream of short requests (tenants a, b)."""
    rng = random.Random(seed)
    jobs: list[JobArrival] = []
    t, k = rng.expovariate(1.0 / long_every_ms), 0
    while t < duration_ms:
        work = long_blocks * time_per_block_us / 1000.0
        jobs.append(JobArrival(f"long-{k}", "long", "batch", t, long_blocks, time_per_block_us,
                               launch_overhead_us, latency_target_ms, priority=0,
                               deadline_after_ms=5.0 * work))
        t += rng.expovariate(1.0 / long_every_ms)
        k += 1
    t, k = rng.expovariate(short_rate_per_s / 1000.0), 0
    while t < duration_ms:
        blocks = rng.randint(*short_blocks)
        jobs.append(JobArrival(f"short-{k}", "short", "ab"[k % 2], t, blocks, time_per_block_us,
                               launch_overhead_us, latency_target_ms, priority=10,
                               deadline_after_ms=20.0))
        t += rng.expovariate(short_rate_per_s / 1000.0)
        k += 1
    return sorted(jobs, key=lambda j: (j.arrival_ms, j.name))


def offered_load(jobs: Sequence[JobArrival], vgpus: int = 1) -> float:
    """Fraction of vGPU time the arrivals ask for (work over the arrival window)."""
    if not jobs:
        return 0.0
    span = max(j.arrival_ms for j in jobs) - min(j.arrival_ms for j in jobs)
    return min(1.0, sum(j.work_ms for j in jobs) / max(span, 1e-9) / vgpus)


def to_queued(a: JobArrival, sliced: bool, load: GpuLoad | None, config: OptimiserConfig,
              preempt_blocks: int | None = None) -> QueuedJob:
    overhead_us = a.launch_overhead_us
    priority = a.priority
    if preempt_blocks is not None:
        # A prioritising GPU (high-priority stream / compute preemption): the kernel is launched
        # once, and a higher-priority kernel gets SMs as soon as `preempt_blocks` of it drain. Modelled
        # as chunks of that many blocks with no extra launch cost, short kernels on top priority.
        size = a.blocks if a.kind == "short" else min(a.blocks, preempt_blocks)
        slices = tuple(((overhead_us if s == 0 else 0.0) + (e - s) * a.time_per_block_us) / 1000.0
                       for s, e in slice_ranges(a.blocks, size))
        priority = 1 if a.kind == "short" else 0
        deadline = None if a.deadline_after_ms is None else a.arrival_ms + a.deadline_after_ms
        return QueuedJob(name=a.name, arrival_ms=a.arrival_ms, slices_ms=slices, tenant=a.tenant,
                         priority=priority, deadline_ms=deadline, max_parallel=a.max_parallel, kind=a.kind)
    if sliced:
        problem = SliceProblem(total_blocks=a.blocks, time_per_block_us=a.time_per_block_us,
                               launch_overhead_us=a.launch_overhead_us, latency_target_ms=a.latency_target_ms)
        size = decide(problem, load, config).slice_blocks
    else:
        size = a.blocks
    slices = tuple((a.launch_overhead_us + (e - s) * a.time_per_block_us) / 1000.0
                   for s, e in slice_ranges(a.blocks, size))
    deadline = None if a.deadline_after_ms is None else a.arrival_ms + a.deadline_after_ms
    return QueuedJob(name=a.name, arrival_ms=a.arrival_ms, slices_ms=slices, tenant=a.tenant,
                     priority=a.priority, deadline_ms=deadline, max_parallel=a.max_parallel, kind=a.kind)


@dataclass(frozen=True)
class SimResult:
    policy: str
    sliced: bool
    short_mean_ms: float
    short_p50_ms: float
    short_p99_ms: float
    long_mean_ms: float
    jobs_per_s: float
    useful_utilisation: float  # kernel work (no launch overhead) per vGPU-ms of the makespan
    long_gpu_ms: float  # vGPU time the long jobs held, launch overhead included
    slices: int
    deadline_miss_rate: float
    capacity_jobs_per_s: float  # jobs per second of vGPU busy time: the rate a saturated GPU sustains

    def as_dict(self) -> dict[str, float | str | bool | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def simulate(arrivals: Sequence[JobArrival], vgpus: int, policy: SchedulingPolicy, sliced: bool,
             load: GpuLoad | None = None, config: OptimiserConfig | None = None,
             preempt_blocks: int | None = None) -> SimResult:
    """`preempt_blocks` set: the prioritising-GPU baseline (policy should be Priority), see to_queued."""
    config = config or OptimiserConfig()
    queued = [to_queued(a, sliced, load, config, preempt_blocks) for a in arrivals]
    sched = run_schedule(queued, vgpus, policy)
    lat = {q.name: sched.finish_ms[q.name] - q.arrival_ms for q in queued}
    short = np.array([lat[q.name] for q in queued if q.kind == "short"] or [0.0])
    long_ = np.array([lat[q.name] for q in queued if q.kind == "long"] or [0.0])
    start = min(q.arrival_ms for q in queued)
    span = sched.makespan_ms - start
    useful = sum(a.work_ms for a in arrivals)
    misses = sum(1 for q in queued if q.deadline_ms is not None and sched.finish_ms[q.name] > q.deadline_ms)
    return SimResult(
        policy=policy.value, sliced=sliced,
        short_mean_ms=float(short.mean()), short_p50_ms=float(np.percentile(short, 50)),
        short_p99_ms=float(np.percentile(short, 99)), long_mean_ms=float(long_.mean()),
        jobs_per_s=len(queued) / span * 1000.0, useful_utilisation=useful / (span * vgpus),
        long_gpu_ms=sum(q.work_ms for q in queued if q.kind == "long"),
        slices=sum(len(q.slices_ms) for q in queued),
        deadline_miss_rate=misses / len(queued),
        capacity_jobs_per_s=len(queued) / sum(d.end_ms - d.start_ms for d in sched.dispatches) * 1000.0,
    )


def compare(arrivals: Sequence[JobArrival], vgpus: int, policies: Iterable[SchedulingPolicy],
            load: GpuLoad | None, config: OptimiserConfig | None = None) -> dict[str, dict[str, SimResult]]:
    """{policy: {"whole": result, "sliced": result}} on the same arrivals."""
    return {p.value: {"whole": simulate(arrivals, vgpus, p, False, load, config),
                      "sliced": simulate(arrivals, vgpus, p, True, load, config)} for p in policies}

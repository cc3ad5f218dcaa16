"""GpuJob plan: spec + GPU load -> slice size, slice list, and which job pod runs which slices.

This is what the operator calls: `plan_job` decides (pure, printable, diffable), `pod_env` is what a
job pod receives so `edgeweave slice-run` can execute its share, and `reassign` hands unfinished
slices of lost pods to replacement pods after a failure or eviction.

Slice-list wire format (env EDGEWEAVE_SLICES or `slice-run --slices`):

    v1;blocks=<slice_blocks>;total=<total_blocks>;slices=<runs>

where <runs> is a comma-separated list of slice indices and inclusive index ranges ("0-9,12,15-20").
Slice i covers linear blocks [i*slice_blocks, min((i+1)*slice_blocks, total)), numbered x fastest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from ..api.gpujob import GpuJobSpec, SchedulingPolicy
from .grid import Grid
from .optimiser import GpuLoad, OptimiserConfig, SliceDecision, SliceProblem, decide, slices_for
from .ranges import RangeSet

ENV_SPEC = "EDGEWEAVE_GPUJOB"
ENV_SLICES = "EDGEWEAVE_SLICES"
ENV_POD_INDEX = "EDGEWEAVE_POD_INDEX"
FORMAT_VERSION = "v1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SliceRange(_Frozen):
    index: int = Field(ge=0)
    start: int = Field(ge=0, description="First linear block (x fastest).")
    end: int = Field(gt=0, description="One past the last linear block.")

    @property
    def blocks(self) -> int:
        return self.end - self.start


class PodAssignment(_Frozen):
    pod: int = Field(ge=0, description="Job pod index (0 .. vgpu.count-1).")
    attempt: int = Field(default=0, ge=0, description="Bumped each time the pod's work is reassigned.")
    slices: str = Field(description="Slice indices as runs ('0-9,12'), run in ascending order.")

    @property
    def set(self) -> RangeSet:
        return RangeSet.decode(self.slices)

    @property
    def count(self) -> int:
        return len(self.set)


class SlicePlan(_Frozen):
    """Slices are ranges: a plan of 2^31 slices is as small as a plan of 2 (nothing per slice)."""

    total_blocks: int
    slice_blocks: int
    slice_count: int
    pods: tuple[PodAssignment, ...]
    policy: SchedulingPolicy
    decision: SliceDecision

    def slice(self, index: int) -> SliceRange:
        if not 0 <= index < self.slice_count:
            raise IndexError(f"slice {index} outside 0..{self.slice_count - 1}")
        return SliceRange(index=index, start=index * self.slice_blocks,
                          end=min((index + 1) * self.slice_blocks, self.total_blocks))

    @property
    def all(self) -> RangeSet:
        return RangeSet.span(0, self.slice_count)

    def pod(self, index: int) -> PodAssignment:
        for p in self.pods:
            if p.pod == index:
                return p
        raise KeyError(f"no pod {index} in plan")

    def summary(self) -> str:
        d = self.decision
        return (f"{self.slice_count} slices of {self.slice_blocks} blocks over {len(self.pods)} pod(s); "
                f"load {d.load_used:.2f} ({d.load_reason}); blocking {d.blocking_ms:.3f} ms; "
                f"overhead {d.overhead:.2%}; {d.reason}")


def grid_of(spec: GpuJobSpec) -> Grid:
    return Grid(*spec.grid_dims)


def block_of(spec: GpuJobSpec) -> Grid:
    return Grid(*spec.block_dims)


def slice_problem(spec: GpuJobSpec, config: OptimiserConfig) -> SliceProblem:
    tpb = spec.profile.time_per_block_us or config.default_time_per_block_us
    return SliceProblem(total_blocks=grid_of(spec).blocks, time_per_block_us=tpb,
                        launch_overhead_us=spec.profile.launch_overhead_us,
                        latency_target_ms=spec.latency_target_ms)


def plan_job(spec: GpuJobSpec, load: GpuLoad | None, config: OptimiserConfig | None = None) -> SlicePlan:
    """Slice size from the optimiser and a contiguous, balanced range of slices for each of up to
    vgpu.count pods (so each pod's output is one region)."""
    config = config or OptimiserConfig()
    problem = slice_problem(spec, config)
    decision = decide(problem, load, config)
    count = slices_for(problem.total_blocks, decision.slice_blocks)
    pods_n = min(spec.vgpu.count, count)
    pods = tuple(PodAssignment(pod=i, slices=c.encode()) for i, c in enumerate(RangeSet.span(0, count).split(pods_n)))
    return SlicePlan(total_blocks=problem.total_blocks, slice_blocks=decision.slice_blocks, slice_count=count,
                     pods=pods, policy=spec.policy, decision=decision)


def remaining(plan: SlicePlan, done: RangeSet) -> RangeSet:
    return plan.all.difference(done)


def reassign(plan: SlicePlan, done: RangeSet, lost_pods: Iterable[int]) -> SlicePlan:
    """A plan for the work left after `done` slices finished and `lost_pods` died or were evicted.

    Pods still running keep their unfinished slices (their env cannot change, and moving work they
    are about to do would run it twice). The unfinished slices of lost pods are split evenly over
    replacement pods that reuse the lost pods' indices with attempt + 1; a replacement with nothing to
    do is dropped. Pods with nothing left stay in the plan with an empty list, so status shows them.
    """
    if done.difference(plan.all):
        raise ValueError(f"done slices not in plan: {done.difference(plan.all).encode()[:40]}")
    lost = set(lost_pods)
    if unknown_pods := lost - {p.pod for p in plan.pods}:
        raise ValueError(f"lost pods not in plan: {sorted(unknown_pods)}")
    kept: list[PodAssignment] = []
    orphans = RangeSet()
    lost_entries: list[PodAssignment] = []
    for p in plan.pods:
        left = p.set.difference(done)
        if p.pod in lost:
            orphans = orphans.union(left)
            lost_entries.append(p)
        else:
            kept.append(p.model_copy(update={"slices": left.encode()}))
    replacements = [
        PodAssignment(pod=p.pod, attempt=p.attempt + 1, slices=chunk.encode())
        for p, chunk in zip(lost_entries, orphans.split(max(1, len(lost_entries))), strict=False)
        if chunk
    ]
    pods = tuple(sorted([*kept, *replacements], key=lambda a: a.pod))
    return plan.model_copy(update={"pods": pods})


def encode_slices(plan: SlicePlan, slices: RangeSet | str) -> str:
    """The EDGEWEAVE_SLICES value for these slices (runs)."""
    runs = slices if isinstance(slices, str) else slices.encode()
    return f"{FORMAT_VERSION};blocks={plan.slice_blocks};total={plan.total_blocks};slices={runs}"


class SliceList:
    """Decoded slice list: iterates SliceRanges lazily, so a pod of 2^30 slices holds ranges only."""

    def __init__(self, size: int, total: int, indices: RangeSet) -> None:
        self.size, self.total, self.indices = size, total, indices

    def __iter__(self) -> Iterator[SliceRange]:
        for lo, hi in self.indices.ranges():
            for i in range(lo, hi):
                yield SliceRange(index=i, start=i * self.size, end=min((i + 1) * self.size, self.total))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> SliceRange:
        if k != 0 or not self.indices:
            raise IndexError("only the first slice is addressable")
        return next(iter(self))

    @property
    def max_end(self) -> int:
        if not self.indices:
            return 0
        last = self.indices.ranges()[-1][1] - 1
        return min((last + 1) * self.size, self.total)


def decode_slices(text: str) -> SliceList:
    """Parse the slice-list format, validating every run against the total."""
    fields = text.strip().split(";")
    if not fields or fields[0] != FORMAT_VERSION:
        raise ValueError(f"slice list must start with {FORMAT_VERSION!r}: {text[:40]!r}")
    kv: dict[str, str] = {}
    for f in fields[1:]:
        key, sep, value = f.partition("=")
        if not sep:
            raise ValueError(f"bad field {f!r} in slice list")
        kv[key] = value
    try:
        size, total = int(kv["blocks"]), int(kv["total"])
        runs = kv["slices"]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"slice list needs integer blocks= and total= and slices=: {exc}") from None
    if size < 1 or total < 1:
        raise ValueError("blocks and total must be >= 1")
    count = -(-total // size)
    try:
        indices = RangeSet.decode(runs, bound=count)
    except ValueError as exc:
        raise ValueError(f"slice run outside 0..{count - 1}: {exc}") from None
    return SliceList(size, total, indices)


def pod_env(spec: GpuJobSpec, plan: SlicePlan, pod: int) -> dict[str, str]:
    """Environment of job pod `pod`: the spec (JSON, camelCase) and its slice list."""
    assignment = plan.pod(pod)
    return {
        ENV_SPEC: spec.model_dump_json(by_alias=True, exclude_none=True),
        ENV_SLICES: encode_slices(plan, assignment.slices),
        ENV_POD_INDEX: str(pod),
    }

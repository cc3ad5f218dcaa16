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

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from ..api.gpujob import GpuJobSpec, SchedulingPolicy
from .grid import Grid, slice_ranges
from .optimiser import GpuLoad, OptimiserConfig, SliceDecision, SliceProblem, decide

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
    slices: tuple[int, ...] = Field(description="Slice indices, run in this order.")


class SlicePlan(_Frozen):
    total_blocks: int
    slice_blocks: int
    slices: tuple[SliceRange, ...]
    pods: tuple[PodAssignment, ...]
    policy: SchedulingPolicy
    decision: SliceDecision

    def pod(self, index: int) -> PodAssignment:
        for p in self.pods:
            if p.pod == index:
                return p
        raise KeyError(f"no pod {index} in plan")

    def summary(self) -> str:
        d = self.decision
        return (f"{len(self.slices)} slices of {self.slice_blocks} blocks over {len(self.pods)} pod(s); "
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


def _split(items: Sequence[int], parts: int) -> list[tuple[int, ...]]:
    """Contiguous, balanced chunks (sizes differ by at most one), so each pod's output is one region."""
    n = len(items)
    return [tuple(items[(i * n) // parts:((i + 1) * n) // parts]) for i in range(parts)]


def plan_job(spec: GpuJobSpec, load: GpuLoad | None, config: OptimiserConfig | None = None) -> SlicePlan:
    """Slice size from the optimiser, the slice list, and the slices of each of up to vgpu.count pods."""
    config = config or OptimiserConfig()
    problem = slice_problem(spec, config)
    decision = decide(problem, load, config)
    ranges = slice_ranges(problem.total_blocks, decision.slice_blocks)
    slices = tuple(SliceRange(index=i, start=a, end=b) for i, (a, b) in enumerate(ranges))
    pods_n = min(spec.vgpu.count, len(slices))
    chunks = _split([s.index for s in slices], pods_n)
    pods = tuple(PodAssignment(pod=i, slices=c) for i, c in enumerate(chunks))
    return SlicePlan(total_blocks=problem.total_blocks, slice_blocks=decision.slice_blocks,
                     slices=slices, pods=pods, policy=spec.policy, decision=decision)


def remaining(plan: SlicePlan, done: Iterable[int]) -> list[int]:
    finished = set(done)
    return [s.index for s in plan.slices if s.index not in finished]


def reassign(plan: SlicePlan, done: Iterable[int], lost_pods: Iterable[int]) -> SlicePlan:
    """A plan for the work left after `done` slices finished and `lost_pods` died or were evicted.

    Pods still running keep their unfinished slices (their env cannot change, and moving work they
    are about to do would run it twice). The unfinished slices of lost pods are split evenly over
    replacement pods that reuse the lost pods' indices with attempt + 1; a replacement with nothing to
    do is dropped. Pods with nothing left stay in the plan with an empty list, so status shows them.
    """
    finished = set(done)
    known = {s.index for s in plan.slices}
    if unknown := finished - known:
        raise ValueError(f"done slices not in plan: {sorted(unknown)[:5]}")
    lost = set(lost_pods)
    if unknown_pods := lost - {p.pod for p in plan.pods}:
        raise ValueError(f"lost pods not in plan: {sorted(unknown_pods)}")
    kept: list[PodAssignment] = []
    orphans: list[int] = []
    lost_entries: list[PodAssignment] = []
    for p in plan.pods:
        left = tuple(i for i in p.slices if i not in finished)
        if p.pod in lost:
            orphans.extend(left)
            lost_entries.append(p)
        else:
            kept.append(p.model_copy(update={"slices": left}))
    orphans.sort()
    replacements = [
        PodAssignment(pod=p.pod, attempt=p.attempt + 1, slices=chunk)
        for p, chunk in zip(lost_entries, _split(orphans, max(1, len(lost_entries))), strict=False)
        if chunk
    ]
    pods = tuple(sorted([*kept, *replacements], key=lambda a: a.pod))
    return plan.model_copy(update={"pods": pods})


def runs_of(indices: Iterable[int]) -> str:
    """Indices as runs, order kept: [0, 1, 2, 3, 7] -> "0-3,7"."""
    runs: list[str] = []
    idx = list(indices)
    k = 0
    while k < len(idx):
        j = k
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        runs.append(str(idx[k]) if j == k else f"{idx[k]}-{idx[j]}")
        k = j + 1
    return ",".join(runs)


def encode_slices(plan: SlicePlan, indices: Iterable[int]) -> str:
    """The EDGEWEAVE_SLICES value for these slice indices (order kept; consecutive runs compressed)."""
    return f"{FORMAT_VERSION};blocks={plan.slice_blocks};total={plan.total_blocks};slices={runs_of(indices)}"


def decode_slices(text: str) -> list[SliceRange]:
    """Parse the slice-list format into block ranges, validating every index against the total."""
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
    out: list[SliceRange] = []
    for run in filter(None, runs.split(",")):
        a, _, b = run.partition("-")
        lo, hi = int(a), int(b or a)
        if not 0 <= lo <= hi < count:
            raise ValueError(f"slice run {run!r} outside 0..{count - 1}")
        out.extend(SliceRange(index=i, start=i * size, end=min((i + 1) * size, total)) for i in range(lo, hi + 1))
    return out


def pod_env(spec: GpuJobSpec, plan: SlicePlan, pod: int) -> dict[str, str]:
    """Environment of job pod `pod`: the spec (JSON, camelCase) and its slice list."""
    assignment = plan.pod(pod)
    return {
        ENV_SPEC: spec.model_dump_json(by_alias=True, exclude_none=True),
        ENV_SLICES: encode_slices(plan, assignment.slices),
        ENV_POD_INDEX: str(pod),
    }

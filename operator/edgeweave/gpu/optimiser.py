"""Slice-size optimiser: how many thread blocks each sub-kernel of a GpuJob runs.

The objective, written out (all times in microseconds, B blocks, W = B * t_b of work):

    stretch(u)   = 1 / (1 - min(u, u_max))         our slice shares the GPU with load u, so its
                                                    wall time stretches by this factor
    blocking(s)  = stretch(u) * (o + s * t_b)       how long one slice of s blocks holds the GPU
                                                    against a tenant that arrives just after it starts
    overhead(s)  = n(s) * o / (n(s) * o + W)        fraction of the job's GPU time spent on launches,
                   n(s) = ceil(B / s)

    choose s in [1, B] to minimise overhead(s)
        subject to  blocking(s) <= L      (other tenants wait at most the latency target L)
                    overhead(s) <= eps    (slicing costs at most eps of the job's throughput)

overhead is non-increasing in s and blocking is increasing in s, so the optimum is the largest s
that meets the latency bound. When no s meets both (a tiny target, or a GPU near saturation), the
overhead bound is kept and blocking is minimised under it: a flood of tiny launches would slow every
tenant, including the ones the target protects. The decision says which bound was not met.

`wave_blocks` (blocks the GPU runs at once) rounds s down to whole waves when that keeps the overhead
bound, so a slice boundary does not leave SMs idle behind a partial last wave.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

# A 1-D sub-grid launch may hold at most this many blocks (gridDim.x limit).
MAX_LAUNCH_BLOCKS = 2**31 - 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GpuLoad(_Frozen):
    """The GPU's current load from other tenants, as read from the DCGM exporter.

    `utilisation` is DCGM_FI_DEV_GPU_UTIL / 100 (exported by default: the fraction of time any kernel
    ran). `sm_active` is DCGM_FI_PROF_SM_ACTIVE, off in dcgm-exporter's default counters; when present
    it is preferred because it measures how much of the SMs are busy, not merely that something ran.
    """

    utilisation: float | None = Field(default=None, ge=0.0, le=1.0)
    sm_active: float | None = Field(default=None, ge=0.0, le=1.0)
    age_s: float = Field(default=0.0, ge=0.0, description="Age of the newest sample.")
    source: str = "DCGM_FI_DEV_GPU_UTIL"

    @classmethod
    def from_samples(cls, util_percent: float | None, sm_active: float | None = None,
                     age_s: float = 0.0) -> GpuLoad:
        util = None if util_percent is None else min(max(util_percent / 100.0, 0.0), 1.0)
        sm = None if sm_active is None else min(max(sm_active, 0.0), 1.0)
        return cls(utilisation=util, sm_active=sm, age_s=age_s,
                   source="DCGM_FI_PROF_SM_ACTIVE" if sm is not None else "DCGM_FI_DEV_GPU_UTIL")


class OptimiserConfig(_Frozen):
    overhead_bound: float = Field(default=0.05, gt=0.0, lt=1.0, description="eps: largest launch-overhead fraction.")
    max_load: float = Field(default=0.95, gt=0.0, lt=1.0, description="u_max: caps the stretch at 1/(1-u_max).")
    unknown_load: float = Field(default=0.5, ge=0.0, lt=1.0,
                                description="Load assumed when the samples are missing or stale.")
    max_sample_age_s: float = Field(default=120.0, gt=0.0)
    default_time_per_block_us: float = Field(default=10.0, gt=0.0,
                                             description="Used when the job declares no profile.")
    wave_blocks: int = Field(default=1, ge=1, description="Blocks resident at once on the GPU (SMs x blocks/SM).")


class SliceProblem(_Frozen):
    total_blocks: int = Field(ge=1)
    time_per_block_us: float = Field(gt=0.0)
    launch_overhead_us: float = Field(ge=0.0)
    latency_target_ms: float = Field(gt=0.0)


class SliceDecision(_Frozen):
    slice_blocks: int
    slices: int
    load_used: float
    load_reason: str
    slice_us: float = Field(description="One full slice on an idle GPU: o + s*t_b.")
    blocking_ms: float = Field(description="stretch(u) * slice_us, in ms.")
    overhead: float
    latency_target_met: bool
    overhead_bound_met: bool
    reason: str


def effective_load(load: GpuLoad | None, config: OptimiserConfig) -> tuple[float, str]:
    """The load u the objective uses, and why; stale or missing samples fall back to a fixed guess."""
    if load is None:
        return config.unknown_load, "no load samples: assumed"
    if load.age_s > config.max_sample_age_s:
        return config.unknown_load, f"samples {load.age_s:.0f}s old: assumed"
    if load.sm_active is not None:
        return load.sm_active, "DCGM_FI_PROF_SM_ACTIVE"
    if load.utilisation is not None:
        return load.utilisation, "DCGM_FI_DEV_GPU_UTIL"
    return config.unknown_load, "no load value: assumed"


def stretch(u: float, config: OptimiserConfig) -> float:
    return 1.0 / (1.0 - min(max(u, 0.0), config.max_load))


def slices_for(total_blocks: int, slice_blocks: int) -> int:
    return -(-total_blocks // slice_blocks)


def blocking_us(s: int, p: SliceProblem, u: float, config: OptimiserConfig) -> float:
    return stretch(u, config) * (p.launch_overhead_us + s * p.time_per_block_us)


def overhead(s: int, p: SliceProblem) -> float:
    n = slices_for(p.total_blocks, s)
    launches = n * p.launch_overhead_us
    work = p.total_blocks * p.time_per_block_us
    return launches / (launches + work)


def choose_slice_blocks(p: SliceProblem, u: float, config: OptimiserConfig) -> int:
    """The optimum of the objective in the module docstring, in closed form."""
    b, tb, o = p.total_blocks, p.time_per_block_us, p.launch_overhead_us
    eps = config.overhead_bound
    budget_us = p.latency_target_ms * 1000.0 / stretch(u, config)
    # Largest s meeting the latency bound (0 when even one block is too long).
    s_lat = max(0, math.floor((budget_us - o) / tb + 1e-9))
    # Most launches the overhead bound allows: n*o/(n*o+W) <= eps  <=>  n <= eps*W/((1-eps)*o).
    n_max = b if o == 0 else max(1, math.floor(eps * b * tb / ((1.0 - eps) * o) + 1e-9))
    n_lat = b + 1 if s_lat == 0 else slices_for(b, min(s_lat, b))
    n = n_lat if n_lat <= n_max else min(n_max, b)
    s = min(slices_for(b, n), MAX_LAUNCH_BLOCKS)
    w = config.wave_blocks
    if w > 1 and s > w:
        rounded = s - s % w
        if overhead(rounded, p) <= eps:
            s = rounded
    return max(1, s)


def decide(p: SliceProblem, load: GpuLoad | None, config: OptimiserConfig | None = None) -> SliceDecision:
    config = config or OptimiserConfig()
    u, load_reason = effective_load(load, config)
    s = choose_slice_blocks(p, u, config)
    blk_ms = blocking_us(s, p, u, config) / 1000.0
    ovh = overhead(s, p)
    lat_ok = blk_ms <= p.latency_target_ms * (1 + 1e-9)
    # One whole launch is the least overhead possible; a kernel cheaper than o/eps cannot do better.
    ovh_ok = ovh <= max(config.overhead_bound, overhead(p.total_blocks, p)) + 1e-12
    if s == p.total_blocks:
        reason = "whole kernel fits the latency target" if lat_ok else "one launch; overhead bound forbids slicing"
    elif lat_ok:
        reason = "largest slice that keeps other tenants within the latency target"
    else:
        reason = "latency target unreachable within the overhead bound: smallest slice the bound allows"
    return SliceDecision(
        slice_blocks=s, slices=slices_for(p.total_blocks, s), load_used=u, load_reason=load_reason,
        slice_us=p.launch_overhead_us + s * p.time_per_block_us, blocking_ms=blk_ms, overhead=ovh,
        latency_target_met=lat_ok, overhead_bound_met=ovh_ok, reason=reason,
    )

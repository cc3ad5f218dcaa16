"""Properties of the slice-size optimiser, checked over a seeded sweep of problems."""

from __future__ import annotations

import random

import pytest

from edgeweave.gpu.optimiser import (
    GpuLoad,
    OptimiserConfig,
    SliceProblem,
    blocking_us,
    choose_slice_blocks,
    decide,
    effective_load,
    overhead,
)

CFG = OptimiserConfig()


def _problems(n: int, seed: int = 7) -> list[SliceProblem]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append(SliceProblem(
            total_blocks=rng.choice([1, 7, 100, 4096, 100_000, 3_000_000]),
            time_per_block_us=rng.choice([0.5, 2.0, 10.0, 80.0]),
            launch_overhead_us=rng.choice([0.0, 3.0, 8.0, 25.0]),
            latency_target_ms=rng.choice([0.05, 0.5, 2.0, 10.0, 100.0]),
        ))
    return out


LOADS = [0.0, 0.2, 0.5, 0.8, 0.95, 1.0]


def test_gpu_optimiser_more_load_never_gives_bigger_slices() -> None:
    for p in _problems(300):
        sizes = [choose_slice_blocks(p, u, CFG) for u in LOADS]
        assert sizes == sorted(sizes, reverse=True), (p, sizes)


def test_gpu_optimiser_tighter_target_never_gives_bigger_slices() -> None:
    for p in _problems(300, seed=8):
        for u in (0.0, 0.6):
            sizes = [choose_slice_blocks(p.model_copy(update={"latency_target_ms": t}), u, CFG)
                     for t in (100.0, 10.0, 2.0, 0.5, 0.1, 0.02)]
            assert sizes == sorted(sizes, reverse=True), (p, u, sizes)


def test_gpu_optimiser_strictly_smaller_slices_under_load_when_latency_binds() -> None:
    p = SliceProblem(total_blocks=1_000_000, time_per_block_us=10, launch_overhead_us=8, latency_target_ms=10)
    idle, busy = choose_slice_blocks(p, 0.0, CFG), choose_slice_blocks(p, 0.75, CFG)
    assert busy < idle
    assert busy == pytest.approx(idle / 4, rel=0.01)  # stretch 4x at 75 % load
    tight = choose_slice_blocks(p.model_copy(update={"latency_target_ms": 1.0}), 0.0, CFG)
    assert tight < idle


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2])
def test_gpu_optimiser_overhead_bound_held(eps: float) -> None:
    cfg = OptimiserConfig(overhead_bound=eps)
    for p in _problems(300, seed=9):
        for u in LOADS:
            s = choose_slice_blocks(p, u, cfg)
            assert 1 <= s <= p.total_blocks
            # one launch is the floor: a kernel cheaper than o/eps cannot meet eps by any slicing
            assert overhead(s, p) <= max(eps, overhead(p.total_blocks, p)) + 1e-12, (p, u, s)
            assert decide(p, GpuLoad(utilisation=u), cfg).overhead_bound_met


def test_gpu_optimiser_is_the_optimum_of_its_objective() -> None:
    """Brute force over every s: the chosen s is the best feasible one, or the least-blocking one."""
    cfg = OptimiserConfig(overhead_bound=0.05)
    for p in _problems(200, seed=10):
        if p.total_blocks > 5000:
            continue
        for u in (0.0, 0.5, 0.9):
            s = choose_slice_blocks(p, u, cfg)
            floor = max(cfg.overhead_bound, overhead(p.total_blocks, p)) + 1e-12
            ok_ovh = [c for c in range(1, p.total_blocks + 1) if overhead(c, p) <= floor]
            feasible = [c for c in ok_ovh if blocking_us(c, p, u, cfg) <= p.latency_target_ms * 1000 * (1 + 1e-9)]
            if feasible:
                best = min(overhead(c, p) for c in feasible)
                assert s in feasible, (p, u, s)
                assert overhead(s, p) == pytest.approx(best), (p, u, s)
            else:
                least = min(blocking_us(c, p, u, cfg) for c in ok_ovh)
                assert blocking_us(s, p, u, cfg) == pytest.approx(least), (p, u, s)


def test_gpu_optimiser_latency_target_met_whenever_feasible() -> None:
    p = SliceProblem(total_blocks=50_000, time_per_block_us=4, launch_overhead_us=8, latency_target_ms=1)
    d = decide(p, GpuLoad.from_samples(60.0))
    assert d.latency_target_met and d.overhead_bound_met
    assert d.blocking_ms <= 1.0
    # an unreachable target: the overhead bound wins and the decision says so
    hard = decide(p.model_copy(update={"latency_target_ms": 0.01}), GpuLoad.from_samples(60.0))
    assert not hard.latency_target_met and hard.overhead_bound_met
    assert "unreachable" in hard.reason


def test_gpu_optimiser_small_kernel_is_not_sliced() -> None:
    p = SliceProblem(total_blocks=64, time_per_block_us=5, launch_overhead_us=8, latency_target_ms=10)
    d = decide(p, GpuLoad(utilisation=0.3))
    assert d.slices == 1 and d.slice_blocks == 64


def test_gpu_optimiser_wave_rounding() -> None:
    p = SliceProblem(total_blocks=1_000_000, time_per_block_us=1, launch_overhead_us=5, latency_target_ms=1)
    plain = choose_slice_blocks(p, 0.0, CFG)
    waved = choose_slice_blocks(p, 0.0, OptimiserConfig(wave_blocks=264))
    assert waved % 264 == 0 and waved <= plain and plain - waved < 264


def test_gpu_optimiser_load_sources() -> None:
    assert effective_load(None, CFG) == (CFG.unknown_load, "no load samples: assumed")
    assert effective_load(GpuLoad.from_samples(40.0), CFG)[0] == pytest.approx(0.4)
    # SM activity, when the profiling counters are on, is preferred to GPU_UTIL
    assert effective_load(GpuLoad.from_samples(90.0, sm_active=0.3), CFG)[0] == pytest.approx(0.3)
    stale = GpuLoad.from_samples(10.0, age_s=CFG.max_sample_age_s + 1)
    assert effective_load(stale, CFG)[0] == CFG.unknown_load
    assert GpuLoad.from_samples(130.0).utilisation == 1.0

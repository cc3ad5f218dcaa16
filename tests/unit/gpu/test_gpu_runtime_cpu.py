"""CPU reference backend and `edgeweave slice-run`: slices cover the grid once, sliced == unsliced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeweave.api.gpujob import GpuJobSpec
from edgeweave.gpu.builtins import make_kernel
from edgeweave.gpu.grid import Grid, linearise, slice_ranges, unlinearise
from edgeweave.gpu.optimiser import GpuLoad
from edgeweave.gpu.plan import ENV_SLICES, ENV_SPEC, plan_job, pod_env
from edgeweave.gpu.runtime_cpu import CpuSliceRunner

CASES = [
    ("saxpy", 100_003, Grid(37, 3, 2), Grid(64, 2, 1)),      # grid-stride: grid*block < n
    ("saxpy", 5_000, Grid(100, 1, 1), Grid(128, 1, 1)),      # more threads than elements
    ("stencil", 65_537, Grid(16, 4, 1), Grid(32, 4, 2)),
    ("matmul", 70, Grid(5, 5, 1), Grid(16, 16, 1)),           # partial edge tiles
    ("matmul", 64, Grid(3, 2, 1), Grid(8, 8, 1)),             # fewer blocks than tiles: tile stride
]


def test_gpu_grid_linearise_round_trip() -> None:
    g = Grid(7, 5, 3)
    lin = np.arange(g.blocks, dtype=np.uint64)
    coords = unlinearise(lin, g)
    assert coords[:, 0].max() == 6 and coords[:, 1].max() == 4 and coords[:, 2].max() == 2
    np.testing.assert_array_equal(linearise(coords, g), lin)
    assert len({tuple(c) for c in coords.tolist()}) == g.blocks


@pytest.mark.parametrize("name,n,grid,block", CASES)
@pytest.mark.parametrize("slice_blocks", [1, 3, 17])
def test_gpu_cpu_sliced_equals_unsliced(name: str, n: int, grid: Grid, block: Grid, slice_blocks: int) -> None:
    whole = CpuSliceRunner(make_kernel(name, n, grid, block, seed=11))
    whole.run_slice(0, grid.blocks)
    sliced = CpuSliceRunner(make_kernel(name, n, grid, block, seed=11))
    for s, e in slice_ranges(grid.blocks, slice_blocks):
        sliced.run_slice(s, e)
    assert sliced.visits is not None and whole.visits is not None
    np.testing.assert_array_equal(sliced.visits, np.ones(grid.blocks, dtype=np.int32))
    np.testing.assert_array_equal(sliced.output(), whole.output())  # bit for bit
    np.testing.assert_allclose(whole.output(), whole.kernel.expected(), rtol=1e-4, atol=1e-3)


def test_gpu_cpu_missing_or_repeated_slice_is_visible() -> None:
    grid, block = Grid(10), Grid(32)
    r = CpuSliceRunner(make_kernel("saxpy", 320, grid, block))
    ranges = slice_ranges(grid.blocks, 3)
    for s, e in [*ranges[:1], *ranges[2:], ranges[0]]:  # skip slice 1, repeat slice 0
        r.run_slice(s, e)
    assert r.visits is not None
    assert r.visits.tolist() == [2, 2, 2, 0, 0, 0, 1, 1, 1, 1]
    out, exp = r.output(), r.kernel.expected()
    assert not np.allclose(out, exp)  # slice 1's elements were never written
    np.testing.assert_array_equal(out[:96], exp[:96])
    with pytest.raises(ValueError):
        r.run_slice(5, 11)


def test_gpu_cpu_output_elements_partition_the_output() -> None:
    grid, block = Grid(4, 3, 1), Grid(16, 16, 1)
    k = make_kernel("matmul", 90, grid, block)
    seen = np.concatenate([k.output_elements(unlinearise(np.arange(s, e, dtype=np.uint64), grid))
                           for s, e in slice_ranges(grid.blocks, 5)])
    assert sorted(seen.tolist()) == list(range(90 * 90))


def test_gpu_builtin_geometry_checks() -> None:
    with pytest.raises(ValueError, match="square"):
        make_kernel("matmul", 32, Grid(2, 2), Grid(16, 8))
    with pytest.raises(ValueError, match="unknown"):
        make_kernel("fft", 32, Grid(2), Grid(16))


def _slice_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgeweave.cli", "slice-run", "--backend", "cpu", *args],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(300)
def test_gpu_slice_run_pods_together_produce_the_whole_output(tmp_path: Path) -> None:
    spec = GpuJobSpec.model_validate({
        "kernel": {"builtin": "stencil", "problemSize": 200_000}, "grid": [300, 2], "block": [128],
        "vgpu": {"count": 3}, "latencyTargetMs": 0.3, "profile": {"timePerBlockUs": 3, "launchOverheadUs": 2}})
    plan = plan_job(spec, GpuLoad.from_samples(50.0))
    assert plan.slice_count > 3
    merged = np.full(spec.kernel.problem_size, np.nan, dtype=np.float32)
    ref = make_kernel("stencil", spec.kernel.problem_size, Grid(*spec.grid_dims), Grid(*spec.block_dims))
    for pod in plan.pods:
        out = tmp_path / f"pod{pod.pod}"
        r = _slice_run(pod_env(spec, plan, pod.pod), "--out", str(out), "--verify")
        assert r.returncode == 0, r.stdout + r.stderr
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert [x["slice"] for x in lines if x["event"] == "slice-done"] == list(pod.set)
        assert lines[-1]["event"] == "finished" and lines[-1]["verified"] is True
        progress = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
        assert [p["slice"] for p in progress] == list(pod.set)
        data = np.load(out / "output.npy")
        for p in progress:  # copy this pod's ranges into the merged result
            lin = np.arange(*p["blocks"], dtype=np.uint64)
            idx = ref.output_elements(unlinearise(lin, ref.grid))
            assert np.isnan(merged[idx]).all()  # no element written by two pods
            merged[idx] = data[idx]
    np.testing.assert_array_equal(merged, ref.expected())


def test_gpu_slice_run_errors_are_clear(tmp_path: Path) -> None:
    r = _slice_run({ENV_SPEC: "", ENV_SLICES: ""})
    assert r.returncode == 2 and "no job spec" in r.stdout
    spec = GpuJobSpec.model_validate({"kernel": {"source": "__global__ void k(float* o, const float* i, "
                                                            "unsigned long long n) {}", "entry": "k"},
                                      "grid": [4], "block": [32]})
    r = _slice_run({ENV_SPEC: spec.model_dump_json(by_alias=True, exclude_none=True), ENV_SLICES: "all"})
    assert r.returncode == 2 and "needs the CUDA backend" in r.stdout
    saxpy = GpuJobSpec.model_validate({"kernel": {"builtin": "saxpy", "problemSize": 64}, "grid": [2], "block": [32]})
    r = _slice_run({ENV_SPEC: saxpy.model_dump_json(by_alias=True), ENV_SLICES: "v1;blocks=1;total=8;slices=7"})
    assert r.returncode == 2 and "past the job's grid" in r.stdout


def test_gpu_slice_run_spec_file_manifest(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    r = _slice_run({}, "--spec-file", str(root / "examples" / "gpujob-saxpy.yaml"),
                   "--slices", "v1;blocks=4096;total=65536;slices=0-1,15", "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["slices_done"] == 3

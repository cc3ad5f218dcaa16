"""CUDA-only tests of the slice runtime: NVRTC compiles the rewritten kernels, slices run on the device.

Skipped, with the reason shown, where CuPy or a CUDA device is missing (CI); run them on a GPU
machine with `pytest -rs tests/gpu`.
"""

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
from edgeweave.gpu.grid import Grid, slice_ranges
from edgeweave.gpu.plan import ENV_SLICES, ENV_SPEC
from edgeweave.gpu.runtime_cpu import CpuSliceRunner
from edgeweave.gpu.runtime_cuda import cuda_status

_OK, _WHY = cuda_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _OK, reason=f"needs CUDA: {_WHY}")]

PROBE = r"""
__global__ void probe(unsigned int* out) {
    const unsigned long long b = blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    if (threadIdx.x == 0) {
        out[b * 6 + 0] = blockIdx.x; out[b * 6 + 1] = blockIdx.y; out[b * 6 + 2] = blockIdx.z;
        out[b * 6 + 3] = gridDim.x; out[b * 6 + 4] = gridDim.y; out[b * 6 + 5] = gridDim.z;
    }
}
"""


def _cuda_runner(twin):  # type: ignore[no-untyped-def]
    import cupy as cp

    from edgeweave.gpu.runtime_cuda import CudaSliceRunner

    args, out, options = twin.cuda_args(cp)
    return CudaSliceRunner(twin.source, twin.name, twin.grid, twin.block, args, out, options)


def test_gpu_cuda_probe_sees_full_grid() -> None:
    import cupy as cp

    from edgeweave.gpu.runtime_cuda import CudaSliceRunner

    grid = Grid(5, 3, 4)
    out = cp.zeros(grid.blocks * 6, dtype=np.uint32)
    runner = CudaSliceRunner(PROBE, "probe", grid, Grid(32), [out], out)
    for s, e in [(0, 1), (1, 8), (8, 9), (9, 31), (31, 60)]:
        runner.launch(s, e)
    runner.synchronize()
    expect = np.array([[x, y, z, 5, 3, 4] for z in range(4) for y in range(3) for x in range(5)], dtype=np.uint32)
    np.testing.assert_array_equal(cp.asnumpy(out), expect.ravel())


@pytest.mark.parametrize("name,n,grid,block", [
    ("saxpy", 1_000_003, Grid(977, 3, 1), Grid(128, 2, 1)),
    ("stencil", 500_001, Grid(300, 2, 2), Grid(256, 1, 1)),
    ("matmul", 200, Grid(13, 13, 1), Grid(16, 16, 1)),
    ("matmul", 256, Grid(5, 7, 1), Grid(32, 32, 1)),
])
@pytest.mark.parametrize("slice_blocks", [1, 7, 64])
def test_gpu_cuda_sliced_equals_whole_and_cpu(name: str, n: int, grid: Grid, block: Grid, slice_blocks: int) -> None:
    twin = make_kernel(name, n, grid, block, seed=5)
    whole = _cuda_runner(twin)
    whole.run_slice(0, grid.blocks)
    sliced = _cuda_runner(twin)
    for s, e in slice_ranges(grid.blocks, slice_blocks):
        sliced.launch(s, e)
    sliced.synchronize()
    np.testing.assert_array_equal(sliced.output(), whole.output())
    cpu = CpuSliceRunner(make_kernel(name, n, grid, block, seed=5))
    cpu.run_slice(0, grid.blocks)
    scale = max(1.0, float(np.abs(cpu.output()).max()))
    np.testing.assert_allclose(whole.output(), cpu.output(), rtol=1e-4, atol=1e-4 * scale)


def test_gpu_cuda_slice_run_source_kernel(tmp_path: Path) -> None:
    src = ('#define I (blockIdx.x * blockDim.x + threadIdx.x)\n'
           '__global__ void twice(float* out, const float* in, unsigned long long n) '
           '{ if (I < n) out[I] = 2.0f * in[I]; }')
    spec = GpuJobSpec.model_validate({"kernel": {"source": src, "entry": "twice", "problemSize": 10_000},
                                      "grid": [40], "block": [256]})
    env = {**os.environ, ENV_SPEC: spec.model_dump_json(by_alias=True, exclude_none=True),
           ENV_SLICES: "v1;blocks=8;total=40;slices=0-4"}
    r = subprocess.run([sys.executable, "-m", "edgeweave.cli", "slice-run", "--backend", "cuda",
                        "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["backend"] == "cuda"
    out = np.load(tmp_path / "output.npy")
    inp = np.random.default_rng(0).standard_normal(10_000, dtype=np.float32)
    np.testing.assert_array_equal(out, 2.0 * inp)


def test_gpu_cuda_slice_run_builtin_verifies(tmp_path: Path) -> None:
    spec = GpuJobSpec.model_validate({"kernel": {"builtin": "matmul", "problemSize": 300},
                                      "grid": [19, 19], "block": [16, 16]})
    env = {**os.environ, ENV_SPEC: spec.model_dump_json(by_alias=True, exclude_none=True),
           ENV_SLICES: "v1;blocks=10;total=361;slices=0-36"}
    r = subprocess.run([sys.executable, "-m", "edgeweave.cli", "slice-run", "--backend", "cuda", "--verify",
                        "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["verified"] is True


def test_gpu_dispatcher_workers_on_cuda_assemble_the_unsliced_result(tmp_path: Path) -> None:
    """Two CUDA job pods (processes) of one job against a real dispatcher: the output assembled from
    the committed grants equals the CPU reference."""
    from edgeweave.gpu.dispatch_harness import Node, job_spec
    from edgeweave.gpu.dispatch_output import assemble

    node = Node(tmp_path / "node", "ShortestFirst")
    try:
        node.start_dispatcher()
        job = node.job("ns-g", "g", job_spec(8192, target_ms=0.5, kernel="stencil"))
        workers = [node.start_worker(job, backend="cuda") for _ in range(2)]
        assert [w.wait(300) for w in workers] == [0, 0], node.worker_events(job)
        twin = make_kernel("stencil", 8192 * 256, Grid(8192), Grid(256), 0)
        np.testing.assert_allclose(assemble(node.state, job.key, job.frag_dir, twin), twin.expected(),
                                   rtol=1e-5, atol=1e-5)
    finally:
        node.stop()

"""The blockIdx/gridDim rewrite: structure, refusals, and execution of rewritten kernels on the CPU.

The execution tests compile the CUDA C sources as C++ with a small shim (blocks run one after another,
the threads of a block as real threads with a barrier for __syncthreads, __shared__ as static) and
run the original kernel over the full grid and the rewritten kernel slice by slice over 1-D sub-grids,
as the CUDA backend launches them. Output must match bit for bit, and match the numpy twin.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeweave.gpu.builtins import make_kernel
from edgeweave.gpu.grid import Grid, slice_ranges
from edgeweave.gpu.rewrite import EXTRA_PARAMS, RewriteError, find_kernels, rewrite, tokenize

CXX = shutil.which("clang++") or shutil.which("g++")

SHIM = r"""
#include <barrier>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int a = 1, unsigned int b = 1, unsigned int c = 1) : x(a), y(b), z(c) {}
};
#define __global__
#define __device__
#define __shared__ static
thread_local uint3 threadIdx;
uint3 blockIdx;   // blocks run one at a time, so one global is right
dim3 gridDim, blockDim;
std::barrier<>* ew_bar;
inline void __syncthreads() { ew_bar->arrive_and_wait(); }
template <class F> void ew_launch(dim3 grid, dim3 block, F body) {
    gridDim = grid; blockDim = block;
    const unsigned nt = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        blockIdx = {bx, by, bz};
        std::barrier<> bar(nt);
        ew_bar = &bar;
        std::vector<std::thread> ts;
        for (unsigned tz = 0; tz < block.z; ++tz)
        for (unsigned ty = 0; ty < block.y; ++ty)
        for (unsigned tx = 0; tx < block.x; ++tx)
            ts.emplace_back([=] { threadIdx = {tx, ty, tz}; body(); });
        for (auto& t : ts) t.join();
    }
}
"""

MAIN = r"""
int main(int argc, char** argv) {
    // argv: input-file output-file n-out (whole | start end [start end ...]); -DSLICED: the rewritten kernel
    FILE* f = fopen(argv[1], "rb");
    std::vector<float> in(1 << 22);
    size_t got = fread(in.data(), sizeof(float), in.size(), f);
    fclose(f);
    (void)got;
    const size_t nout = strtoull(argv[3], nullptr, 10);
    std::vector<float> out(nout, -1.0f);
    float* o = out.data();
    const float* i = in.data();
    const dim3 grid(GX, GY, GZ), block(BX, BY, BZ);
#ifndef SLICED
    ew_launch(grid, block, [&] { KERNEL(KARGS); });
#else
    for (int k = 4; k + 1 < argc; k += 2) {
        const unsigned long long s = strtoull(argv[k], nullptr, 10), e = strtoull(argv[k + 1], nullptr, 10);
        ew_launch(dim3((unsigned)(e - s)), block, [&] { KERNEL(KARGS, s, GX, GY, GZ); });
    }
#endif
    f = fopen(argv[2], "wb");
    fwrite(out.data(), sizeof(float), out.size(), f);
    fclose(f);
    return 0;
}
"""

# Records, per block (thread 0), the block coordinates and grid size the kernel sees. IDX is a macro
# defined outside the kernel: the rewrite must still renumber it.
PROBE_SRC = r"""
#define LIN (blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z))
__global__ void probe(float* out, const float* unused) {
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        unsigned long long b = LIN;  /* blockIdx in a comment stays */
        out[b * 6 + 0] = blockIdx.x; out[b * 6 + 1] = blockIdx.y; out[b * 6 + 2] = blockIdx.z;
        out[b * 6 + 3] = gridDim.x;  out[b * 6 + 4] = gridDim.y;  out[b * 6 + 5] = gridDim.z;
    }
}
"""


def _build(tmp: Path, name: str, source: str, entry: str, kargs: str, grid: Grid, block: Grid,
           extra: tuple[str, ...] = ()) -> Path:
    (tmp / f"{name}.cu").write_text(source)
    main = tmp / f"{name}_main.cpp"
    main.write_text(SHIM + f'#include "{name}.cu"\n' + MAIN)
    exe = tmp / name
    defs = [f"-DGX={grid.x}", f"-DGY={grid.y}", f"-DGZ={grid.z}", f"-DBX={block.x}", f"-DBY={block.y}",
            f"-DBZ={block.z}", f"-DKERNEL={entry}", f"-DKARGS={kargs}", *extra]
    subprocess.run([CXX, "-std=c++20", "-O1", "-ffp-contract=off", "-pthread", *defs, "-o", str(exe), str(main)],
                   check=True, capture_output=True, text=True, timeout=300)
    return exe


def _run(exe: Path, tmp: Path, inputs: np.ndarray, nout: int, slices: list[tuple[int, int]] | None) -> np.ndarray:
    inp, outp = tmp / "in.bin", tmp / f"{exe.name}.out"
    inputs.astype(np.float32).tofile(inp)
    args = ["whole"] if slices is None else [str(v) for s in slices for v in s]
    subprocess.run([str(exe), str(inp), str(outp), str(nout), *args], check=True, timeout=300)
    return np.fromfile(outp, dtype=np.float32)


def _both(tmp: Path, source: str, entry: str, kargs: str, grid: Grid, block: Grid,
          extra: tuple[str, ...] = ()) -> tuple[Path, Path]:
    orig = _build(tmp, f"{entry}_orig", source, entry, kargs, grid, block, extra)
    rw = _build(tmp, f"{entry}_rw", rewrite(source, entry).source, entry, kargs, grid, block, (*extra, "-DSLICED"))
    return orig, rw


needs_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (clang++/g++) to execute rewritten kernels")


@needs_cxx
@pytest.mark.timeout(600)
def test_gpu_rewrite_probe_3d_grid_sees_full_grid_coordinates(tmp_path: Path) -> None:
    grid, block = Grid(3, 4, 5), Grid(2, 1, 1)
    orig, rw = _both(tmp_path, PROBE_SRC, "probe", "o, i", grid, block)
    nout = grid.blocks * 6
    whole = _run(orig, tmp_path, np.zeros(4), nout, None)
    # uneven slices, including single blocks and a slice crossing y and z boundaries
    cuts = [0, 1, 2, 7, 13, 29, 30, 59, 60]
    sliced = _run(rw, tmp_path, np.zeros(4), nout, list(zip(cuts[:-1], cuts[1:], strict=True)))
    expect = np.array([[x, y, z, 3, 4, 5] for z in range(5) for y in range(4) for x in range(3)],
                      dtype=np.float32).ravel()
    np.testing.assert_array_equal(whole, expect)
    np.testing.assert_array_equal(sliced, expect)


@needs_cxx
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name,grid,block,n", [
    ("saxpy", Grid(5, 1, 1), Grid(64, 1, 1), 1000),
    ("stencil", Grid(2, 3, 1), Grid(32, 2, 1), 1500),
    ("matmul", Grid(5, 5, 1), Grid(8, 8, 1), 40),
])
def test_gpu_rewrite_builtin_sliced_equals_whole(tmp_path: Path, name: str, grid: Grid, block: Grid, n: int) -> None:
    twin = make_kernel(name, n, grid, block, seed=3)
    if name == "saxpy":
        inputs, kargs, nout = np.concatenate([twin.x, twin.y]), f"o, i, i + {n}, 2.5f, {n}ull", n
        extra: tuple[str, ...] = ()
    elif name == "stencil":
        inputs, kargs, nout = twin.inp, f"o, i, 0.25f, 0.5f, 0.25f, {n}ull", n
        extra = ()
    else:
        inputs, kargs, nout = np.concatenate([twin.a.ravel(), twin.b.ravel()]), f"o, i, i + {n * n}, {n}u", n * n
        extra = (f"-DEW_TILE={block.x}",)
    orig, rw = _both(tmp_path, twin.source, name, kargs, grid, block, extra)
    whole = _run(orig, tmp_path, inputs, nout, None)
    sliced = _run(rw, tmp_path, inputs, nout, slice_ranges(grid.blocks, 2))
    np.testing.assert_array_equal(sliced, whole)
    np.testing.assert_allclose(whole, np.asarray(twin.expected(), dtype=np.float32).ravel(), rtol=1e-5, atol=1e-4)


def test_gpu_rewrite_structure() -> None:
    src = 'static __global__ void k(float* out, int n) { out[blockIdx.x] = gridDim.x; }'
    out = rewrite(src, "k").source
    assert out.startswith('extern "C" static __global__')
    assert f"int n, {EXTRA_PARAMS})" in out
    assert "#define blockIdx __ew_bi" in out and "#undef gridDim" in out
    # the preamble reads the hardware blockIdx before the #define takes over
    assert out.index("+ (unsigned long long)blockIdx.x") < out.index("#define blockIdx")


def test_gpu_rewrite_keeps_existing_extern_c_and_handles_void_params() -> None:
    out = rewrite('extern "C" {\n__global__ void k(void) { }\n}', "k").source
    assert out.count('extern "C"') == 1
    assert f"k({EXTRA_PARAMS})" in out
    out2 = rewrite('extern "C" __global__ void __launch_bounds__(128, 2) k() {}', "k").source
    assert out2.count('extern "C"') == 1 and f"k({EXTRA_PARAMS})" in out2


def test_gpu_rewrite_ignores_comments_strings_and_other_kernels() -> None:
    src = '''
// blockIdx mentioned in a comment
__device__ const char* s() { return "gridDim"; }
__global__ void other(int* o) { o[blockIdx.x] = 1; }
__global__ void k(int* o) { o[blockIdx.x] = 2; }
'''
    out = rewrite(src, "k").source
    assert out.count("#define blockIdx") == 1
    assert [k.name for k in find_kernels(tokenize(out))] == ["other", "k"]


@pytest.mark.parametrize("src,entry,msg", [
    ("__device__ int f() { return blockIdx.x; }\n__global__ void k(int* o) { o[0] = f(); }", "k", "outside kernel"),
    ("#define B blockIdx.x\n#define C (B + 1)\n__device__ int f() { return C; }\n"
     "__global__ void k(int* o) { o[0] = f(); }", "k", "C is used outside"),
    ("__global__ void k(int* o) { }", "nope", "no __global__ kernel named 'nope'"),
    ("template <int N> __global__ void k<N>(int* o) { }", "k", "templated"),
    ("__global__ void k(int* __ew_off) { }", "k", "reserved"),
    ("__global__ void k(int* o) { }\n__global__ void k(float* o) { }", "k", "more than once"),
])
def test_gpu_rewrite_refuses_what_it_cannot_slice(src: str, entry: str, msg: str) -> None:
    with pytest.raises(RewriteError, match=msg):
        rewrite(src, entry)

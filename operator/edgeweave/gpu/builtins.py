"""The built-in kernels (saxpy, stencil, tiled matmul): CUDA C source and a numpy twin of each.

Each numpy twin computes exactly the elements the CUDA kernel's blocks compute, block by block, so
the CPU backend runs the same slicing arithmetic as the GPU and a wrong slice (a block skipped or run
twice, a wrong offset) shows up as a wrong or missing output element. Inputs are generated from a
seed, so every pod of a job — and both backends — see the same data.

Indexing is written against the full grid through a grid-stride loop, so any grid shape computes the
whole problem: block b (linear, x fastest) handles elements b*T + t + k*G*T for thread t, T threads per
block, G blocks, k = 0, 1, ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .grid import Grid, linearise

SAXPY_A = np.float32(2.5)
STENCIL_W = (np.float32(0.25), np.float32(0.5), np.float32(0.25))
MAX_MATMUL_N = 8192

# Shared by the 1-D kernels: linear block, linear thread, grid-stride step.
_LINEAR = r"""
    const unsigned long long threads = (unsigned long long)blockDim.x * blockDim.y * blockDim.z;
    const unsigned long long lb = blockIdx.x + (unsigned long long)gridDim.x
        * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
    const unsigned long long lt = threadIdx.x + (unsigned long long)blockDim.x
        * (threadIdx.y + (unsigned long long)blockDim.y * threadIdx.z);
    const unsigned long long step = threads * gridDim.x * gridDim.y * gridDim.z;
"""

SAXPY_SRC = r"""
extern "C" __global__ void saxpy(float* out, const float* x, const float* y, float a,
                                 unsigned long long n) {
""" + _LINEAR + r"""
    for (unsigned long long i = lb * threads + lt; i < n; i += step) {
        out[i] = a * x[i] + y[i];
    }
}
"""

STENCIL_SRC = r"""
extern "C" __global__ void stencil(float* out, const float* in, float w0, float w1, float w2,
                                   unsigned long long n) {
""" + _LINEAR + r"""
    for (unsigned long long i = lb * threads + lt; i < n; i += step) {
        if (i == 0 || i == n - 1) {
            out[i] = in[i];
        } else {
            out[i] = w0 * in[i - 1] + w1 * in[i] + w2 * in[i + 1];
        }
    }
}
"""

# EW_TILE is defined at compile time (-DEW_TILE=...) and must equal blockDim.x == blockDim.y.
MATMUL_SRC = r"""
extern "C" __global__ void matmul(float* c, const float* a, const float* b, unsigned int n) {
    __shared__ float as[EW_TILE][EW_TILE];
    __shared__ float bs[EW_TILE][EW_TILE];
    const unsigned int tiles = (n + EW_TILE - 1) / EW_TILE;
    const unsigned int tx = threadIdx.x, ty = threadIdx.y;
    for (unsigned int tr = blockIdx.y; tr < tiles; tr += gridDim.y) {
        for (unsigned int tc = blockIdx.x; tc < tiles; tc += gridDim.x) {
            const unsigned int row = tr * EW_TILE + ty, col = tc * EW_TILE + tx;
            float acc = 0.0f;
            for (unsigned int kt = 0; kt < tiles; ++kt) {
                const unsigned int ka = kt * EW_TILE + tx, kb = kt * EW_TILE + ty;
                as[ty][tx] = (row < n && ka < n) ? a[(unsigned long long)row * n + ka] : 0.0f;
                bs[ty][tx] = (kb < n && col < n) ? b[(unsigned long long)kb * n + col] : 0.0f;
                __syncthreads();
                for (unsigned int k = 0; k < EW_TILE; ++k) acc += as[ty][k] * bs[k][tx];
                __syncthreads();
            }
            if (row < n && col < n) c[(unsigned long long)row * n + col] = acc;
        }
    }
}
"""


class CpuKernel(ABC):
    """A built-in kernel on numpy: inputs, an output, and a per-block executor."""

    name: str
    source: str

    def __init__(self, problem_size: int, grid: Grid, block: Grid, seed: int = 0) -> None:
        self.n = problem_size
        self.grid = grid
        self.block = block
        self.rng = np.random.default_rng(seed)
        self.check_geometry()

    def check_geometry(self) -> None:
        if self.block.blocks > 1024:
            raise ValueError("a block holds at most 1024 threads")

    @abstractmethod
    def run_blocks(self, coords: np.ndarray) -> None:
        """Run the blocks at (k, 3) coordinates `coords`, writing self.out."""

    @abstractmethod
    def expected(self) -> np.ndarray:
        """The whole result computed directly, without blocks (an independent check)."""

    @abstractmethod
    def cuda_args(self, xp: object) -> tuple[list[object], object, tuple[str, ...]]:
        """(kernel arguments on the device, the device output array, compile options)."""

    def output_elements(self, coords: np.ndarray) -> np.ndarray:
        """Flat indices of self.out written by the blocks at `coords`."""
        return self._elements(linearise(coords, self.grid))

    def _elements(self, lin: np.ndarray) -> np.ndarray:
        threads = self.block.blocks
        step = threads * self.grid.blocks
        base = (lin.astype(np.int64)[:, None] * threads + np.arange(threads, dtype=np.int64)).ravel()
        parts: list[np.ndarray] = []
        k = 0
        while base.size and int(base.min()) + k * step < self.n:
            idx = base + k * step
            parts.append(idx[idx < self.n])
            k += 1
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


class Saxpy(CpuKernel):
    name = "saxpy"
    source = SAXPY_SRC

    def __init__(self, problem_size: int, grid: Grid, block: Grid, seed: int = 0) -> None:
        super().__init__(problem_size, grid, block, seed)
        self.x = self.rng.standard_normal(self.n, dtype=np.float32)
        self.y = self.rng.standard_normal(self.n, dtype=np.float32)
        self.out = np.zeros(self.n, dtype=np.float32)

    def run_blocks(self, coords: np.ndarray) -> None:
        i = self.output_elements(coords)
        self.out[i] = SAXPY_A * self.x[i] + self.y[i]

    def expected(self) -> np.ndarray:
        return SAXPY_A * self.x + self.y

    def cuda_args(self, xp):  # type: ignore[no-untyped-def]
        out = xp.zeros(self.n, dtype=np.float32)
        return [out, xp.asarray(self.x), xp.asarray(self.y), SAXPY_A, np.uint64(self.n)], out, ()


class Stencil(CpuKernel):
    name = "stencil"
    source = STENCIL_SRC

    def __init__(self, problem_size: int, grid: Grid, block: Grid, seed: int = 0) -> None:
        super().__init__(problem_size, grid, block, seed)
        self.inp = self.rng.standard_normal(self.n, dtype=np.float32)
        self.out = np.zeros(self.n, dtype=np.float32)

    def _apply(self, i: np.ndarray) -> np.ndarray:
        w0, w1, w2 = STENCIL_W
        inner = (i > 0) & (i < self.n - 1)
        res = self.inp[i].copy()
        j = i[inner]
        res[inner] = w0 * self.inp[j - 1] + w1 * self.inp[j] + w2 * self.inp[j + 1]
        return res

    def run_blocks(self, coords: np.ndarray) -> None:
        i = self.output_elements(coords)
        self.out[i] = self._apply(i)

    def expected(self) -> np.ndarray:
        return self._apply(np.arange(self.n))

    def cuda_args(self, xp):  # type: ignore[no-untyped-def]
        out = xp.zeros(self.n, dtype=np.float32)
        return [out, xp.asarray(self.inp), *STENCIL_W, np.uint64(self.n)], out, ()


class Matmul(CpuKernel):
    """C = A @ B for N x N float32 matrices (N = problem_size), one EW_TILE x EW_TILE tile per block."""

    name = "matmul"
    source = MATMUL_SRC

    def __init__(self, problem_size: int, grid: Grid, block: Grid, seed: int = 0) -> None:
        super().__init__(problem_size, grid, block, seed)
        self.tile = block.x
        self.tiles = -(-self.n // self.tile)
        self.a = self.rng.standard_normal((self.n, self.n), dtype=np.float32)
        self.b = self.rng.standard_normal((self.n, self.n), dtype=np.float32)
        self.out = np.zeros((self.n, self.n), dtype=np.float32)

    def check_geometry(self) -> None:
        super().check_geometry()
        if self.block.x != self.block.y or self.block.z != 1:
            raise ValueError("matmul needs a square 2-D block (block.x == block.y, block.z == 1): one tile")
        if self.grid.z != 1:
            raise ValueError("matmul needs grid.z == 1")
        if self.n > MAX_MATMUL_N:
            raise ValueError(f"matmul problemSize (N) must be <= {MAX_MATMUL_N}")

    def _tiles_of(self, coords: np.ndarray) -> list[tuple[int, int]]:
        # The same grid-stride loops as the CUDA kernel: block (bx, by) owns tiles (tr, tc).
        out: list[tuple[int, int]] = []
        for bx, by, _ in coords.tolist():
            for tr in range(by, self.tiles, self.grid.y):
                out.extend((tr, tc) for tc in range(bx, self.tiles, self.grid.x))
        return out

    def run_blocks(self, coords: np.ndarray) -> None:
        t, n = self.tile, self.n
        for tr, tc in self._tiles_of(coords):
            r0, c0 = tr * t, tc * t
            acc = np.zeros((min(t, n - r0), min(t, n - c0)), dtype=np.float32)
            for kt in range(self.tiles):
                k0 = kt * t
                acc += self.a[r0:r0 + t, k0:k0 + t] @ self.b[k0:k0 + t, c0:c0 + t]
            self.out[r0:r0 + t, c0:c0 + t] = acc

    def output_elements(self, coords: np.ndarray) -> np.ndarray:
        t, n = self.tile, self.n
        parts = []
        for tr, tc in self._tiles_of(coords):
            rows = np.arange(tr * t, min(tr * t + t, n))
            cols = np.arange(tc * t, min(tc * t + t, n))
            parts.append((rows[:, None] * n + cols).ravel())
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def expected(self) -> np.ndarray:
        return self.a @ self.b

    def cuda_args(self, xp):  # type: ignore[no-untyped-def]
        out = xp.zeros((self.n, self.n), dtype=np.float32)
        args = [out, xp.asarray(self.a), xp.asarray(self.b), np.uint32(self.n)]
        return args, out, (f"-DEW_TILE={self.tile}",)


BUILTINS: dict[str, type[CpuKernel]] = {k.name: k for k in (Saxpy, Stencil, Matmul)}


def make_kernel(name: str, problem_size: int, grid: Grid, block: Grid, seed: int = 0) -> CpuKernel:
    try:
        cls = BUILTINS[name]
    except KeyError:
        raise ValueError(f"unknown built-in kernel {name!r} (have: {', '.join(BUILTINS)})") from None
    return cls(problem_size, grid, block, seed)

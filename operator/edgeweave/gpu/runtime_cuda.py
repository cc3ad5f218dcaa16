"""CUDA backend: compiles the rewritten kernel with NVRTC through CuPy and launches slices.

CuPy is imported only here and only when this backend is chosen, so the operator and the CPU
reference never need it. A slice [start, end) is one launch of a 1-D grid of end-start blocks with
the rewrite's extra arguments (offset, full grid), on this runner's stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .grid import Grid
from .rewrite import rewrite


def cuda_status() -> tuple[bool, str]:
    """(usable, why): CuPy importable and at least one CUDA device visible."""
    try:
        import cupy
    except ImportError as exc:
        return False, f"CuPy is not installed ({exc})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # noqa: BLE001 - any driver/runtime failure means "no usable device"
        return False, f"no CUDA device ({exc})"
    if count < 1:
        return False, "no CUDA device"
    return True, f"{count} CUDA device(s)"


def cuda_available() -> bool:
    return cuda_status()[0]


class CudaSliceRunner:
    backend = "cuda"

    def __init__(self, source: str, entry: str, grid: Grid, block: Grid, args: Sequence[Any],
                 out: Any = None, options: Sequence[str] = (), stream: Any = None) -> None:
        import cupy as cp

        self._cp = cp
        self.grid = grid
        self.block = (block.x, block.y, block.z)
        self.args = tuple(args)
        self.out = out
        self.rewritten = rewrite(source, entry)
        self.kernel = cp.RawKernel(self.rewritten.source, entry, options=("--std=c++14", *options))
        # Compile now so a bad kernel fails here, with NVRTC's log, not at the first launch.
        compile_now = getattr(self.kernel, "compile", None)
        if callable(compile_now):
            compile_now()
        else:
            _ = self.kernel.attributes  # older CuPy: reading attributes compiles the kernel
        self.stream = stream if stream is not None else cp.cuda.Stream(non_blocking=True)
        self._tail = (np.uint32(grid.x), np.uint32(grid.y), np.uint32(grid.z))

    def launch(self, start: int, end: int) -> None:
        """Enqueue slice [start, end) on the stream (asynchronous)."""
        if not 0 <= start < end <= self.grid.blocks:
            raise ValueError(f"slice [{start}, {end}) outside grid of {self.grid.blocks} blocks")
        with self.stream:
            self.kernel((end - start, 1, 1), self.block, (*self.args, np.uint64(start), *self._tail))

    def run_slice(self, start: int, end: int) -> None:
        """Run slice [start, end) to completion, so progress written after it is true."""
        self.launch(start, end)
        self.stream.synchronize()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def output(self) -> np.ndarray:
        return self._cp.asnumpy(self.out) if self.out is not None else np.empty(0, dtype=np.float32)

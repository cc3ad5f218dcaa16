"""CPU reference backend: runs built-in kernels slice by slice on numpy.

It uses the same slicing arithmetic as the CUDA backend (grid.unlinearise is the formula the rewrite
emits), and counts how often each block ran, so tests can check that a slice list covers the grid
exactly once and that sliced output equals unsliced output.
"""

from __future__ import annotations

import os
import time

import numpy as np

from .builtins import CpuKernel
from .grid import linearise, unlinearise

# Beyond this many blocks the visit counter would cost more memory than it is worth.
MAX_COUNTED_BLOCKS = 1 << 26
# Tests of pods and dispatchers need slices that last (a window to kill something mid-job): each
# slice then takes at least this many µs per block, as a slower GPU would. Unset: as fast as numpy.
ENV_PACE_US = "EDGEWEAVE_CPU_PACE_US_PER_BLOCK"


def pace_us() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_PACE_US, "") or 0.0))
    except ValueError:
        return 0.0


class CpuSliceRunner:
    backend = "cpu"

    def __init__(self, kernel: CpuKernel) -> None:
        self.kernel = kernel
        blocks = kernel.grid.blocks
        self.visits: np.ndarray | None = (
            np.zeros(blocks, dtype=np.int32) if blocks <= MAX_COUNTED_BLOCKS else None)
        self.pace_us = pace_us()

    def run_slice(self, start: int, end: int) -> None:
        if not 0 <= start < end <= self.kernel.grid.blocks:
            raise ValueError(f"slice [{start}, {end}) outside grid of {self.kernel.grid.blocks} blocks")
        t_end = time.monotonic() + (end - start) * self.pace_us / 1e6
        coords = unlinearise(np.arange(start, end, dtype=np.uint64), self.kernel.grid)
        self.kernel.run_blocks(coords)
        if self.visits is not None:
            np.add.at(self.visits, linearise(coords, self.kernel.grid).astype(np.int64), 1)
        if self.pace_us and (left := t_end - time.monotonic()) > 0:
            time.sleep(left)

    def synchronize(self) -> None:
        """Slices run synchronously on the CPU."""

    def output(self) -> np.ndarray:
        return self.kernel.out

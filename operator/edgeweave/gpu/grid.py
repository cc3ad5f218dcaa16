"""Slicing arithmetic shared by the planner, the CPU reference and the CUDA rewrite.

A grid (gx, gy, gz) is numbered linearly with x fastest: lin = x + gx * (y + gy * z). A slice is a
half-open range [start, end) of linear block numbers; it is launched as a 1-D sub-grid of end-start
blocks, and each block recovers its coordinates from start + blockIdx.x (see rewrite.py, which emits
the same formula in CUDA C).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Grid(NamedTuple):
    x: int
    y: int = 1
    z: int = 1

    @property
    def blocks(self) -> int:
        return self.x * self.y * self.z


def unlinearise(lin: np.ndarray, grid: Grid) -> np.ndarray:
    """(k,) linear block numbers -> (k, 3) block coordinates, exactly as the rewritten kernel does."""
    lin = np.asarray(lin, dtype=np.uint64)
    gx, gy = np.uint64(grid.x), np.uint64(grid.y)
    return np.stack([lin % gx, (lin // gx) % gy, lin // (gx * gy)], axis=1)


def linearise(coords: np.ndarray, grid: Grid) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.uint64)
    gx, gy = np.uint64(grid.x), np.uint64(grid.y)
    return coords[:, 0] + gx * (coords[:, 1] + gy * coords[:, 2])


def slice_ranges(total_blocks: int, slice_blocks: int) -> list[tuple[int, int]]:
    """Fixed-size slices covering [0, total_blocks) in order; only the last may be shorter."""
    if total_blocks < 1 or slice_blocks < 1:
        raise ValueError("total_blocks and slice_blocks must be >= 1")
    return [(s, min(s + slice_blocks, total_blocks)) for s in range(0, total_blocks, slice_blocks)]

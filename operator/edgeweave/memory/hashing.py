"""Per-page checksums: what the baseline records, the sweep compares and recovery verifies.

xxh3-128 when the `xxhash` package is there (about 10 GB/s, so a 1 GiB region is checked in
~0.1 s), BLAKE2b-128 from the standard library otherwise. Both are 16 bytes; the algorithm
is recorded in the manifest and in the region state, and a mismatch of algorithms is an
error, never a silent "everything differs".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where an array is made, not here: the recovery command's fast path
# (pre-staged baseline + dirty pages) never needs it, and its import is a third of that
# command's start-up on a loaded CPU.

DIGEST = 16

try:
    import xxhash

    def _xxh3(b: memoryview) -> bytes:
        return xxhash.xxh3_128_digest(b)

    DEFAULT_ALGO = "xxh3-128"
except ImportError:  # pragma: no cover - depends on the environment
    xxhash = None
    DEFAULT_ALGO = "blake2b-128"


def _blake2b(b: memoryview) -> bytes:
    return hashlib.blake2b(b, digest_size=DIGEST).digest()


def hasher(algo: str) -> Callable[[memoryview], bytes]:
    if algo == "blake2b-128":
        return _blake2b
    if algo == "xxh3-128":
        if xxhash is None:
            raise RuntimeError("checksums are xxh3-128 but the xxhash package is not installed")
        return _xxh3
    raise ValueError(f"unknown checksum algorithm {algo!r}")


def raw_sums(buf: memoryview, page_size: int, pages: Iterable[int] | None = None,
             algo: str = DEFAULT_ALGO, threads: int = 2) -> bytes:
    """Checksums of the given pages (all pages when None), DIGEST bytes each, concatenated."""
    h = hasher(algo)
    npages = len(buf) // page_size
    idx = range(npages) if pages is None else list(pages)
    n = len(idx)

    def work(lo: int, hi: int) -> bytes:
        return b"".join([h(buf[p * page_size:(p + 1) * page_size]) for p in idx[lo:hi]])

    if threads <= 1 or n < 4096:
        return work(0, n)
    from concurrent.futures import ThreadPoolExecutor

    step = (n + threads - 1) // threads
    with ThreadPoolExecutor(threads) as ex:
        return b"".join(ex.map(lambda lo: work(lo, min(n, lo + step)), range(0, n, step)))


def as_ints(pages: Sequence[int]) -> list[int]:
    """A page list (a numpy array or any sequence of ints) as a list of Python ints."""
    return pages.tolist() if hasattr(pages, "tolist") else [int(p) for p in pages]  # type: ignore[union-attr]


def mismatches(got: bytes, want: bytes | memoryview, positions: Sequence[int] | None = None) -> list[int]:
    """Indices i where got's i-th digest differs from want's (want's positions[i]-th, when given)."""
    w = memoryview(want)
    bad = []
    for i in range(len(got) // DIGEST):
        j = i if positions is None else positions[i]
        if got[i * DIGEST:(i + 1) * DIGEST] != w[j * DIGEST:(j + 1) * DIGEST]:
            bad.append(i)
    return bad


def page_sums(buf: memoryview, page_size: int, pages: Iterable[int] | None = None,
              algo: str = DEFAULT_ALGO, out: np.ndarray | None = None, threads: int = 2) -> np.ndarray:
    """Checksums of the given pages (all pages when None) as an (n, 16) uint8 array.

    With `out` given and `pages` None, writes into it in place (out must be (npages, 16)).
    """
    import numpy as np

    raw = raw_sums(buf, page_size, pages, algo, threads)
    res = np.frombuffer(raw, dtype=np.uint8).reshape(len(raw) // DIGEST, DIGEST)
    if out is not None:
        out[:] = res
        return out
    return res.copy()

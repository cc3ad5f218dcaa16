"""Known page contents for test and benchmark writers: page p at version v is a unique pattern.

Word 0 of a page encodes (p, v); the rest is a mix of p, v and the word index, so a page from
the wrong place or the wrong version, or a torn one, never passes for the right one.
"""

from __future__ import annotations

import numpy as np

K1 = np.uint64(0x9E3779B97F4A7C15)
K2 = np.uint64(0xC2B2AE3D27D4EB4F)
K3 = np.uint64(0x165667B19E3779F9)


def pattern(pages: np.ndarray, versions: np.ndarray, words: int) -> np.ndarray:
    """(len(pages), words) uint64 contents of the given pages at the given versions."""
    p = np.asarray(pages, dtype=np.uint64)[:, None]
    v = np.asarray(versions, dtype=np.uint64)[:, None]
    i = np.arange(words, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        out = p * K1 + v * K2 + i * K3
    out[:, 0] = (p[:, 0] << np.uint64(32)) | v[:, 0]
    return out


def check(region_words: np.ndarray, acked: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Compare a region (npages, words) with the last acknowledged version of each page.

    Returns (pages equal to the acked version + 1, pages equal to neither): the first are writes
    made but not yet acknowledged when the writer died, the second are lost or corrupt.
    """
    npages, words = region_words.shape
    ahead, wrong = [], []
    for lo in range(0, npages, chunk):
        hi = min(npages, lo + chunk)
        idx = np.arange(lo, hi)
        ok = np.all(region_words[lo:hi] == pattern(idx, acked[lo:hi], words), axis=1)
        bad = idx[~ok]
        if len(bad):
            nxt = np.all(region_words[bad] == pattern(bad, acked[bad] + 1, words), axis=1)
            ahead.extend(bad[nxt].tolist())
            wrong.extend(bad[~nxt].tolist())
    return np.array(ahead, dtype=np.int64), np.array(wrong, dtype=np.int64)

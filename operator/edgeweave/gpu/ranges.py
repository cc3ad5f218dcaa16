"""Sets of integers held as sorted, disjoint half-open ranges. Pure.

Slice plans, progress and the dispatcher's pool are sets of slice or block indices that can reach
2^31 members and more: they are kept as ranges, so memory and the wire size follow the number of
gaps, never the number of members. The text form is the run list the rest of the code already speaks
("0-3,7": inclusive runs), with a bound on the number of runs a reader accepts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

MAX_RUNS = 4096  # runs a decoded text may hold: a status or annotation stays small


class RangeSet:
    """Disjoint, sorted, non-adjacent [lo, hi) ranges."""

    __slots__ = ("_r",)

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._r: list[tuple[int, int]] = []
        for lo, hi in ranges:
            self.add(lo, hi)

    @classmethod
    def span(cls, lo: int, hi: int) -> RangeSet:
        out = cls()
        if hi > lo:
            out._r = [(lo, hi)]
        return out

    @classmethod
    def of(cls, indices: Iterable[int]) -> RangeSet:
        out = cls()
        for i in sorted(set(indices)):
            if out._r and out._r[-1][1] == i:
                out._r[-1] = (out._r[-1][0], i + 1)
            else:
                out._r.append((i, i + 1))
        return out

    def ranges(self) -> list[tuple[int, int]]:
        return list(self._r)

    def __len__(self) -> int:
        return sum(hi - lo for lo, hi in self._r)

    def __bool__(self) -> bool:
        return bool(self._r)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self._r == other._r

    def __repr__(self) -> str:
        return f"RangeSet({self.encode()!r})"

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int):
            return False
        k = bisect.bisect_right(self._r, (i, float("inf"))) - 1
        return k >= 0 and self._r[k][0] <= i < self._r[k][1]

    def runs(self) -> int:
        return len(self._r)

    def first(self) -> int | None:
        return self._r[0][0] if self._r else None

    def __iter__(self) -> Iterator[int]:
        """Members in order; only for sets known to be small (tests, tiny jobs)."""
        for lo, hi in self._r:
            yield from range(lo, hi)

    def copy(self) -> RangeSet:
        out = RangeSet()
        out._r = list(self._r)
        return out

    def add(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        k = bisect.bisect_left(self._r, (lo, lo))
        # Merge with a left neighbour that touches or overlaps.
        if k > 0 and self._r[k - 1][1] >= lo:
            k -= 1
            lo = min(lo, self._r[k][0])
        j = k
        while j < len(self._r) and self._r[j][0] <= hi:
            hi = max(hi, self._r[j][1])
            j += 1
        self._r[k:j] = [(lo, hi)]

    def remove(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        out: list[tuple[int, int]] = []
        for a, b in self._r:
            if b <= lo or a >= hi:
                out.append((a, b))
                continue
            if a < lo:
                out.append((a, lo))
            if b > hi:
                out.append((hi, b))
        self._r = out

    def union(self, other: RangeSet) -> RangeSet:
        out = self.copy()
        for lo, hi in other._r:
            out.add(lo, hi)
        return out

    def difference(self, other: RangeSet) -> RangeSet:
        out = self.copy()
        for lo, hi in other._r:
            out.remove(lo, hi)
        return out

    def intersection(self, other: RangeSet) -> RangeSet:
        return self.difference(self.difference(other))

    def overlaps(self, lo: int, hi: int) -> bool:
        return any(a < hi and lo < b for a, b in self._r)

    def covers(self, lo: int, hi: int) -> bool:
        return any(a <= lo and hi <= b for a, b in self._r)

    def take(self, n: int) -> RangeSet:
        """The first `n` members (in order), as a set."""
        out = RangeSet()
        for lo, hi in self._r:
            if n <= 0:
                break
            k = min(n, hi - lo)
            out._r.append((lo, lo + k))
            n -= k
        return out

    def split(self, parts: int) -> list[RangeSet]:
        """`parts` contiguous pieces in order whose sizes differ by at most one."""
        total = len(self)
        pieces: list[RangeSet] = []
        rest = self.copy()
        for i in range(parts):
            size = ((i + 1) * total) // parts - (i * total) // parts
            piece = rest.take(size)
            rest = rest.difference(piece)
            pieces.append(piece)
        return pieces

    def encode(self) -> str:
        return ",".join(str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}" for lo, hi in self._r)

    @classmethod
    def decode(cls, text: str, *, max_runs: int = MAX_RUNS, bound: int | None = None) -> RangeSet:
        """Inverse of `encode`; ValueError on anything malformed, beyond `bound`, or over `max_runs` runs."""
        out = cls()
        runs = [r.strip() for r in text.split(",") if r.strip()]
        if len(runs) > max_runs:
            raise ValueError(f"{len(runs)} runs; at most {max_runs} are accepted")
        for run in runs:
            a, _, b = run.partition("-")
            try:
                lo, hi = int(a), int(b or a)
            except ValueError:
                raise ValueError(f"bad run {run[:40]!r}") from None
            if lo < 0 or hi < lo or (bound is not None and hi >= bound):
                raise ValueError(f"bad run {run[:40]!r}" + (f" (members must be < {bound})" if bound else ""))
            out.add(lo, hi + 1)
        return out

"""Statistics the aggregation benches share: the median and a distribution-free interval for it."""

from __future__ import annotations

import math
import statistics


def median_interval(xs: list[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """Median and a distribution-free interval for it: order statistics (k, n+1-k) with the largest k
    whose binomial coverage is still >= level (n=10: the 2nd and 9th values, 97.9%)."""
    v = sorted(x for x in xs if x is not None and math.isfinite(x))
    n = len(v)
    if not n:
        return None, None, None
    med = statistics.median(v)
    best = None
    for k in range(1, n // 2 + 1):
        cover = sum(math.comb(n, i) for i in range(k, n - k + 1)) / 2**n
        if cover >= level:
            best = k
    if best is None:
        return med, None, None  # too few runs for an interval at this level
    return med, v[best - 1], v[n - best]

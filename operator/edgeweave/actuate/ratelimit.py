"""Sliding-window rate limits on cluster changes (descheduler users' top complaint: no limits)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class SlidingWindow:
    """At most `limit` actions per `interval` seconds, per key. Thread-safe: kopf runs sync handlers in threads."""

    def __init__(self) -> None:
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def try_acquire(self, key: str, limit: int, interval: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._events[key]
            while q and q[0] <= now - interval:
                q.popleft()
            if len(q) >= limit:
                return False
            q.append(now)
            return True

    def remaining(self, key: str, limit: int, interval: float, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._events[key]
            return max(0, limit - sum(1 for t in q if t > now - interval))

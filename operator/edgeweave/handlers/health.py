"""Failing objects back off; a wedged reconcile shows in /readyz.

A round that raises is retried after an exponentially growing delay (1 s, 2 s, ... capped), the
object gets a `Ready=False ReconcileFailed` condition and one Warning Event naming the fault, and the
traceback is logged once per distinct error — not on every tick. A round that runs far longer than any
round should (an API call that never returns, a planner in an endless loop) is "wedged": /readyz then
answers 503 and names it, so a Deployment's readiness probe (and the operator's own metrics) see it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 1024


@dataclass
class Backoff:
    base_s: float = 1.0
    cap_s: float = 300.0
    failures: int = 0
    last_error: str = ""

    def failed(self, error: str) -> tuple[float, bool]:
        """Record a failure; returns (delay before the next try, whether this error is new)."""
        new = error != self.last_error
        self.failures += 1
        self.last_error = error
        return min(self.cap_s, self.base_s * 2 ** min(self.failures - 1, 30)), new

    def succeeded(self) -> bool:
        """Record a success; returns whether the object was failing before."""
        was = self.failures > 0
        self.failures, self.last_error = 0, ""
        return was


def record_failure(logger: Any, what: str, backoff: Backoff, delay: float, new_error: bool) -> None:
    """Count and log a failed reconcile: the traceback once per distinct error, one line per retry after."""
    from .. import metrics

    metrics.RECONCILE_FAILURES.labels(what.split()[0]).inc()
    if new_error:
        logger.exception("%s failed; next try in %.0fs", what, delay)
    else:
        logger.warning("%s failed again (%d in a row): %s; next try in %.0fs", what, backoff.failures,
                       backoff.last_error[:200], delay)


def describe_error(err: BaseException) -> str:
    """One bounded line for a condition or an Event: the class and the start of the message."""
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text[:MAX_MESSAGE - 64]


class Watchdog:
    """Which reconcile rounds are running, and since when."""

    def __init__(self, wedged_after_s: float = 120.0) -> None:
        self.wedged_after_s = wedged_after_s
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], float] = {}

    @contextmanager
    def round(self, kind: str, key: str) -> Iterator[None]:
        with self._lock:
            self._running[(kind, key)] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._running.pop((kind, key), None)

    def wedged(self, now: float | None = None) -> list[tuple[str, str, float]]:
        now = time.monotonic() if now is None else now
        with self._lock:
            return sorted((kind, key, now - t) for (kind, key), t in self._running.items()
                          if now - t > self.wedged_after_s)


WATCHDOG = Watchdog()


class Backoffs:
    """Backoff per object, for handlers kopf calls (timers, events) rather than a loop of our own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str], tuple[Backoff, float]] = {}

    def due(self, key: tuple[str, str], now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._by_key.get(key)
        return entry is None or now >= entry[1]

    def failed(self, key: tuple[str, str], err: BaseException, now: float | None = None) -> tuple[Backoff, float, bool]:
        now = time.monotonic() if now is None else now
        with self._lock:
            backoff = self._by_key.get(key, (Backoff(), 0.0))[0]
            delay, new = backoff.failed(describe_error(err))
            self._by_key[key] = (backoff, now + delay)
        return backoff, delay, new

    def succeeded(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return self._by_key.pop(key, None) is not None

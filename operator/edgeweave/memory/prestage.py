"""Pre-staging: node agents on the likely failover devices pull each new baseline in the background.

A failover then reads the baseline from local disk and only the dirty pages cross the source
link. The pull is rate-limited (token bucket), verified page by page against the manifest's
checksums, and published locally with the same atomic rename as the store itself, so a
recovery racing a pull sees the previous complete local epoch (or falls back to the store).
"""

from __future__ import annotations

import logging
import re
import threading
import time

from .store import BaselineStore, DirStore, StoreError
from .store_s3 import RateLimit

log = logging.getLogger("edgeweave.memory.prestage")
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(s: str) -> float:
    """'200mbit' / '25MB' / '1e8' -> bytes per second."""
    m = re.fullmatch(r"\s*([0-9.e+]+)\s*([kmg]?)(bit|b|B)?(/s|ps)?\s*", s, re.IGNORECASE)
    if not m:
        raise ValueError(f"bad rate {s!r} (e.g. 200mbit, 25MB)")
    v = float(m.group(1)) * _UNITS[m.group(2).lower()]
    return v / 8 if (m.group(3) or "").lower() == "bit" else v


def prestage_once(store: BaselineStore, local: DirStore, name: str, rate_bps: float | None) -> dict:
    """Pull the store's current epoch of `name` unless it is already here; returns what it did."""
    t0 = time.monotonic()
    m = store.manifest(name)
    try:
        lm = local.manifest(name, m.epoch)
        if lm.sums_sha256 == m.sums_sha256:
            return {"region": name, "epoch": m.epoch, "pulled": False, "seconds": 0.0}
    except (StoreError, OSError):
        pass
    local.import_epoch(store, m, RateLimit(rate_bps) if rate_bps else None)
    dt = time.monotonic() - t0
    log.info("pre-staged %s epoch %d (%d bytes) in %.2fs", name, m.epoch, m.size_bytes, dt)
    return {"region": name, "epoch": m.epoch, "pulled": True, "bytes": m.size_bytes, "seconds": round(dt, 3)}


class Prestager:
    """The agent's background job: poll the store's CURRENT for each region, pull new epochs."""

    def __init__(self, store: BaselineStore, local: DirStore, names: list[str], rate_bps: float | None,
                 interval: float = 5.0) -> None:
        self.store, self.local, self.names = store, local, names
        self.rate, self.interval = rate_bps, interval
        self.last: dict[str, dict] = {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="ewm-prestage", daemon=True)

    def start(self) -> Prestager:
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for n in list(self.names):
                try:
                    self.last[n] = prestage_once(self.store, self.local, n, self.rate)
                except Exception as exc:  # keep polling: the store may come back
                    self.last[n] = {"region": n, "error": str(exc)}
                    log.warning("pre-staging %s failed: %s", n, exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=30)

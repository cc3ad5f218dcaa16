"""Pre-staging: node agents on the likely failover devices pull each new baseline in the background.

A failover then reads the baseline from local disk and only the dirty pages cross the source
link. The pull is rate-limited (token bucket), verified page by page against the manifest's
checksums, and published locally with the same atomic rename as the store itself, so a
recovery racing a pull sees the previous complete local epoch (or falls back to the store).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable

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


class _Background:
    """A daemon thread running `_run` until `stop()`."""

    thread_name = "ewm-background"

    def _init_thread(self) -> None:
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self):  # type: ignore[no-untyped-def]
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()


class Prestager(_Background):
    """The agent's background job: poll the store's CURRENT for each region, pull new epochs.

    `names` is the fixed list (command line); `wanted`, when given, is asked each pass for the regions
    the operator currently wants here (`NodeWatch.names`): their union is pulled, and a region the
    operator no longer names is dropped from the local cache (node memory is not kept for nothing).
    """

    def __init__(self, store: BaselineStore, local: DirStore, names: list[str], rate_bps: float | None,
                 interval: float = 5.0, wanted: Callable[[], list[str]] | None = None) -> None:
        self.store, self.local, self.names = store, local, names
        self.rate, self.interval, self.wanted = rate_bps, interval, wanted
        self.last: dict[str, dict] = {}
        self.thread_name = "ewm-prestage"
        self._init_thread()

    def current_names(self) -> list[str]:
        return sorted(set(self.names) | set(self.wanted() if self.wanted else ()))

    def _run(self) -> None:
        while not self._stop.is_set():
            names = self.current_names()
            if self.wanted is not None:
                for gone in sorted(set(self.local.regions()) - set(names)):
                    shutil.rmtree(self.local.region_dir(gone), ignore_errors=True)
                    self.last.pop(gone, None)
                    log.info("no longer pre-staging %s: dropped its local copy", gone)
            for n in names:
                if self._stop.is_set():
                    return
                try:
                    self.last[n] = prestage_once(self.store, self.local, n, self.rate)
                except Exception as exc:  # keep polling: the store may come back
                    self.last[n] = {"region": n, "error": str(exc)}
                    log.warning("pre-staging %s failed: %s", n, exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=30)


class NodeWatch(_Background):
    """What the operator wants this node to pre-stage: its Node's `prestage.memory.edgeweave.io/*`
    annotations (`targets.decode`), kept current by a watch on that one Node (RBAC: get/watch nodes)."""

    def __init__(self, node: str, core=None) -> None:  # type: ignore[no-untyped-def]
        self.node = node
        self._core = core
        self._names: list[str] = []
        self.problems: list[str] = []
        self.error: str | None = None
        self.seen = threading.Event()  # the Node was read at least once
        self.thread_name = "ewm-prestage-watch"
        self._init_thread()

    def names(self) -> list[str]:
        return list(self._names)

    def _client(self):  # type: ignore[no-untyped-def]
        if self._core is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._core = client.CoreV1Api()
        return self._core

    def _take(self, annotations: dict | None) -> None:
        from .targets import decode

        names, problems = decode(annotations or {})
        if problems and problems != self.problems:
            log.warning("node %s: pre-stage annotations skipped: %s", self.node, "; ".join(problems))
        if names != self._names:
            log.info("node %s: pre-staging %s", self.node, ", ".join(names) or "nothing")
        self._names, self.problems = names, problems
        self.seen.set()

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            try:
                core = self._client()
                obj = core.read_node(self.node)
                self._take(obj.metadata.annotations)
                self.error = None
                w = watch.Watch()
                for ev in w.stream(core.list_node, field_selector=f"metadata.name={self.node}",
                                   resource_version=obj.metadata.resource_version, timeout_seconds=60):
                    if self._stop.is_set():
                        w.stop()
                        return
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._take(ev["object"].metadata.annotations)
            except Exception as exc:  # noqa: BLE001 - the API may be away: keep the last list, retry
                self.error = str(exc)
                log.warning("watching node %s failed (retrying): %s", self.node, exc)
                self._stop.wait(5.0)

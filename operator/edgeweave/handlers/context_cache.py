"""Context of every device, read once per short interval and shared by all WorkloadGroup rounds and
EdgeSite status; and the fleet-wide record of which groups find which devices breached."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..api.edgesite import EdgeSiteSpec
from ..placement.breach import BreachReason
from ..placement.context import ContextValue, PromIndex, queries_to_run, resolve_context, sources_for
from ..placement.inventory import Device
from ..placement.sites import site_members, site_of_devices
from ..telemetry.prometheus import PrometheusClient, TelemetryError

log = logging.getLogger(__name__)
TTL_SECONDS = 1.0
# Device states are a pass over every pod of the fleet (~0.2 s of the GIL at 20,000 pods): rebuilt every
# second while groups plan, that pass was a fifth of the operator's samples in a burst of 500 plans. The
# cost: a planning round's view of free capacity is up to 3 s old (was 1 s).
FLEET_TTL_SECONDS = 3.0


@dataclass(frozen=True)
class ContextSnapshot:
    taken_at: float
    by_device: dict[str, dict[str, ContextValue]]
    prometheus_error: str | None = None  # set when Prometheus-sourced values are missing because of it


def read_context(devices: Iterable[Device], sites: Mapping[str, EdgeSiteSpec],
                 prometheus_url: str | None) -> ContextSnapshot:
    devices = list(devices)
    now = time.time()
    site_for = site_of_devices(site_members(sites, devices))  # one label index, not a pass per device
    sources_by_site = {name: sources_for(spec) for name, spec in sites.items()}
    default_sources = sources_for(None)
    uplinks_by_site = {name: [u.name for u in spec.uplinks] for name, spec in sites.items()}
    queries: dict[str, None] = {}
    for srcs in [default_sources, *sources_by_site.values()]:
        for q in queries_to_run(srcs, nodes=[d.name for d in devices],
                                uplinks=sorted({u for us in uplinks_by_site.values() for u in us}) or ["default"]):
            queries[q] = None
    results: dict[str, list[tuple[dict[str, str], float]]] = {}
    error = None
    observed_at = now
    if prometheus_url and queries:
        client = PrometheusClient(prometheus_url, timeout=3.0)
        for q in queries:
            try:
                res = client.query(q)
            except TelemetryError as e:
                # Missing, never guessed: every Prometheus-sourced value reads MISSING -> Unknown.
                error = str(e)
                results = {}
                break
            results[q] = [(s.labels, s.value) for s in res.samples]
            observed_at = min(observed_at, res.evaluated_at)
    index = PromIndex.build(results)
    by_device = {}
    for d in devices:
        site = site_for.get(d.name)
        by_device[d.name] = resolve_context(d, sources_by_site.get(site, default_sources) if site else default_sources,
                                            index, uplinks_by_site.get(site, []) if site else [], observed_at)
    return ContextSnapshot(taken_at=now, by_device=by_device, prometheus_error=error)


class ContextCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap: ContextSnapshot | None = None

    def get(self, devices: Iterable[Device], sites: Mapping[str, EdgeSiteSpec],
            prometheus_url: str | None, ttl: float = TTL_SECONDS) -> ContextSnapshot:
        """A snapshot at most `ttl` old (EdgeSite status accepts an older one than breach detection)."""
        with self._lock:
            if self._snap is None or time.time() - self._snap.taken_at > ttl:
                self._snap = read_context(devices, sites, prometheus_url)
            return self._snap


@dataclass
class BreachRegistry:
    """group -> device -> reasons, for taints (a device stays tainted while any group finds it breached)
    and for EdgeSite status."""

    _by_group: dict[str, dict[str, list[BreachReason]]] = field(default_factory=dict)
    _frozen: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, group: str, breaches: Mapping[str, list[BreachReason]], frozen: Iterable[str]) -> None:
        with self._lock:
            self._by_group[group] = {k: list(v) for k, v in breaches.items()}
            self._frozen[group] = set(frozen)

    def forget(self, group: str) -> None:
        with self._lock:
            self._by_group.pop(group, None)
            self._frozen.pop(group, None)

    def breached_devices(self) -> dict[str, list[BreachReason]]:
        with self._lock:
            out: dict[str, list[BreachReason]] = {}
            for per in self._by_group.values():
                for dev, reasons in per.items():
                    out.setdefault(dev, []).extend(reasons)
            return out

    def frozen_devices(self) -> set[str]:
        with self._lock:
            return set().union(*self._frozen.values()) if self._frozen else set()


class FleetCache:
    """Device states (free capacity after bound requests) for the whole fleet, built at most once per
    TTL and shared by every group's planning round: building them is a pass over every pod."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = 0.0
        self._states: list = []

    def get(self, devices: Iterable[Device], pods_by_node: Callable[[], Mapping[str, Iterable]],
            ttl: float = FLEET_TTL_SECONDS) -> list:
        from ..placement.states import device_states

        states = self._states
        if time.monotonic() - self._at <= ttl:
            return states
        # While one round rebuilds, the others plan on the last states rather than queue on the lock (in a
        # burst, every planning thread waited on each rebuild); only the very first build is waited for.
        if not self._lock.acquire(blocking=not states):
            return states
        try:
            if time.monotonic() - self._at > ttl:
                self._states = device_states(devices, pods_by_node())
                self._at = time.monotonic()
            return self._states
        finally:
            self._lock.release()

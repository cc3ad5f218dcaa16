"""Which devices each EdgeSite has, for every site at once, shared by all sites' refreshes.

Each site's refresh used to match every device of the fleet against its own selector and against every
other site's (the overlap check): sites^2 x devices selector checks per refresh round, 80 million at 200
sites of 10. One snapshot per short interval, from one label index, answers every site."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..api.edgesite import EdgeSiteSpec
from ..placement.inventory import Device
from ..placement.sites import site_members

TTL_SECONDS = 2.0


@dataclass(frozen=True)
class SiteView:
    taken_at: float
    devices: list[Device]
    sites: dict[str, EdgeSiteSpec]
    members: dict[str, list[Device]]
    shared: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # site -> other site -> node names


def build_view(devices: list[Device], sites: Mapping[str, EdgeSiteSpec], now: float) -> SiteView:
    members = site_members(sites, devices)
    sites_of_device: dict[str, list[str]] = {}
    for name in sorted(members):
        for d in members[name]:
            sites_of_device.setdefault(d.name, []).append(name)
    shared: dict[str, dict[str, list[str]]] = {}
    for dev, names in sorted(sites_of_device.items()):
        for a in names:
            for b in names:
                if a != b:
                    shared.setdefault(a, {}).setdefault(b, []).append(dev)
    return SiteView(taken_at=now, devices=devices, sites=dict(sites), members=members, shared=shared)


class SiteViewCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view: SiteView | None = None

    def get(self, devices: Callable[[], list[Device]], sites: Callable[[], Mapping[str, EdgeSiteSpec]],
            ttl: float = TTL_SECONDS) -> SiteView:
        with self._lock:
            now = time.monotonic()
            if self._view is None or now - self._view.taken_at > ttl:
                self._view = build_view(devices(), sites(), now)
            return self._view


class RecentWrites:
    """The status fields last sent for each object (by uid), for `hold` seconds. kopf's body shows a status
    write only once the watch delivers it; under a slow API server (patches of 5-30 s at 2,000 devices)
    each site's 10 s timer built its status on the old body again, with new condition times, and sent it
    again: 2.8-3.7 patches and as many NodesChanged Events per site at start-up. A refresh reads the body's
    status with what was sent on top, so it sends only news. After `hold` the body alone counts again (a
    write kopf gave up on is then sent once more)."""

    def __init__(self, hold: float = 60.0) -> None:
        self.hold = hold
        self._lock = threading.Lock()
        self._sent: dict[str, tuple[float, dict]] = {}

    def in_flight(self, key: str, now: float | None = None) -> dict:
        """The fields sent for `key` within `hold` (empty when none)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._sent.get(key)
            if last is None or now - last[0] >= self.hold:
                self._sent.pop(key, None)
                return {}
            return dict(last[1])

    def sent(self, key: str, fields: Mapping, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._sent.get(key)
            merged = dict(last[1]) if last is not None and now - last[0] < self.hold else {}
            merged.update(fields)
            self._sent[key] = (now, merged)

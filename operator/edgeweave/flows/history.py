"""History signal: per (source workload, destination workload or prefix, destination port),
the share of elephants among finished flows, learned online from their final byte counts.

Each finished flow multiplies the key's weights by `decay` (a half-life counted in flows)
before adding itself, so an application that changes its behaviour is followed within a
few half-lives; keys idle for `max_age_s` are forgotten and at most `max_keys` are kept
(least recently updated go first), so memory is bounded whatever the traffic.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .features import HIST_UNKNOWN


@dataclass(frozen=True, slots=True)
class HistKey:
    src: str    # source workload name, else the source IP
    dst: str    # destination workload name, else the destination prefix (a.b.c.0/len)
    dport: int
    proto: int = 6


@dataclass(slots=True)
class _Stat:
    n: float = 0.0
    elephants: float = 0.0
    medium: float = 0.0     # flows above mice_bytes (medium or elephant)
    seen: int = 0           # finished flows observed (not decayed)
    last: float = 0.0
    # (source IP, destination prefix address) pairs seen under this key: the datapath's keys
    bindings: set[tuple[str, str]] = field(default_factory=set)


def prefix_of(ip: str, prefix_len: int) -> str:
    return str(ipaddress.ip_network(f"{ip}/{prefix_len}", strict=False).network_address)


class History:
    def __init__(self, threshold_bytes: int, half_life_flows: float = 32.0, prefix_len: int = 24,
                 max_keys: int = 16384, max_age_s: float = 3600.0, mice_bytes: int = 10_000) -> None:
        self.threshold_bytes = threshold_bytes
        self.mice_bytes = mice_bytes
        self.decay = 0.5 ** (1.0 / half_life_flows)
        self.prefix_len = prefix_len
        self.max_keys = max_keys
        self.max_age_s = max_age_s
        self._stats: OrderedDict[HistKey, _Stat] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stats)

    def key(self, saddr: str, daddr: str, dport: int, proto: int,
            workloads: Mapping[str, object] | None = None) -> HistKey:
        wl = workloads or {}
        src, dst = wl.get(saddr), wl.get(daddr)
        return HistKey(src=getattr(src, "name", None) or saddr,
                       dst=getattr(dst, "name", None) or f"{prefix_of(daddr, self.prefix_len)}/{self.prefix_len}",
                       dport=dport, proto=proto)

    def observe(self, key: HistKey, final_bytes: int, now: float, binding: tuple[str, str] | None = None) -> None:
        st = self._stats.pop(key, None) or _Stat()
        st.n = st.n * self.decay + 1.0
        st.seen += 1
        st.elephants = st.elephants * self.decay + (1.0 if final_bytes > self.threshold_bytes else 0.0)
        st.medium = st.medium * self.decay + (1.0 if final_bytes > self.mice_bytes else 0.0)
        st.last = now
        if binding is not None and len(st.bindings) < 256:
            st.bindings.add(binding)
        self._stats[key] = st
        while len(self._stats) > self.max_keys:
            self._stats.popitem(last=False)

    def estimate(self, key: HistKey) -> tuple[int, int]:
        """(elephants per 1000, effective flow count); (HIST_UNKNOWN, 0) when never seen."""
        st = self._stats.get(key)
        if st is None or st.n <= 0:
            return HIST_UNKNOWN, 0
        return round(1000 * st.elephants / st.n), round(st.n)

    def medium_permille(self, key: HistKey) -> int:
        """Flows above mice_bytes per 1000 (HIST_UNKNOWN when never seen)."""
        st = self._stats.get(key)
        return round(1000 * st.medium / st.n) if st and st.n > 0 else HIST_UNKNOWN

    def seen(self, key: HistKey) -> int:
        st = self._stats.get(key)
        return st.seen if st else 0

    def recent(self, n: int) -> list[HistKey]:
        """The n most recently updated keys."""
        return list(self._stats)[-n:]

    def expire(self, now: float) -> list[HistKey]:
        old = [k for k, s in self._stats.items() if now - s.last > self.max_age_s]
        for k in old:
            del self._stats[k]
        return old

    def entries(self) -> Iterable[tuple[HistKey, tuple[str, str], tuple[int, int]]]:
        """Every (key, (source IP, destination prefix), estimate) the datapath map should hold."""
        for k, st in self._stats.items():
            est = self.estimate(k)
            for b in st.bindings:
                yield k, b, est

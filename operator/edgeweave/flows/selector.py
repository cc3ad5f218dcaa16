"""Uplink selection: a pure function of a flow's class, the uplinks' state and the policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..api.edgesite import FlowPolicy, SelectorStrategy
from .model import FlowClass


@dataclass(frozen=True, slots=True)
class UplinkState:
    name: str
    capacity_bps: float
    latency_ms: float
    healthy: bool
    load_bps: float = 0.0        # measured send rate over the last interval
    elephants: int = 0           # active elephant flows pinned here
    mice: int = 0                # active mouse flows pinned here
    mice_load_bps: float = 0.0   # part of load_bps sent by mouse / unclassified flows

    @property
    def utilisation(self) -> float:
        return self.load_bps / self.capacity_bps if self.capacity_bps > 0 else 1.0


def mice_uplink(uplinks: Sequence[UplinkState], policy: FlowPolicy) -> UplinkState | None:
    """Lowest-latency healthy uplink (within policy.mice_uplinks) that is not congested;
    when every candidate is congested, the least utilised one."""
    healthy = [u for u in uplinks if u.healthy]
    pool = [u for u in healthy if u.name in policy.mice_uplinks] or healthy
    if not pool:
        return None
    by_latency = sorted(pool, key=lambda u: (u.latency_ms, u.name))
    for u in by_latency:
        if u.utilisation <= policy.mice_max_utilisation:
            return u
    return min(by_latency, key=lambda u: (u.utilisation, u.latency_ms, u.name))


def elephant_share(u: UplinkState) -> float:
    """Rate a new elephant could expect: the capacity the mice leave (the residual for bulk
    traffic), shared with the elephants already there."""
    residual = max(u.capacity_bps - u.mice_load_bps, 0.05 * u.capacity_bps)
    return residual / (u.elephants + 1)


def select_uplink(cls: FlowClass, flow_hash: int, uplinks: Sequence[UplinkState],
                  policy: FlowPolicy) -> str | None:
    """The uplink for a new flow, or None (no healthy uplink: leave it to default routing)."""
    healthy = sorted((u for u in uplinks if u.healthy), key=lambda u: u.name)
    if not healthy:
        return None
    if policy.strategy is SelectorStrategy.Hash:
        return healthy[flow_hash % len(healthy)].name
    quiet = mice_uplink(healthy, policy)
    if cls is FlowClass.Mouse:
        return quiet.name if quiet else None
    # medium flows go where elephants go: off the mice uplink, spread by residual share
    # Elephants keep off the mice uplink while another healthy uplink exists: one elephant
    # there fills its queue and every mouse behind it waits.
    pool = [u for u in healthy if quiet is None or u.name != quiet.name] or healthy
    # Never all on one: while every elephant sits on one uplink, the next goes elsewhere.
    loaded = [u for u in pool if u.elephants > 0]
    if len(pool) > 1 and len(loaded) == 1:
        pool = [u for u in pool if u.elephants == 0]
    best = max(elephant_share(u) for u in pool)
    # ties (within 5%) broken by the flow hash so equal uplinks share elephants evenly
    top = [u for u in pool if elephant_share(u) >= 0.95 * best]
    return top[flow_hash % len(top)].name

"""Policy routing for uplink pinning: one table per uplink, one fwmark rule per table.

Rule order (lower priority value first):
  base_priority - 1   main, suppress_prefixlength 0 (connected/specific routes win; only
                      the default route is steered, so return traffic to the LAN is untouched)
  base_priority + i   fwmark mark_i -> table_i   (flows the agent pinned to uplink i)
  base_priority + 100 -> default table           (unassigned flows: the current mice uplink)
  32766 main                                      (whatever the host had)
When an uplink goes down the kernel drops its routes, so lookups in its table fall
through to the default table until the agent re-pins those flows.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

from pyroute2 import IPRoute

from ..api.edgesite import Uplink


@dataclass(frozen=True, slots=True)
class UplinkRoute:
    name: str
    interface: str
    gateway: str | None
    table: int
    mark: int
    priority: int


def plan_routes(uplinks: Sequence[Uplink], base_table: int = 100, base_mark: int = 0xE00,
                base_priority: int = 1000) -> list[UplinkRoute]:
    """Table, mark and rule priority per uplink, in EdgeSite order (stable across restarts)."""
    return [UplinkRoute(u.name, u.interface, u.gateway, base_table + i, base_mark + i, base_priority + i)
            for i, u in enumerate(uplinks)]


class Pinning:
    def __init__(self, routes: Sequence[UplinkRoute], default_table: int = 199,
                 default_priority: int = 1100) -> None:
        self.routes = list(routes)
        self.default_table = default_table
        self.default_priority = default_priority
        self.main_priority = min((r.priority for r in self.routes), default=1000) - 1
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def link_up(self) -> dict[str, bool]:
        """Per uplink: admin up with carrier (operstate UP, or UNKNOWN for carrier-less devices)."""
        state: dict[str, bool] = {}
        links = {ln.get_attr("IFLA_IFNAME"): ln for ln in self.ipr.get_links()}
        for r in self.routes:
            ln = links.get(r.interface)
            state[r.name] = bool(ln is not None and ln["flags"] & 1
                                 and ln.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN"))
        return state

    def tx_bytes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        links = {ln.get_attr("IFLA_IFNAME"): ln for ln in self.ipr.get_links()}
        for r in self.routes:
            ln = links.get(r.interface)
            st = ln.get_attr("IFLA_STATS64") if ln is not None else None
            out[r.name] = int(st["tx_bytes"]) if st else 0
        return out

    def _route(self, r: UplinkRoute, table: int) -> None:
        idx = self.ipr.link_lookup(ifname=r.interface)
        if not idx:
            return
        kw: dict[str, object] = {"dst": "0.0.0.0/0", "table": table, "oif": idx[0]}
        if r.gateway:
            kw["gateway"] = r.gateway
        self.ipr.route("replace", **kw)

    def ensure(self, up: dict[str, bool], default_uplink: str | None) -> None:
        """Idempotent: rules exist, each up uplink's table has its default route, and the
        default table points at `default_uplink` (kept when None)."""
        have = {(int(rule.get_attr("FRA_PRIORITY") or 0), int(rule.get_attr("FRA_TABLE") or 0))
                for rule in self.ipr.get_rules(family=2)}
        if self.main_priority and (self.main_priority, 254) not in have:
            self.ipr.rule("add", family=2, table=254, priority=self.main_priority, FRA_SUPPRESS_PREFIXLEN=0)
        for r in self.routes:
            if (r.priority, r.table) not in have:
                self.ipr.rule("add", family=2, fwmark=r.mark, fwmask=0xFFFFFFFF, table=r.table,
                              priority=r.priority)
            if up.get(r.name):
                try:
                    self._route(r, r.table)
                except Exception as e:  # link flapping between the check and the route: next tick
                    if getattr(e, "code", None) not in (errno.ENETDOWN, errno.ENETUNREACH, errno.ENODEV):
                        raise
        if (self.default_priority, self.default_table) not in have:
            self.ipr.rule("add", family=2, table=self.default_table, priority=self.default_priority)
        if default_uplink is not None:
            r = next(x for x in self.routes if x.name == default_uplink)
            try:
                self._route(r, self.default_table)
            except Exception as e:
                if getattr(e, "code", None) not in (errno.ENETDOWN, errno.ENETUNREACH, errno.ENODEV):
                    raise

    def remove(self) -> None:
        """Delete our rules and tables (agent --cleanup)."""
        for rule in self.ipr.get_rules(family=2):
            prio = int(rule.get_attr("FRA_PRIORITY") or 0)
            table = int(rule.get_attr("FRA_TABLE") or 0)
            ours = any((prio, table) == (r.priority, r.table) for r in self.routes) or \
                (prio, table) in ((self.default_priority, self.default_table), (self.main_priority, 254))
            if ours:
                self.ipr.rule("del", family=2, priority=prio, table=table)
        for table in [r.table for r in self.routes] + [self.default_table]:
            for route in self.ipr.get_routes(family=2, table=table):
                try:
                    self.ipr.route("del", **{"dst": "0.0.0.0/0", "table": table,
                                             "oif": route.get_attr("RTA_OIF")})
                except Exception:  # already gone with its link
                    pass

"""`edgeweave agent`: classify new LAN flows from their first packets and pin them to uplinks.

Loop: pop flows the datapath announces at their k-th packet (every --poll-ms), classify,
choose an uplink, write its mark into the flow entry. Every --scan-ms: read the whole
flow table for byte counters (metrics, uplink load), catch flows whose announcement was
lost, forget idle flows, check uplink health and re-pin flows off a dead uplink.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..api.edgesite import EdgeSiteSpec
from ..flows.model import FlowClass, Model, load
from ..flows.selector import UplinkState, mice_uplink, select_uplink
from . import bpfsys
from .flowtable import FlowEntry, FlowKey
from .loader import Datapath
from .metrics import AgentMetrics
from .pinning import Pinning, plan_routes
from .workloads import load_workloads, series_labels

log = logging.getLogger("edgeweave.agent")


def read_edgesite(path: str | Path) -> EdgeSiteSpec:
    """An EdgeSite object (YAML/JSON, as kept in Git) or just its spec."""
    doc = yaml.safe_load(Path(path).read_text())
    spec = doc.get("spec", doc) if isinstance(doc, dict) else doc
    return EdgeSiteSpec.model_validate(spec)


@dataclass
class Tracked:
    uplink: str | None          # None: unassigned (default route)
    cls: FlowClass | None
    first_ns: int
    bytes: int
    last_change: float
    ended: bool = False


@dataclass
class Agent:
    spec: EdgeSiteSpec
    datapath: Datapath
    pinning: Pinning
    model: Model
    metrics: AgentMetrics
    workloads: dict[str, Any] = field(default_factory=dict)
    idle_timeout_s: float = 30.0
    tracked: dict[FlowKey, Tracked] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    load_bps: dict[str, float] = field(default_factory=dict)
    mice_load_bps: dict[str, float] = field(default_factory=dict)
    _tx_prev: dict[str, int] = field(default_factory=dict)
    _tx_t: float = 0.0
    _mice_bytes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.k = self.spec.flow_policy.decision_packets
        self.tree = self.model.tree(self.k)
        self.by_name = {r.name: r for r in self.pinning.routes}
        self.by_mark = {r.mark: r.name for r in self.pinning.routes}
        self.uplinks = {u.name: u for u in self.spec.uplinks}

    # --- decisions -------------------------------------------------------------------
    def states(self) -> list[UplinkState]:
        counts: dict[str, list[int]] = {n: [0, 0] for n in self.uplinks}
        for t in self.tracked.values():
            if t.uplink in counts and not t.ended:
                counts[t.uplink][0 if t.cls is FlowClass.Elephant else 1] += 1
        return [UplinkState(name=n, capacity_bps=u.bandwidth_mbps * 1e6, latency_ms=u.latency_ms,
                            healthy=self.up.get(n, False), load_bps=self.load_bps.get(n, 0.0),
                            elephants=counts[n][0], mice=counts[n][1],
                            mice_load_bps=self.mice_load_bps.get(n, 0.0))
                for n, u in self.uplinks.items()]

    def _write_mark(self, key: FlowKey, uplink: str | None) -> FlowEntry | None:
        flows = self.datapath.flows
        assert flows is not None
        raw = flows.lookup(key.pack())
        if raw is None:
            self.metrics.assign_failures.inc()
            return None
        entry = FlowEntry.unpack(raw)
        mark = self.by_name[uplink].mark if uplink else 0
        try:
            flows.update(key.pack(), entry.with_mark(mark).pack(), bpfsys.BPF_EXIST)
        except OSError:
            self.metrics.assign_failures.inc()
            return None
        return entry

    def decide(self, key: FlowKey, entry: FlowEntry) -> None:
        t0 = time.perf_counter()
        cls = self.tree.classify(entry.record(key))
        self.metrics.classify_seconds.observe(time.perf_counter() - t0)
        uplink = select_uplink(cls, key.hash(), self.states(), self.spec.flow_policy)
        if uplink is not None and self._write_mark(key, uplink) is None:
            return
        self.metrics.decision_delay.observe(max(0.0, (time.monotonic_ns() - entry.first_ns) / 1e9))
        self.metrics.classified.labels(cls.value, uplink or "default").inc()
        self.tracked[key] = Tracked(uplink, cls, entry.first_ns, entry.bytes, time.monotonic(), entry.ended)

    def poll_ready(self) -> int:
        assert self.datapath.ready is not None and self.datapath.flows is not None
        n = 0
        while (raw := self.datapath.ready.pop()) is not None:
            key = FlowKey.unpack(raw)
            t = self.tracked.get(key)
            val = self.datapath.flows.lookup(raw)
            if val is None:
                continue
            entry = FlowEntry.unpack(val)
            if t is not None and t.first_ns == entry.first_ns and t.cls is not None:
                continue
            self.decide(key, entry)
            n += 1
        return n

    # --- periodic --------------------------------------------------------------------
    def check_links(self) -> None:
        now_up = self.pinning.link_up()
        went_down = [n for n, ok in now_up.items() if not ok and self.up.get(n, True)]
        changed = now_up != self.up
        self.up = now_up
        for n, ok in now_up.items():
            self.metrics.uplink_up.labels(n).set(1 if ok else 0)
        if changed:
            self.pinning.ensure(self.up, self._default_uplink())
        for name in went_down:
            self.repin_from(name)

    def _default_uplink(self) -> str | None:
        quiet = mice_uplink(self.states(), self.spec.flow_policy)
        return quiet.name if quiet else None

    def repin_from(self, name: str) -> None:
        for key, t in list(self.tracked.items()):
            if t.uplink != name or t.ended:
                continue
            cls = t.cls or FlowClass.Mouse
            new = select_uplink(cls, key.hash(), self.states(), self.spec.flow_policy)
            if self._write_mark(key, new) is not None:
                t.uplink = new
                self.metrics.repins.labels(name).inc()

    def scan(self) -> None:
        assert self.datapath.flows is not None
        now = time.monotonic()
        items = self.datapath.flows.items()
        self.metrics.table_entries.set(len(items))
        seen: set[FlowKey] = set()
        mice_delta: dict[str, int] = {}
        for kraw, vraw in items:
            key, entry = FlowKey.unpack(kraw), FlowEntry.unpack(vraw)
            seen.add(key)
            t = self.tracked.get(key)
            if t is not None and t.first_ns != entry.first_ns:
                t = None  # evicted and re-created: a new flow under the same 5-tuple
            if t is None:
                if entry.mark:  # pinned before this agent started (restart): adopt as it is
                    uplink = self.by_mark.get(entry.mark)
                    cls = self.tree.classify(entry.record(key)) if entry.pkts >= self.k else None
                    t = Tracked(uplink, cls, entry.first_ns, 0, now)
                elif entry.pkts >= self.k:  # its announcement was lost (queue full)
                    self.decide(key, entry)
                    t = self.tracked.get(key)
                    if t is not None:
                        t.bytes = 0
                if t is None:
                    t = Tracked(None, None, entry.first_ns, 0, now)
                self.tracked[key] = t
            delta = max(0, entry.bytes - t.bytes)
            if delta:
                t.bytes = entry.bytes
                t.last_change = now
                up = t.uplink or "default"
                self.metrics.uplink_bytes.labels(up).inc(delta)
                if t.cls is not FlowClass.Elephant and t.uplink:
                    mice_delta[t.uplink] = mice_delta.get(t.uplink, 0) + delta
                labels = series_labels(key.saddr, key.daddr, self.workloads)
                if labels:
                    self.metrics.flow_bytes.labels(*labels).inc(delta)
            t.ended = entry.ended
            if t.ended and now - t.last_change > 2.0:
                self.datapath.flows.delete(kraw)  # closed and quiet: free the slot
                self.tracked.pop(key, None)
        for key in [k for k, t in self.tracked.items() if k not in seen or now - t.last_change > self.idle_timeout_s]:
            self.tracked.pop(key, None)
        self._update_load(mice_delta)
        self.pinning.ensure(self.up, self._default_uplink())
        self.metrics.flows.clear()
        for t in self.tracked.values():
            if t.cls is not None and t.uplink and not t.ended:
                self.metrics.flows.labels(t.cls.value, t.uplink).inc()

    def _update_load(self, mice_delta: dict[str, int]) -> None:
        now = time.monotonic()
        tx = self.pinning.tx_bytes()
        if self._tx_prev and now > self._tx_t:
            dt = now - self._tx_t
            for n, b in tx.items():
                rate = max(0, b - self._tx_prev.get(n, b)) * 8 / dt
                # smoothed: one scan is too short to call a link congested
                self.load_bps[n] = 0.5 * self.load_bps.get(n, rate) + 0.5 * rate
                m = mice_delta.get(n, 0) * 8 / dt
                self.mice_load_bps[n] = 0.5 * self.mice_load_bps.get(n, m) + 0.5 * m
        self._tx_prev, self._tx_t = tx, now

    def status(self) -> dict[str, Any]:
        flows = {str(k): {"uplink": t.uplink, "class": t.cls.value if t.cls else None, "bytes": t.bytes,
                          "ended": t.ended}
                 for k, t in self.tracked.items()}
        return {"time": time.time(), "decisionPackets": self.k, "up": self.up,
                "loadBps": self.load_bps, "reusedDatapath": self.datapath.reused, "flows": flows}


def _setns(name: str) -> None:
    # Only the network namespace: the bpffs pins must stay in the host mount namespace
    # (`ip netns exec` would remount /sys and hide them).
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET; os.setns needs Python 3.12
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), name)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="edgeweave agent", description=__doc__)
    ap.add_argument("--edgesite", required=True, help="EdgeSite YAML/JSON (object or spec)")
    ap.add_argument("--lan-interface", required=True, help="LAN-facing interface (tc ingress hook)")
    ap.add_argument("--netns", default=None, help="run in this named network namespace")
    ap.add_argument("--pin-dir", default="/sys/fs/bpf/edgeweave")
    ap.add_argument("--model", default=None, help="classifier JSON (default: the packaged one)")
    ap.add_argument("--workloads", default=None, help="IP -> workload/namespace mapping (JSON/YAML)")
    ap.add_argument("--max-flows", type=int, default=65536, help="flow table size (LRU)")
    ap.add_argument("--poll-ms", type=float, default=2.0)
    ap.add_argument("--scan-ms", type=float, default=200.0)
    ap.add_argument("--link-ms", type=float, default=100.0)
    ap.add_argument("--idle-timeout", type=float, default=30.0)
    ap.add_argument("--metrics-port", type=int, default=9477, help="0 disables the HTTP exporter")
    ap.add_argument("--metrics-addr", default="0.0.0.0")
    ap.add_argument("--status-file", default=None, help="write a JSON snapshot here every scan")
    ap.add_argument("--base-table", type=int, default=100)
    ap.add_argument("--reload", action="store_true", help="reload the BPF program even if pinned")
    ap.add_argument("--cleanup", action="store_true", help="remove datapath, rules, tables and pins; exit")
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if ns.netns:
        _setns(ns.netns)
    spec = read_edgesite(ns.edgesite)
    routes = plan_routes(spec.uplinks, base_table=ns.base_table)
    pinning = Pinning(routes, default_table=ns.base_table + 99)
    datapath = Datapath(ns.pin_dir, ns.lan_interface, ns.max_flows)
    if ns.cleanup:
        datapath.teardown()
        pinning.remove()
        pinning.close()
        return 0

    datapath.setup(spec.flow_policy.decision_packets, reload=ns.reload)
    metrics = AgentMetrics()
    if ns.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(ns.metrics_port, ns.metrics_addr, registry=metrics.registry)
    agent = Agent(spec=spec, datapath=datapath, pinning=pinning, model=load(ns.model), metrics=metrics,
                  workloads=load_workloads(ns.workloads), idle_timeout_s=ns.idle_timeout)
    log.info("agent up: lan=%s uplinks=%s k=%d datapath=%s", ns.lan_interface, [r.name for r in routes],
             agent.k, "reused" if datapath.reused else "loaded")

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.check_links()
    agent.scan()
    next_scan = next_link = time.monotonic()
    while not stop:
        agent.poll_ready()
        now = time.monotonic()
        if now >= next_link:
            agent.check_links()
            next_link = now + ns.link_ms / 1000
        if now >= next_scan:
            agent.scan()
            next_scan = now + ns.scan_ms / 1000
            if ns.status_file:
                tmp = f"{ns.status_file}.tmp"
                Path(tmp).write_text(json.dumps(agent.status()))
                os.replace(tmp, ns.status_file)
        time.sleep(ns.poll_ms / 1000)
    datapath.close()
    pinning.close()
    log.info("agent stopped; datapath and assignments stay pinned in %s", ns.pin_dir)
    return 0

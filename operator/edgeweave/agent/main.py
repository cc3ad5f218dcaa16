"""`edgeweave agent`: keep the datapath's decision maps current and pin flows to uplinks.

The tc program decides each new flow itself (history at packet 1, tree + send hint at
packet k) and writes the mark. This loop only trains and updates: every --scan-ms it reads
the flow table for byte counters (metrics, uplink load), learns the history signal from
flows that finished, rewrites the history map, the mice mark and the elephant slots when
uplink load or health change, and re-pins flows off a dead uplink. With --user-decide
(or strategy Hash) the datapath only announces flows at packet k and this loop decides
them (the fallback path), as before.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..api.edgesite import EdgeSiteSpec, SelectorStrategy
from ..flows.history import History, prefix_of
from ..flows.model import (
    FlowClass,
    HistoryRule,
    Model,
    decide_at_first_packet,
    decide_at_k,
    load,
    small_class_at_first_packet,
    small_class_at_k,
)
from ..flows.selector import UplinkState, elephant_share, mice_uplink, select_uplink
from . import bpfsys
from .flowtable import (
    HINT_VAL,
    HIST_VAL,
    LEAF,
    MODE_DATAPATH,
    MODE_USER,
    SLOTS,
    TREE_NODE,
    TREE_NODES,
    Cls,
    DecidedBy,
    FlowEntry,
    FlowKey,
    cfg_pack,
    hist_key,
)
from .loader import Datapath
from .metrics import AgentMetrics, serve_metrics
from .pinning import Pinning, plan_routes
from .workloads import load_workloads, series_labels

log = logging.getLogger("edgeweave.agent")


def _is_gateway_error(loc: tuple) -> bool:
    return len(loc) == 3 and loc[0] == "uplinks" and loc[2] == "gateway"


def read_edgesite(path: str | Path) -> EdgeSiteSpec:
    """An EdgeSite object (YAML/JSON, as kept in Git) or just its spec.

    Admission refuses a gateway that is not an IPv4 address, but an EdgeSite stored before that rule (or a
    file written by hand) must not crash-loop the agent: such an uplink keeps its raw gateway here and
    `gateway_errors` leaves it out and reports it. Any other fault still raises."""
    doc = yaml.safe_load(Path(path).read_text())
    spec = doc.get("spec", doc) if isinstance(doc, dict) else doc
    try:
        return EdgeSiteSpec.model_validate(spec)
    except ValidationError as err:
        if not err.errors() or not all(_is_gateway_error(tuple(e["loc"])) for e in err.errors()):
            raise
        raw = copy.deepcopy(spec)
        bad = {int(e["loc"][1]): raw["uplinks"][int(e["loc"][1])].get("gateway") for e in err.errors()}
        for i in bad:
            raw["uplinks"][i].pop("gateway", None)
        parsed = EdgeSiteSpec.model_validate(raw)
        uplinks = [u.model_copy(update={"gateway": str(bad[i])}) if i in bad else u
                   for i, u in enumerate(parsed.uplinks)]
        return parsed.model_copy(update={"uplinks": uplinks})


@dataclass
class Tracked:
    uplink: str | None          # None: unassigned (default route)
    cls: FlowClass | None
    first_ns: int
    bytes: int
    last_change: float
    ended: bool = False
    by: str | None = None       # what decided: history, tree, tree+hint, user
    learned: bool = False       # final size fed to the history learner


_CLASS = {Cls.Mouse: FlowClass.Mouse, Cls.Elephant: FlowClass.Elephant, Cls.Medium: FlowClass.Medium}
_BY = {DecidedBy.History: "history", DecidedBy.Tree: "tree", DecidedBy.TreeHint: "tree+hint",
       DecidedBy.User: "user"}


def gateway_errors(spec: EdgeSiteSpec) -> dict[str, str]:
    """Uplinks whose gateway cannot be routed to: they are left out, with the reason."""
    errors: dict[str, str] = {}
    for u in spec.uplinks:
        if u.gateway is None:
            continue
        try:
            ipaddress.IPv4Address(u.gateway)
        except ValueError:
            errors[u.name] = f"uplinks[{u.name}].gateway {u.gateway!r} is not an IPv4 address"
    return errors


def tree_entries(model: Model) -> list[bytes]:
    """ewf_tree rows for the model's tree (thresholds floored: the kernel compares u32s)."""
    import math

    tree = model.tree
    if len(tree.nodes) > TREE_NODES or tree.depth > 10:
        raise ValueError(f"tree too large for the datapath ({len(tree.nodes)} nodes, depth {tree.depth})")
    rows = []
    for f, t, left, right in tree.nodes:
        if f < 0:
            rows.append(TREE_NODE.pack(LEAF, 0, 0, 0, 1 if t >= tree.cut else 0))
        else:
            thr = min(max(math.floor(t), 0), 0xFFFFFFFF) if t >= 0 else None
            if thr is None:  # x <= negative is never true for u32 x: always right
                rows.append(TREE_NODE.pack(f, 0, right, right, 0))
            else:
                rows.append(TREE_NODE.pack(f, thr, left, right, 0))
    return rows


def elephant_slots(states: list[UplinkState], quiet: str | None, n: int = SLOTS) -> list[str]:
    """Weighted round-robin order of uplinks for new elephants (smooth WRR, weights = the
    capacity the mice leave), never the mice uplink while another healthy one exists."""
    healthy = sorted((u for u in states if u.healthy), key=lambda u: u.name)
    pool = [u for u in healthy if u.name != quiet] or healthy
    if not pool:
        return []
    weights = {u.name: elephant_share(UplinkState(u.name, u.capacity_bps, u.latency_ms, True,
                                                  mice_load_bps=u.mice_load_bps)) for u in pool}
    current = {name: 0.0 for name in weights}
    total = sum(weights.values())
    out = []
    for _ in range(n):
        for name, w in weights.items():
            current[name] += w
        pick = max(current, key=lambda x: (current[x], x))
        current[pick] -= total
        out.append(pick)
    return out


@dataclass
class Agent:
    spec: EdgeSiteSpec
    datapath: Datapath
    pinning: Pinning
    model: Model
    metrics: AgentMetrics
    workloads: dict[str, Any] = field(default_factory=dict)
    idle_timeout_s: float = 30.0
    user_decide: bool = False
    mice_bytes: int = 10_000
    history_rule: HistoryRule = field(default_factory=HistoryRule)
    history_prefix: int = 24
    tracked: dict[FlowKey, Tracked] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)
    load_bps: dict[str, float] = field(default_factory=dict)
    mice_load_bps: dict[str, float] = field(default_factory=dict)
    _tx_prev: dict[str, int] = field(default_factory=dict)
    _tx_t: float = 0.0
    _mice_bytes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pol = self.spec.flow_policy
        self.k = pol.decision_packets
        self.threshold = pol.elephant_threshold_bytes
        self.tree = self.model.tree
        self.by_name = {r.name: r for r in self.pinning.routes}
        self.by_mark = {r.mark: r.name for r in self.pinning.routes}
        self.uplinks = {u.name: u for u in self.spec.uplinks}
        self.config_errors = gateway_errors(self.spec)
        for name, why in self.config_errors.items():
            log.error("uplink %s left out: %s", name, why)
            self.metrics.uplink_config_error.labels(name).set(1)
        self.mode = MODE_USER if self.user_decide or pol.strategy is SelectorStrategy.Hash else MODE_DATAPATH
        self.history = History(self.threshold, prefix_len=self.history_prefix, mice_bytes=self.mice_bytes)
        self._cfg_written: bytes | None = None
        self._slots_written: list[str] | None = None
        self.hinted = 0
        self.decided = 0
        self.write_tree()

    # --- maps the datapath decides with ------------------------------------------------
    def write_tree(self) -> None:
        assert self.datapath.tree is not None
        for i, row in enumerate(tree_entries(self.model)):
            self.datapath.tree.update(i.to_bytes(4, "little"), row)

    def write_policy(self) -> None:
        """Mice mark, elephant slots and cfg, rewritten only when they change (the slots'
        round-robin counter lives in cfg: rewriting it restarts the order)."""
        assert self.datapath.cfg is not None and self.datapath.slots is not None
        states = self.states()
        quiet = mice_uplink(states, self.spec.flow_policy)
        slots = elephant_slots(states, quiet.name if quiet else None)
        if slots != self._slots_written:
            for i, name in enumerate(slots):
                self.datapath.slots.update(i.to_bytes(4, "little"), self.by_name[name].mark.to_bytes(4, "little"))
            self._slots_written = slots
        r = self.history_rule
        cfg = cfg_pack(self.mode, self.k, self.threshold, self.by_name[quiet.name].mark if quiet else 0, len(slots),
                       self.history_prefix, r.min_n, r.hi_permille, r.lo_permille, self.mice_bytes,
                       r.medium_hi_permille)
        if cfg != self._cfg_written:
            self.datapath.cfg.update((0).to_bytes(4, "little"), cfg)
            self._cfg_written = cfg

    def learn(self, key: FlowKey, final_bytes: int, now: float) -> None:
        """A finished flow's size updates the history of its (source, destination, port)
        and the datapath entry the next such flow will read at its first packet."""
        hk = self.history.key(key.saddr, key.daddr, key.dport, key.proto, self.workloads)
        dprefix = prefix_of(key.daddr, self.history_prefix)
        self.history.observe(hk, final_bytes, now, binding=(key.saddr, dprefix))
        p, n = self.history.estimate(hk)
        value = HIST_VAL.pack(p, n, self.history.medium_permille(hk))
        assert self.datapath.hist is not None
        # every source IP of the workload and every prefix seen under this key share it
        for _, (src, pfx), _est in ((k2, b, e) for k2, b, e in self.history.entries() if k2 == hk):
            self.datapath.hist.update(hist_key(src, pfx, key.dport, key.proto), value)
        self.metrics.history_keys.set(len(self.history))

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

    def classify(self, key: FlowKey, entry: FlowEntry) -> FlowClass:
        """The datapath's decision, computed here (fallback path): same rules, same tree."""
        hint = None
        if self.datapath.hints is not None and not entry.hint_seen:
            raw = self.datapath.hints.lookup(key.pack())
            if raw is not None:
                w, b, _ = HINT_VAL.unpack(raw)
                hint = (min(w, 0xFFFFFFFF), min(b, 0xFFFFFFFF))
        hk = self.history.key(key.saddr, key.daddr, key.dport, key.proto, self.workloads)
        p, n = self.history.estimate(hk)
        first = decide_at_first_packet(p, n, self.history_rule)
        if first is FlowClass.Elephant:
            return first
        if first is FlowClass.Mouse:
            small = small_class_at_first_packet(self.history.medium_permille(hk), self.history_rule, self.mice_bytes)
            if small is not None:
                return small
        feats = entry.features(hint)
        cls = decide_at_k(self.tree, feats, self.threshold)
        return cls if cls is FlowClass.Elephant else small_class_at_k(feats, self.k, self.mice_bytes)

    def decide(self, key: FlowKey, entry: FlowEntry) -> None:
        t0 = time.perf_counter()
        cls = self.classify(key, entry)
        self.metrics.classify_seconds.observe(time.perf_counter() - t0)
        uplink = select_uplink(cls, key.hash(), self.states(), self.spec.flow_policy)
        flows = self.datapath.flows
        assert flows is not None
        mark = self.by_name[uplink].mark if uplink else 0
        c = {FlowClass.Elephant: Cls.Elephant, FlowClass.Medium: Cls.Medium}.get(cls, Cls.Mouse)
        try:
            flows.update(key.pack(), entry.decided(c, mark, DecidedBy.User).pack(), bpfsys.BPF_EXIST)
        except OSError:
            self.metrics.assign_failures.inc()
            return
        self.metrics.decision_delay.observe(max(0.0, (time.monotonic_ns() - entry.first_ns) / 1e9))
        self.metrics.classified.labels(cls.value, uplink or "default").inc()
        self.metrics.decisions.labels("user").inc()
        self.tracked[key] = Tracked(uplink, cls, entry.first_ns, entry.bytes, time.monotonic(), entry.ended,
                                    by="user")

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
            if (t is not None and t.first_ns == entry.first_ns and t.cls is not None) or entry.cls:
                continue
            self.decide(key, entry)
            n += 1
        return n

    # --- periodic --------------------------------------------------------------------
    def check_links(self) -> None:
        now_up = self.pinning.link_up()
        for name in self.config_errors:
            now_up[name] = False  # never routed: its gateway is not an address
        went_down = [n for n, ok in now_up.items() if not ok and self.up.get(n, True)]
        changed = now_up != self.up
        self.up = now_up
        for n, ok in now_up.items():
            self.metrics.uplink_up.labels(n).set(1 if ok else 0)
        if changed:
            self.pinning.ensure(self.up, self._default_uplink())
            self.write_policy()
        for name in went_down:
            self.repin_from(name)

    def _default_uplink(self) -> str | None:
        quiet = mice_uplink(self.states(), self.spec.flow_policy)
        return quiet.name if quiet else None

    def repin_from(self, name: str) -> None:
        """Move every live flow marked for `name` elsewhere. Read from the table, not only
        from what this loop tracks: the datapath marks flows between two scans."""
        assert self.datapath.flows is not None
        mark = self.by_name[name].mark
        for kraw, vraw in self.datapath.flows.items():
            entry = FlowEntry.unpack(vraw)
            if entry.mark != mark or entry.ended:
                continue
            key = FlowKey.unpack(kraw)
            cls = _CLASS.get(Cls(entry.cls), FlowClass.Mouse) if entry.cls <= 3 else FlowClass.Mouse
            new = select_uplink(cls, key.hash(), self.states(), self.spec.flow_policy)
            if self._write_mark(key, new) is not None:
                t = self.tracked.get(key)
                if t is not None and t.first_ns == entry.first_ns:
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
                if entry.cls:  # decided by the datapath (or before this agent started): adopt
                    uplink = self.by_mark.get(entry.mark)
                    cls = _CLASS[Cls(entry.cls)]
                    if uplink is not None and not self.up.get(uplink, True) and not entry.ended:
                        # marked by the datapath for an uplink that died since: move it now
                        new = select_uplink(cls, key.hash(), self.states(), self.spec.flow_policy)
                        if self._write_mark(key, new) is not None:
                            self.metrics.repins.labels(uplink).inc()
                            uplink = new
                    by = _BY.get(DecidedBy(entry.decided_by), "unknown") if entry.decided_by <= 4 else "unknown"
                    t = Tracked(uplink, cls, entry.first_ns, 0, now, by=by)
                    if by != "user":
                        self.metrics.classified.labels(cls.value, uplink or "default").inc()
                        self.metrics.decisions.labels(by).inc()
                    self.decided += 1
                    self.hinted += bool(entry.hint_seen)
                elif entry.pkts >= self.k:  # undecided at k: announcement lost, or fallback mode
                    self.decide(key, entry)
                    t = self.tracked.get(key)
                    if t is not None:
                        t.bytes = 0
                if t is None:
                    t = Tracked(None, None, entry.first_ns, 0, now)
                self.tracked[key] = t
            elif t.cls is None and entry.cls:
                t.cls = _CLASS[Cls(entry.cls)]
                t.uplink = self.by_mark.get(entry.mark)
                t.by = _BY.get(DecidedBy(entry.decided_by), "unknown") if entry.decided_by <= 4 else "unknown"
                self.metrics.classified.labels(t.cls.value, t.uplink or "default").inc()
                self.metrics.decisions.labels(t.by).inc()
                self.decided += 1
                self.hinted += bool(entry.hint_seen)
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
            if t.ended and not t.learned:
                self.learn(key, entry.bytes, now)  # final byte count: the flow sent FIN/RST
                t.learned = True
            if t.ended and now - t.last_change > 2.0:
                self.datapath.flows.delete(kraw)  # closed and quiet: free the slot
                self.tracked.pop(key, None)
        for key in [k for k, t in self.tracked.items() if k not in seen or now - t.last_change > self.idle_timeout_s]:
            t = self.tracked.pop(key)
            if not t.learned and key in seen:
                self.learn(key, t.bytes, now)  # idle without FIN: its size so far is all we know
        for hk in self.history.expire(now):
            log.debug("history for %s expired", hk)
        self._update_load(mice_delta)
        self.pinning.ensure(self.up, self._default_uplink())
        self.write_policy()
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
                          "ended": t.ended, "decidedBy": t.by}
                 for k, t in self.tracked.items()}
        hist = {f"{k.src}->{k.dst}:{k.dport}": {"permille": e[0], "n": e[1], "seen": self.history.seen(k)}
                for k, e in ((k, self.history.estimate(k)) for k in self.history.recent(64))}
        return {"time": time.time(), "decisionPackets": self.k, "thresholdBytes": self.threshold,
                "mode": "datapath" if self.mode == MODE_DATAPATH else "user", "up": self.up,
                "loadBps": self.load_bps, "reusedDatapath": self.datapath.reused,
                "hint": self.datapath.hint_error or "attached", "configErrors": self.config_errors,
                "decided": self.decided, "hinted": self.hinted, "history": hist, "flows": flows}


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
    ap.add_argument("--metrics-addr", default="127.0.0.1",
                    help="listen address (default loopback: a host-network pod's other addresses are the WAN "
                         "uplinks; expose through kube-rbac-proxy, or set --metrics-token-file)")
    ap.add_argument("--metrics-token-file", default=None,
                    help="require 'Authorization: Bearer <token>' with the token in this file")
    ap.add_argument("--user-decide", action="store_true",
                    help="decide in user space (fallback): the datapath only announces flows at packet k")
    ap.add_argument("--mice-bytes", type=int, default=10_000,
                    help="flows above this that are not elephants are 'medium' and leave the mice uplink (0: off)")
    ap.add_argument("--history-prefix", type=int, default=24, help="destination prefix length of history keys")
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

    datapath.setup(reload=ns.reload)
    metrics = AgentMetrics()
    if ns.metrics_port:
        uplink_ifaces = [u.interface for u in spec.uplinks]
        serve_metrics(metrics.registry, ns.metrics_addr, ns.metrics_port, ns.metrics_token_file, uplink_ifaces)
    model = load(ns.model).for_threshold(spec.flow_policy.elephant_threshold_bytes)
    agent = Agent(spec=spec, datapath=datapath, pinning=pinning, model=model, metrics=metrics,
                  workloads=load_workloads(ns.workloads), idle_timeout_s=ns.idle_timeout,
                  user_decide=ns.user_decide, history_prefix=ns.history_prefix, mice_bytes=ns.mice_bytes)
    log.info("agent up: lan=%s uplinks=%s k=%d threshold=%d (tree for %d) decisions in %s, hint %s, datapath %s",
             ns.lan_interface, [r.name for r in routes], agent.k, agent.threshold, model.threshold_bytes,
             "datapath" if agent.mode == MODE_DATAPATH else "user space", datapath.hint_error or "attached",
             "reused" if datapath.reused else "loaded")

    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.check_links()
    agent.write_policy()
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

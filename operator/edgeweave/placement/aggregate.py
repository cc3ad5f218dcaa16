"""Aggregation and defragmentation planners: pure functions from a snapshot to a Plan.

Aggregation brings co-dependent workloads that are split across devices onto one device:

1. Whole groups first. For each connected group of co-dependent workloads (a component of the
   dependency graph) that still sends traffic across devices, pick the device that can hold all of
   it with the fewest moves (one of its current devices, or failing that the tightest device with
   room), and move the rest there. Full consolidation removes all of the group's cross-device
   traffic, so it is the best a group can do; fewest moves breaks ties.
2. Then single pods, for groups that cannot be gathered (too big for any device, pinned apart,
   context requirements): move a pod next to its heaviest partners when that alone saves enough.
3. Repeat until nothing changes, so planning again on the result yields no moves (idempotence).

Hysteresis: a group is gathered only when each of its moves saves at least minGainBytesPerSecond on
average; a single pod starts a group moving only when the move saves at least gainThreshold of that
pod's whole traffic (local or not) and at least minGainBytesPerSecond; once a group moves in a plan,
its pods are settled down to half the threshold, which leaves a margin against traffic noise.
Cooling-down and non-movable pods never move. Every step strictly reduces cross-device traffic, so
plans cannot cycle.

Defragmentation drains devices whose CPU requests are below a threshold onto busier devices, moving
the workloads that are co-located there together, so cross-device traffic never rises. A device is
drained only completely (or not at all), and only onto devices that are strictly busier, so packing
always moves load "uphill" and cannot oscillate.
"""

from __future__ import annotations

import bisect
import gc
import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from ..api.workloadgroup import AggregationPolicy
from .fit import EPS, CapacityLedger
from .graph import DependencyGraph, WKey, human_rate
from .model import DeviceState, Edge, Move, Plan, PlanKind, Skipped, WorkloadState
from .nodematch import node_allows
from .solver import Problem, SolverPod, solve
from .spread import conflicts

RequirementsOk = Callable[[WorkloadState, DeviceState], bool]

MAX_PASSES = 20
# The CP-SAT pass is bounded by work, not by time, so the same snapshot gives the same plan on an
# idle machine and on one loaded ten times over. Work is counted on CP-SAT's deterministic clock
# (about seconds of one core) plus a fixed charge per neighbourhood for building its model in Python.
SOLVER_WORK = 1.0
SOLVER_WORK_PER_NEIGHBOURHOOD = 0.5
# On fleets too large for one model, the split groups after the greedy are solved heaviest first, at
# most this many per plan and with this much work each: their gains are small there (the greedy is
# within about 1% of what the neighbourhood search finds on the 1,000-device bench fleet) and each
# model costs tens of milliseconds to build; the next plan continues with the next heaviest.
MAX_GROUP_NEIGHBOURHOODS = 4
GROUP_NEIGHBOURHOOD_WORK = 0.05
NEIGHBOURHOOD_CHARGE = 0.01  # work charged per model built, whatever the solver reports
# A safety net only: a plan whose solver pass would run past this wall time (a machine so loaded that
# a second of work takes minutes) keeps the best answer found so far. It does not bind in normal
# operation; when it does, the plan may differ from the unhurried one (the bench reports it).
PLAN_WALL_LIMIT_SECONDS = 20.0
NOGOOD_ROUNDS = 4  # re-solves of one neighbourhood after an answer with no executable order
SMALL_FLEET_DEVICES = 24  # up to this many devices (and SMALL_FLEET_PODS pods) one model covers the fleet
SMALL_FLEET_PODS = 240
NEIGHBOUR_DEVICES = 4  # roomiest devices added to a split group's own devices
ROOM_PODS_PER_DEVICE = 6  # unrelated small pods per neighbourhood device that may move to make room
MAX_NEIGHBOURHOOD_PODS = 120


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a plan runs.

    A 1,000-device plan allocates a few hundred thousand short-lived tuples and dicts, all freed by
    reference counting; each allocation burst still triggers the collector, whose older-generation
    passes walk the snapshot's tens of thousands of pydantic objects: 30-40% of the plan's time, and
    most of its variance. Nothing the planner builds relies on the collector (no cycles to free), so
    results are the same. Nested and concurrent plans (threads) share one hold: the collector comes
    back on when the last one ends, and only if it was on before the first began.
    """
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def plan_aggregation(devices: Iterable[DeviceState], workloads: Iterable[WorkloadState], edges: Iterable[Edge],
                     policy: AggregationPolicy, *, requirements_ok: RequirementsOk | None = None,
                     bytes_per_request: float = 2048.0, max_moves: int | None = None,
                     max_moves_per_group: int | None = None, max_skipped: int = 20,
                     solver_seconds: float | None = None, solver_work: float = SOLVER_WORK) -> Plan:
    """Which workloads move where so co-dependent ones share a device. See the module doc.

    max_moves caps the plan (ActuationLimits.maxMovesPerInterval); max_moves_per_group caps each
    WorkloadGroup separately when one call plans several groups. Moves are listed in the order the
    planner applied them: each fits once the ones before it are done. solver_work bounds the
    deterministic work of the CP-SAT neighbourhood search after the greedy (0: greedy only);
    solver_seconds is a wall-time safety net for it (default PLAN_WALL_LIMIT_SECONDS from the call,
    which does not bind in normal operation; 0: greedy only).
    """
    edges = list(edges)
    if not edges:
        # Nothing co-dependent: no move can gain and nothing is split, so the plan is the same on the devices
        # the workloads are on as on the whole fleet. Every group's resync planned against all 2,000
        # devices of the fleet-scale bench for nothing (~15% of the operator's steady CPU).
        workloads = list(workloads)
        hosting = {w.node for w in workloads}
        devices = [d for d in devices if d.name in hosting]
    with _no_cyclic_gc():
        return _plan_aggregation(devices, workloads, edges, policy, requirements_ok, bytes_per_request, max_moves,
                                 max_moves_per_group, max_skipped, solver_seconds, solver_work)


def _plan_aggregation(devices: Iterable[DeviceState], workloads: Iterable[WorkloadState], edges: Iterable[Edge],
                      policy: AggregationPolicy, requirements_ok: RequirementsOk | None, bytes_per_request: float,
                      max_moves: int | None, max_moves_per_group: int | None, max_skipped: int,
                      solver_seconds: float | None, solver_work: float) -> Plan:
    started = time.perf_counter()
    p = _Planner(devices, workloads, edges, policy, requirements_ok, bytes_per_request, max_moves,
                 max_moves_per_group)
    if not policy.enabled:
        return p.plan(PlanKind.Aggregation, (), "aggregation disabled")
    for _ in range(MAX_PASSES):
        changed = p.gather_pass()
        changed = p.refine_pass() or changed
        if not changed or p.exhausted():
            break
    deadline = started + (PLAN_WALL_LIMIT_SECONDS if solver_seconds is None else solver_seconds)
    if solver_work > 0 and (solver_seconds is None or solver_seconds > 0):
        p.solve_pass(deadline, solver_work)
    p.drop_tail_moves()
    return p.plan(PlanKind.Aggregation, p.aggregation_skipped(max_skipped), "")


def plan_defragmentation(devices: Iterable[DeviceState], workloads: Iterable[WorkloadState],
                         edges: Iterable[Edge], policy: AggregationPolicy, *,
                         requirements_ok: RequirementsOk | None = None, bytes_per_request: float = 2048.0,
                         max_moves: int | None = None, max_moves_per_group: int | None = None,
                         max_skipped: int = 20) -> Plan:
    """Pack the workloads of lightly used devices onto busier ones so whole devices free up."""
    with _no_cyclic_gc():
        p = _Planner(devices, workloads, edges, policy, requirements_ok, bytes_per_request, max_moves,
                     max_moves_per_group)
        if not policy.defragment:
            return p.plan(PlanKind.Defragmentation, (), "defragmentation disabled")
        skipped = p.defragment()
        return p.plan(PlanKind.Defragmentation, tuple(skipped[:max_skipped]) + _more(len(skipped) - max_skipped), "")


def _more(n: int) -> tuple[Skipped, ...]:
    return (Skipped(workload="*", reason=f"and {n} more not shown"),) if n > 0 else ()


def _names(keys: Iterable[WKey], limit: int = 2) -> str:
    names = [k[1] for k in keys]
    if len(names) <= limit:
        return " and ".join(names) if len(names) <= 2 else ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


class _Planner:
    """Tentative state of one planning run: where every pod is now, and what is free where."""

    def __init__(self, devices: Iterable[DeviceState], workloads: Iterable[WorkloadState], edges: Iterable[Edge],
                 policy: AggregationPolicy, requirements_ok: RequirementsOk | None, bytes_per_request: float,
                 max_moves: int | None, max_moves_per_group: int | None) -> None:
        self.policy = policy
        self.devices = {d.name: d for d in sorted(devices, key=lambda d: d.name)}
        self.graph = g = DependencyGraph(workloads, edges, bytes_per_request=bytes_per_request)
        self.ledger = CapacityLedger(self.devices.values())
        self.origin = g.placement()
        self.node_of = dict(self.origin)
        self.counts = g.counts(self.node_of)
        # pods that never move in this plan: a pod only ever shifts onto a known device, so one off
        # every known device (or pinned, or cooling down) stays put throughout
        self.pinned = frozenset(p for p, w in g.pods.items()
                                if not w.movable or w.cooling_down or self.node_of[p] not in self.devices)
        self.on_node: dict[str, set[str]] = {}
        for pod, node in self.node_of.items():
            self.on_node.setdefault(node, set()).add(pod)
        self.requirements_ok = requirements_ok
        self._req_cache: dict[tuple[str, str], bool] = {}
        self.total_cap = max_moves if max_moves is not None else math.inf
        self.group_cap = max_moves_per_group if max_moves_per_group is not None else math.inf
        self.moved_total = 0
        self.moved_group: dict[str, int] = {}
        self.records: dict[str, tuple[int, str, float]] = {}  # pod -> (sequence, reason, gain)
        self.seq = 0
        self.budget_hit = False
        self.active: set[int] = set()  # components with a move in this plan
        self.gathering: set[int] = set()  # components gathered only in part (move limit): single pods leave them be
        # (cpu free, name) of schedulable devices, for best-fit search without scanning the fleet
        self.free_sorted = sorted((self.ledger.cpu[n], n) for n, d in self.devices.items() if d.schedulable)
        self.components = g.components()
        self.component_of: dict[WKey, int] = {k: i for i, c in enumerate(self.components) for k in c}
        self.component_pods = [[p for k in c for p in g.members[k]] for c in self.components]
        self.component_pairs = [[(a, b) for a in c for b in g.neighbours(a) if a < b] for c in self.components]
        self._cross: dict[int, float] = {}  # component -> cross-device traffic, dropped when its pods move
        # moves of each component's pods so far, so choose_target's candidates (which depend only on
        # where the component's own pods are) are computed once per change, not once per look
        self.comp_rev: dict[int, int] = {}
        self._candidates: dict[int, tuple] = {}
        self.as_far_as_spread: set[int] = set()  # components gathered as far as the spread policy lets them
        # components with no multi-replica workload under a replica limit and no pod that may not move
        limited = policy.spread.max_replicas_per_device > 0
        self.simple = [not any((limited and len(g.members[k]) > 1) or any(self.fixed(p) for p in g.members[k])
                               for k in c) for c in self.components]
        self.replica_limit = policy.spread.max_replicas_per_device
        self.respect_preferred = policy.spread.respect_preferred
        # pods whose specs carry anti-affinity or spread rules, and how many of them run on each node,
        # so the label check is skipped where no rule can apply (most moves)
        self.constrained = {p for p, w in g.pods.items() if not w.constraints.empty}
        self.labelled: dict[str, int] = {}
        for p in self.constrained:
            self.labelled[self.node_of[p]] = self.labelled.get(self.node_of[p], 0) + 1
        # cross-device traffic at the snapshot, by component (fills the cache every pass starts from)
        self.traffic_before = sum(self.component_cross(ci) for ci in range(len(self.components)))

    # --- bookkeeping ---------------------------------------------------------------------------------

    def fixed(self, pod: str) -> bool:
        return pod in self.pinned

    def why_fixed(self, pod: str) -> str:
        w = self.graph.pods[pod]
        if not w.movable:
            return f"{w.workload} is not movable"
        if w.cooling_down:
            return f"{w.workload} is cooling down after a recent move"
        return f"{w.workload} runs on {self.node_of[pod]}, which is not a known device"

    def budget_left(self, group: str) -> float:
        return min(self.total_cap - self.moved_total, self.group_cap - self.moved_group.get(group, 0))

    def exhausted(self) -> bool:
        return self.moved_total >= self.total_cap

    def can_pay(self, pod: str) -> bool:
        if self.node_of[pod] != self.origin[pod]:
            return True  # already counted as a move
        return self.budget_left(self.graph.pods[pod].group) >= 1

    def req_ok(self, pod: str, node: str) -> bool:
        """Context requirements, the pod's nodeSelector and required node affinity: a replacement could land
        on node."""
        w = self.graph.pods[pod]
        if not node_allows(w.constraints, node, self.devices[node].labels):
            return False
        if self.requirements_ok is None:
            return True
        key = (pod, node)
        r = self._req_cache.get(key)
        if r is None:
            r = self._req_cache[key] = bool(self.requirements_ok(w, self.devices[node]))
        return r

    def fits(self, node: str, pods: Iterable[str]) -> bool:
        # CapacityLedger.fits with the tentative placement, unrolled: the planner's hottest check
        dev = self.devices.get(node)
        if dev is None or not dev.schedulable:
            return False
        cpu = mem = 0.0
        ext: dict[str, float] | None = None
        node_of, pods_of = self.node_of, self.graph.pods
        for p in pods:
            if node_of[p] == node:
                continue
            w = pods_of[p]
            cpu += w.cpu
            mem += w.memory
            if w.extended:
                ext = ext if ext is not None else {}
                for k, v in w.extended.items():
                    ext[k] = ext.get(k, 0.0) + v
        led = self.ledger
        if cpu > led.cpu[node] + EPS or mem > led.mem[node] + EPS:
            return False
        return ext is None or all(v <= led.ext[node].get(k, 0.0) + EPS for k, v in ext.items())

    def placeable(self, node: str, pods: list[str]) -> bool:
        return self.fits(node, pods) and all(self.req_ok(p, node) for p in pods) and self.spread_ok(node, pods)

    def spread_ok(self, node: str, pods: Iterable[str]) -> bool:
        """Whether moving `pods` onto node keeps every anti-affinity and spread rule (module spread)."""
        return self.spread_conflict(node, pods) is None

    def spread_conflict(self, node: str, pods: Iterable[str]) -> str | None:
        g = self.graph
        moving = [p for p in pods if self.node_of[p] != node]
        if not moving:
            return None
        if self.replica_limit > 0:
            add: dict[WKey, int] = {}
            for p in moving:
                k = g.wkey_of[p]
                add[k] = add.get(k, 0) + 1
            for k, n in add.items():
                if len(g.members[k]) > 1 and self.counts[k].get(node, 0) + n > self.replica_limit:
                    return (f"the group's spread policy allows {self.replica_limit} replica(s) of {k[1]} "
                            f"per device")
        if not self.labelled.get(node) and not any(p in self.constrained for p in moving):
            return None
        others = [g.pods[q] for q in sorted(self.on_node.get(node, ()))]
        for p in moving:
            why = conflicts(g.pods[p], others, respect_preferred=self.respect_preferred)
            if why is not None:
                return why
            others.append(g.pods[p])
        return None

    def _resort(self, node: str, delta: float) -> None:
        if not self.devices[node].schedulable:
            return
        old = (self.ledger.cpu[node], node)
        i = bisect.bisect_left(self.free_sorted, old)
        if i < len(self.free_sorted) and self.free_sorted[i] == old:
            del self.free_sorted[i]
        bisect.insort(self.free_sorted, (old[0] + delta, node))

    def shift(self, pod: str, to: str, reason: str, gain: float) -> tuple:
        """Move a pod in the tentative state; returns what `unshift` needs to take it back."""
        frm = self.node_of[pod]
        undo = (pod, frm, self.records.get(pod))
        w = self.graph.pods[pod]
        if frm != to:
            for node, sign in ((frm, 1.0), (to, -1.0)):
                if node in self.ledger.cpu:
                    self._resort(node, sign * w.cpu)
            self.ledger.move(w, to, frm=frm)
        k = self.graph.wkey_of[pod]
        ci = self.component_of.get(k)
        if ci is not None:
            self._cross.pop(ci, None)
            self.as_far_as_spread.discard(ci)
            self.comp_rev[ci] = self.comp_rev.get(ci, 0) + 1
        c = self.counts[k]
        c[frm] -= 1
        if not c[frm]:
            del c[frm]
        c[to] = c.get(to, 0) + 1
        self.on_node[frm].discard(pod)
        self.on_node.setdefault(to, set()).add(pod)
        if pod in self.constrained:
            self.labelled[frm] -= 1
            self.labelled[to] = self.labelled.get(to, 0) + 1
        self.node_of[pod] = to
        was, now = frm != self.origin[pod], to != self.origin[pod]
        if was != now:
            d = 1 if now else -1
            self.moved_total += d
            self.moved_group[w.group] = self.moved_group.get(w.group, 0) + d
        if now:
            if ci is not None:
                self.active.add(ci)
            self.records[pod] = (self.seq, reason, gain)
            self.seq += 1
        else:
            self.records.pop(pod, None)
        return undo

    def unshift(self, undo: tuple) -> None:
        pod, frm, record = undo
        self.shift(pod, frm, "", 0.0)
        if record is not None:
            self.records[pod] = record

    def gain(self, pod: str, to: str) -> float:
        # pod_affinity(pod)[to] - pod_affinity(pod)[here], without building the dict over every node
        # its partners use: the two sums are accumulated in pod_affinity's order, so bit for bit the same
        here = self.node_of[pod]
        a = b = 0.0
        counts = self.counts
        for k, u in self.graph.per_pair(pod):
            c = counts[k]
            n = c.get(to)
            if n:
                a += u * n
            n = c.get(here)
            if n:
                b += u * n
        return a - b

    def partners_on(self, pod: str, node: str) -> list[WKey]:
        g = self.graph
        k = g.wkey_of[pod]
        nb = [(w, b) for b, w in g.neighbours(k).items() if self.counts[b].get(node)]
        return [b for _, b in sorted(nb, key=lambda t: (-t[0], t[1]))]

    def component_cross(self, ci: int) -> float:
        x = self._cross.get(ci)
        if x is None:
            g = self.graph
            x = self._cross[ci] = sum(g.pair_cross_traffic(a, b, self.counts) for a, b in self.component_pairs[ci])
        return x

    # --- aggregation: whole groups -------------------------------------------------------------------

    def movers(self, ci: int, d: str) -> list[str] | None:
        """Pods of the component that gathering it on d moves there: all not on d, except that a
        workload with replicas sends only as many as the spread policy lets d hold (the others stay
        where they are, for single moves to pair with partner replicas). None: a pod that may not
        move would have to."""
        g = self.graph
        out: list[str] = []
        for k in self.components[ci]:
            members = g.members[k]
            away = [p for p in members if self.node_of[p] != d]
            if self.replica_limit > 0 and len(members) > 1:
                room = max(0, self.replica_limit - self.counts[k].get(d, 0))
                # pinned replicas stay behind: members are sorted, so this is sorted by (fixed, name)
                pinned = self.pinned
                away = ([p for p in away if p not in pinned] + [p for p in away if p in pinned])[:room]
            for p in away:
                if self.fixed(p):
                    return None
            out += away
        return out

    def choose_target(self, ci: int) -> tuple[str | None, list[str], str]:
        """Device that can hold the component (as far as its spread allows) with the fewest moves, the
        pods to move, or why not."""
        pods = self.component_pods[ci]
        g = self.graph
        rev = self.comp_rev.get(ci, 0)
        cached = self._candidates.get(ci)
        if cached is not None and cached[0] == rev:
            # the candidates and their pods to move depend only on where this component's own pods
            # are: reuse them while none has moved, and re-check only what other moves change (room)
            _, pinned, hosts, candidates, fresh_need = cached
        else:
            fresh_need = None
            pinned = sorted({self.node_of[p] for p in pods if self.fixed(p)
                             and (self.replica_limit == 0 or len(g.members[g.wkey_of[p]]) == 1)})
            if len(pinned) > 1:
                return None, [], (f"{self.component_label(ci)} cannot share a device: pods that may not move run "
                                  f"on {', '.join(pinned[:3])}")
            hosts: dict[str, int] = {}
            for p in pods:
                hosts[self.node_of[p]] = hosts.get(self.node_of[p], 0) + 1
            if self.simple[ci]:
                # no replicas to hold back and nothing pinned (most groups): every pod not on n moves there
                def cost(n: str) -> tuple:
                    return (len(pods) - hosts[n], sum(g.pods[p].cpu for p in pods if self.node_of[p] != n), n)
                candidates = [(n, [p for p in pods if self.node_of[p] != n]) for n in sorted(pinned or hosts, key=cost)]
            else:
                options = []
                for n in (pinned or hosts):
                    to_move = self.movers(ci, n)
                    if to_move is not None:
                        options.append((len(to_move), sum(g.pods[p].cpu for p in to_move), n, to_move))
                options.sort(key=lambda o: o[:3])
                candidates = [(n, to_move) for _, _, n, to_move in options]
            self._candidates[ci] = (rev, pinned, hosts, candidates, None)
        label = self.component_label(ci)
        spread_why = ""
        for d, to_move in candidates:
            if self.fits(d, to_move) and all(self.req_ok(p, d) for p in to_move):
                why = self.spread_conflict(d, to_move)
                if why is None:
                    return d, list(to_move), ""
                spread_why = spread_why or why
        if spread_why:
            # kept apart by anti-affinity or spread: pods pair with partners one by one (refine_pass)
            return None, [], f"{label} cannot share one device: {spread_why}"
        if pinned:
            return None, [], (f"{label} cannot share a device: {pinned[0]}, where part of it must stay, "
                              f"has no room for the rest or does not meet its requirements")
        # a device it does not use yet: the same pods a fresh device would take (like the candidates,
        # they depend only on where the component's own pods are: kept with them)
        if fresh_need is None:
            fresh = self.movers(ci, "")
            fresh_need = (fresh, sum(g.pods[p].cpu for p in fresh) if fresh is not None else 0.0,
                          sum(g.pods[p].memory for p in fresh) if fresh is not None else 0.0)
            self._candidates[ci] = (*self._candidates[ci][:4], fresh_need)
        fresh, need_cpu, need_mem = fresh_need
        if fresh is None:
            return None, [], f"{label} cannot share a device: pods that may not move would have to"
        fs = self.free_sorted
        start = bisect.bisect_left(fs, (need_cpu - EPS, ""))
        room = False
        for i in range(start, len(fs)):  # by index: a slice would copy the fleet's list on every look
            name = fs[i][1]
            if name in hosts or not self.fits(name, fresh):
                continue
            room = True
            if all(self.req_ok(p, name) for p in fresh) and self.spread_ok(name, fresh):
                return name, list(fresh), ""
        if room:
            return None, [], f"no device with room for {label} meets its nodeSelector and context requirements"
        return None, [], f"no device can hold {label} (needs {need_cpu:.1f} CPU, {_gib(need_mem)} memory)"

    def component_label(self, ci: int) -> str:
        c = self.components[ci]
        return "+".join(k[1] for k in c) if len(c) <= 3 else f"{c[0][1]} and {len(c) - 1} co-dependent workloads"

    def gather_pass(self) -> bool:
        pol = self.policy
        floor = max(pol.min_gain_bytes_per_second, EPS)
        # the same margin over moveCost as single moves (best_single_move): drop_tail_moves takes
        # back what saves less than its cost, and noise must not bring it straight back
        per_move = max(pol.min_gain_bytes_per_second, pol.move_cost * (1 + pol.gain_threshold))
        jobs = []
        for ci in range(len(self.components)):
            if ci in self.as_far_as_spread:
                continue
            x = self.component_cross(ci)
            if x < floor:
                continue
            target, to_move, _ = self.choose_target(ci)
            if target is not None and not to_move:
                # gathered as far as its spread allows: the rest is single moves' work, and until one
                # of its pods moves there is nothing to re-evaluate
                self.as_far_as_spread.add(ci)
                continue
            if target is None or x < per_move * len(to_move):
                continue
            jobs.append((-x / len(to_move), -x, ci))
        changed = False
        for _, _, ci in sorted(jobs):
            x = self.component_cross(ci)
            target, to_move, _ = self.choose_target(ci)  # earlier jobs may have taken the room
            if target is None or not to_move or x < max(floor, per_move * len(to_move)):
                continue
            budget = self.budget_left(self.graph.pods[to_move[0]].group)
            cost = sum(1 for p in to_move if self.node_of[p] == self.origin[p])
            if budget < 1 or (cost > budget and cost <= min(self.total_cap, self.group_cap)):
                # wait for an interval with room for the whole gather rather than split it, and keep
                # single-pod moves from pulling the group elsewhere meanwhile
                self.budget_hit = True
                self.gathering.add(ci)
                continue
            changed = self.gather(ci, target, to_move, x) or changed
        return changed

    def gather(self, ci: int, target: str, to_move: list[str], x: float) -> bool:
        """Move pods onto target, best marginal gain first; if the budget cuts it short, keep the best prefix."""
        label = self.component_label(ci)
        remaining = sorted(to_move)
        undo: list[tuple] = []
        cum, best_cum, best_len = 0.0, 0.0, 0
        group = self.graph.pods[remaining[0]].group if remaining else ""
        # a pod's gain towards target changes only when a pod of a partner workload moves: recompute
        # those (the same gain() call, so the same value) and keep the rest
        gr = self.graph
        gains: dict[str, float] = {}
        stale: set[str] = set(remaining)
        by_wkey: dict[WKey, list[str]] = {}
        for q in remaining:
            by_wkey.setdefault(gr.wkey_of[q], []).append(q)
        while remaining:
            # can_pay for each pod, with the budget (one group per component) read once per step
            if self.budget_left(group) >= 1:
                payable = remaining
            else:
                payable = [p for p in remaining if self.node_of[p] != self.origin[p]]
            if not payable:
                self.budget_hit = True
                break
            for q in stale:
                gains[q] = self.gain(q, target)
            stale.clear()
            g, p = min(((gains[p], p) for p in payable), key=lambda t: (-t[0], t[1]))
            partners = self.partners_on(p, target)
            if g > EPS and partners:
                reason = (f"co-locate with {_names(partners)} on {target}: removes {human_rate(g)} "
                          f"of cross-device traffic")
            elif partners:
                reason = (f"join {_names(partners)} on {target} so {label} share one device "
                          f"(together these moves remove {human_rate(x)} of cross-device traffic)")
            else:
                reason = (f"gather {label} on {target}, a device with room for all of it "
                          f"(together these moves remove {human_rate(x)} of cross-device traffic)")
            undo.append(self.shift(p, target, reason, g))
            remaining.remove(p)
            for b in gr.neighbours(gr.wkey_of[p]):
                for q in by_wkey.get(b, ()):
                    if q in gains and q != p:
                        stale.add(q)
            gains.pop(p, None)
            cum += g
            if cum > best_cum + EPS:
                best_cum, best_len = cum, len(undo)
        if remaining:
            # cut short by the move limit: keep the prefix that gains most on its own; if none gains
            # yet (a chain gathers in the middle), keep them all: the next interval finishes the job
            # on the same target, which now holds more of the group and so stays the cheapest.
            self.gathering.add(ci)
            if best_len > 0:
                for u in reversed(undo[best_len:]):
                    self.unshift(u)
        return bool(undo)

    # --- aggregation: single pods --------------------------------------------------------------------

    def best_single_move(self, pod: str) -> tuple[float, str] | None:
        pol = self.policy
        aff = self.graph.pod_affinity(pod, self.counts)
        cur = self.node_of[pod]
        base = aff.get(cur, 0.0)
        # hysteresis: a group starts moving at the full threshold; once it moves in this plan it is
        # settled down to half of it, so the state it is left in is not within noise of a trigger
        ci = self.component_of.get(self.graph.wkey_of[pod])
        share = pol.gain_threshold / 2 if ci in self.active else pol.gain_threshold
        # a single move must beat its cost by a margin: drop_tail_moves takes back moves under the
        # cost itself, and the band between keeps noise from re-proposing what it dropped
        threshold = max(pol.min_gain_bytes_per_second, pol.move_cost * (1 + pol.gain_threshold),
                        share * self.graph.pod_traffic(pod), EPS)
        # only devices over the threshold can be chosen: sort those alone (most gain first, as before)
        over = [(t, v) for t, v in aff.items() if v - base >= threshold]
        if not over:
            return None
        for t, v in sorted(over, key=lambda kv: (-kv[1], kv[0])):
            if t != cur and self.placeable(t, [pod]):
                return v - base, t
        return None

    def refine_pass(self) -> bool:
        g = self.graph
        version: dict[str, int] = {}
        heap: list[tuple[float, str, str, int]] = []

        def push(pod: str) -> None:
            version[pod] = version.get(pod, 0) + 1
            if self.fixed(pod):
                return
            best = self.best_single_move(pod)
            if best is not None:
                heapq.heappush(heap, (-best[0], pod, best[1], version[pod]))

        # only groups still split can gain; gathered ones (most, after gather_pass) are skipped cheaply
        floor = max(self.policy.min_gain_bytes_per_second, EPS)
        for ci in range(len(self.components)):
            if ci not in self.gathering and self.component_cross(ci) >= floor:
                for pod in self.component_pods[ci]:
                    push(pod)
        changed = False
        while heap:
            neg, pod, to, ver = heapq.heappop(heap)
            if version[pod] != ver:
                continue
            if not self.can_pay(pod):
                self.budget_hit = True
                continue
            if self.gain(pod, to) < -neg - EPS or not self.placeable(to, [pod]):
                push(pod)  # capacity or partners changed since this entry was scored
                continue
            partners = self.partners_on(pod, to)
            reason = (f"co-locate with {_names(partners)} on {to}: removes {human_rate(-neg)} "
                      f"of cross-device traffic")
            self.shift(pod, to, reason, -neg)
            changed = True
            k = g.wkey_of[pod]
            push(pod)
            for b in g.neighbours(k):
                if self.component_of.get(b) in self.gathering:
                    continue
                for q in g.members[b]:
                    push(q)
            for q in g.members[k]:
                if q != pod:
                    push(q)
        return changed

    # --- aggregation: exact neighbourhoods (CP-SAT) --------------------------------------------------

    def neighbourhoods(self) -> list[tuple[list[str], list[str]]] | Iterator[tuple[list[str], list[str]]]:
        """(pods that may move, devices they may use): the whole fleet when it is small, else each
        group still split after the greedy (most traffic first) with its devices, the roomiest
        devices, and a few small unrelated pods on them that may move to make room."""
        floor = max(self.policy.min_gain_bytes_per_second, self.policy.move_cost, EPS)
        movable = [p for p in self.graph.pods if not self.fixed(p)]
        usable = {n for n, d in self.devices.items() if d.schedulable} | {self.node_of[p] for p in movable}
        if len(self.devices) <= SMALL_FLEET_DEVICES and len(movable) <= SMALL_FLEET_PODS:
            split = any(self.component_cross(ci) >= floor for ci in range(len(self.components)))
            return [(movable, sorted(usable))] if split and movable else []
        return self._group_neighbourhoods(floor)

    def _group_neighbourhoods(self, floor: float) -> Iterator[tuple[list[str], list[str]]]:
        roomy = [n for _, n in reversed(self.free_sorted[-NEIGHBOUR_DEVICES:])]
        order = sorted(range(len(self.components)), key=lambda ci: (-self.component_cross(ci), ci))
        for ci in order:
            if self.component_cross(ci) < floor:
                break
            if ci in self.gathering:
                continue  # the move limit splits its gather over intervals: leave the down payments be
            own = [p for p in self.component_pods[ci] if not self.fixed(p)]
            devs = {self.node_of[p] for p in self.component_pods[ci]} | {self.origin[p] for p in own}
            devs = {n for n in devs if n in self.devices} | set(roomy)
            pods = set(own)
            for n in sorted(devs):
                others = sorted((q for q in self.on_node.get(n, ()) if q not in pods and not self.fixed(q)),
                                key=lambda q: (self.graph.pods[q].cpu, q))
                pods.update(others[:ROOM_PODS_PER_DEVICE])
            if len(pods) <= MAX_NEIGHBOURHOOD_PODS:
                yield sorted(pods), sorted(devs)

    def problem(self, pods: list[str], devs: list[str]) -> Problem:
        g = self.graph
        di = {n: i for i, n in enumerate(devs)}
        var = set(pods)
        ext_keys = sorted({k for p in pods for k in g.pods[p].extended})

        def req(w: WorkloadState) -> tuple[int, ...]:
            return (math.ceil(w.cpu * 1000 - 1e-6), math.ceil(w.memory / 2**20 - 1e-6),
                    *(math.ceil(w.extended.get(k, 0.0) * 1000 - 1e-6) for k in ext_keys))

        free = []
        for n in devs:
            cpu, mem = self.ledger.cpu[n], self.ledger.mem[n]
            ext = [self.ledger.ext[n].get(k, 0.0) for k in ext_keys]
            for q in self.on_node.get(n, ()):
                if q in var:
                    w = g.pods[q]
                    cpu, mem = cpu + w.cpu, mem + w.memory
                    ext = [e + w.extended.get(k, 0.0) for e, k in zip(ext, ext_keys, strict=True)]
            free.append((math.floor(cpu * 1000 + 1e-6), math.floor(mem / 2**20 + 1e-6),
                         *(math.floor(e * 1000 + 1e-6) for e in ext)))
        wk: dict[WKey, int] = {}
        for p in pods:
            wk.setdefault(g.wkey_of[p], len(wk))
        partners = {b for k in list(wk) for b in g.neighbours(k)}
        for b in sorted(partners):
            wk.setdefault(b, len(wk))
        fixed: dict[tuple[int, int], int] = {}
        for k, i in wk.items():
            for q in g.members[k]:
                if q not in var and self.node_of[q] in di:
                    key = (i, di[self.node_of[q]])
                    fixed[key] = fixed.get(key, 0) + 1
        limit = [self.replica_limit if len(g.members[k]) > 1 else 0 for k in wk]
        pairs, seen = [], set()
        for p in pods:
            a = g.wkey_of[p]
            for b, w in g.neighbours(a).items():
                if (b, a) in seen or (a, b) in seen:
                    continue
                seen.add((a, b))
                pairs.append((wk[a], wk[b], w / (len(g.members[a]) * len(g.members[b]))))
        spods, index = [], {}
        for p in pods:
            w = g.pods[p]
            allowed = []
            for n in devs:
                if not self.devices[n].schedulable and n != self.node_of[p]:
                    continue
                if not self.req_ok(p, n):
                    continue
                if p in self.constrained or self.labelled.get(n):
                    stay = [g.pods[q] for q in self.on_node.get(n, ()) if q not in var]
                    if conflicts(w, stay, respect_preferred=self.respect_preferred) is not None:
                        continue
                allowed.append(di[n])
            if di[self.node_of[p]] not in allowed:
                allowed.append(di[self.node_of[p]])  # staying put is always allowed
            index[p] = len(spods)
            spods.append(SolverPod(key=p, workload=wk[g.wkey_of[p]], requests=req(w), allowed=tuple(sorted(allowed)),
                                   origin=di.get(self.origin[p]), current=di[self.node_of[p]], group=w.group))
        pairs_apart = []
        cons = [p for p in pods if p in self.constrained]
        for p in cons:
            for q in pods:
                if q != p and (q not in self.constrained or q > p) and conflicts(
                        g.pods[p], [g.pods[q]], respect_preferred=self.respect_preferred) is not None:
                    pairs_apart.append((index[p], index[q]))
        moved_here = sum(1 for p in pods if self.node_of[p] != self.origin[p])
        budget = None if self.total_cap == math.inf else int(self.total_cap - self.moved_total + moved_here)
        group_budget = {}
        if self.group_cap != math.inf:
            for grp in {g.pods[p].group for p in pods}:
                here = sum(1 for p in pods if g.pods[p].group == grp and self.node_of[p] != self.origin[p])
                group_budget[grp] = int(self.group_cap - self.moved_group.get(grp, 0) + here)
        return Problem(devices=devs, free=free, pods=spods, workloads=len(wk), limit=limit, fixed=fixed,
                       pairs=pairs, conflicts=pairs_apart, move_cost=self.policy.move_cost, budget=budget,
                       group_budget=group_budget)

    def net_value(self, comps: Iterable[int]) -> float:
        """Minus (cross-device traffic of these components + moveCost per move so far): higher is better."""
        return -sum(self.component_cross(ci) for ci in comps) - self.policy.move_cost * self.moved_total

    def solve_pass(self, deadline: float, work: float) -> bool:
        changed = False
        if deadline - time.perf_counter() <= 0.005:
            return False
        hoods = self.neighbourhoods()
        whole_fleet = isinstance(hoods, list)
        per_hood = SOLVER_WORK_PER_NEIGHBOURHOOD if whole_fleet else GROUP_NEIGHBOURHOOD_WORK
        for n_hood, (pods, devs) in enumerate(hoods):
            left = deadline - time.perf_counter()
            if left <= 0.005 or work <= 0.001 or (not whole_fleet and n_hood >= MAX_GROUP_NEIGHBOURHOODS):
                break
            # an earlier neighbourhood's answer may have moved some of these pods elsewhere
            devs = sorted(set(devs) | {self.node_of[p] for p in pods})
            comps = {self.component_of[self.graph.wkey_of[p]] for p in pods
                     if self.graph.wkey_of[p] in self.component_of}
            before = self.net_value(comps)
            cross_before = sum(self.component_cross(ci) for ci in comps)
            pr = self.problem(pods, devs)
            undo = None
            for _ in range(NOGOOD_ROUNDS):
                left = deadline - time.perf_counter()
                if left <= 0.005 or work <= 0.001:
                    break
                sol = solve(pr, deterministic_time=min(work, per_hood), wall_time=left)
                work -= NEIGHBOURHOOD_CHARGE + (sol.work if sol is not None else 0.0)
                if sol is None:
                    break
                want = {p: n for p, n in sol.placement.items() if n != self.node_of[p]}
                undo, stuck = self.replay(want)
                if undo is not None:
                    break
                # no order lets these moves happen one by one: forbid that combination, solve again
                index = {sp.key: i for i, sp in enumerate(pr.pods)}
                pr.nogoods.append([(index[p], pr.devices.index(n)) for p, n in stuck.items()])
            if undo is None:
                continue
            # adopt only a real improvement, net of moveCost per move, by the greedy's own hysteresis:
            # like a gather, at least max(minGain, moveCost) per pod placed differently; a change of
            # one pod, like a single move, also gainThreshold of that pod's traffic. So noise on a
            # settled placement does not flip it to an equivalent one. A group's neighbourhood (large
            # fleets) must also gain gainThreshold of its cross-device traffic, as the field says.
            pol = self.policy
            need = max(pol.min_gain_bytes_per_second, pol.move_cost, EPS) * len(want)
            if len(want) == 1:
                need = max(need, pol.gain_threshold * self.set_traffic(want))
            if not whole_fleet:
                need = max(need, pol.gain_threshold * cross_before)
            if self.net_value(comps) < before + need:
                for u in reversed(undo):
                    self.unshift(u)
                continue
            changed = True
        return changed

    def set_traffic(self, pods: Iterable[str]) -> float:
        """All traffic (local or not) of a set of pods, each pod pair inside the set counted once."""
        g = self.graph
        pods = set(pods)
        inside: dict[WKey, int] = {}
        for p in pods:
            inside[g.wkey_of[p]] = inside.get(g.wkey_of[p], 0) + 1
        total = internal = 0.0
        for p in pods:
            k = g.wkey_of[p]
            total += g.pod_traffic(p)
            for b, w in g.neighbours(k).items():
                internal += w / (len(g.members[k]) * len(g.members[b])) * inside.get(b, 0)
        return total - internal / 2

    def replay(self, want: dict[str, str]) -> tuple[list[tuple] | None, dict[str, str]]:
        """Apply target placements one pod at a time, each through the planner's own checks (capacity,
        requirements, spread, budget), in an order where each fits. Returns the undo list, or None
        (and nothing applied) with the placements that could not be made."""
        undo: list[tuple] = []
        pending = dict(sorted(want.items()))
        while pending:
            progress = False
            for p, to in list(pending.items()):
                if not self.can_pay(p) and to != self.origin[p]:
                    continue
                if not self.placeable(to, [p]):
                    continue
                g = self.gain(p, to)
                undo.append(self.shift(p, to, self.solver_reason(p, to, g), g))
                del pending[p]
                progress = True
            if not progress:
                for u in reversed(undo):
                    self.unshift(u)
                return None, pending
        return undo, {}

    def solver_reason(self, pod: str, to: str, g: float) -> str:
        partners = self.partners_on(pod, to)
        if g > EPS and partners:
            return f"co-locate with {_names(partners)} on {to}: removes {human_rate(g)} of cross-device traffic"
        return (f"make room on {self.node_of[pod]} for co-dependent workloads "
                f"(cross-device traffic {'+' if g < -EPS else ''}{human_rate(-g)} for this pod)")

    def drop_tail_moves(self) -> None:
        """Undo moves whose own contribution is below moveCost (last first), where the pod still fits
        back: the plan keeps only moves that pay."""
        cost = self.policy.move_cost
        for pod, _ in sorted(self.records.items(), key=lambda kv: -kv[1][0]):
            home = self.origin[pod]
            if self.node_of[pod] == home or pod not in self.records:
                continue
            if self.component_of.get(self.graph.wkey_of[pod]) in self.gathering:
                continue  # a down payment on a gather the move limit split over intervals
            loss = -self.gain(pod, home)  # traffic that returning would add back
            if loss < cost and self.placeable(home, [pod]):
                self.shift(pod, home, "", 0.0)

    def aggregation_skipped(self, limit: int) -> tuple[Skipped, ...]:
        """For each group still split, its heaviest split pair and why it stays split."""
        pol = self.policy
        g = self.graph
        floor = max(pol.min_gain_bytes_per_second, EPS)
        left = []
        for ci in range(len(self.components)):
            x = self.component_cross(ci)
            if x < floor:
                continue
            a, b = max(self.component_pairs[ci], key=lambda ab: (g.pair_cross_traffic(*ab, self.counts), ab))
            left.append((-x, ci, a, b))
        left.sort()
        out = [Skipped(workload=f"{a[1]}+{b[1]}", reason=self.why_split(ci, a, b, -negx))
               for negx, ci, a, b in left[:limit]]
        return tuple(out) + _more(len(left) - limit)

    def why_split(self, ci: int, a: WKey, b: WKey, x: float) -> str:
        g = self.graph
        pods = list(g.members[a]) + list(g.members[b])
        label = f"{a[1]}+{b[1]}"
        movable = [p for p in pods if not self.fixed(p)]
        if not movable:
            return f"{label} cannot share a device: {self.why_fixed(pods[0])} and {self.why_fixed(pods[-1])}"
        hosts = sorted({self.node_of[p] for p in pods})
        room = [n for n in hosts if self.fits(n, [p for p in pods if self.node_of[p] != n])]
        if not room:
            need = sum(g.pods[p].cpu for p in pods)
            start = bisect.bisect_left(self.free_sorted, (need - EPS, ""))
            room = [n for _, n in self.free_sorted[start:] if self.fits(n, pods)][:1]
        if not room:
            need_cpu = sum(g.pods[p].cpu for p in pods)
            need_mem = sum(g.pods[p].memory for p in pods)
            return f"no device can hold {label} (needs {need_cpu:.1f} CPU, {_gib(need_mem)} memory)"
        if not any(all(self.req_ok(p, n) for p in pods) for n in room):
            return f"no device with room for {label} meets their nodeSelector and context requirements"
        spread = [why for n in room if (why := self.spread_conflict(n, [p for p in pods if self.node_of[p] != n]))]
        if spread and len(spread) == len(room):
            return f"{label} stay apart: {spread[0]} ({human_rate(x)} of cross-device traffic left in this group)"
        if self.budget_hit:
            return (f"deferred: the move limit for this interval is reached "
                    f"({human_rate(x)} of cross-device traffic left in this group)")
        fixed = [p for p in pods if self.fixed(p)]
        if fixed:
            return (f"{self.why_fixed(fixed[0])}, and moving the rest would not save enough "
                    f"({human_rate(x)} of cross-device traffic left in this group)")
        return (f"they also depend on workloads elsewhere: no single move saves {self.policy.gain_threshold:.0%} "
                f"of a pod's traffic and {human_rate(self.policy.min_gain_bytes_per_second)} "
                f"({human_rate(x)} of cross-device traffic left in this group)")

    # --- defragmentation -----------------------------------------------------------------------------

    def used(self, node: str) -> float:
        return self.devices[node].cpu_capacity - self.ledger.cpu[node]

    def fraction(self, node: str) -> float:
        cap = self.devices[node].cpu_capacity
        return self.used(node) / cap if cap else 1.0

    def drain_groups(self, node: str) -> list[list[str]]:
        """Pods on node, grouped so co-located co-dependent pods move together (traffic never rises)."""
        by: dict[object, list[str]] = {}
        for p in sorted(self.on_node.get(node, ())):
            ci = self.component_of.get(self.graph.wkey_of[p])
            by.setdefault(ci if ci is not None else p, []).append(p)
        return sorted(by.values(), key=lambda ps: (-sum(self.graph.pods[p].cpu for p in ps), ps[0]))

    def drain_target(self, pods: list[str], source: str, rank: tuple[float, str]) -> tuple[str | None, float]:
        aff: dict[str, float] = {}
        for p in pods:
            for n, v in self.graph.pod_affinity(p, self.counts).items():
                if n != source:
                    aff[n] = aff.get(n, 0.0) + v
        for n, v in sorted(aff.items(), key=lambda kv: (-kv[1], self.ledger.cpu.get(kv[0], 0.0), kv[0])):
            if v > EPS and n in self.devices and (self.used(n), n) > rank and self.placeable(n, pods):
                return n, v
        need = sum(self.graph.pods[p].cpu for p in pods)
        start = bisect.bisect_left(self.free_sorted, (need - EPS, ""))
        for _, n in self.free_sorted[start:]:
            if n != source and (self.used(n), n) > rank and self.placeable(n, pods):
                return n, aff.get(n, 0.0)
        return None, 0.0

    def defragment(self) -> list[Skipped]:
        threshold = self.policy.defragment_below_utilisation
        notes: dict[str, Skipped] = {}
        for _ in range(MAX_PASSES):
            notes = {}
            progress = False
            sources = sorted((n for n, d in self.devices.items()
                              if d.schedulable and self.on_node.get(n) and self.fraction(n) < threshold),
                             key=lambda n: (self.used(n), n))
            for x in sources:
                pods = sorted(self.on_node.get(x, ()))
                if not pods or self.fraction(x) >= threshold:
                    continue
                fixed = [p for p in pods if self.fixed(p)]
                if fixed:
                    notes[x] = Skipped(workload=self.graph.pods[fixed[0]].workload,
                                       reason=f"cannot free {x}: {self.why_fixed(fixed[0])}")
                    continue
                need: dict[str, int] = {}
                for p in pods:
                    if self.node_of[p] == self.origin[p]:
                        grp = self.graph.pods[p].group
                        need[grp] = need.get(grp, 0) + 1
                if sum(need.values()) > self.total_cap - self.moved_total or any(
                        self.group_cap - self.moved_group.get(grp, 0) < n for grp, n in need.items()):
                    self.budget_hit = True
                    notes[x] = Skipped(workload=self.graph.pods[pods[0]].workload,
                                       reason=f"deferred: freeing {x} takes {len(pods)} moves, "
                                              f"more than the limit left for this interval")
                    continue
                rank = (self.used(x), x)
                frac = self.fraction(x)
                undo: list[tuple] = []
                failed: list[str] | None = None
                for group in self.drain_groups(x):
                    target, aff = self.drain_target(group, x, rank)
                    if target is None:
                        failed = group
                        break
                    names = sorted({self.graph.wkey_of[q] for q in group})
                    effect = (f"next to its partners there, removes {human_rate(aff)} of cross-device traffic"
                              if aff > EPS else "cross-device traffic unchanged")
                    for p in group:
                        others = [k for k in names if k != self.graph.wkey_of[p]]
                        with_ = f" together with {_names(others)}" if others else ""
                        reason = (f"pack onto {target}{with_} to free {x} ({frac:.0%} CPU requested); {effect}")
                        undo.append(self.shift(p, target, reason, self.gain(p, target)))
                if failed is not None:
                    for u in reversed(undo):
                        self.unshift(u)
                    cpu = sum(self.graph.pods[p].cpu for p in failed)
                    label = "+".join(sorted({self.graph.pods[p].workload for p in failed})[:3])
                    notes[x] = Skipped(workload=label, reason=f"cannot free {x}: no busier device can hold "
                                                              f"{label} (needs {cpu:.1f} CPU) within its requirements")
                    continue
                progress = True
            if not progress:
                break
        return [notes[k] for k in sorted(notes)]

    # --- result --------------------------------------------------------------------------------------

    def plan(self, kind: PlanKind, skipped: tuple[Skipped, ...], note: str) -> Plan:
        g = self.graph
        # every dependency lies inside one component, so the components' sums are the fleet's
        before = self.traffic_before
        after = sum(self.component_cross(ci) for ci in range(len(self.components)))
        moves = []
        for pod, (_, reason, gain) in sorted(self.records.items(), key=lambda kv: kv[1][0]):
            w = g.pods[pod]
            # built from the planner's own checked values: no validation pass per move
            moves.append(Move.model_construct(workload=w.workload, pod=pod, from_node=self.origin[pod],
                                              to_node=self.node_of[pod], reason=reason, gain=float(gain)))
        had = {n for n in self.origin.values()}
        freed = tuple(sorted(n for n in had if n in self.devices and not self.on_node.get(n)))
        if kind is not PlanKind.Defragmentation:
            freed = ()
        if note:
            summary = f"{kind.value}: no moves ({note})"
        elif not moves:
            summary = f"{kind.value}: no moves; cross-device traffic {human_rate(before)}"
        else:
            pct = 100.0 * (before - after) / before if before > 0 else 0.0
            summary = (f"{kind.value}: {len(moves)} move{'s' if len(moves) != 1 else ''}, cross-device traffic "
                       f"{human_rate(before)} -> {human_rate(after)} (-{pct:.0f}%)")
            if freed:
                summary += f", frees {len(freed)} device{'s' if len(freed) != 1 else ''}"
        if skipped:
            summary += f"; {len(skipped)} skipped"
        return Plan(kind=kind, moves=tuple(moves), skipped=skipped, traffic_before=before, traffic_after=after,
                    freed_devices=freed, summary=summary)

"""Remediation planning: move workloads off devices whose context breaches their group's requirements.

Pure and deterministic: the same devices, workloads and breaches give the same Plan. A workload is
moved only to a device that satisfies every requirement of its group and has room for its requests;
when none does, it stays and the plan says why (a Skipped entry), because evicting into Pending is
worse than staying on a degraded device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from ..api.workloadgroup import ActuationLimits, Requirement
from .breach import describe_requirements, evaluate, min_margin
from .context import ContextValue
from .fit import CapacityLedger
from .graph import DependencyGraph
from .model import DeviceState, Move, Plan, PlanKind, Skipped, WorkloadState
from .nodematch import node_allows, node_refusal
from .spread import conflicts

RequirementsOk = Callable[[WorkloadState, DeviceState], bool]
Margin = Callable[[WorkloadState, DeviceState], float]
CoDependent = Sequence[frozenset[str]] | Callable[[WorkloadState], frozenset[str]]
MARGIN_WEIGHT = 0.5  # margin and headroom count alike: a device barely past a threshold or nearly full is poor
SCORE_STEP = 0.05  # targets within one step of each other are equally good: the spread hash decides


class _Reason(Protocol):
    def __str__(self) -> str: ...


# -- helpers the handler wires in ------------------------------------------------------------------

def requirements_checker(requirements: Mapping[str, Sequence[Requirement]],
                         contexts: Mapping[str, Mapping[str, ContextValue]], *, now: float | None = None,
                         max_age: float | None = None) -> RequirementsOk:
    """requirements_ok for plan_remediation: every requirement of the workload's group holds on the device.

    Judged as if the device were coming back from a breach (previously_breached=True): a target must
    clear the threshold by the hysteresis margin, so a workload is not moved onto a device that is one
    small dip away from breaching again. Unknown (missing, stale) counts as not satisfied: never move
    onto a device nobody can see. The same strictness on the current device agrees with the tracker,
    which also keeps a breached device breached inside the hysteresis band.
    """
    def ok(w: WorkloadState, d: DeviceState) -> bool:
        ctx = contexts.get(d.name, {})
        return all(evaluate(r, ctx, previously_breached=True, now=now, max_age=max_age).satisfied
                   for r in requirements.get(w.group, ()))
    return ok


def margin_scorer(requirements: Mapping[str, Sequence[Requirement]],
                  contexts: Mapping[str, Mapping[str, ContextValue]], *, now: float | None = None,
                  max_age: float | None = None) -> Margin:
    """margin for plan_remediation: 0..1, how comfortably the device meets the group's weakest requirement."""
    return lambda w, d: min_margin(requirements.get(w.group, ()), contexts.get(d.name, {}), now=now, max_age=max_age)


def requirements_describer(requirements: Mapping[str, Sequence[Requirement]]) -> Callable[[WorkloadState], str]:
    return lambda w: describe_requirements(requirements.get(w.group, ()))


def taint_decisions(breached_devices: Iterable[str], currently_tainted: Iterable[str],
                    frozen: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """(to_taint, to_untaint), sorted. A device whose telemetry is stale (`frozen`) keeps its taint:
    missing data is not a recovery."""
    want = set(breached_devices)
    have = set(currently_tainted)
    hold = set(frozen)
    return sorted(want - have), sorted(have - want - hold)


# -- target scoring (pure) ---------------------------------------------------------------------------

def target_quality(margin: float, headroom: float) -> int:
    """Margin over the requirements and headroom after the move, in SCORE_STEP buckets (higher is better)."""
    return round((MARGIN_WEIGHT * margin + (1.0 - MARGIN_WEIGHT) * headroom) / SCORE_STEP)


def spread_hash(workload: str, device: str) -> int:
    """Rendezvous order: each workload prefers its own order of equally good devices. Groups plan on the
    same snapshot without talking to each other, and name order would send all of them to the same first
    devices."""
    return int.from_bytes(hashlib.blake2b(f"{workload}\0{device}".encode(), digest_size=8).digest(), "big")


def target_rank(local_traffic: float, peers_there: int, replicas_there: int, quality: int,
                tiebreak: int) -> tuple[float, int, int, int, int]:
    """Sort key of a valid target (lowest first): traffic to the workloads already there (bytes/s, most
    first; the aggregation planner's pod affinity), then declared co-dependent peers there, then fewer
    replicas of the same workload (spread), then margin and headroom, then the spread hash."""
    return (-round(local_traffic, 3), -peers_there, replicas_there, -quality, tiebreak)


# -- planning --------------------------------------------------------------------------------------

def _qty_cpu(c: float) -> str:
    return f"{c:g} CPU"


def _qty_mem(m: float) -> str:
    for unit, size in (("Gi", 1024.0**3), ("Mi", 1024.0**2), ("Ki", 1024.0)):
        if m >= size:
            return f"{m / size:g}{unit} memory"
    return f"{m:g}B memory"


def _resources(ws: Sequence[WorkloadState]) -> str:
    cpu = sum(w.cpu for w in ws)
    mem = sum(w.memory for w in ws)
    ext: dict[str, float] = {}
    for w in ws:
        for k, v in w.extended.items():
            ext[k] = ext.get(k, 0.0) + v
    parts = [_qty_cpu(round(cpu, 6))]
    if mem:
        parts.append(_qty_mem(mem))
    parts += [f"{v:g} {k}" for k, v in sorted(ext.items())]
    return ", ".join(parts)


def _peer_sets(workloads: Sequence[WorkloadState],
               co_dependent: CoDependent | None) -> Callable[[WorkloadState], frozenset[str]]:
    """Workload key -> the keys of the workloads it must stay close to (itself included)."""
    if co_dependent is None:
        return lambda w: frozenset({w.key})
    if callable(co_dependent):
        fn = co_dependent
        return lambda w: fn(w) | {w.key}
    member: dict[str, set[str]] = {}
    for group in co_dependent:
        for k in group:
            member.setdefault(k, set()).update(group)
    return lambda w: frozenset(member.get(w.key, ())) | {w.key}


def _bundles(movers: list[WorkloadState], peers: Callable[[WorkloadState], frozenset[str]]
             ) -> list[list[WorkloadState]]:
    """Split the movers of one device into connected co-dependent bundles (union-find), in key order."""
    parent = {w.key: w.key for w in movers}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for w in movers:
        for p in sorted(peers(w)):
            if p in parent:
                a, b = find(w.key), find(p)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[str, list[WorkloadState]] = {}
    for w in movers:
        groups.setdefault(find(w.key), []).append(w)
    return [sorted(g, key=lambda w: w.key) for _, g in sorted(groups.items())]


def plan_remediation(
    devices: Sequence[DeviceState],
    workloads: Sequence[WorkloadState],
    breached: Mapping[str, Sequence[_Reason | str]],
    requirements_ok: RequirementsOk,
    co_dependent: CoDependent | None = None,
    limits: ActuationLimits | int | None = None,
    *,
    describe: Callable[[WorkloadState], str] | None = None,
    margin: Margin | None = None,
    graph: DependencyGraph | None = None,
) -> Plan:
    """Move each workload off a breached device whose context fails its group's requirements.

    breached: device -> reasons. A reason with a `group` attribute (breach.BreachReason) applies only
    to that group's workloads; a plain string applies to every workload on the device. Either way a
    workload moves only if `requirements_ok(workload, its device)` is False, so one group's breach
    never moves another group's workloads that are fine where they are.
    co_dependent: sets of WorkloadState.key that should stay together (or a function giving a
    workload's set). Co-dependent movers from the same device go to one target when one holds them
    all; otherwise each goes on its own, preferring the device that hosts the most of its peers.
    limits: at most this many moves in the plan (ActuationLimits.max_moves_per_interval, or an int);
    the rest are Skipped and retried next round. A bundle is never split by the limit.
    Targets: schedulable, not breached, allowed by the pod's nodeSelector and required node affinity
    (nodematch, the scheduler's own rule), requirements_ok, room by requests (CapacityLedger), no required
    anti-affinity conflict with the group's pods there; ranked by `target_rank`: traffic to the
    workloads already there (`graph`, the aggregation planner's DependencyGraph, with the moves planned so
    far), co-dependent peers there, fewer replicas of the same workload, then margin (`margin`, 0..1; 1
    when not given) and headroom (free CPU and memory share after the moves so far), then a per-workload
    hash that spreads equally good targets.
    """
    describe = describe or (lambda w: f"the requirements of {w.group}")
    budget = limits.max_moves_per_interval if isinstance(limits, ActuationLimits) else limits
    ledger = CapacityLedger(devices)
    by_name = {d.name: d for d in devices}
    peers = _peer_sets(workloads, co_dependent)
    position = {w.key: w.node for w in workloads}
    targets = sorted((d for d in devices if d.name not in breached and d.schedulable), key=lambda d: d.name)

    moves: list[Move] = []
    skipped: list[Skipped] = []
    movers_by_device: dict[str, list[WorkloadState]] = {}
    reasons_for: dict[str, str] = {}
    for w in sorted(workloads, key=lambda w: (w.node, w.key)):
        reasons = breached.get(w.node)
        if not reasons:
            continue
        applicable = [r for r in reasons if getattr(r, "group", None) in (None, w.group)]
        current = by_name.get(w.node)
        if not applicable or current is None or requirements_ok(w, current):
            continue
        reasons_for[w.key] = "; ".join(str(r) for r in applicable)
        if not w.movable:
            skipped.append(Skipped(workload=w.key, reason=f"not movable; breach on {w.node}: {reasons_for[w.key]}"))
            continue
        movers_by_device.setdefault(w.node, []).append(w)

    def headroom(name: str) -> float:
        d = by_name[name]
        cpu = ledger.cpu[name] / d.cpu_capacity if d.cpu_capacity else 0.0
        mem = ledger.mem[name] / d.memory_capacity if d.memory_capacity else 1.0
        return max(0.0, min(cpu, mem, 1.0))

    def peers_on(name: str, ws: Sequence[WorkloadState]) -> int:
        own = {w.key for w in ws}
        mates: set[str] = set()
        for w in ws:
            mates |= peers(w)
        return sum(1 for k in mates - own if position.get(k) == name)

    def replicas_on(name: str, ws: Sequence[WorkloadState]) -> int:
        kinds = {(w.group, w.workload) for w in ws}
        own = {w.key for w in ws}
        return sum(1 for w in workloads if w.key not in own and (w.group, w.workload) in kinds
                   and position.get(w.key) == name)

    def local_traffic(ws: Sequence[WorkloadState]) -> dict[str, float]:
        """Traffic the bundle exchanges with the pods on each device, where the plan has put them."""
        if graph is None or not any(graph.neighbours(graph.wkey_of[w.key]) for w in ws if w.key in graph.wkey_of):
            return {}
        counts = graph.counts({k: position.get(k, n) for k, n in graph.placement().items()})
        out: dict[str, float] = {}
        for w in ws:
            if w.key in graph.wkey_of:
                for node, t in graph.pod_affinity(w.key, counts).items():
                    out[node] = out.get(node, 0.0) + t
        # The bundle's traffic among itself points at its own device, which is never a target.
        return {n: t for n, t in out.items() if n not in {w.node for w in ws} and t > 0}

    def anti_affinity_ok(name: str, ws: Sequence[WorkloadState]) -> bool:
        if not any(w.constraints.anti_required for w in workloads):
            return True
        others = [w for w in workloads if position.get(w.key) == name]
        for w in ws:
            if conflicts(w, others, respect_preferred=False) is not None:
                return False
            others.append(w)
        return True

    def best_target(ws: Sequence[WorkloadState]) -> str | None:
        traffic = local_traffic(ws)
        froms = {w.node for w in ws}
        first = ws[0].key
        ranked = []
        for d in targets:
            if d.name in froms or not all(node_allows(w.constraints, d.name, d.labels) for w in ws):
                continue
            if not all(requirements_ok(w, d) for w in ws) or not ledger.fits(d.name, ws):
                continue
            if not anti_affinity_ok(d.name, ws):
                continue
            m = min((margin(w, d) for w in ws), default=1.0) if margin is not None else 1.0
            ranked.append((target_rank(traffic.get(d.name, 0.0), peers_on(d.name, ws), replicas_on(d.name, ws),
                                       target_quality(m, headroom(d.name)), spread_hash(first, d.name)), d.name))
        return min(ranked)[1] if ranked else None

    def place(ws: Sequence[WorkloadState], to: str, together: bool) -> None:
        for w in ws:
            ledger.move(w, to)
            position[w.key] = to
            note = f" (with {len(ws) - 1} co-dependent peer(s))" if together else ""
            moves.append(Move(workload=w.workload, pod=w.key, from_node=w.node, to_node=to,
                              reason=f"context breach on {w.node}: {reasons_for[w.key]}{note}"))

    def why_not(w: WorkloadState) -> str:
        satisfying = [d for d in targets if d.name != w.node and requirements_ok(w, d)]
        if not satisfying:
            return f"no device satisfies {describe(w)}; stays on {w.node}"
        allowed = [d for d in satisfying if node_allows(w.constraints, d.name, d.labels)]
        if not allowed:
            # The scheduler would refuse every one of them: evicting would only leave the pod Pending.
            why = node_refusal(w.constraints, satisfying[0].name, satisfying[0].labels)
            return (f"none of the {len(satisfying)} device(s) that satisfy {describe(w)} is allowed by the pod: "
                    f"{why}; stays on {w.node}")
        return (f"no device satisfies {describe(w)} with {_resources([w])} free "
                f"({len(allowed)} satisfy the requirements and the pod's node constraints, none has room); "
                f"stays on {w.node}")

    for device in sorted(movers_by_device):
        for bundle in _bundles(movers_by_device[device], peers):
            if budget is not None and len(moves) + len(bundle) > budget:
                skipped += [Skipped(workload=w.key, reason=f"move limit ({budget} per plan) reached; "
                                    "retried next round") for w in bundle]
                continue
            if len(bundle) > 1:
                to = best_target(bundle)
                if to is not None:
                    place(bundle, to, together=True)
                    continue
            for w in bundle:
                to = best_target([w])
                if to is None:
                    skipped.append(Skipped(workload=w.key, reason=why_not(w)))
                else:
                    place([w], to, together=False)

    n_dev = len({m.from_node for m in moves})
    summary = (f"{len(moves)} move(s) off {n_dev} breached device(s)"
               + (f"; {len(skipped)} skipped" if skipped else ""))
    return Plan(kind=PlanKind.Remediation, moves=tuple(moves), skipped=tuple(skipped), summary=summary)

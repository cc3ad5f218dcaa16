"""Remediation planning: move workloads off devices whose context breaches their group's requirements.

Pure and deterministic: the same devices, workloads and breaches give the same Plan. A workload is
moved only to a device that satisfies every requirement of its group and has room for its requests;
when none does, it stays and the plan says why (a Skipped entry), because evicting into Pending is
worse than staying on a degraded device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from ..api.workloadgroup import ActuationLimits, Requirement
from .breach import describe_requirements, evaluate
from .context import ContextValue
from .fit import CapacityLedger
from .model import DeviceState, Move, Plan, PlanKind, Skipped, WorkloadState

RequirementsOk = Callable[[WorkloadState, DeviceState], bool]
CoDependent = Sequence[frozenset[str]] | Callable[[WorkloadState], frozenset[str]]


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
    Targets: schedulable, not breached, requirements_ok, room by requests (CapacityLedger); ranked by
    co-dependent peers hosted (most first), then CPU share in use after the plan so far (least first),
    then name.
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

    def load(name: str) -> float:
        d = by_name[name]
        return 1.0 - ledger.cpu[name] / d.cpu_capacity if d.cpu_capacity else 1.0

    def peers_on(name: str, ws: Sequence[WorkloadState]) -> int:
        own = {w.key for w in ws}
        mates: set[str] = set()
        for w in ws:
            mates |= peers(w)
        return sum(1 for k in mates - own if position.get(k) == name)

    def best_target(ws: Sequence[WorkloadState]) -> str | None:
        ranked = [(-peers_on(d.name, ws), load(d.name), d.name) for d in targets
                  if d.name not in {w.node for w in ws}
                  and all(requirements_ok(w, d) for w in ws) and ledger.fits(d.name, ws)]
        return min(ranked)[2] if ranked else None

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
        return (f"no device satisfies {describe(w)} with {_resources([w])} free "
                f"({len(satisfying)} satisfy the requirements, none has room); stays on {w.node}")

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

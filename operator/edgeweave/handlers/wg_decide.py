"""One WorkloadGroup round, decided: what the round observed in, the status, conditions, Events, taint
claims and moves to start out. Pure (no API, no clock, no Prometheus): `wg_round` gathers the inputs and
carries out the step, as `gpu/jobstate.advance` does for GpuJobs.

Each condition has its own small function returning a `Cond`; adding one is a type and reasons in
`api/conditions.py` plus a function here that `decide` calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..api.base import Mode, parse_rfc3339, rfc3339
from ..api.conditions import Cond, ConditionType, Reason, get_condition
from ..api.workloadgroup import (
    MovePhase,
    MoveStatus,
    PlanStatus,
    WorkloadBackoff,
    WorkloadGroupSpec,
    WorkloadGroupStatus,
)
from ..placement.aggregate import plan_aggregation, plan_defragmentation
from ..placement.breach import BreachReason
from ..placement.graph import DependencyGraph, edges_with_declared
from ..placement.inventory import PodInfo
from ..placement.model import DeviceState, Edge, Plan, WorkloadState
from ..placement.remediate import plan_remediation, requirements_describer
from ..placement.states import DECLARED_BYTES_PER_WEIGHT

T = ConditionType
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 3600.0
STALLED_AFTER = 3  # consecutive rollbacks of one workload that raise MovesStalled


@dataclass(frozen=True)
class Telemetry:
    """What the round read from Prometheus (or why not)."""

    edges: tuple[Edge, ...] = ()
    age_seconds: float = 0.0
    error_reason: str = ""  # a TelemetryError's reason: no plan
    error_message: str = ""
    source: str = "prometheus"  # prometheus | none (no URL) | disabled


@dataclass(frozen=True)
class BreachView:
    """The group's breach tracker after this round's observations."""

    breaches: Mapping[str, Sequence[BreachReason]]  # every device the group finds breached (actionable)
    pending: Sequence[tuple[str, str, float]] = ()  # (device, detail, grace seconds left) on hosting devices
    unknown: Sequence[str] = ()  # hosting devices whose context cannot be read
    uplink_faults: Sequence[str] = ()  # requirements naming an uplink the device's EdgeSite lacks (the real fault)
    frozen: frozenset[str] = frozenset()  # devices whose state is frozen (no verdict either way)
    hosting: frozenset[str] = frozenset()
    requirements_ok: Callable[[WorkloadState, DeviceState], bool] | None = None
    margin: Callable[[WorkloadState, DeviceState], float] | None = None  # 0..1 over the requirements (targets)
    breached_since: Mapping[str, float] = field(default_factory=dict)  # device -> breach start (Unix time)
    prometheus_error: str | None = None
    records: Sequence[dict] = ()  # the tracker's states that are not OK, as status keeps them (wire form)


@dataclass(frozen=True)
class RoundInput:
    namespace: str
    name: str
    generation: int
    spec: WorkloadGroupSpec
    status: WorkloadGroupStatus
    conditions: Sequence[dict]  # as stored (for transitions and Event de-duplication)
    mode: Mode  # effective
    members: Sequence[PodInfo]
    devices: Sequence[DeviceState]
    workloads: Sequence[WorkloadState]
    now: float
    plan_now: bool
    plan_id: str  # the id a new plan gets
    telemetry: Telemetry | None = None  # None: not read this round
    breach: BreachView | None = None
    edges_seen: Sequence[Edge] = ()  # the last telemetry's edges (co-dependence for remediation)
    conflicts: Sequence[str] = ()  # other groups that also select some of these pods, older first
    lost_pods: int = 0  # pods an older overlapping group keeps
    steering: tuple[bool, str] | None = None  # (live, why not), when probed this round
    may_taint: bool = True  # the cluster's policy lets this namespace taint devices
    claimed_taints: frozenset[str] = frozenset()  # devices whose taint this group claims now

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class RoundStep:
    status: dict  # the status fields to write (wire form); the writer drops what did not change
    conditions: list[Cond]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    plan: Plan | None = None  # a new plan recorded this round (for metrics)
    start_moves: bool = False  # an Enforce plan with moves is recorded: the mover takes over
    taint: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())  # (claim, release)


# -- conditions, one function each ---------------------------------------------------------------
def ready_condition(inp: RoundInput) -> Cond:
    devices = len({p.node for p in inp.members if p.node})
    return Cond.of(T.Ready, True, Reason.Accepted,
                   f"{len(inp.members)} member pod(s) on {devices} device(s); mode {inp.mode.value}")


def conflict_condition(inp: RoundInput) -> Cond:
    if not inp.conflicts:
        return Cond.of(T.Conflict, False, Reason.NoOverlap, "no other group selects these pods")
    kept = f"; {inp.lost_pods} pod(s) stay with the older group" if inp.lost_pods else \
        "; this group is the older and keeps them"
    return Cond.of(T.Conflict, True, Reason.OverlappingSelector,
                   f"pods also selected by {', '.join(inp.conflicts)}{kept}")


def telemetry_condition(tel: Telemetry, max_age: int) -> tuple[Cond, bool]:
    """(condition, fresh enough to plan on)."""
    if tel.error_reason:
        return Cond.of(T.TelemetryFresh, False, tel.error_reason, f"no migration: {tel.error_message}"), False
    if tel.source == "none":
        return Cond.of(T.TelemetryFresh, None, Reason.NoPrometheus,
                       "no Prometheus configured: planning on declared dependencies only"), True
    if tel.source == "disabled":
        return Cond.of(T.TelemetryFresh, None, Reason.DiscoveryDisabled, "declared dependencies only"), True
    if tel.age_seconds > max_age:
        return Cond.of(T.TelemetryFresh, False, Reason.StaleTelemetry,
                       f"no migration: snapshot is {tel.age_seconds:.0f}s old (max {max_age}s)"), False
    return Cond.of(T.TelemetryFresh, True, Reason.Fresh, f"{len(tel.edges)} dependency series"), True


def aggregated_condition(plan: Plan) -> Cond:
    if plan.skipped:
        return Cond.of(T.Aggregated, False, Reason.CannotPlace, "; ".join(s.reason for s in plan.skipped)[:1000])
    if plan.moves:
        return Cond.of(T.Aggregated, False, Reason.Planned, plan.summary)
    return Cond.of(T.Aggregated, True, Reason.NothingToMove, plan.summary or "no split co-dependent pairs")


def context_condition(b: BreachView, requirements: int) -> Cond:
    mine = {d: r for d, r in b.breaches.items() if d in b.hosting}
    if mine:
        detail = "; ".join(f"{d}: {r.detail}" for d, rs in sorted(mine.items()) for r in rs)[:900]
        return Cond.of(T.ContextSatisfied, False, Reason.Breached, detail)
    if b.pending:
        return Cond.of(T.ContextSatisfied, True, Reason.BreachPending, "; ".join(
            f"{d}: {detail} ({left:.0f}s of grace left)" for d, detail, left in b.pending)[:900])
    if b.unknown and b.uplink_faults:
        # Not missing telemetry: the requirement names an uplink the device's site does not have.
        return Cond.of(T.ContextSatisfied, None, Reason.UnknownUplink, "; ".join(b.uplink_faults)[:900])
    if b.unknown:
        return Cond.of(T.ContextSatisfied, None, Reason.TelemetryMissing,
                       f"cannot read the context of {', '.join(b.unknown)}"
                       + (f": {b.prometheus_error}" if b.prometheus_error else ""))
    return Cond.of(T.ContextSatisfied, True, Reason.Satisfied,
                   f"all {requirements} requirement(s) hold on {len(b.hosting)} device(s)")


def steering_condition(steering: tuple[bool, str]) -> Cond:
    live, why = steering
    if live:
        return Cond.of(T.SteeringUnavailable, False, Reason.SteeringLive, "replacements are steered at admission")
    return Cond.of(T.SteeringUnavailable, True, Reason.WebhookNotSteering, f"nothing is evicted: {why}")


def steering_step(stored: Sequence[dict], steering: tuple[bool, str]) -> tuple[Cond, list[tuple[str, str, str]]]:
    """The condition, and a Warning Event when steering has just been found not live."""
    sc = steering_condition(steering)
    raised = sc.status.value == "True" and condition_changed(stored, sc)
    return sc, [("Warning", "SteeringUnavailable", sc.message)] if raised else []


def stalled_condition(backoff: Mapping[str, WorkloadBackoff], now: float) -> Cond:
    stalled = sorted(w for w, b in backoff.items() if b.failures >= STALLED_AFTER
                     and (parse_rfc3339(b.until) or 0) > now)
    if stalled:
        detail = "; ".join(f"{w}: {backoff[w].failures} rollbacks, next try after {backoff[w].until} "
                           f"({backoff[w].last_failure})" for w in stalled)
        return Cond.of(T.MovesStalled, True, Reason.RepeatedRollbacks, detail[:1000])
    return Cond.of(T.MovesStalled, False, Reason.MovesHealthy, "")


# -- backoff ---------------------------------------------------------------------------------------
def backoff_after(previous: WorkloadBackoff | None, move: MoveStatus, now: float) -> WorkloadBackoff | None:
    """A workload's backoff after one of its moves ended: cleared by a success, doubled by anything else (a
    rollback, a PDB refusal), so the same move is never retried in a tight loop."""
    if move.phase is MovePhase.Done:
        return None
    failures = (previous.failures if previous else 0) + 1
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1))
    return WorkloadBackoff(failures=failures, until=rfc3339(now + delay), last_failure=move.message[:300])


def backing_off(backoff: Mapping[str, WorkloadBackoff], now: float) -> set[str]:
    return {w for w, b in backoff.items() if (parse_rfc3339(b.until) or 0) > now}


def hold_backed_off(workloads: Sequence[WorkloadState], backoff: Mapping[str, WorkloadBackoff],
                    now: float) -> list[WorkloadState]:
    """Backing-off workloads are planned as if cooling down: they stay where they are."""
    held = backing_off(backoff, now)
    return [w.model_copy(update={"cooling_down": True}) if w.workload in held else w for w in workloads]


# -- plans -----------------------------------------------------------------------------------------
def make_plan(devices, workloads, edges, spec: WorkloadGroupSpec, requirements_ok=None) -> Plan:
    """Aggregation first; defragmentation only when nothing co-dependent is left to bring together."""
    kwargs = {"bytes_per_request": spec.discovery.bytes_per_request,
              "max_moves": spec.limits.max_moves_per_interval, "requirements_ok": requirements_ok}
    plan = plan_aggregation(devices, workloads, edges, spec.aggregation, **kwargs)
    if plan.empty and spec.aggregation.defragment:
        defrag = plan_defragmentation(devices, workloads, edges, spec.aggregation, **kwargs)
        if not defrag.empty:
            return defrag
    return plan


def plan_status(plan: Plan, mode: Mode, plan_id: str, now: float,
                breached_since: Mapping[str, float] | None = None) -> PlanStatus:
    at = rfc3339(now)
    since = breached_since or {}
    return PlanStatus(
        id=plan_id, kind=plan.kind.value, created_at=at, mode=mode, summary=plan.summary,
        cross_device_traffic_before=round(plan.traffic_before, 3),
        cross_device_traffic_after=round(plan.traffic_after, 3),
        moves=[MoveStatus(id=m.id, workload=m.workload, pod=m.pod, from_node=m.from_node, to_node=m.to_node,
                          reason=m.reason, phase=MovePhase.Planned,
                          message="dry run: not carried out" if mode is Mode.DryRun else "", updated_at=at,
                          context_changed_at=rfc3339(since[m.from_node]) if m.from_node in since else None)
               for m in plan.moves],
        skipped=[{"workload": s.workload, "reason": s.reason} for s in plan.skipped])


def _no_breach(w: WorkloadState, d: DeviceState) -> bool:
    return True


def _changed(inp: RoundInput, cond: Cond) -> bool:
    return condition_changed(inp.conditions, cond)


def condition_changed(stored: Sequence[dict], cond: Cond) -> bool:
    """Whether `cond` differs from the stored one (an Event goes with a change, not with every round)."""
    old = get_condition(stored, cond.type.value) or {}
    return (old.get("status"), old.get("reason"), old.get("message")) != (cond.status.value, cond.reason,
                                                                         cond.message)


def _remediation(inp: RoundInput, b: BreachView) -> tuple[Cond, Plan | None, list[tuple[str, str, str]]]:
    spec, mode = inp.spec, inp.mode
    mine = {d: list(r) for d, r in b.breaches.items() if d in b.hosting}
    if not mine or not spec.remediation.enabled:
        return Cond.of(T.Remediating, False, Reason.NoBreach if not mine else Reason.Disabled, ""), None, []
    co_dependent, graph = None, None
    # Observed traffic and declared dependencies, as the aggregation planner sees them: remediation moves
    # toward partners and keeps co-dependent movers together.
    edges = edges_with_declared(list(inp.edges_seen), spec.dependencies,
                                declared_bytes_per_second=DECLARED_BYTES_PER_WEIGHT)
    if edges:
        graph = DependencyGraph(list(inp.workloads), edges, bytes_per_request=spec.discovery.bytes_per_request)
        co_dependent = [frozenset(p for wk in comp for p in graph.members.get(wk, ())) for comp in graph.components()]
    plan = plan_remediation(list(inp.devices), list(inp.workloads), mine, b.requirements_ok or _no_breach, co_dependent,
                            spec.limits, describe=requirements_describer({inp.key: list(spec.requirements)}),
                            margin=b.margin, graph=graph)
    previous = inp.status.plan
    if (not plan.empty and previous is not None and previous.summary == plan.summary
            and previous.kind == plan.kind.value and previous.mode is mode
            and {m.id for m in previous.moves} == {m.id for m in plan.moves}):
        # The same remediation is already recorded (a dry run, or moves that ended): no new plan, no Event.
        # The same moves, not just the same summary: a new breach of as many devices ("20 move(s) off 19
        # breached device(s)" again, the pods now elsewhere) was taken for the last one and never moved.
        return Cond.of(T.Remediating, False, Reason.Recorded, plan.summary), None, []
    if plan.empty:
        reason = "; ".join(s.reason for s in plan.skipped)[:900] or "no movable workload"
        cond = Cond.of(T.Remediating, False, Reason.NoValidTarget, reason)
        return cond, None, [("Warning", "NoValidTarget", reason)] if _changed(inp, cond) else []
    enforce = mode is Mode.Enforce
    cond = Cond.of(T.Remediating, enforce, Reason.Offloading if enforce else Reason.DryRun, plan.summary)
    return cond, plan, [("Warning" if enforce else "Normal", "Remediating" if enforce else "PlanDryRun",
                         plan.summary)]


def taint_claims(inp: RoundInput) -> tuple[frozenset[str], frozenset[str]]:
    """(devices to claim, devices to release). Only an Enforce group that asked for taints, in a namespace
    allowed to taint, claims; it claims what it finds breached. A frozen device keeps its claim: missing
    data is not a recovery."""
    b = inp.breach
    wants = (inp.mode is Mode.Enforce and inp.spec.remediation.taint_breached_devices and inp.may_taint
             and b is not None)
    desired = frozenset(b.breaches) if wants and b is not None else frozenset()
    hold = b.frozen if wants and b is not None else frozenset()
    claim = desired - inp.claimed_taints
    release = inp.claimed_taints - desired - hold
    return claim, release


# -- the round -------------------------------------------------------------------------------------
# Conditions that say something only when True: written when True, and flipped back once it stops being
# so; a group that never had the problem does not carry them.
ONLY_WHEN_RAISED = frozenset({T.Conflict, T.MovesStalled, T.SteeringUnavailable})
TELEMETRY_AT_REFRESH_SECONDS = 300.0  # lastTelemetryAt is rewritten at most this often while it stays fresh


def prune_quiet(stored_conditions: Sequence[dict], conds: Sequence[Cond]) -> list[Cond]:
    stored = {c.get("type") for c in stored_conditions}
    return [c for c in conds if c.type not in ONLY_WHEN_RAISED or c.status.value == "True" or c.type.value in stored]


def decide(inp: RoundInput) -> RoundStep:
    step = _decide(inp)
    step.conditions = prune_quiet(inp.conditions, step.conditions)
    return step


def _decide(inp: RoundInput) -> RoundStep:
    spec, mode, now = inp.spec, inp.mode, inp.now
    base = {"members": len(inp.members), "devices": len({p.node for p in inp.members if p.node}),
            "observedGeneration": inp.generation}
    conds = [ready_condition(inp), conflict_condition(inp), stalled_condition(inp.status.backoff, now)]
    events: list[tuple[str, str, str]] = []
    if inp.conflicts and _changed(inp, conds[1]):
        events.append(("Warning", "Conflict", conds[1].message))
    if inp.steering is not None:
        sc, sevents = steering_step(inp.conditions, inp.steering)
        conds.append(sc)
        events.extend(sevents)
    step = RoundStep(status=base, conditions=conds, events=events, taint=taint_claims(inp))
    if inp.breach is not None:
        step.status["breachState"] = list(inp.breach.records)
    elif inp.status.breach_state and not spec.requirements:
        step.status["breachState"] = []  # requirements removed: nothing is tracked any more

    if spec.requirements and inp.breach is not None:
        b = inp.breach
        conds.append(ccond := context_condition(b, len(spec.requirements)))
        if ccond.reason == Reason.UnknownUplink and _changed(inp, ccond):
            events.append(("Warning", Reason.UnknownUplink.value, ccond.message))
        rcond, remediation, revents = _remediation(inp, b)
        conds.append(rcond)
        events.extend(revents)
        if remediation is not None:
            step.status["plan"] = plan_status(remediation, mode, inp.plan_id, now, b.breached_since).wire()
            step.plan, step.start_moves = remediation, mode is Mode.Enforce
            return step
    if not inp.plan_now or not spec.aggregation.enabled or inp.telemetry is None:
        return step

    tcond, fresh = telemetry_condition(inp.telemetry, spec.telemetry.max_age_seconds)
    conds.append(tcond)
    if not fresh:
        return step
    last = parse_rfc3339(inp.status.last_telemetry_at) or 0.0
    if inp.telemetry.source == "prometheus" and now - last >= TELEMETRY_AT_REFRESH_SECONDS:
        step.status["lastTelemetryAt"] = rfc3339(now)
    edges = edges_with_declared(list(inp.telemetry.edges), spec.dependencies,
                                declared_bytes_per_second=DECLARED_BYTES_PER_WEIGHT)
    workloads = hold_backed_off(inp.workloads, inp.status.backoff, now)
    result = make_plan(list(inp.devices), workloads, edges, spec,
                       inp.breach.requirements_ok if inp.breach is not None else None)
    conds.append(aggregated_condition(result))
    previous = inp.status.plan
    # A plan whose moves ran stays in status as their record until there is a new plan with moves.
    stale_dry_run = previous is not None and previous.mode is Mode.DryRun and previous.summary != result.summary
    # The same plan, not acted on, is already recorded (a dry run, or a pair that fits nowhere): keep it, so a
    # steady group writes nothing.
    same = (previous is not None and previous.summary == result.summary and previous.kind == result.kind.value
            and previous.mode is mode and all(m.phase is MovePhase.Planned for m in previous.moves))
    if (result.moves or result.skipped or stale_dry_run) and not same:
        step.status["plan"] = plan_status(result, mode, inp.plan_id, now).wire()
        step.plan = result
        if result.moves and (previous is None or previous.summary != result.summary):
            events.append(("Normal", "PlanDryRun" if mode is Mode.DryRun else "PlanCreated", result.summary))
    step.start_moves = bool(result.moves) and mode is Mode.Enforce
    return step


def backoff_left(backoff: Mapping[str, WorkloadBackoff], workload: str, now: float) -> float:
    until = parse_rfc3339((backoff.get(workload) or WorkloadBackoff()).until) or 0.0
    return max(0.0, until - now) if math.isfinite(until) else 0.0

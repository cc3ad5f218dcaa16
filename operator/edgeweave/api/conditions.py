"""Kubernetes-style conditions: the documented types and reasons, one small value, pure updates that keep
lastTransitionTime honest.

Adding a condition: add its type to `ConditionType` and its reasons to `Reason` (each with a line saying
what it means to a user — `kubectl describe` shows these words), then write one small function that returns
a `Cond` from what the round observed (see `handlers/wg_decide.py`). Nothing else changes: `apply` merges
it into status and the transition time moves only when the status does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .base import ConditionStatus, now_rfc3339


class ConditionType(StrEnum):
    """Condition types edgeweave writes (WorkloadGroup unless said otherwise)."""

    Ready = "Ready"  # the spec was accepted and the group (site, job) is being reconciled
    TelemetryFresh = "TelemetryFresh"  # the last dependency snapshot was read and is recent enough to act on
    Aggregated = "Aggregated"  # co-dependent members share a device (True), or why not yet
    ContextSatisfied = "ContextSatisfied"  # every requirement holds on every device the members use
    Remediating = "Remediating"  # members are being moved off breached devices
    SteeringUnavailable = "SteeringUnavailable"  # True: the admission webhook does not steer replacements,
    # so no controller-owned pod is evicted (it would land anywhere)
    MovesStalled = "MovesStalled"  # True: a workload's moves rolled back repeatedly; it backs off
    Conflict = "Conflict"  # True: another group's selector matches some of the same pods
    Breached = "Breached"  # EdgeSite: some group finds a device of this site breached
    Schedulable = "Schedulable"  # GpuJob: the requested GPU offering exists
    Planned = "Planned"  # GpuJob: a slice plan is recorded


class Reason(StrEnum):
    """Machine-readable reasons. Grouped by the condition that uses them."""

    # Ready
    Accepted = "Accepted"  # spec parsed; the message says members, devices and mode
    Moving = "Moving"  # moves are in flight; the message counts them
    InvalidSpec = "InvalidSpec"  # the stored spec does not parse; the message names the field
    ReconcileFailed = "ReconcileFailed"  # a round raised; it backs off exponentially, the message says why
    # TelemetryFresh
    Fresh = "Fresh"
    StaleTelemetry = "StaleTelemetry"  # the snapshot is older than telemetry.maxAgeSeconds: no migration
    PrometheusUnavailable = "PrometheusUnavailable"  # (TelemetryError reasons are used as they come)
    NoPrometheus = "NoPrometheus"  # no Prometheus configured: declared dependencies only
    DiscoveryDisabled = "DiscoveryDisabled"
    # Aggregated
    CannotPlace = "CannotPlace"  # a pair fits on no device; the message says which resource is short
    Planned = "Planned"  # a plan with moves is recorded
    NothingToMove = "NothingToMove"
    # ContextSatisfied
    Satisfied = "Satisfied"
    Breached = "Breached"  # a requirement failed past its grace period on a device the members use
    BreachPending = "BreachPending"  # a requirement fails, still inside its grace period
    TelemetryMissing = "TelemetryMissing"  # a device's context cannot be read: state frozen, nothing moves
    UnknownUplink = "UnknownUplink"  # a requirement names an uplink the device's EdgeSite does not declare
    # Remediating
    NoBreach = "NoBreach"
    Disabled = "Disabled"
    Recorded = "Recorded"  # this remediation is already in status (dry run, or its moves ended)
    NoValidTarget = "NoValidTarget"  # nowhere satisfies the requirements with room for the workload
    Offloading = "Offloading"
    DryRun = "DryRun"
    # SteeringUnavailable
    WebhookNotSteering = "WebhookNotSteering"  # a dry-run probe pod came back without the steering patch
    SteeringLive = "SteeringLive"
    # MovesStalled
    RepeatedRollbacks = "RepeatedRollbacks"
    MovesHealthy = "MovesHealthy"
    # Conflict
    OverlappingSelector = "OverlappingSelector"  # pods also match an older group, which keeps them
    NoOverlap = "NoOverlap"


@dataclass(frozen=True)
class Cond:
    """One condition as a decision produces it; `apply` turns it into the wire form."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str = ""

    @classmethod
    def of(cls, ctype: ConditionType, status: bool | None, reason: str, message: str = "") -> Cond:
        """status None means Unknown."""
        st = ConditionStatus.UNKNOWN if status is None else ConditionStatus.TRUE if status else ConditionStatus.FALSE
        return cls(ctype, st, str(reason), message[:1024])


def apply(existing: Iterable[dict[str, Any]] | None, conds: Iterable[Cond], generation: int,
          now: str | None = None) -> list[dict[str, Any]]:
    out = list(existing or [])
    for c in conds:
        out = set_condition(out, c.type.value, c.status.value, c.reason, c.message, generation, now)
    return out


MAX_CONDITION_MESSAGE = 1024


def set_condition(
    existing: Iterable[dict[str, Any]] | None,
    ctype: str,
    status: bool | str,
    reason: str,
    message: str = "",
    generation: int = 0,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return the conditions with `ctype` set; the transition time moves only when status changes."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    # Bounded: a message built from user input (a selector, an error) must never grow status without limit.
    if len(message) > MAX_CONDITION_MESSAGE:
        message = message[:MAX_CONDITION_MESSAGE - 3] + "..."
    out: list[dict[str, Any]] = []
    found = False
    for cond in existing or []:
        if cond.get("type") != ctype:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != value
        out.append({
            "type": ctype, "status": value, "reason": reason, "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": (now or now_rfc3339()) if changed else cond.get("lastTransitionTime", ""),
        })
    if not found:
        out.append({"type": ctype, "status": value, "reason": reason, "message": message,
                    "observedGeneration": generation, "lastTransitionTime": now or now_rfc3339()})
    return out


def get_condition(conditions: Iterable[dict[str, Any]] | None, ctype: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == ctype:
            return cond
    return None

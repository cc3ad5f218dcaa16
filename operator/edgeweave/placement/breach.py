"""Breach detection: does a device's context meet a requirement, and has a breach lasted long enough?

Two pure layers:
  evaluate()  one requirement against one device's context, now: Satisfied, Breached or Unknown.
              Hysteresis needs to know whether the device was breached before, so that is an input.
  step()      one (device, group, requirement) state machine step: OK -> Pending -> Breached ->
              Recovered -> OK. Time is passed in. Unknown (missing or stale telemetry) freezes the
              state: it never starts, completes or ends a breach.
BreachTracker keeps the step() states of many keys; it is the only mutable thing here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple

from ..api.context import NUMERIC_ELEMENTS, PER_UPLINK_ELEMENTS, ContextElement, SourceKind
from ..api.workloadgroup import BreachRecord, Requirement, RequirementOperator
from .context import MISSING, ContextValue, Scalar, context_key, format_value, parse_bool, parse_number

EPS = 1e-9
Op = RequirementOperator


class VerdictKind(StrEnum):
    Satisfied = "Satisfied"
    Breached = "Breached"
    Unknown = "Unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    detail: str
    uplink: str | None = None  # the uplink that decided it, for per-uplink elements

    @property
    def satisfied(self) -> bool:
        return self.kind is VerdictKind.Satisfied

    @property
    def breached(self) -> bool:
        return self.kind is VerdictKind.Breached

    @property
    def unknown(self) -> bool:
        return self.kind is VerdictKind.Unknown


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def requirement_id(req: Requirement) -> str:
    """A stable, readable name for a requirement: 'BatteryPercent Gte 40', 'UplinkLatencyMs[mpls] Lte 80'."""
    el = req.element.value + (f"[{req.uplink}]" if req.uplink and req.element in PER_UPLINK_ELEMENTS else "")
    if req.operator in (Op.In, Op.NotIn):
        return f"{el} {req.operator.value} [{', '.join(req.values or [])}]"
    if req.operator is Op.Exists:
        return f"{el} Exists"
    return f"{el} {req.operator.value} {req.value}"


def describe_requirements(reqs: Iterable[Requirement]) -> str:
    return " and ".join(requirement_id(r) for r in reqs) or "no requirements"


def _operand(req: Requirement) -> tuple[Scalar | None, str]:
    """The requirement's operand in the element's type, or None and why not."""
    raw = req.value
    if raw is None:
        return None, "has no value"
    if req.element in NUMERIC_ELEMENTS:
        v = parse_number(raw)
        return (v, "") if v is not None else (None, f"value {raw!r} is not a number")
    if req.element is ContextElement.GpuHealthy:
        b = parse_bool(raw)
        return (b, "") if b is not None else (None, f"value {raw!r} is not a boolean")
    return raw, ""


def _matches(element: ContextElement, value: Scalar, operand: str) -> bool:
    """Equality in the element's type: 40 == '40.0' for numbers, true == 'True' for GpuHealthy."""
    if isinstance(value, bool):
        return parse_bool(operand) is value
    if isinstance(value, float):
        o = parse_number(operand)
        return o is not None and abs(value - o) <= EPS
    return value == operand


def _evaluate_one(req: Requirement, cv: ContextValue | None, previously_breached: bool, now: float | None,
                  max_age: float | None, where: str) -> Verdict:
    label = req.element.value + where
    if cv is not None and max_age is not None and now is not None and now - cv.observed_at > max_age:
        return Verdict(VerdictKind.Unknown, f"{label}: value is {now - cv.observed_at:.0f}s old "
                                            f"(max {max_age:g}s)")
    if cv is None or cv.value is MISSING:
        note = f" ({cv.note})" if cv is not None and cv.note else ""
        if req.operator is Op.Exists and cv is not None and cv.source is not SourceKind.Prometheus:
            # The Node object is the authority on its labels: an absent label is known to be absent.
            # A Prometheus series that is missing is only unknown.
            return Verdict(VerdictKind.Breached, f"{label} is not set{note}")
        return Verdict(VerdictKind.Unknown, f"{label} has no value{note}")
    v = cv.value
    shown = format_value(v)
    op = req.operator
    if op is Op.Exists:
        return Verdict(VerdictKind.Satisfied, f"{label} is {shown}")
    if op in (Op.In, Op.NotIn):
        inside = any(_matches(req.element, v, o) for o in req.values or [])
        ok = inside if op is Op.In else not inside
        return Verdict(VerdictKind.Satisfied if ok else VerdictKind.Breached,
                       f"{label} is {shown}, needs {op.value} [{', '.join(req.values or [])}]")
    operand, why = _operand(req)
    if operand is None:
        # A requirement we cannot read is a configuration error, never a reason to move anything.
        return Verdict(VerdictKind.Unknown, f"requirement {requirement_id(req)} {why}")
    if op is Op.Eq:
        ok = _matches(req.element, v, req.value or "")
        return Verdict(VerdictKind.Satisfied if ok else VerdictKind.Breached,
                       f"{label} is {shown}, needs Eq {req.value}")
    if not isinstance(v, float) or isinstance(v, bool) or not isinstance(operand, float):
        return Verdict(VerdictKind.Unknown, f"{label} is {shown}: {op.value} needs a number")
    # Hysteresis: once breached, the value has to come back past the threshold by `hysteresis`.
    h = req.hysteresis if previously_breached else 0.0
    if op is Op.Gte:
        bound = operand + h
        ok = v >= bound - EPS
    else:
        bound = operand - h
        ok = v <= bound + EPS
    needs = f"{op.value} {_fmt_num(operand)}"
    if h:
        needs += f" (recovers at {_fmt_num(bound)}: hysteresis {_fmt_num(h)})"
    return Verdict(VerdictKind.Satisfied if ok else VerdictKind.Breached, f"{label} is {shown}, needs {needs}")


def evaluate(req: Requirement, context: Mapping[str, ContextValue], *, previously_breached: bool = False,
             now: float | None = None, max_age: float | None = None) -> Verdict:
    """One requirement against one device's context.

    previously_breached: the device counts as breached for this requirement now, so Gte/Lte must be
    met with the hysteresis margin to count as satisfied. now/max_age: values older than max_age
    are Unknown. A per-uplink element with no `uplink` means the best uplink: satisfied when any
    uplink satisfies it, breached only when every uplink is known and breaches it.
    """
    el = req.element
    if el not in PER_UPLINK_ELEMENTS:
        return _evaluate_one(req, context.get(context_key(el)), previously_breached, now, max_age, "")
    if req.uplink:
        return _evaluate_one(req, context.get(context_key(el, req.uplink)), previously_breached, now, max_age,
                             f"[{req.uplink}]")
    prefix = el.value + "/"
    keys = sorted(k for k in context if k.startswith(prefix))
    if el.value in context:
        keys.append(el.value)
    if not keys:
        return Verdict(VerdictKind.Unknown, f"{el.value}: no uplink reports a value")
    verdicts = []
    for k in keys:
        uplink = k[len(prefix):] if k.startswith(prefix) else None
        vd = _evaluate_one(req, context[k], previously_breached, now, max_age, f"[{uplink}]" if uplink else "")
        verdicts.append(replace(vd, uplink=uplink))
    for vd in verdicts:
        if vd.satisfied:
            return vd
    unknown = [vd for vd in verdicts if vd.unknown]
    if unknown:
        return Verdict(VerdictKind.Unknown, "; ".join(vd.detail for vd in unknown))
    return Verdict(VerdictKind.Breached, "no uplink qualifies: " + "; ".join(vd.detail for vd in verdicts))


# -- the state machine -----------------------------------------------------------------------------

class Phase(StrEnum):
    OK = "OK"
    Pending = "Pending"  # breached, but not yet for the whole grace period
    Breached = "Breached"  # breached for longer than the grace period: remediate
    Recovered = "Recovered"  # was Breached, satisfied again this observation (once; then OK)


@dataclass(frozen=True, slots=True)
class TrackState:
    phase: Phase = Phase.OK
    since: float | None = None  # first breached observation of the current breach
    accrued: float = 0.0  # seconds of breach observed so far (gaps of Unknown do not count)
    last_breached_at: float | None = None  # last breached observation, None after an Unknown gap
    grace: float = 0.0
    frozen: bool = False  # the last observation was Unknown: state held, no action on it
    detail: str = ""
    changed_at: float | None = None  # when the phase last changed

    @property
    def grace_left(self) -> float:
        return max(0.0, self.grace - self.accrued) if self.phase is Phase.Pending else 0.0

    @property
    def breached(self) -> bool:
        return self.phase is Phase.Breached

    @property
    def actionable(self) -> bool:
        """Breached on fresh data: the only state remediation acts on."""
        return self.phase is Phase.Breached and not self.frozen


def step(prev: TrackState, verdict: Verdict, now: float, grace: float) -> TrackState:
    """One observation. Pure; `verdict` must have been computed with previously_breached=prev.breached."""
    if verdict.unknown:
        phase = Phase.OK if prev.phase is Phase.Recovered else prev.phase
        # The gap breaks the breach clock: time nobody could see does not count as breached.
        return replace(prev, phase=phase, frozen=True, last_breached_at=None, detail=verdict.detail,
                       changed_at=now if phase is not prev.phase else prev.changed_at)
    if verdict.breached:
        if prev.phase in (Phase.OK, Phase.Recovered):
            if grace <= 0:
                return TrackState(Phase.Breached, since=now, last_breached_at=now, grace=grace,
                                  detail=verdict.detail, changed_at=now)
            return TrackState(Phase.Pending, since=now, last_breached_at=now, grace=grace,
                              detail=verdict.detail, changed_at=now)
        if prev.phase is Phase.Pending:
            accrued = prev.accrued + (now - prev.last_breached_at if prev.last_breached_at is not None else 0.0)
            phase = Phase.Breached if accrued >= grace - EPS else Phase.Pending
            return replace(prev, phase=phase, accrued=accrued, last_breached_at=now, grace=grace, frozen=False,
                           detail=verdict.detail, changed_at=now if phase is not prev.phase else prev.changed_at)
        return replace(prev, last_breached_at=now, frozen=False, detail=verdict.detail)
    if prev.phase is Phase.Breached:
        return TrackState(Phase.Recovered, grace=grace, detail=verdict.detail, changed_at=now)
    return TrackState(Phase.OK, grace=grace, detail=verdict.detail,
                      changed_at=now if prev.phase is not Phase.OK else prev.changed_at)


class TrackKey(NamedTuple):
    device: str
    group: str
    requirement: str  # requirement_id()


@dataclass(frozen=True, slots=True)
class BreachReason:
    """Why a device is breached, for one group: what remediation moves and what status says."""

    group: str
    requirement: str
    detail: str

    def __str__(self) -> str:
        return f"{self.group}: {self.detail}"


class BreachTracker:
    """The step() states of many (device, group, requirement) keys. Time is passed in."""

    def __init__(self, states: Mapping[Hashable, TrackState] | None = None) -> None:
        self._states: dict[Hashable, TrackState] = dict(states or {})

    def get(self, key: Hashable) -> TrackState:
        return self._states.get(key, TrackState())

    def items(self) -> list[tuple[Hashable, TrackState]]:
        return list(self._states.items())

    def observe(self, key: Hashable, req: Requirement, context: Mapping[str, ContextValue], now: float, *,
                max_age: float | None = None) -> tuple[Verdict, TrackState]:
        prev = self.get(key)
        verdict = evaluate(req, context, previously_breached=prev.breached, now=now, max_age=max_age)
        state = step(prev, verdict, now, float(req.grace_period_seconds))
        self._states[key] = state
        return verdict, state

    def observe_group(self, device: str, group: str, reqs: Sequence[Requirement],
                      context: Mapping[str, ContextValue], now: float, *,
                      max_age: float | None = None) -> list[tuple[TrackKey, Verdict, TrackState]]:
        out = []
        for r in reqs:
            key = TrackKey(device, group, requirement_id(r))
            verdict, state = self.observe(key, r, context, now, max_age=max_age)
            out.append((key, verdict, state))
        return out

    def prune(self, keep: Callable[[Hashable, TrackState], bool]) -> None:
        """Drop keys no longer tracked (say, a group left the device and its state is OK)."""
        self._states = {k: s for k, s in self._states.items() if keep(k, s)}

    def breaches(self) -> dict[str, list[BreachReason]]:
        """Actionable breaches (Breached on fresh data) by device, for plan_remediation."""
        out: dict[str, list[BreachReason]] = {}
        for key, s in sorted(self._states.items(), key=lambda kv: tuple(map(str, kv[0]))):
            if s.actionable and isinstance(key, TrackKey):
                out.setdefault(key.device, []).append(BreachReason(key.group, key.requirement, s.detail))
        return out

    def devices_in(self, *phases: Phase, frozen: bool | None = None) -> set[str]:
        return {k.device for k, s in self._states.items()
                if isinstance(k, TrackKey) and s.phase in phases and (frozen is None or s.frozen is frozen)}


# -- persistence: the states that are not OK, as the group's status keeps them ---------------------

FROZEN_DETAIL = "telemetry unavailable"


def to_record(key: TrackKey, s: TrackState) -> BreachRecord | None:
    """The state as status keeps it; None for OK (the default, not recorded).

    The record changes only when the state machine does, not with every observation: a running grace
    clock is stored as its start (`clock_start` = last breached observation - accrued), which stays put
    while the breach lasts. A frozen state's detail ("value is 71s old") changes every round; it is stored
    as a fixed text.
    """
    if s.phase is Phase.OK:
        return None
    running = s.phase is Phase.Pending and s.last_breached_at is not None
    return BreachRecord(
        device=key.device, requirement=key.requirement, phase=s.phase.value, since=s.since,
        clock_start=round(s.last_breached_at - s.accrued, 2) if running and s.last_breached_at is not None else None,
        accrued_seconds=round(s.accrued, 2) if s.phase is Phase.Pending and not running else 0.0,
        grace_seconds=s.grace, frozen=s.frozen, changed_at=s.changed_at,
        detail=FROZEN_DETAIL if s.frozen else s.detail)


def to_records(items: Iterable[tuple[Hashable, TrackState]]) -> list[BreachRecord]:
    recs = [r for k, s in items if isinstance(k, TrackKey) and (r := to_record(k, s)) is not None]
    return sorted(recs, key=lambda r: (r.device, r.requirement))


def from_records(group: str, records: Iterable[BreachRecord]) -> dict[Hashable, TrackState]:
    """The tracker states a group's status recorded, for a restarted (or newly active) replica.

    A running clock resumes from its start: the next breached observation accrues everything since, so the
    breach completes at the deadline the previous process was counting toward (the time the operator was
    down counts, as the time between any two breached observations does). A record that cannot be read
    is dropped (OK): never invent a breach.
    """
    out: dict[Hashable, TrackState] = {}
    for r in records:
        try:
            phase = Phase(r.phase)
        except ValueError:
            continue
        if phase is Phase.OK:
            continue
        running = phase is Phase.Pending and r.clock_start is not None
        out[TrackKey(r.device, group, r.requirement)] = TrackState(
            phase=phase, since=r.since, accrued=0.0 if running else r.accrued_seconds,
            last_breached_at=r.clock_start if running else None, grace=r.grace_seconds, frozen=r.frozen,
            detail=r.detail, changed_at=r.changed_at)
    return out


# -- margin: how comfortably a device meets a requirement (for ranking remediation targets) ---------

def margin(req: Requirement, context: Mapping[str, ContextValue], *, now: float | None = None,
           max_age: float | None = None) -> float:
    """0..1: how far past its recovery bound (threshold +- hysteresis) a device is, relative to the
    threshold's size. A device barely past the bound scores near 0 (one small dip breaches it), one far
    past scores 1. Requirements with no distance (In, Eq, Exists) score 1 when satisfied; anything not
    satisfied, or unknown, scores 0. For a best-uplink requirement, the best uplink's margin counts."""
    if not evaluate(req, context, previously_breached=True, now=now, max_age=max_age).satisfied:
        return 0.0
    if req.operator not in (Op.Gte, Op.Lte):
        return 1.0
    operand, _ = _operand(req)
    if not isinstance(operand, float):
        return 0.0
    bound = operand + req.hysteresis if req.operator is Op.Gte else operand - req.hysteresis
    scale = max(abs(operand), 1.0)
    el = req.element
    if el in PER_UPLINK_ELEMENTS and not req.uplink:
        prefix = el.value + "/"
        keys = [k for k in context if k.startswith(prefix) or k == el.value]
    else:
        keys = [context_key(el, req.uplink if el in PER_UPLINK_ELEMENTS else None)]
    best = 0.0
    for k in keys:
        cv = context.get(k)
        if cv is None or not isinstance(cv.value, float) or isinstance(cv.value, bool):
            continue
        if max_age is not None and now is not None and now - cv.observed_at > max_age:
            continue
        past = cv.value - bound if req.operator is Op.Gte else bound - cv.value
        best = max(best, min(1.0, max(0.0, past / scale)))
    return best


def min_margin(reqs: Iterable[Requirement], context: Mapping[str, ContextValue], *, now: float | None = None,
               max_age: float | None = None) -> float:
    """The weakest requirement decides: a device is as good a target as its worst margin (1 with none)."""
    return min((margin(r, context, now=now, max_age=max_age) for r in reqs), default=1.0)

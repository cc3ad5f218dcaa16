"""Breach state as the group's status keeps it: a restarted tracker resumes grace clocks and hysteresis."""

from __future__ import annotations

import json
import random

from edgeweave.api.context import SourceKind
from edgeweave.api.workloadgroup import BreachRecord, Requirement
from edgeweave.placement.breach import BreachTracker, Phase, TrackKey, from_records, to_records
from edgeweave.placement.context import MISSING, ContextValue

P = SourceKind.Prometheus
G = "ns/pay"
BATTERY = Requirement.model_validate({"element": "BatteryPercent", "operator": "Gte", "value": "40",
                                      "hysteresis": 10, "gracePeriodSeconds": 30})


def _ctx(t: float, v: float | object) -> dict[str, ContextValue]:
    return {"BatteryPercent": ContextValue(v, t, P)}


def _wire_round_trip(tracker: BreachTracker) -> BreachTracker:
    """What a new process reads: the records through JSON (the API server), then from_records."""
    wire = json.loads(json.dumps([r.wire() for r in to_records(tracker.items())]))
    return BreachTracker(from_records(G, [BreachRecord.model_validate(w) for w in wire]))


def _observe(t: BreachTracker, now: float, v: float | object, dev: str = "d") -> Phase:
    return t.observe_group(dev, G, [BATTERY], _ctx(now, v), now, max_age=60)[0][2].phase


def test_a_restart_half_way_through_the_grace_completes_at_the_original_deadline() -> None:
    t0 = 1_700_000_000.25
    first = BreachTracker()
    for s in range(0, 16):  # breached from t0, observed every second until the kill at t0+15
        assert _observe(first, t0 + s, 20.0) is Phase.Pending
    second = _wire_round_trip(first)
    # The new process is up 7 s later; its first observations are still Pending until t0+30, Breached then.
    assert _observe(second, t0 + 22, 20.0) is Phase.Pending
    assert _observe(second, t0 + 29.9, 20.0) is Phase.Pending
    assert _observe(second, t0 + 30.0, 20.0) is Phase.Breached
    assert second.get(TrackKey("d", G, "BatteryPercent Gte 40")).since == t0


def test_the_record_stays_put_while_a_clock_runs() -> None:
    """One status write when the breach starts, not one per observation."""
    t = BreachTracker()
    t0 = 1_700_000_000.0
    seen = {json.dumps([r.wire() for r in to_records(t.items())]) for _ in [_observe(t, t0, 20.0)]}
    for s in range(1, 20):
        _observe(t, t0 + s + random.random() * 0.3, 20.0)
        seen.add(json.dumps([r.wire() for r in to_records(t.items())]))
    assert len(seen) == 1


def test_an_unknown_gap_keeps_its_accrual_across_a_restart() -> None:
    t0 = 1_700_000_000.0
    first = BreachTracker()
    for s in range(0, 11):
        _observe(first, t0 + s, 20.0)
    _observe(first, t0 + 11, MISSING)  # gap: 10 s accrued, clock stopped
    second = _wire_round_trip(first)
    assert second.get(TrackKey("d", G, "BatteryPercent Gte 40")).frozen
    _observe(second, t0 + 100, 20.0)  # the gap (and the downtime in it) does not count
    assert _observe(second, t0 + 119, 20.0) is Phase.Pending
    assert _observe(second, t0 + 120, 20.0) is Phase.Breached


def test_a_recovery_seen_before_the_restart_is_not_forgotten() -> None:
    t0 = 1_700_000_000.0
    first = BreachTracker()
    for s in range(0, 10):
        _observe(first, t0 + s, 20.0)
    _observe(first, t0 + 10, 90.0)  # recovered: OK, nothing recorded
    assert to_records(first.items()) == []
    _observe(first, t0 + 20, 20.0)  # a new breach: its clock starts at t0+20, not t0
    second = _wire_round_trip(first)
    assert _observe(second, t0 + 45, 20.0) is Phase.Pending
    assert _observe(second, t0 + 50, 20.0) is Phase.Breached


def test_hysteresis_survives_a_restart() -> None:
    """Breached at 20; 45 is inside the band (recovers at 50): the new process keeps it Breached."""
    t0 = 1_700_000_000.0
    grace0 = Requirement.model_validate({**BATTERY.model_dump(by_alias=True), "gracePeriodSeconds": 0})
    first = BreachTracker()
    first.observe_group("d", G, [grace0], _ctx(t0, 20.0), t0)
    second = _wire_round_trip(first)
    st = second.observe_group("d", G, [grace0], _ctx(t0 + 5, 45.0), t0 + 5)[0][2]
    assert st.phase is Phase.Breached and "recovers at 50" in st.detail
    assert second.observe_group("d", G, [grace0], _ctx(t0 + 6, 50.0), t0 + 6)[0][2].phase is Phase.Recovered


def test_records_that_cannot_be_read_are_dropped_not_invented() -> None:
    recs = [BreachRecord(device="d", requirement="BatteryPercent Gte 40", phase="Exploded"),
            BreachRecord(device="e", requirement="BatteryPercent Gte 40", phase="OK")]
    assert from_records(G, recs) == {}

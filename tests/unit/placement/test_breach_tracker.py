from __future__ import annotations

import random

from edgeweave.api.context import SourceKind
from edgeweave.api.workloadgroup import Requirement
from edgeweave.placement.breach import (
    BreachTracker,
    Phase,
    TrackKey,
    VerdictKind,
    evaluate,
    requirement_id,
)
from edgeweave.placement.context import MISSING, ContextValue

P = SourceKind.Prometheus


def _req(**kw) -> Requirement:
    return Requirement.model_validate(kw)


def _ctx(t: float = 0.0, src: SourceKind = P, **values) -> dict[str, ContextValue]:
    return {k.replace("__", "/"): ContextValue(v, t, src) for k, v in values.items()}


BATTERY = _req(element="BatteryPercent", operator="Gte", value="40", hysteresis=10, gracePeriodSeconds=30)


def test_operators_and_types() -> None:
    assert evaluate(BATTERY, _ctx(BatteryPercent=39.9)).kind is VerdictKind.Breached
    assert evaluate(BATTERY, _ctx(BatteryPercent=40.0)).kind is VerdictKind.Satisfied
    temp = _req(element="TemperatureCelsius", operator="Lte", value="70", hysteresis=5)
    assert evaluate(temp, _ctx(TemperatureCelsius=71.0)).breached
    assert evaluate(temp, _ctx(TemperatureCelsius=68.0), previously_breached=True).breached  # needs <= 65
    assert evaluate(temp, _ctx(TemperatureCelsius=65.0), previously_breached=True).satisfied
    zone = _req(element="Zone", operator="In", values=["zone-a", "zone-b"])
    assert evaluate(zone, _ctx(Zone="zone-b")).satisfied and evaluate(zone, _ctx(Zone="zone-c")).breached
    posture = _req(element="SecurityPosture", operator="NotIn", values=["compromised"])
    assert evaluate(posture, _ctx(SecurityPosture="compromised")).breached
    gpu = _req(element="GpuHealthy", operator="Eq", value="True")
    assert evaluate(gpu, _ctx(GpuHealthy=True)).satisfied and evaluate(gpu, _ctx(GpuHealthy=False)).breached
    eq = _req(element="BatteryPercent", operator="Eq", value="100")
    assert evaluate(eq, _ctx(BatteryPercent=100.0)).satisfied
    bad = _req(element="BatteryPercent", operator="Gte", value="lots")
    assert evaluate(bad, _ctx(BatteryPercent=1.0)).unknown  # a config error never moves anything


def test_missing_and_stale_are_unknown_never_breach() -> None:
    assert evaluate(BATTERY, {}).unknown
    assert evaluate(BATTERY, _ctx(BatteryPercent=MISSING)).unknown
    stale = _ctx(t=0.0, BatteryPercent=10.0)
    assert evaluate(BATTERY, stale, now=121.0, max_age=120).unknown
    assert evaluate(BATTERY, stale, now=119.0, max_age=120).breached
    # Exists: an absent node label is known absent; an absent Prometheus series is only unknown.
    exists = _req(element="SecurityPosture", operator="Exists")
    assert evaluate(exists, _ctx(src=SourceKind.NodeLabel, SecurityPosture=MISSING)).breached
    assert evaluate(exists, _ctx(src=P, SecurityPosture=MISSING)).unknown
    assert evaluate(exists, _ctx(src=SourceKind.NodeLabel, SecurityPosture="x")).satisfied


def test_best_uplink_and_named_uplink() -> None:
    best = _req(element="UplinkLatencyMs", operator="Lte", value="80")
    mpls = _req(element="UplinkLatencyMs", operator="Lte", value="80", uplink="mpls")
    ctx = _ctx(UplinkLatencyMs__mpls=150.0, UplinkLatencyMs__inet=40.0)
    v = evaluate(best, ctx)
    assert v.satisfied and v.uplink == "inet"
    assert evaluate(mpls, ctx).breached
    assert evaluate(best, _ctx(UplinkLatencyMs__mpls=150.0, UplinkLatencyMs__inet=90.0)).breached
    # One uplink unknown: it might be the good one, so no breach.
    assert evaluate(best, _ctx(UplinkLatencyMs__mpls=150.0, UplinkLatencyMs__inet=MISSING)).unknown
    assert evaluate(best, {}).unknown
    assert requirement_id(mpls) == "UplinkLatencyMs[mpls] Lte 80"


def _run(tracker: BreachTracker, req: Requirement, values: list, dt: float = 10.0) -> list[Phase]:
    phases = []
    for i, v in enumerate(values):
        t = i * dt
        _, s = tracker.observe("k", req, _ctx(t=t, BatteryPercent=v), t)
        phases.append(s.phase)
    return phases


def test_blip_shorter_than_grace_never_breaches() -> None:
    # Grace 30s, ticks of 10s: a breach seen at 3 consecutive ticks (20s of breach) is still Pending.
    phases = _run(BreachTracker(), BATTERY, [80.0, 20.0, 20.0, 20.0, 80.0, 20.0, 20.0, 80.0])
    assert Phase.Breached not in phases
    assert phases[1:4] == [Phase.Pending] * 3 and phases[4] is Phase.OK
    # The same dip held one tick longer (30s) breaches.
    phases = _run(BreachTracker(), BATTERY, [80.0, 20.0, 20.0, 20.0, 20.0])
    assert phases[-1] is Phase.Breached


def test_pending_reports_grace_left() -> None:
    tr = BreachTracker()
    tr.observe("k", BATTERY, _ctx(t=0, BatteryPercent=10.0), 0.0)
    _, s = tr.observe("k", BATTERY, _ctx(t=12, BatteryPercent=10.0), 12.0)
    assert s.phase is Phase.Pending and s.since == 0.0 and s.grace_left == 18.0


def test_hysteresis_prevents_flapping() -> None:
    # A value wandering around the threshold (35..48) after a breach stays Breached: no flapping.
    rng = random.Random(7)
    noisy = [20.0] * 4 + [rng.uniform(35.0, 48.0) for _ in range(200)]
    phases = _run(BreachTracker(), BATTERY, noisy)
    assert phases[3] is Phase.Breached
    assert all(p is Phase.Breached for p in phases[3:])
    # Without hysteresis the same series flaps; the check would fail if hysteresis did nothing.
    plain = BATTERY.model_copy(update={"hysteresis": 0.0})
    flaps = sum(1 for p in _run(BreachTracker(), plain, noisy) if p is Phase.Recovered)
    assert flaps > 5
    # Clearing the margin recovers exactly once, then OK.
    phases = _run(BreachTracker(), BATTERY, [20.0] * 4 + [49.0, 50.0, 50.0])
    assert phases[4:] == [Phase.Breached, Phase.Recovered, Phase.OK]


def test_stale_telemetry_freezes_state() -> None:
    tr = BreachTracker()
    for t in (0, 10, 20, 30):
        tr.observe("k", BATTERY, _ctx(t=t, BatteryPercent=10.0), float(t))
    assert tr.get("k").actionable
    # Telemetry stops (the last value keeps its old timestamp): frozen Breached, not recovered.
    for t in (100, 200, 1000):
        _, s = tr.observe("k", BATTERY, _ctx(t=30, BatteryPercent=90.0), float(t), max_age=60)
        assert s.phase is Phase.Breached and s.frozen and not s.actionable
    assert tr.breaches() == {}
    # A Pending breach does not complete while unknown, and the gap does not count toward grace.
    tr2 = BreachTracker()
    tr2.observe("k", BATTERY, _ctx(t=0, BatteryPercent=10.0), 0.0)
    tr2.observe("k", BATTERY, {}, 500.0)
    _, s = tr2.observe("k", BATTERY, _ctx(t=510, BatteryPercent=10.0), 510.0)
    assert s.phase is Phase.Pending and s.accrued == 0.0
    _, s = tr2.observe("k", BATTERY, {}, 520.0)
    assert s.phase is Phase.Pending and s.frozen


def test_grace_zero_breaches_at_once_and_breaches_are_reported_per_device() -> None:
    posture = _req(element="SecurityPosture", operator="In", values=["trusted"], gracePeriodSeconds=0)
    tr = BreachTracker()
    out = tr.observe_group("edge-1", "ns/g", [posture, BATTERY],
                           _ctx(t=5, SecurityPosture="compromised", BatteryPercent=90.0), 5.0)
    assert [s.phase for _, _, s in out] == [Phase.Breached, Phase.OK]
    assert out[0][0] == TrackKey("edge-1", "ns/g", "SecurityPosture In [trusted]")
    reasons = tr.breaches()
    assert list(reasons) == ["edge-1"] and reasons["edge-1"][0].group == "ns/g"
    assert "compromised" in str(reasons["edge-1"][0])

"""decide() for a WorkloadGroup round, and the pieces it is made of: each condition, taint claims, backoff,
membership of overlapping groups."""

from __future__ import annotations

from dataclasses import replace

from edgeweave.api.base import Mode, parse_rfc3339, rfc3339
from edgeweave.api.workloadgroup import (
    MovePhase,
    MoveStatus,
    WorkloadBackoff,
    WorkloadGroupSpec,
    WorkloadGroupStatus,
)
from edgeweave.handlers.wg_decide import (
    STALLED_AFTER,
    BreachView,
    RoundInput,
    Telemetry,
    backoff_after,
    decide,
    hold_backed_off,
    stalled_condition,
)
from edgeweave.handlers.wg_round import GroupRef, membership
from edgeweave.placement.breach import BreachReason
from edgeweave.placement.inventory import PodInfo
from edgeweave.placement.model import DeviceState, Edge, WorkloadState

NOW = parse_rfc3339("2026-01-01T00:10:00Z")


def dev(name: str) -> DeviceState:
    return DeviceState(name=name, cpu_capacity=4, memory_capacity=8e9, cpu_free=3, memory_free=7e9)


def wl(workload: str, node: str) -> WorkloadState:
    return WorkloadState(key=f"ns/{workload}-1", workload=workload, group="ns/g", node=node, cpu=0.25, memory=64e6)


def member(workload: str, node: str) -> PodInfo:
    return PodInfo(namespace="ns", name=f"{workload}-1", node=node, phase="Running", ready=True,
                   labels={"app": workload, "g": "1"}, owner_kind="ReplicaSet", owner_name=workload)


SPLIT = Telemetry(edges=(Edge(source="api", target="cache", bytes_per_second=5e6),), age_seconds=1)


def inp(**kw) -> RoundInput:
    spec = kw.pop("spec", WorkloadGroupSpec(selector={"g": "1"}))
    base = dict(namespace="ns", name="g", generation=1, spec=spec, status=WorkloadGroupStatus(), conditions=[],
                mode=Mode.Enforce, members=[member("api", "a"), member("cache", "b")],
                devices=[dev("a"), dev("b")], workloads=[wl("api", "a"), wl("cache", "b")], now=NOW, plan_now=True,
                plan_id="p1", telemetry=SPLIT)
    return RoundInput(**{**base, **kw})


def cond(step, ctype: str):
    return next(c for c in step.conditions if c.type.value == ctype)


def test_split_pair_is_planned_and_recorded_before_moves() -> None:
    step = decide(inp())
    assert step.start_moves and step.plan is not None and len(step.plan.moves) == 1
    plan = step.status["plan"]
    assert plan["mode"] == "Enforce" and plan["moves"][0]["phase"] == "Planned"
    assert cond(step, "Aggregated").reason == "Planned"
    assert cond(step, "TelemetryFresh").status.value == "True"
    assert ("Normal", "PlanCreated", step.plan.summary) in step.events


def test_dry_run_records_but_starts_nothing_and_is_not_rewritten_each_round() -> None:
    first = decide(inp(mode=Mode.DryRun))
    assert not first.start_moves and first.status["plan"]["moves"][0]["message"].startswith("dry run")
    recorded = WorkloadGroupStatus.model_validate({"plan": first.status["plan"]})
    again = decide(inp(mode=Mode.DryRun, status=recorded))
    assert "plan" not in again.status and not again.events  # same plan: no write, no Event


def test_stale_or_failed_telemetry_means_no_plan() -> None:
    step = decide(inp(telemetry=Telemetry(edges=SPLIT.edges, age_seconds=500)))
    assert "plan" not in step.status and not step.start_moves
    c = cond(step, "TelemetryFresh")
    assert (c.status.value, c.reason) == ("False", "StaleTelemetry") and "no migration" in c.message
    step = decide(inp(telemetry=Telemetry(error_reason="PrometheusUnavailable", error_message="refused")))
    assert cond(step, "TelemetryFresh").reason == "PrometheusUnavailable" and "plan" not in step.status


def test_no_plan_between_resyncs() -> None:
    step = decide(inp(plan_now=False, telemetry=None))
    assert "plan" not in step.status and cond(step, "Ready").reason == "Accepted"


def test_steering_down_raises_a_condition_and_one_event() -> None:
    step = decide(inp(steering=(False, "webhook off")))
    c = cond(step, "SteeringUnavailable")
    assert c.status.value == "True" and "webhook off" in c.message
    assert any(e[1] == "SteeringUnavailable" for e in step.events)
    stored = [{"type": "SteeringUnavailable", "status": "True", "reason": c.reason, "message": c.message}]
    assert not any(e[1] == "SteeringUnavailable" for e in decide(inp(steering=(False, "webhook off"),
                                                                      conditions=stored)).events)
    # Back: flipped to False; a group that never had the problem does not carry the condition.
    assert cond(decide(inp(steering=(True, ""), conditions=stored)), "SteeringUnavailable").status.value == "False"
    assert not [c for c in decide(inp(steering=(True, ""))).conditions if c.type.value == "SteeringUnavailable"]


def breach_view(**kw) -> BreachView:
    base = dict(breaches={"a": [BreachReason("ns/g", "battery", "BatteryPercent 10 < 50")]},
                hosting=frozenset({"a", "b"}), requirements_ok=lambda w, d: d.name != "a")
    return BreachView(**{**base, **kw})


def test_only_an_enforce_group_that_asked_for_taints_claims_them() -> None:
    spec = WorkloadGroupSpec(selector={"g": "1"}, requirements=[{"element": "BatteryPercent", "operator": "Gte",
                                                                 "value": "50"}])
    enforce = decide(inp(spec=spec, breach=breach_view()))
    assert enforce.taint == (frozenset({"a"}), frozenset())
    assert decide(inp(spec=spec, breach=breach_view(), mode=Mode.DryRun)).taint == (frozenset(), frozenset())
    assert decide(inp(spec=spec, breach=breach_view(), may_taint=False)).taint == (frozenset(), frozenset())
    no_taints = spec.model_copy(update={"remediation": spec.remediation.model_copy(
        update={"taint_breached_devices": False})})
    assert decide(inp(spec=no_taints, breach=breach_view())).taint == (frozenset(), frozenset())
    # Recovered: the claim goes; frozen (no data): the claim stays; DryRun: a held claim is dropped.
    assert decide(inp(spec=spec, breach=breach_view(breaches={}), claimed_taints=frozenset({"a"}))).taint == (
        frozenset(), frozenset({"a"}))
    assert decide(inp(spec=spec, breach=breach_view(breaches={}, frozen=frozenset({"a"})),
                      claimed_taints=frozenset({"a"}))).taint == (frozenset(), frozenset())
    assert decide(inp(spec=spec, breach=breach_view(), mode=Mode.DryRun, claimed_taints=frozenset({"a"}))).taint == (
        frozenset(), frozenset({"a"}))


def test_breach_on_a_hosting_device_remediates() -> None:
    spec = WorkloadGroupSpec(selector={"g": "1"}, requirements=[{"element": "BatteryPercent", "operator": "Gte",
                                                                 "value": "50"}])
    step = decide(inp(spec=spec, breach=breach_view(breached_since={"a": NOW - 60})))
    assert cond(step, "ContextSatisfied").reason == "Breached"
    assert cond(step, "Remediating").reason == "Offloading"
    assert step.status["plan"]["kind"] == "Remediation"
    assert step.status["plan"]["moves"][0]["contextChangedAt"] == rfc3339(NOW - 60)


def test_a_new_breach_with_the_same_summary_is_remediated_again() -> None:
    """The last plan's moves all ended; a second breach that reads the same ("1 move(s) off 1 breached
    device(s)") but moves another pod from another device is a new plan, not "already recorded"."""
    spec = WorkloadGroupSpec(selector={"g": "1"}, requirements=[{"element": "BatteryPercent", "operator": "Gte",
                                                                 "value": "50"}])
    first = decide(inp(spec=spec, breach=breach_view()))
    done = dict(first.status["plan"], moves=[dict(m, phase="Done") for m in first.status["plan"]["moves"]])
    recorded = WorkloadGroupStatus.model_validate({"plan": done})
    # The same breach again: already recorded.
    same = decide(inp(spec=spec, status=recorded, breach=breach_view(), plan_id="p2", telemetry=None))
    assert "plan" not in same.status and cond(same, "Remediating").reason == "Recorded"
    # The pod now runs on b, and b breaches: same summary, other move.
    moved = decide(inp(spec=spec, status=recorded, plan_id="p2", telemetry=None, members=[member("api", "b"), member("cache", "a")],
                       workloads=[wl("api", "b"), wl("cache", "a")],
                       breach=breach_view(breaches={"b": [BreachReason("ns/g", "battery", "BatteryPercent 10 < 50")]},
                                          requirements_ok=lambda w, d: d.name != "b")))
    assert moved.plan is not None and moved.plan.summary == first.plan.summary
    assert moved.start_moves and moved.status["plan"]["id"] == "p2"
    assert {m["fromNode"] for m in moved.status["plan"]["moves"]} == {"b"}


def rolled_back(message: str = "landed on c") -> MoveStatus:
    return MoveStatus(id="m", workload="api", pod="ns/api-1", from_node="a", to_node="b", reason="r",
                      phase=MovePhase.RolledBack, message=message)


def test_rollbacks_back_off_exponentially_and_raise_a_condition() -> None:
    b = None
    delays = []
    for _ in range(STALLED_AFTER):
        b = backoff_after(b, rolled_back(), NOW)
        delays.append(parse_rfc3339(b.until) - NOW)
    assert delays == [30, 60, 120]
    assert stalled_condition({"api": b}, NOW).status.value == "True"
    assert stalled_condition({"api": b}, NOW + 1000).status.value == "False"  # the backoff ran out
    assert backoff_after(b, rolled_back().model_copy(update={"phase": MovePhase.Done}), NOW) is None


def test_a_backed_off_workload_is_not_planned_again() -> None:
    held = {"cache": WorkloadBackoff(failures=1, until=rfc3339(NOW + 30)), "api": WorkloadBackoff(
        failures=1, until=rfc3339(NOW + 30))}
    assert all(w.cooling_down for w in hold_backed_off([wl("api", "a"), wl("cache", "b")], held, NOW))
    step = decide(inp(status=WorkloadGroupStatus(backoff=held)))
    assert not step.start_moves and not step.status.get("plan", {}).get("moves")


def test_overlapping_groups_the_older_keeps_the_pod() -> None:
    pods = [member("api", "a"), member("cache", "b")]
    older = GroupRef("old", "2026-01-01T00:00:00Z", (("app", "api"),))
    mine = GroupRef("g", "2026-01-02T00:00:00Z", (("g", "1"),))
    members, conflicts, lost = membership("ns", "g", mine.created, {"g": "1"}, pods, [older, mine])
    assert [p.name for p in members] == ["cache-1"] and conflicts == ["old"] and lost == 1
    members, conflicts, lost = membership("ns", "old", older.created, {"app": "api"}, pods, [older, mine])
    assert [p.name for p in members] == ["api-1"] and conflicts == ["g"] and lost == 0
    step = decide(replace(inp(), conflicts=("old",), lost_pods=1))
    c = cond(step, "Conflict")
    assert c.status.value == "True" and "old" in c.message and any(e[1] == "Conflict" for e in step.events)
    assert not [c for c in decide(inp()).conditions if c.type.value == "Conflict"]

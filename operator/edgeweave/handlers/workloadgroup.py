"""WorkloadGroup: one daemon per group is the single writer of its status.

Each round: finish the moves in flight (one persisted step at a time), then read telemetry, plan,
record the plan in status, and — in Enforce mode — start moves within the group's limits.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from .. import GROUP, VERSION, metrics
from ..actuate import events
from ..actuate.actuator import TAINT_KEY, Actuator
from ..actuate.moves import MoveContext, advance, register_failover, register_inflight
from ..actuate.ratelimit import SlidingWindow
from ..admission.checks import unknown_uplinks
from ..api.base import now_rfc3339
from ..api.conditions import get_condition, set_condition
from ..api.workloadgroup import TERMINAL_PHASES, MovePhase, WorkloadGroupSpec
from ..placement.aggregate import plan_aggregation, plan_defragmentation
from ..placement.breach import BreachTracker, Phase
from ..placement.graph import edges_with_declared
from ..placement.inventory import selector_matches
from ..placement.model import Plan
from ..placement.remediate import (
    plan_remediation,
    requirements_checker,
    requirements_describer,
    taint_decisions,
)
from ..placement.states import DECLARED_BYTES_PER_WEIGHT, device_states, parse_rfc3339, workload_states
from ..telemetry.prometheus import PrometheusClient, TelemetryError, fetch_dependencies
from . import kube
from .common import describe_validation_error
from .context_cache import BREACHES, CONTEXT
from .health import WATCHDOG, Backoff, describe_error
from .indexes import devices_of, pods_on_nodes, sites_of
from .state import STATE, in_scope

RESOURCE = (GROUP, "workloadgroups")
TICK = 1.0
INFLIGHT_TICK = 0.25
RATE_LIMITED = "waiting: move rate limit reached for this interval"
LIMITER = SlidingWindow()  # shared by every group: limits are per group key, state survives daemon restarts


class GroupController:
    """Everything one round needs; status is read fresh and written through the API."""

    def __init__(self, namespace: str, name: str, logger: Any) -> None:
        self.namespace, self.name, self.logger = namespace, name, logger
        self.actuator = Actuator(kube.api_client(), dry_run=STATE.dry_run, limiter=LIMITER)
        self.custom = kube.custom()
        self.resumed = False
        self.tracker = BreachTracker()
        self.last_edges: list = []
        self.last_skip_warning = ""

    # -- status I/O -------------------------------------------------------------------------
    def read(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "workloadgroups",
                                                            self.name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def write(self, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, "workloadgroups", self.name, {"status": status})

    def conditions(self, obj: dict[str, Any], *updates: tuple[str, bool | str, str, str]) -> list[dict]:
        conds = (obj.get("status") or {}).get("conditions")
        gen = obj["metadata"].get("generation", 0)
        for ctype, st, reason, message in updates:
            conds = set_condition(conds, ctype, st, reason, message, gen)
        return conds

    # -- one round ------------------------------------------------------------------------------
    def round(self, indexes: dict[str, kopf.Index], plan_now: bool) -> bool:
        """Returns True while moves are in flight (the caller then ticks faster)."""
        obj = self.read()
        if obj is None:
            return False
        gen = obj["metadata"].get("generation", 0)
        status = obj.get("status") or {}
        try:
            spec = WorkloadGroupSpec.model_validate(obj.get("spec") or {})
        except ValidationError as err:
            message = describe_validation_error(err)
            if (get_condition(status.get("conditions"), "Ready") or {}).get("reason") != "InvalidSpec":
                events.post(kube.api_client(), self._ref(obj), "Warning", "InvalidSpec", message)
            self.write({"conditions": self.conditions(obj, ("Ready", False, "InvalidSpec", message)),
                        "observedGeneration": gen})
            return False

        members = [p for p in indexes["pods_by_namespace"].get(self.namespace, ())
                   if p.active and selector_matches(spec.selector, p.labels)]
        devices_spanned = len({p.node for p in members if p.node})
        mode = "DryRun" if (spec.mode.value == "DryRun" or STATE.dry_run) else "Enforce"
        if spec.memory_recovery.enabled and mode == "Enforce":
            self._prepare_failovers(spec, members, indexes)
        base = {"members": len(members), "devices": devices_spanned, "observedGeneration": gen}
        metrics.GROUP_MEMBERS.labels(self.namespace, self.name).set(len(members))
        metrics.GROUP_DEVICES.labels(self.namespace, self.name).set(devices_spanned)

        plan = status.get("plan")
        if plan and plan.get("mode") == "Enforce":
            inflight = self._drive_moves(obj, spec, plan)
            if inflight:
                self.write({**base, "conditions": self.conditions(
                    obj, ("Ready", True, "Moving", f"{inflight} move(s) in flight; mode {mode}"))})
                return True
            obj = self.read() or obj
            status = obj.get("status") or {}

        ready = ("Ready", True, "Accepted", f"{len(members)} member pod(s) on {devices_spanned} device(s); "
                 f"mode {mode}")
        now = time.time()
        last_moved = status.get("lastMoved") or {}
        all_devices = devices_of(indexes["devices_index"])
        devices = device_states(all_devices, pods_on_nodes(indexes["pods_by_node"]))
        workloads = workload_states(members, spec.workload_label, f"{self.namespace}/{self.name}", last_moved,
                                    spec.aggregation.cooldown_seconds, now)
        requirements_ok = None
        context_conds: list[tuple[str, bool | str, str, str]] = []
        if spec.requirements:
            remediation, requirements_ok, context_conds = self._context_round(
                obj, spec, all_devices, devices, workloads, indexes, now, mode)
            if remediation is not None:
                self.write({**base, **remediation, "conditions": self.conditions(obj, ready, *context_conds)})
                return bool(remediation["plan"]["moves"]) and mode == "Enforce"
        if not plan_now or not spec.aggregation.enabled:
            self.write({**base, "conditions": self.conditions(obj, ready, *context_conds)})
            return False

        # Telemetry: stale, failed or missing means no plan — and a condition that says why.
        observed = ()
        telemetry_cond: tuple[str, bool | str, str, str]
        if spec.discovery.enabled and STATE.prometheus_url:
            try:
                snap = fetch_dependencies(PrometheusClient(STATE.prometheus_url), spec.discovery.trigger_query,
                                          spec.discovery.data_query, self.namespace, spec.discovery.min_rate)
            except TelemetryError as err:
                metrics.PLANS_SKIPPED.labels(err.reason).inc()
                self.write({**base, "conditions": self.conditions(
                    obj, ready, *context_conds, ("TelemetryFresh", False, err.reason, f"no migration: {err}"))})
                return False
            age = snap.age()
            if age > spec.telemetry.max_age_seconds:
                metrics.PLANS_SKIPPED.labels("StaleTelemetry").inc()
                self.write({**base, "conditions": self.conditions(obj, ready, *context_conds, (
                    "TelemetryFresh", False, "StaleTelemetry",
                    f"no migration: snapshot is {age:.0f}s old (max {spec.telemetry.max_age_seconds}s)"))})
                return False
            observed = snap.edges
            base["lastTelemetryAt"] = now_rfc3339()
            telemetry_cond = ("TelemetryFresh", True, "Fresh", f"{len(snap.edges)} dependency series")
        elif spec.discovery.enabled:
            telemetry_cond = ("TelemetryFresh", "Unknown", "NoPrometheus",
                              "no Prometheus configured: planning on declared dependencies only")
        else:
            telemetry_cond = ("TelemetryFresh", "Unknown", "DiscoveryDisabled", "declared dependencies only")

        edges = edges_with_declared(observed, spec.dependencies, declared_bytes_per_second=DECLARED_BYTES_PER_WEIGHT)
        t0 = time.perf_counter()
        self.last_edges = edges
        result = make_plan(devices, workloads, edges, spec, requirements_ok)
        metrics.PLAN_SECONDS.labels(result.kind.value).observe(time.perf_counter() - t0)
        metrics.CROSS_DEVICE_TRAFFIC.labels(self.namespace, self.name, "before").set(result.traffic_before)
        metrics.CROSS_DEVICE_TRAFFIC.labels(self.namespace, self.name, "after").set(result.traffic_after)

        conds = [ready, *context_conds, telemetry_cond]
        if result.skipped:
            conds.append(("Aggregated", False, "CannotPlace", "; ".join(s.reason for s in result.skipped)[:1000]))
        elif result.moves:
            conds.append(("Aggregated", False, "Planned", result.summary))
        else:
            conds.append(("Aggregated", True, "NothingToMove", result.summary or "no split co-dependent pairs"))
        new_status = {**base, "conditions": self.conditions(obj, *conds)}
        # A plan whose moves ran stays in status as their record until there is a new plan with moves.
        stale_dry_run = bool(plan) and plan.get("mode") == "DryRun" and plan.get("summary") != result.summary
        if result.moves or result.skipped or stale_dry_run:
            new_status["plan"] = plan_status(result, mode)
            metrics.PLANS.labels(result.kind.value, mode).inc()
            if result.moves and (not plan or plan.get("summary") != result.summary):
                events.post(kube.api_client(), self._ref(obj), "Normal",
                            "PlanDryRun" if mode == "DryRun" else "PlanCreated", result.summary)
        # The plan is in status before any move starts: a restart resumes it instead of re-planning.
        self.write(new_status)
        return bool(result.moves) and mode == "Enforce"

    def report_failure(self, backoff: Backoff, delay: float, new_error: bool) -> None:
        """A round raised: say so in a condition (and once per distinct error in an Event). Best effort: the
        failure may be the API itself."""
        message = f"reconcile failed {backoff.failures} time(s) in a row, next try in {delay:.0f}s: {backoff.last_error}"
        try:
            obj = self.read()
            if obj is None:
                return
            self.write({"conditions": self.conditions(obj, ("Ready", False, "ReconcileFailed", message))})
            if new_error:
                events.post(kube.api_client(), self._ref(obj), "Warning", "ReconcileFailed", message)
        except Exception as err:  # noqa: BLE001 - reporting must never raise into the backoff loop
            self.logger.warning("could not record the failure: %s", describe_error(err))

    def _move_context(self, spec: WorkloadGroupSpec) -> MoveContext:
        return MoveContext(actuator=self.actuator, core=kube.core(), group=f"{self.namespace}/{self.name}",
                           memory=spec.memory_recovery, image=os.environ.get("EDGEWEAVE_IMAGE", MoveContext.image))

    def _prepare_failovers(self, spec: WorkloadGroupSpec, members: list, indexes: dict[str, kopf.Index]) -> None:
        """Members on a device that stopped being Ready will be replaced by their controller (taint-based
        eviction); make sure each replacement recovers its memory region first."""
        down = {d.name for d in devices_of(indexes["devices_index"]) if not d.ready}
        if not down:
            return
        ctx = self._move_context(spec)
        for p in members:
            if p.node in down and p.owner_kind and p.owner_name:
                workload = p.labels.get(spec.workload_label) or p.name
                if register_failover(self.namespace, f"{p.owner_kind}/{p.owner_name}", workload, p.node, ctx):
                    self.logger.info("%s on failed device %s: its replacement will recover memory first",
                                     p.key, p.node)

    def _context_round(self, obj, spec, all_devices, devices, workloads, indexes, now, mode):
        """Evaluate requirements on every device the group uses; remediate breaches that outlasted their
        grace period; keep breach taints in step. Returns (status update with a remediation plan or None,
        requirements_ok for the aggregation planner, conditions)."""
        group = f"{self.namespace}/{self.name}"
        snap = CONTEXT.get(all_devices, sites_of(indexes["sites_index"]), STATE.prometheus_url)
        reqs = list(spec.requirements)
        hosting = {w.node for w in workloads}
        watched = hosting | {k.device for k, st in self.tracker.items() if st.phase is not Phase.OK}
        newly = 0
        for dev in sorted(watched):
            for _, _, st in self.tracker.observe_group(dev, group, reqs, snap.by_device.get(dev, {}), now,
                                                       max_age=spec.telemetry.max_age_seconds):
                if st.breached and st.changed_at == now:
                    newly += 1
        if newly:
            metrics.BREACHES_TOTAL.labels(self.namespace, self.name).inc(newly)
        self.tracker.prune(lambda k, st: k.device in hosting or st.phase is not Phase.OK)
        breaches = self.tracker.breaches()
        frozen = self.tracker.devices_in(Phase.Breached, Phase.Pending, frozen=True)
        BREACHES.update(group, breaches, frozen)
        if spec.remediation.taint_breached_devices:
            self._sync_taints(all_devices, mode)

        contexts = snap.by_device
        requirements_ok = requirements_checker({group: reqs}, contexts, now=now,
                                               max_age=spec.telemetry.max_age_seconds)
        pending = [(k, st) for k, st in self.tracker.items() if st.phase is Phase.Pending and k.device in hosting]
        unknown = sorted({k.device for k, st in self.tracker.items() if st.frozen and k.device in hosting})
        mine = {d: r for d, r in breaches.items() if d in hosting}
        if mine:
            detail = "; ".join(f"{d}: {r.detail}" for d, rs in sorted(mine.items()) for r in rs)[:900]
            sat = ("ContextSatisfied", False, "Breached", detail)
        elif pending:
            sat = ("ContextSatisfied", True, "BreachPending", "; ".join(
                f"{k.device}: {st.detail} ({st.grace_left:.0f}s of grace left)" for k, st in pending)[:900])
        elif unknown and (faults := unknown_uplinks(reqs, unknown, all_devices, sites_of(indexes["sites_index"]))):
            # Not missing telemetry: the requirement names an uplink the device's site does not have.
            sat = ("ContextSatisfied", "Unknown", "UnknownUplink", "; ".join(faults))
            if (get_condition((obj.get("status") or {}).get("conditions"), "ContextSatisfied") or {}).get(
                    "reason") != "UnknownUplink":
                events.post(kube.api_client(), self._ref(obj), "Warning", "UnknownUplink", sat[3])
        elif unknown:
            sat = ("ContextSatisfied", "Unknown", "TelemetryMissing",
                   f"cannot read the context of {', '.join(unknown)}" +
                   (f": {snap.prometheus_error}" if snap.prometheus_error else ""))
        else:
            sat = ("ContextSatisfied", True, "Satisfied", f"all {len(reqs)} requirement(s) hold on "
                   f"{len(hosting)} device(s)")
        if not mine or not spec.remediation.enabled:
            return None, requirements_ok, [sat, ("Remediating", False, "NoBreach" if not mine else "Disabled", "")]

        co_dependent = None
        if self.last_edges:
            from ..placement.graph import DependencyGraph
            graph = DependencyGraph(workloads, self.last_edges, bytes_per_request=spec.discovery.bytes_per_request)
            co_dependent = [frozenset(p for wk in comp for p in graph.members.get(wk, ())) for comp in
                            graph.components()]
        plan = plan_remediation(devices, workloads, mine, requirements_ok, co_dependent, spec.limits,
                                describe=requirements_describer({group: reqs}))
        changed_at = {}
        for k, st in self.tracker.items():
            if st.breached and st.since is not None:
                changed_at[k.device] = datetime.fromtimestamp(st.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        previous = (obj.get("status") or {}).get("plan") or {}
        if (not plan.empty and previous.get("summary") == plan.summary and previous.get("kind") == plan.kind.value
                and previous.get("mode") == mode):
            # The same remediation is already recorded (a dry run, or moves that ended): no new plan, no
            # new Event every tick.
            return None, requirements_ok, [sat, ("Remediating", False, "Recorded", plan.summary)]
        if plan.empty:
            reason = "; ".join(s.reason for s in plan.skipped)[:900] or "no movable workload"
            if reason != self.last_skip_warning:
                events.post(kube.api_client(), self._ref(obj), "Warning", "NoValidTarget", reason)
                self.last_skip_warning = reason
            return None, requirements_ok, [sat, ("Remediating", False, "NoValidTarget", reason)]
        self.last_skip_warning = ""
        events.post(kube.api_client(), self._ref(obj), "Warning" if mode == "Enforce" else "Normal",
                    "Remediating" if mode == "Enforce" else "PlanDryRun", plan.summary)
        metrics.PLANS.labels(plan.kind.value, mode).inc()
        return ({"plan": plan_status(plan, mode, changed_at)}, requirements_ok,
                [sat, ("Remediating", mode == "Enforce", "Offloading" if mode == "Enforce" else "DryRun",
                       plan.summary)])

    def _sync_taints(self, all_devices, mode: str) -> None:
        breached = BREACHES.breached_devices()
        tainted = [d.name for d in all_devices if any(k == TAINT_KEY for k, _, _ in d.taints)]
        to_taint, to_untaint = taint_decisions(breached, tainted, BREACHES.frozen_devices())
        if mode == "DryRun":
            return
        for dev in to_taint:
            reasons = "; ".join(str(r) for r in breached[dev])[:500]
            if self.actuator.set_taint(dev, True, value="true", message=f"context breach: {reasons}").ok:
                metrics.TAINTS.labels("add").inc()
        for dev in to_untaint:
            if self.actuator.set_taint(dev, False, message="context recovered").ok:
                metrics.TAINTS.labels("remove").inc()

    def _ref(self, obj: dict[str, Any]) -> dict[str, str]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "WorkloadGroup", "namespace": self.namespace,
                "name": self.name, "uid": obj["metadata"]["uid"]}

    def _drive_moves(self, obj: dict[str, Any], spec: WorkloadGroupSpec, plan: dict[str, Any]) -> int:
        ctx = self._move_context(spec)
        moves = [dict(m) for m in plan.get("moves", [])]
        if not self.resumed:
            for m in moves:
                register_inflight(m, self.namespace)
            self.resumed = True
        status = obj.get("status") or {}
        last_moved = dict(status.get("lastMoved") or {})
        total = status.get("movesTotal", 0)
        key = f"{self.namespace}/{self.name}"
        # Sweeps: every move takes at most one step per sweep, and each sweep is persisted in one status
        # write before the next. A step's side effect always follows the write of the phase it starts
        # from, so a restart at any point resumes from what was done; the group's moves run in parallel.
        for _ in range(8):
            changed = False
            for i, m in enumerate(moves):
                if m["phase"] in TERMINAL_PHASES:
                    continue
                if m["phase"] == MovePhase.Planned.value:
                    inflight = sum(1 for x in moves if x["phase"] not in TERMINAL_PHASES | {MovePhase.Planned.value})
                    if inflight >= spec.limits.max_in_flight:
                        continue
                    if not self.actuator.allow(key, spec.limits.max_moves_per_interval, spec.limits.interval_seconds):
                        if m.get("message") != RATE_LIMITED:
                            moves[i] = {**m, "message": RATE_LIMITED}
                            changed = True
                        continue
                nxt = advance(m, ctx)
                if nxt == m:
                    continue
                moves[i] = m = nxt
                changed = True
                if m["phase"] in TERMINAL_PHASES:
                    ok = m["phase"] == MovePhase.Done.value
                    metrics.MIGRATIONS.labels(plan.get("kind", ""), m["phase"]).inc()
                    if ok:
                        last_moved[m["workload"]] = now_rfc3339()
                        total += 1
                        if m.get("contextChangedAt"):
                            metrics.BREACH_TO_RUNNING.observe(
                                max(0.0, time.time() - parse_rfc3339(m["contextChangedAt"])))
                    events.post(kube.api_client(), self._ref(obj), "Normal" if ok else "Warning",
                                "MoveDone" if ok else "MoveFailed",
                                f"{m['workload']} {m['fromNode']} -> {m['toNode']}: {m['message']}")
            if not changed:
                break
            self.write({"plan": {**plan, "moves": moves}, "lastMoved": last_moved, "movesTotal": total})
        inflight = sum(1 for m in moves if m["phase"] not in TERMINAL_PHASES)
        metrics.MOVES_IN_FLIGHT.labels(self.namespace, self.name).set(inflight)
        return inflight


def plan_status(plan: Plan, mode: str, changed_at: dict[str, str] | None = None) -> dict[str, Any]:
    now = now_rfc3339()
    changed_at = changed_at or {}
    return {
        "id": uuid.uuid4().hex[:8],
        "kind": plan.kind.value,
        "createdAt": now,
        "mode": mode,
        "summary": plan.summary,
        "crossDeviceTrafficBefore": round(plan.traffic_before, 3),
        "crossDeviceTrafficAfter": round(plan.traffic_after, 3),
        "moves": [{"id": m.id, "workload": m.workload, "pod": m.pod, "fromNode": m.from_node, "toNode": m.to_node,
                   "reason": m.reason, "phase": MovePhase.Planned.value,
                   "message": "dry run: not carried out" if mode == "DryRun" else "", "updatedAt": now,
                   **({"contextChangedAt": changed_at[m.from_node]} if m.from_node in changed_at else {})}
                  for m in plan.moves],
        "skipped": [{"workload": s.workload, "reason": s.reason} for s in plan.skipped],
    }


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


@kopf.daemon(*RESOURCE, cancellation_timeout=10.0, when=in_scope)
async def group_daemon(stopped: kopf.DaemonStopped, name: str, namespace: str, logger: Any, **kwargs: Any) -> None:
    """Async on purpose: a sync daemon would hold one of kopf's worker threads for the group's whole life,
    and enough groups would starve the admission webhook and the timers. Each round runs in a thread
    only while it works."""
    ctl = GroupController(namespace, name, logger)
    backoff = Backoff()
    indexes = {k: kwargs[k] for k in ("devices_index", "pods_by_node", "pods_by_namespace", "sites_index")}
    last_plan = 0.0
    last_gen = None
    inflight = False
    try:
        while not stopped:
            body = kwargs["body"]
            gen = body.get("metadata", {}).get("generation")
            resync = (body.get("spec", {}).get("telemetry") or {}).get("resyncSeconds", 30)
            now = time.monotonic()
            plan_now = gen != last_gen or now - last_plan >= resync
            try:
                with WATCHDOG.round("WorkloadGroup", f"{namespace}/{name}"):
                    inflight = await asyncio.to_thread(ctl.round, indexes, plan_now and not inflight)
                if plan_now:
                    last_plan, last_gen = now, gen
                if backoff.succeeded():
                    logger.info("WorkloadGroup round succeeds again")
            except Exception as err:  # noqa: BLE001 - a failed round backs off with a condition, never a crash loop
                delay, new_error = backoff.failed(describe_error(err))
                metrics.RECONCILE_FAILURES.labels("WorkloadGroup").inc()
                if new_error:
                    logger.exception("WorkloadGroup round failed; next try in %.0fs", delay)
                else:
                    logger.warning("WorkloadGroup round failed again (%d in a row): %s; next try in %.0fs",
                                   backoff.failures, backoff.last_error[:200], delay)
                await asyncio.to_thread(ctl.report_failure, backoff, delay, new_error)
                inflight = False
                await stopped.wait(delay)
                continue
            await stopped.wait(INFLIGHT_TICK if inflight else TICK)
    finally:
        BREACHES.forget(f"{namespace}/{name}")

"""One WorkloadGroup round: read, gather, decide (`wg_decide`), write if changed, act.

The daemon is the single writer of the group's status. It reads spec and metadata from the body kopf
keeps fresh from its watch (no GET per round) and status from what it last wrote (the watch may not have
delivered that write yet; the write's response is authoritative).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .. import metrics
from ..actuate.actuator import TAINT_OWNERS_ANNOTATION, parse_owners
from ..actuate.moves import Member, MoveContext, register_failover, register_inflight, register_standing
from ..admission.checks import unknown_uplinks
from ..api.base import Mode, parse_rfc3339
from ..api.conditions import Cond, ConditionType, Reason, apply, get_condition
from ..api.workloadgroup import MovePhase, MoveStatus, WorkloadGroupSpec, WorkloadGroupStatus
from ..memory.targets import annotation_changes, annotation_key, prestage_targets
from ..placement.breach import BreachTracker, Phase, from_records, to_records
from ..placement.inventory import Device, PodInfo, selector_matches
from ..placement.remediate import margin_scorer, requirements_checker
from ..placement.states import workload_states
from ..telemetry.prometheus import PrometheusClient, TelemetryError, fetch_dependencies
from . import kube
from .common import invalid_spec
from .health import Backoff, describe_error
from .indexes import devices_of, pods_on_nodes, sites_of, store_of
from .state import Runtime
from .wg_decide import BreachView, RoundInput, RoundStep, Telemetry, decide, prune_quiet, steering_step
from .wg_moves import drive_moves

PLURAL = "workloadgroups"
log = logging.getLogger("edgeweave.workloadgroup")


@dataclass(frozen=True)
class GroupRef:
    """A WorkloadGroup as the overlap check sees it (kopf index value)."""

    name: str
    created: str
    selector: tuple[tuple[str, str], ...]


def membership(namespace: str, name: str, created: str, selector: Mapping[str, str], pods: Sequence[PodInfo],
               groups: Sequence[GroupRef]) -> tuple[list[PodInfo], list[str], int]:
    """(members, overlapping groups older first, pods kept by an older group). A pod belongs to at most
    one group: the older (creation time, then name) keeps it."""
    mine = (created, name)
    others = sorted((g for g in groups if g.name != name), key=lambda g: (g.created, g.name))
    members, conflicts, lost = [], set(), 0
    for p in pods:
        if not p.active or not selector_matches(dict(selector), p.labels):
            continue
        overlapping = [g for g in others if selector_matches(dict(g.selector), p.labels)]
        conflicts.update(g.name for g in overlapping)
        if any((g.created, g.name) < mine for g in overlapping):
            lost += 1
            continue
        members.append(p)
    return members, [g.name for g in others if g.name in conflicts], lost


INDEX_LAG_SECONDS = 60.0  # after this a missing copy is news (deleted since), not a lagging watch


def index_behind_moves(moves: Sequence[MoveStatus], members: Sequence[PodInfo], now: float) -> bool:
    """Whether the pod index does not show the plan's recently finished moves yet: a Done move's original
    still active among the members, or a bare pod's copy not among them."""
    uids = {p.uid for p in members if p.uid}
    names = {p.key for p in members}
    for m in moves:
        ended = parse_rfc3339(m.updated_at) if m.updated_at else None
        if m.phase is not MovePhase.Done or ended is None or now - ended > INDEX_LAG_SECONDS:
            continue
        if m.pod_uid and m.pod_uid in uids:
            return True
        if not m.owner and m.new_pod and f"{m.namespace}/{m.new_pod}" not in names:
            return True
    return False


# The steering probes asked beside a remediation plan's write (one per remediating round, each a dry-run).
_SIDE = ThreadPoolExecutor(max_workers=8, thread_name_prefix="edgeweave-probe")
CLAIM_PARALLEL = 8  # taint claims of one round at once: a read and a patch per node, each its own node


def _parallel(fn: Callable[[str], bool], items: list[str]) -> list[bool]:
    """fn over items, side by side. Each claim is a read and a compare-and-swap patch of its own node: 20
    devices breached at once took 15 s one after another on a loaded 2-core machine, all before the plan
    was written."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(CLAIM_PARALLEL, len(items)), thread_name_prefix="edgeweave-taint") as ex:
        return list(ex.map(fn, items))


class GroupController:
    """Everything one group's rounds need across rounds: the breach tracker, the last edges seen, and the
    status last written."""

    def __init__(self, namespace: str, name: str, rt: Runtime, logger: Any) -> None:
        self.namespace, self.name, self.rt, self.logger = namespace, name, rt, logger
        self.key = f"{namespace}/{name}"
        self.tracker = BreachTracker()
        self.tracker_restored = False  # the tracker is read back from status once per daemon
        self.last_edges: list = []
        self.written: dict[str, Any] | None = None  # status as the API server returned it after our write
        self.written_rv: str | None = None  # the resourceVersion of the body when we wrote
        self.resumed = False
        self.claimed: frozenset[str] | None = None  # devices whose taint this group claims (None: not read yet)

    # -- status I/O --------------------------------------------------------------------------------
    def current_status(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.written is not None:
            return self.written
        return dict(body.get("status") or {})

    def write(self, current: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        stored = kube.patch_status_if_changed(PLURAL, self.namespace, self.name, current, new)
        if stored is not None:
            self.written = stored

    def ref(self, body: Mapping[str, Any]) -> dict[str, str]:
        return kube.group_ref("WorkloadGroup", self.namespace, self.name, body["metadata"].get("uid", ""))

    def report_failure(self, body: Mapping[str, Any], backoff: Backoff, delay: float, new_error: bool) -> None:
        """A round raised: say so in Ready (and once per distinct error in an Event). Best effort: the
        failure may be the API itself."""
        message = (f"reconcile failed {backoff.failures} time(s) in a row, next try in {delay:.0f}s: "
                   f"{backoff.last_error}")
        try:
            raw = dict(body.get("status") or {})
            cond = Cond.of(ConditionType.Ready, False, Reason.ReconcileFailed, message)
            gen = (body.get("metadata") or {}).get("generation", 0)
            self.write(raw, {"conditions": apply(raw.get("conditions"), [cond], gen)})
            if new_error:
                self.rt.actuator.event(self.ref(body), "Warning", Reason.ReconcileFailed.value, message)
        except Exception as err:  # noqa: BLE001 - reporting must never raise into the backoff loop
            self.logger.warning("could not record the failure: %s", describe_error(err))

    def move_context(self, spec: WorkloadGroupSpec) -> MoveContext:
        return MoveContext(actuator=self.rt.actuator, core=kube.core(), group=self.key, steering=self.rt.steering,
                           memory=spec.memory_recovery, image=os.environ.get("EDGEWEAVE_IMAGE", MoveContext.image))

    # -- one round ---------------------------------------------------------------------------------
    def round(self, body: Mapping[str, Any], indexes: Mapping[str, Any], plan_now: bool) -> bool:
        """Returns True while moves are in flight (the caller then ticks faster)."""
        began = time.perf_counter()
        meta = body.get("metadata") or {}
        gen = meta.get("generation", 0)
        raw = self.current_status(body)
        try:
            spec = WorkloadGroupSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as err:
            new = invalid_spec("WorkloadGroup", raw, gen, err, self.ref(body), self.rt.actuator.api_client,
                               self.logger)
            self.write(raw, new)
            return False
        try:
            status = WorkloadGroupStatus.model_validate(raw)
        except ValidationError:
            status = WorkloadGroupStatus()  # a status we cannot read is rebuilt, never a crash loop
        act = self.rt.actuator
        mode = act.effective_mode(spec.mode)
        groups = [g for g in store_of(indexes["groups_by_namespace"], self.namespace) if isinstance(g, GroupRef)]
        members, conflicts, lost = membership(self.namespace, self.name, meta.get("creationTimestamp", ""),
                                              spec.selector, store_of(indexes["pods_by_namespace"], self.namespace),
                                              groups)
        all_devices = devices_of(indexes["devices_index"])
        if spec.memory_recovery.enabled and mode is Mode.Enforce:
            self._prepare_failovers(spec, members, all_devices, indexes)
        metrics.GROUP_MEMBERS.labels(self.namespace, self.name).set(len(members))
        metrics.GROUP_DEVICES.labels(self.namespace, self.name).set(len({p.node for p in members if p.node}))

        steering = None
        plan = status.plan
        if plan is not None and plan.mode is Mode.Enforce and any(not m.terminal for m in plan.moves):
            if not self.resumed:
                for m in plan.moves:
                    register_inflight(m, self.rt.steering)
            self.resumed = True
            driven = drive_moves(self.move_context(spec), status, spec.limits, self.key, self.ref(body),
                                 lambda new: self.write(self.current_status(body), new))
            steering = driven.steering
            if driven.in_flight:
                conds = [Cond.of(ConditionType.Ready, True, Reason.Moving,
                                 f"{driven.in_flight} move(s) in flight; mode {mode.value}")]
                cur = self.current_status(body)
                if steering is not None:
                    sc, sevents = steering_step(cur.get("conditions") or [], steering)
                    conds.append(sc)
                    for etype, reason, message in sevents:
                        act.event(self.ref(body), etype, reason, message)
                self.write(cur, {"members": len(members), "observedGeneration": gen, "conditions": apply(
                    cur.get("conditions"), prune_quiet(cur.get("conditions") or [], conds), gen)})
                return True
            raw = self.current_status(body)
            status = WorkloadGroupStatus.model_validate(raw)
            # The moves just ended: the pod indexes may not show the replacements yet. Plan next time.
            plan_now = False
        self.resumed = True

        if steering is None and (get_condition(raw.get("conditions"), ConditionType.SteeringUnavailable.value)
                                 or {}).get("status") == "True":
            steering = act.steering_live(self.namespace)  # raised before: find out whether it still holds
        if not self.tracker_restored:
            # Grace clocks and hysteresis live in status: a restart or a peering hand-over resumes them.
            self.tracker = BreachTracker(from_records(self.key, status.breach_state))
            self.tracker_restored = True
        now = time.time()
        workloads = workload_states(members, spec.workload_label, self.key, status.last_moved,
                                    spec.aggregation.cooldown_seconds, now)
        breach = self._observe_context(spec, all_devices, workloads, indexes, now) if spec.requirements else None
        if plan_now and status.plan is not None and index_behind_moves(status.plan.moves, members, time.time()):
            # Planning on an index that still shows a moved pod where it was undoes the move (measured at
            # 500 groups: 222 moved their other pod to the old place 3 s after the first move; both split
            # again, both then in cooldown). The next tick plans, once the watch has caught up.
            plan_now = False
        telemetry = self._read_telemetry(spec) if plan_now and spec.aggregation.enabled else None
        # Device states cost a pass over every pod of the fleet: only for a round that may plan.
        may_plan = telemetry is not None or (breach is not None and bool(set(breach.breaches) & breach.hosting))
        devices = self.rt.fleet.get(all_devices, lambda: pods_on_nodes(indexes["pods_by_node"])) if may_plan else []
        if self.claimed is None:  # once per daemon: what this group claimed before a restart
            self.claimed = frozenset(d.name for d in all_devices
                                     if self.key in parse_owners(d.annotations.get(TAINT_OWNERS_ANNOTATION)))
        claimed = self.claimed
        inp = RoundInput(
            namespace=self.namespace, name=self.name, generation=gen, spec=spec, status=status,
            conditions=raw.get("conditions") or [], mode=mode, members=members, devices=devices,
            workloads=workloads, now=now, plan_now=plan_now, plan_id=uuid.uuid4().hex[:8], telemetry=telemetry,
            breach=breach, edges_seen=self.last_edges, conflicts=conflicts, lost_pods=lost, steering=steering,
            may_taint=self.rt.may_taint(self.namespace), claimed_taints=claimed)
        t0 = time.perf_counter()
        step = decide(inp)
        elapsed = time.perf_counter() - t0
        remediating = step.start_moves and step.plan is not None and step.plan.kind.value == "Remediation"
        taints = functools.partial(self._act_taints, step.taint, breach, str(meta.get("uid") or ""),
                                   bool(meta.get("deletionTimestamp")))
        if not remediating:
            taints()
        # A remediation plan's first moves ask whether steering is live (a dry-run pod create, cached 2 s):
        # asked beside the plan write, it is answered when they start.
        probe = _SIDE.submit(contextvars.copy_context().run, act.steering_live, self.namespace) if remediating else None
        try:
            if spec.memory_recovery.enabled and mode is Mode.Enforce:
                self._prestage(workloads, all_devices, indexes, breach)
            else:
                self.release_prestage(all_devices)
            if step.plan is not None:
                metrics.PLAN_SECONDS.labels(step.plan.kind.value).observe(elapsed)
                metrics.PLANS.labels(step.plan.kind.value, mode.value).inc()
                if step.plan.kind.value != "Remediation":
                    metrics.CROSS_DEVICE_TRAFFIC.labels(self.namespace, self.name, "before").set(
                        step.plan.traffic_before)
                    metrics.CROSS_DEVICE_TRAFFIC.labels(self.namespace, self.name, "after").set(
                        step.plan.traffic_after)
            # The plan is in status before any move starts: a restart resumes it instead of re-planning.
            self.write(raw, {**step.status, "conditions": apply(raw.get("conditions"), step.conditions, gen)})
            if not remediating:
                # Events after the write: each is a request of its own, and under a loaded API server the plan
                # waited for them to reach status (a tenth of the burst's samples were event POSTs ahead of it).
                for etype, reason, message in step.events:
                    act.event(self.ref(body), etype, reason, message)
                return step.start_moves
            return self._start_remediation(spec, body, inp.plan_id, step, taints, began, t0)
        finally:
            if probe is not None:
                probe.exception()  # waited for only; the moves ask again and handle what it says

    def _start_remediation(self, spec: WorkloadGroupSpec, body: Mapping[str, Any], plan_id: str, step: RoundStep,
                           taints: Callable[[], None], began: float, decided: float) -> bool:
        """The moves of a remediation plan just recorded start now, not a tick and a round later (the
        breach is already seconds old). The taint claims (a read and a CAS patch of each breached node) and
        the Events come after the evictions: the replacements are steered to their targets, so the taint is
        not what keeps them off the breached devices, and 20 claims before the plan took seconds on a loaded
        machine. Returns whether moves are in flight."""
        recorded_at = time.perf_counter()
        recorded = WorkloadGroupStatus.model_validate(self.current_status(body))
        try:
            if recorded.plan is None or recorded.plan.id != plan_id:
                return True  # not the plan just decided: the next round resumes whatever status holds
            driven = drive_moves(self.move_context(spec), recorded, spec.limits, self.key, self.ref(body),
                                 lambda new: self.write(self.current_status(body), new), start_only=True)
            # Where a breach's first seconds go, for whoever profiles it (one line per remediation plan).
            self.logger.info("remediation plan %s: %d move(s); decided %.2fs into the round, recorded %.2fs "
                             "later, moves started %.2fs after that (%d in flight)", plan_id,
                             len(step.plan.moves) if step.plan else 0, decided - began, recorded_at - decided,
                             time.perf_counter() - recorded_at, driven.in_flight)
            return driven.in_flight > 0
        finally:
            taints()
            for etype, reason, message in step.events:
                self.rt.actuator.event(self.ref(body), etype, reason, message)

    # -- gathering -----------------------------------------------------------------------------------
    def _read_telemetry(self, spec: WorkloadGroupSpec) -> Telemetry:
        if not spec.discovery.enabled:
            return Telemetry(source="disabled")
        url = self.rt.settings.prometheus_url
        if not url:
            return Telemetry(source="none")
        try:
            snap = fetch_dependencies(PrometheusClient(url), spec.discovery.trigger_query, spec.discovery.data_query,
                                      self.namespace, spec.discovery.min_rate)
        except TelemetryError as err:
            metrics.PLANS_SKIPPED.labels(err.reason).inc()
            return Telemetry(error_reason=err.reason, error_message=str(err))
        age = snap.age()
        if age > spec.telemetry.max_age_seconds:
            metrics.PLANS_SKIPPED.labels("StaleTelemetry").inc()
        else:
            self.last_edges = list(snap.edges)
        return Telemetry(edges=tuple(snap.edges), age_seconds=age)

    def _observe_context(self, spec: WorkloadGroupSpec, all_devices: list[Device], workloads: list,
                         indexes: Mapping[str, Any], now: float) -> BreachView:
        """Evaluate requirements on every device the group uses (and on devices still breached)."""
        snap = self.rt.context.get(all_devices, sites_of(indexes["sites_index"]), self.rt.settings.prometheus_url)
        reqs = list(spec.requirements)
        hosting = {w.node for w in workloads}
        watched = hosting | {k.device for k, st in self.tracker.items() if st.phase is not Phase.OK}
        newly = 0
        for dev in sorted(watched):
            for _, _, st in self.tracker.observe_group(dev, self.key, reqs, snap.by_device.get(dev, {}), now,
                                                       max_age=spec.telemetry.max_age_seconds):
                if st.breached and st.changed_at == now:
                    newly += 1
        if newly:
            metrics.BREACHES_TOTAL.labels(self.namespace, self.name).inc(newly)
        self.tracker.prune(lambda k, st: k.device in hosting or st.phase is not Phase.OK)
        breaches = self.tracker.breaches()
        frozen = self.tracker.devices_in(Phase.Breached, Phase.Pending, frozen=True)
        self.rt.breaches.update(self.key, breaches, frozen)
        items = self.tracker.items()
        return BreachView(
            breaches=breaches, frozen=frozenset(frozen), hosting=frozenset(hosting),
            pending=[(k.device, st.detail, st.grace_left) for k, st in items
                     if st.phase is Phase.Pending and k.device in hosting],
            unknown=(unknown := sorted({k.device for k, st in items if st.frozen and k.device in hosting})),
            uplink_faults=unknown_uplinks(reqs, unknown, all_devices, sites_of(indexes["sites_index"])) if unknown else (),
            requirements_ok=requirements_checker({self.key: reqs}, snap.by_device, now=now,
                                                 max_age=spec.telemetry.max_age_seconds),
            breached_since={k.device: st.since for k, st in items if st.breached and st.since is not None},
            margin=margin_scorer({self.key: reqs}, snap.by_device, now=now, max_age=spec.telemetry.max_age_seconds),
            prometheus_error=snap.prometheus_error,
            records=tuple(r.wire() for r in to_records(items)))

    # -- acting ----------------------------------------------------------------------------------------
    def _act_taints(self, taint: tuple[frozenset[str], frozenset[str]], breach: BreachView | None,
                    uid: str = "", deleting: bool = False) -> None:
        claim, release = taint
        guard = self.rt.taints
        act = self.rt.actuator
        with guard.lock:  # the delete handler of this process releases under the same lock
            if deleting or (uid and guard.closed(uid)):
                claim = frozenset()
            held = set(self.claimed or ())
            made = set()

            def one(dev: str) -> bool:
                reasons = "; ".join(str(r) for r in (breach.breaches.get(dev, ()) if breach else ()))[:500]
                return act.claim_taint(dev, self.key, True, message=f"context breach: {reasons}").ok

            for dev, ok in zip(sorted(claim), _parallel(one, sorted(claim)), strict=True):
                if ok:
                    held.add(dev)
                    made.add(dev)
            if made:
                self.logger.info("claimed the breach taint on %s", ", ".join(sorted(made)))
            if made and not self._still_live(uid):
                # Claim, then look: the deletion was marked before its release read the nodes, or after this
                # claim. A release reads live nodes, so a claim it could not see was made after the mark,
                # and this look sees the mark. Either way no claim outlives its group, whichever replica
                # (or stale view) made it.
                for dev in sorted(made):
                    if act.claim_taint(dev, self.key, False, message=f"{self.key} is being deleted").ok:
                        held.discard(dev)
                self.logger.info("group is being deleted: took back the claim on %s", ", ".join(sorted(made)))
            gone = [dev for dev, ok in zip(sorted(release), _parallel(lambda dev: act.claim_taint(
                dev, self.key, False, message=f"{self.key}: context recovered").ok, sorted(release)), strict=True) if ok]
            held.difference_update(gone)
            if gone:
                self.logger.info("released the breach taint on %s", ", ".join(gone))
            self.claimed = frozenset(held)
            if not (uid and guard.closed(uid)):
                guard.record(self.key, self.claimed)

    def _still_live(self, uid: str) -> bool:
        """Whether the group (this uid) exists and is not marked for deletion, read from the API server.
        An unreadable answer counts as live: the claim stays, and the delete handler still finds it on the
        node."""
        try:
            obj = kube.read_custom(PLURAL, self.namespace, self.name)
        except Exception:  # noqa: BLE001 - see above
            return True
        meta = (obj or {}).get("metadata") or {}
        return obj is not None and (not uid or meta.get("uid") == uid) and not meta.get("deletionTimestamp")

    def _prepare_failovers(self, spec: WorkloadGroupSpec, members: list[PodInfo], devices: list[Device],
                           indexes: Mapping[str, Any]) -> None:
        """Members on a device that stopped being Ready will be replaced by their controller (taint-based
        eviction); make sure each replacement recovers its memory region first. Members on healthy devices
        get a standing registration: a killed pod's replacement recovers its region from its device."""
        down = {d.name for d in devices if not d.ready}
        ctx = self.move_context(spec)
        pods = indexes["pods_by_namespace"]
        ns = self.namespace

        def live_uids() -> set[str]:  # read at admission, on the event loop that keeps the index current
            return {p.uid for p in pods.get(ns, ()) if not p.deleting and p.phase not in ("Failed", "Succeeded")}

        by_owner: dict[str, list[Member]] = {}
        for p in members:
            if p.node and p.node not in down and p.owner_kind and p.owner_name:
                by_owner.setdefault(f"{p.owner_kind}/{p.owner_name}", []).append(
                    Member(p.uid, p.node, p.labels.get(spec.workload_label) or p.name))
        for owner, ms in sorted(by_owner.items()):
            if register_standing(ns, owner, ms, ctx, live_uids):
                self.logger.info("%s/%s: a killed member's replacement will recover its memory first (%s)", ns, owner,
                                 ", ".join(f"{m.uid} on {m.node}" for m in ms))
        if not down:
            return
        for p in members:
            if p.node in down and p.owner_kind and p.owner_name:
                workload = p.labels.get(spec.workload_label) or p.name
                if register_failover(self.namespace, f"{p.owner_kind}/{p.owner_name}", workload, p.node, ctx,
                                     failed_uid=p.uid):
                    self.logger.info("%s on failed device %s: its replacement will recover memory first",
                                     p.key, p.node)

    def _prestage(self, workloads: list, all_devices: list[Device], indexes: Mapping[str, Any],
                  breach: BreachView | None) -> None:
        """Tell the node agents of the devices each member would fail over to (same site, requirements
        met, room) to pre-stage its baselines: one annotation per group on each target Node."""
        states = self.rt.fleet.get(all_devices, lambda: pods_on_nodes(indexes["pods_by_node"]))
        ok = breach.requirements_ok if breach is not None else None
        targets = prestage_targets(self.namespace, workloads, states, ok)
        changes = annotation_changes(self.key, targets, {d.name: d.annotations for d in all_devices})
        for node, value in sorted(changes.items()):
            res = self.rt.actuator.annotate_node(node, annotation_key(self.key), value)
            if res.ok:
                self.logger.info("%s: %s pre-staging on %s", self.key, "set" if value else "removed", node)

    def release_prestage(self, devices: list[Device]) -> None:
        """The group is gone (or stopped recovering memory): its agents stop pre-staging for it."""
        key = annotation_key(self.key)  # only nodes that carry this group's key can change (every round)
        for node in annotation_changes(self.key, {}, {d.name: d.annotations for d in devices if key in d.annotations}):
            self.rt.actuator.annotate_node(node, key, None)

    def release_all_taints(self, devices: list[Device], uid: str = "") -> int:
        """The group is being deleted: drop every claim it holds, and let no round of it claim again.
        The claims are read from the live nodes: another replica (one stopping, one whose view is
        behind) may have claimed a moment ago, and neither this process nor its node index knows yet.
        A claim made after this read is taken back by its maker (`_act_taints` looks after claiming)."""
        with self.rt.taints.lock:
            mine = self.rt.taints.close(uid, self.key)
            try:
                held = self.rt.actuator.nodes_claimed_by(self.key)
            except Exception as err:  # noqa: BLE001 - fall back to what this process knows; the handler retries
                self.logger.warning("could not list the nodes for %s's claims: %s", self.key, describe_error(err))
                held = {d.name for d in devices if self.key in parse_owners(d.annotations.get(TAINT_OWNERS_ANNOTATION))}
                held |= mine
                failed = self.rt.actuator.release_taints(self.key, sorted(held))
                return failed or 1
            failed = self.rt.actuator.release_taints(self.key, sorted(held | mine))
            if held | mine:
                self.logger.info("released the breach-taint claims on %s", ", ".join(sorted(held | mine)))
            return failed

"""The only code that changes the cluster. Every change is dry-runnable, rate-limited, PDB-aware and
leaves an Event on the object it touched.

The actuator owns every limit and side effect, as descheduler's PodEvictor does: the group's limits and
effective mode go in (`may_start_move`), typed refusals come out (rate limit, in-flight limit, dry run,
steering not live); it counts the migration and taint metrics and posts the Events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .. import metrics
from ..api.base import Mode, parse_rfc3339
from ..api.workloadgroup import ActuationLimits, MovePhase, MoveStatus
from . import events
from .ratelimit import SlidingWindow
from .steering import STEERING, SteeringTable
from .steering_probe import probe_steering

log = logging.getLogger(__name__)

TAINT_KEY = "edgeweave.io/context-breach"
# Who holds the breach taint on a node: the WorkloadGroups (namespace/name, comma-separated) that each
# find the device breached. The taint stays while one does, and goes with the last.
TAINT_OWNERS_ANNOTATION = "edgeweave.io/context-breach-owners"
PROBE_TTL_SECONDS = 2.0


class Refusal(StrEnum):
    """Why the actuator will not start a move now."""

    RateLimited = "RateLimited"  # the group's maxMovesPerInterval is spent for this interval
    InFlightLimit = "InFlightLimit"  # maxInFlight moves are already running
    DryRun = "DryRun"  # the group (or the operator) is in DryRun: nothing changes, ever
    SteeringUnavailable = "SteeringUnavailable"  # a replacement could not be steered: nothing is evicted
    BlockedByPDB = "BlockedByPDB"  # (from evict_pod) a PodDisruptionBudget forbids the eviction


REFUSAL_MESSAGES = {
    Refusal.RateLimited: "waiting: move rate limit reached for this interval",
    Refusal.InFlightLimit: "waiting: the group's in-flight limit is reached",
    Refusal.DryRun: "dry run: not carried out",
    Refusal.SteeringUnavailable: "waiting: the steering webhook is not live, nothing is evicted",
    Refusal.BlockedByPDB: "blocked: evicting would violate the PodDisruptionBudget",
}


def parse_owners(value: str | None) -> set[str]:
    return {o for o in (value or "").split(",") if o}


class Outcome(StrEnum):
    Done = "Done"
    DryRun = "DryRun"
    NotFound = "NotFound"
    BlockedByPDB = "BlockedByPDB"
    RateLimited = "RateLimited"
    Conflict = "Conflict"
    Failed = "Failed"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message: str = ""
    obj: Any = None

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.Done, Outcome.DryRun, Outcome.NotFound)


@dataclass
class Actuator:
    api_client: Any
    dry_run: bool = False  # the operator's --dry-run: everything below answers DryRun
    limiter: SlidingWindow = field(default_factory=SlidingWindow)
    steering: SteeringTable = field(default_factory=lambda: STEERING)
    _probes: dict[str, tuple[float, bool, str]] = field(default_factory=dict)
    _probe_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- limits -------------------------------------------------------------------------------
    def effective_mode(self, mode: Mode) -> Mode:
        """The one place dry-run is decided: the group's mode, overridden by the operator's --dry-run."""
        return Mode.DryRun if self.dry_run or mode is Mode.DryRun else Mode.Enforce

    def allow(self, key: str, limit: int, interval: float) -> bool:
        return self.limiter.try_acquire(key, limit, interval)

    def would_refuse(self, key: str, limits: ActuationLimits, mode: Mode, in_flight: int) -> Refusal | None:
        """As may_start_move, spending nothing (a move not yet ready to start costs no rate budget)."""
        if self.effective_mode(mode) is Mode.DryRun:
            return Refusal.DryRun
        if in_flight >= limits.max_in_flight:
            return Refusal.InFlightLimit
        if self.limiter.remaining(key, limits.max_moves_per_interval, limits.interval_seconds) <= 0:
            return Refusal.RateLimited
        return None

    def may_start_move(self, key: str, limits: ActuationLimits, mode: Mode, in_flight: int) -> Refusal | None:
        """None: start it (one unit of the group's rate budget is spent). Otherwise why not."""
        if self.effective_mode(mode) is Mode.DryRun:
            return Refusal.DryRun
        if in_flight >= limits.max_in_flight:
            return Refusal.InFlightLimit
        if not self.limiter.try_acquire(key, limits.max_moves_per_interval, limits.interval_seconds):
            return Refusal.RateLimited
        return None

    def steering_live(self, namespace: str) -> tuple[bool, str]:
        """Whether a replacement created now in `namespace` would be steered (a server-side dry-run probe,
        cached a moment so a sweep of many moves costs one request)."""
        now = time.monotonic()
        with self._probe_lock:
            cached = self._probes.get(namespace)
            if cached and now - cached[0] < PROBE_TTL_SECONDS:
                return cached[1], cached[2]
        live, why = probe_steering(self.api_client, namespace, self.steering)
        with self._probe_lock:
            self._probes[namespace] = (time.monotonic(), live, why)
        return live, why

    # -- records of what was done -------------------------------------------------------------
    def move_finished(self, involved: dict[str, str], plan_kind: str, move: MoveStatus, now: float) -> None:
        ok = move.phase is MovePhase.Done
        metrics.MIGRATIONS.labels(plan_kind, move.phase.value).inc()
        if ok and move.context_changed_at:
            began = parse_rfc3339(move.context_changed_at)
            if began is not None:
                metrics.BREACH_TO_RUNNING.observe(max(0.0, now - began))
        events.post(self.api_client, involved, "Normal" if ok else "Warning", "MoveDone" if ok else "MoveFailed",
                    f"{move.workload} {move.from_node} -> {move.to_node}: {move.message}")

    def event(self, involved: dict[str, str], etype: str, reason: str, message: str) -> None:
        events.post(self.api_client, involved, etype, reason, message)

    # -- pods ---------------------------------------------------------------------------------
    def _core(self):
        from kubernetes import client
        return client.CoreV1Api(self.api_client)

    def create_pod(self, namespace: str, manifest: dict[str, Any], *, reason: str, message: str,
                   limit: tuple[str, int, float] | None = None) -> Result:
        """`limit` (key, count, seconds): at most `count` creates per `seconds` for `key`, else RateLimited."""
        name = manifest["metadata"].get("name", "")
        if limit is not None and not self.limiter.try_acquire(*limit):
            return Result(Outcome.RateLimited, f"pod creation rate limit reached for {limit[0]}")
        if self.dry_run:
            return Result(Outcome.DryRun, f"would create pod {namespace}/{name}")
        from kubernetes.client.exceptions import ApiException
        try:
            pod = self._core().create_namespaced_pod(namespace, manifest)
        except ApiException as e:
            if e.status == 409:
                return Result(Outcome.Conflict, f"pod {namespace}/{name} exists")
            return Result(Outcome.Failed, f"create pod {namespace}/{name}: {e.status} {e.reason}")
        events.post(self.api_client, events.pod_ref(namespace, pod.metadata.name, pod.metadata.uid), "Normal",
                    reason, message)
        return Result(Outcome.Done, obj=pod)

    def delete_pod(self, namespace: str, name: str, *, reason: str, message: str,
                   uid: str | None = None, grace_seconds: int | None = None) -> Result:
        if self.dry_run:
            return Result(Outcome.DryRun, f"would delete pod {namespace}/{name}")
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        events.post(self.api_client, events.pod_ref(namespace, name, uid), "Normal", reason, message)
        # A uid precondition: never delete a newer pod that reused the name.
        opts = client.V1DeleteOptions(grace_period_seconds=grace_seconds,
                                      preconditions=client.V1Preconditions(uid=uid) if uid else None)
        try:
            self._core().delete_namespaced_pod(name, namespace, body=opts)
        except ApiException as e:
            if e.status == 404:
                return Result(Outcome.NotFound, f"pod {namespace}/{name} already gone")
            if e.status == 409:
                return Result(Outcome.Conflict, f"pod {namespace}/{name} was replaced (uid changed)")
            return Result(Outcome.Failed, f"delete pod {namespace}/{name}: {e.status} {e.reason}")
        return Result(Outcome.Done)

    def evict_pod(self, namespace: str, name: str, *, reason: str, message: str,
                  uid: str | None = None) -> Result:
        """Evict through the Eviction API, so PodDisruptionBudgets are enforced by the API server."""
        if self.dry_run:
            return Result(Outcome.DryRun, f"would evict pod {namespace}/{name}")
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        body = client.V1Eviction(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            delete_options=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid) if uid else None))
        try:
            self._core().create_namespaced_pod_eviction(name, namespace, body)
        except ApiException as e:
            if e.status == 404:
                return Result(Outcome.NotFound, f"pod {namespace}/{name} already gone")
            if e.status == 429:
                events.post(self.api_client, events.pod_ref(namespace, name, uid), "Warning", "EvictionBlocked",
                            f"{message}: blocked by a PodDisruptionBudget")
                return Result(Outcome.BlockedByPDB, f"evicting {namespace}/{name} would violate its PDB")
            if e.status == 409:
                return Result(Outcome.Conflict, f"pod {namespace}/{name} was replaced (uid changed)")
            return Result(Outcome.Failed, f"evict {namespace}/{name}: {e.status} {e.reason}")
        events.post(self.api_client, events.pod_ref(namespace, name, uid), "Normal", reason, message)
        return Result(Outcome.Done)

    # -- nodes ---------------------------------------------------------------------------------
    def claim_taint(self, node: str, owner: str, present: bool, *, message: str = "") -> Result:
        """Record (or drop) `owner`'s claim on the breach taint of `node`; the node carries our NoSchedule
        taint exactly while some owner claims it. Other taints are left exactly as they are."""
        from kubernetes.client.exceptions import ApiException
        core = self._core()
        try:
            obj = core.read_node(node)
        except ApiException as e:
            return Result(Outcome.NotFound if e.status == 404 else Outcome.Failed, str(e.reason))
        annotations = obj.metadata.annotations or {}
        owners = parse_owners(annotations.get(TAINT_OWNERS_ANNOTATION))
        new_owners = owners | {owner} if present else owners - {owner}
        taints = [t for t in (obj.spec.taints or []) if t.key != TAINT_KEY]
        had = len(taints) != len(obj.spec.taints or [])
        want = bool(new_owners)
        if new_owners == owners and had == want:
            return Result(Outcome.Done, "unchanged")
        if self.dry_run:
            return Result(Outcome.DryRun, f"would {'add' if want else 'remove'} taint {TAINT_KEY} on {node}")
        new = [{"key": t.key, "value": t.value, "effect": t.effect} for t in taints]
        if want:
            new.append({"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"})
        # resourceVersion makes this a compare-and-swap: a concurrent taint change is not overwritten.
        patch = {"metadata": {"resourceVersion": obj.metadata.resource_version,
                              "annotations": {TAINT_OWNERS_ANNOTATION: ",".join(sorted(new_owners)) or None}},
                 "spec": {"taints": new or None}}
        try:
            core.patch_node(node, patch)
        except ApiException as e:
            return Result(Outcome.Conflict if e.status == 409 else Outcome.Failed, str(e.reason))
        if had != want:
            metrics.TAINTS.labels("add" if want else "remove").inc()
            events.post(self.api_client, events.node_ref(node), "Warning" if want else "Normal",
                        "EdgeweaveTainted" if want else "EdgeweaveUntainted",
                        f"{message} ({'claimed by ' + ', '.join(sorted(new_owners)) if want else 'no claim left'})")
        return Result(Outcome.Done)

    def annotate_node(self, node: str, key: str, value: str | None) -> Result:
        """Set (None: remove) one annotation of `node` that edgeweave owns (e.g. a group's pre-stage list).
        A merge patch of that key alone: other annotations are left exactly as they are."""
        from kubernetes.client.exceptions import ApiException
        if self.dry_run:
            return Result(Outcome.DryRun, f"would {'set' if value is not None else 'remove'} {key} on {node}")
        try:
            self._core().patch_node(node, {"metadata": {"annotations": {key: value}}})
        except ApiException as e:
            return Result(Outcome.NotFound if e.status == 404 else Outcome.Failed, str(e.reason))
        return Result(Outcome.Done)

    def nodes_claimed_by(self, owner: str) -> set[str]:
        """The nodes whose breach-taint owners name `owner`, read from the API server (not a cache: a claim
        another replica made a moment ago is there). Raises on an API failure."""
        return {n.metadata.name for n in self._core().list_node().items
                if owner in parse_owners((n.metadata.annotations or {}).get(TAINT_OWNERS_ANNOTATION))}

    def release_taints(self, owner: str, nodes: Iterable[str]) -> int:
        """Drop every claim of `owner` (a deleted group); returns how many nodes still failed to update."""
        failed = 0
        for node in nodes:
            for _ in range(3):  # a 409 means someone else changed the node in between: read again
                res = self.claim_taint(node, owner, False, message=f"{owner} released its claim")
                if res.outcome is not Outcome.Conflict:
                    break
            failed += res.outcome in (Outcome.Failed, Outcome.Conflict)
        return failed
